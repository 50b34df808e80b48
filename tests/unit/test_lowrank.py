"""The float reference of the LRT accumulator (lrt.lowrank): exactness on low-rank streams,
the block step, unbiasedness of the minimum-variance truncation and its Givens-chain
projector, the flush, max-norm and the sign source.

Expected values come from independent formulations (exact sums of outer products, exhaustive
enumeration of sign patterns, numpy bit arithmetic), never from the code under test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lrt.lowrank import (
    LowRankAccumulator,
    LowRankConfig,
    MaxNorm,
    givens_projector,
    signs_from_word,
    truncation,
)
from lrt.rng import XorShift32, xorshift32_seed


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---- sign source ----------------------------------------------------------------------------


def test_xorshift32_matches_numpy_uint32_formulation() -> None:
    gen = XorShift32(12345)
    x = np.array([xorshift32_seed(12345)], dtype=np.uint32)
    for _ in range(1000):
        x ^= x << np.uint32(13)
        x ^= x >> np.uint32(17)
        x ^= x << np.uint32(5)
        assert gen() == int(x[0])


def test_xorshift32_seeds_are_distinct_and_nonzero() -> None:
    states = {xorshift32_seed(s) for s in range(5000)}
    assert len(states) == 5000 and 0 not in states
    # nearby seeds give unrelated sign streams: first-word top bits agree about half the time
    tops = np.array([(XorShift32(s)() >> 31) & 1 for s in range(4000)])
    assert 0.45 < tops.mean() < 0.55


def test_signs_from_word_uses_top_bits() -> None:
    word = 0b1011 << 28  # bits 31, 29, 28 set
    assert signs_from_word(word, 5).tolist() == [-1.0, 1.0, -1.0, -1.0, 1.0]


# ---- truncation -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    rank=st.integers(1, 6),
    extra=st.integers(1, 4),
    data=st.data(),
)
def test_unbiased_truncation_is_exact_in_expectation(
    rank: int, extra: int, data: st.DataObject
) -> None:
    """E over all 2^N sign patterns of T diag(cx) T^T equals diag(sigma), exactly (N = r + k
    singular values, as after a block step of k columns)."""
    big = rank + extra
    raw = data.draw(st.lists(st.floats(0.0, 100.0), min_size=big, max_size=big))
    check_truncation_expectation(np.array(raw), rank)


@pytest.mark.parametrize(
    "raw, rank",
    [
        ([60.0, 60.0, 2.0**-23], 2),  # p = 1 - 1e-9 twice: a near-tie once selected 3 vectors
        ([100.0, 20.0, 2.0**-23], 1),  # p ~ 2e-9 once counted as zero and its mass dropped
    ],
)
def test_unbiased_truncation_near_ties_and_tiny_tails(raw: list[float], rank: int) -> None:
    check_truncation_expectation(np.array(raw), rank)


def check_truncation_expectation(raw: np.ndarray, rank: int) -> None:
    big = len(raw)
    sigma = np.sort(raw)[::-1]
    mean = np.zeros((big, big))
    patterns = list(itertools.product([0, 1], repeat=big))
    for bits in patterns:
        word = sum(b << (31 - a) for a, b in enumerate(bits))
        t, cx = truncation(sigma, rank, True, word)
        live = cx > 0
        np.testing.assert_allclose(t[:, live].T @ t[:, live], np.eye(int(live.sum())), atol=1e-9)
        assert np.all(np.diff(cx) <= 1e-9 * max(1.0, sigma[0]))  # still descending
        np.testing.assert_allclose(cx.sum(), sigma.sum(), rtol=1e-12, atol=1e-12)
        mean += t @ np.diag(cx) @ t.T / len(patterns)
    np.testing.assert_allclose(mean, np.diag(sigma), atol=1e-9 * max(1.0, sigma[0]))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_givens_projector_has_the_prescribed_diagonal(data: st.DataObject) -> None:
    """X^T X = I and diag(X X^T) = p for any 0 <= p <= 1 with an integer sum, including
    entries that are exactly 0 or 1 and ties between neighbours."""
    size = data.draw(st.integers(1, 24))
    k = data.draw(st.integers(1, size))
    kind = data.draw(st.sampled_from(["random", "with_ends", "ties"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = rng.exponential(size=size)
    if kind == "with_ends" and size > 2:
        w[rng.integers(size)] = 0.0
    if kind == "ties":
        w = np.repeat(w[: (size + 1) // 2], 2)[:size]
    # water-filling: the largest weights are capped at 1, the rest scaled to sum k
    p = np.zeros(size)
    free = np.ones(size, dtype=bool)
    for _ in range(size):
        budget = k - (~free).sum()
        scaled = np.where(free, w * budget / max(w[free].sum(), 1e-300), 1.0)
        over = free & (scaled >= 1.0)
        if not over.any():
            p = scaled
            break
        free &= ~over
    p = np.where(free, p, 1.0) if free.any() else np.ones(size)
    if abs(p.sum() - k) > 1e-9:  # k larger than the support (zeros): not a valid input
        return
    x = givens_projector(p)
    assert x.shape == (size, k)
    np.testing.assert_allclose(x.T @ x, np.eye(k), atol=1e-10)
    np.testing.assert_allclose(np.einsum("ij,ij->i", x, x), p, atol=1e-10)


def test_givens_projector_mean_over_signs_is_diagonal() -> None:
    """Random row signs make the projector's off-diagonal vanish in expectation: the mean of
    D X X^T D over all sign patterns D is exactly diag(p)."""
    p = np.array([0.9, 0.7, 0.5, 0.5, 0.3, 0.1])  # sum 3
    x = givens_projector(p)
    mean = np.zeros((6, 6))
    for bits in itertools.product([1.0, -1.0], repeat=6):
        d = np.array(bits)[:, None] * x
        mean += d @ d.T / 64
    np.testing.assert_allclose(mean, np.diag(p), atol=1e-12)


def test_biased_truncation_keeps_the_largest() -> None:
    sigma = np.array([5.0, 3.0, 2.0, 1.0])
    t, cx = truncation(sigma, 3, False, 0xFFFFFFFF)
    np.testing.assert_array_equal(t, np.eye(4, 3))
    np.testing.assert_array_equal(cx, sigma[:3])


def test_unbiased_mixing_block_follows_the_rule() -> None:
    # (q - m) sigma_m <= sum_{j >= m} sigma_j first holds at m = 2 (1-based): 3*4 > 10, 2*3 <= 6
    sigma = np.array([10.0, 3.0, 2.0, 1.0])
    _, cx = truncation(sigma, 3, True, 0)
    np.testing.assert_allclose(cx, [10.0, 3.0, 3.0])


# ---- acceptance 1: exactness on rank <= r streams ------------------------------------------


def low_rank_stream(rng: np.random.Generator, n: int, m: int, rank: int, steps: int
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:  # fmt: skip
    """u_t from `rank` fixed directions (times a random scale), v_t arbitrary: rank(sum) <= rank."""
    dirs = rng.normal(size=(rank, n))
    us = [dirs[t % rank] * rng.normal() for t in range(steps)]
    vs = [rng.normal(size=m) * rng.choice([1e-3, 1.0, 1e3]) for _ in range(steps)]
    return us, vs


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("rank", [1, 2, 4, 8])
def test_reference_is_exact_on_low_rank_streams(rank: int, unbiased: bool) -> None:
    rng = np.random.default_rng(rank)
    n, m = 12, 30
    us, vs = low_rank_stream(rng, n, m, rank, 200)
    acc = LowRankAccumulator(n, m, LowRankConfig(rank=rank, unbiased=unbiased))
    exact = np.zeros((n, m))
    for u, v in zip(us, vs, strict=True):
        exact += np.outer(u, v)
        acc.step(u, v)
    # the stream mixes scales 10^6 apart; pieces below the sigma floor (2^-14 sigma_0) of
    # early steps are dropped: measured <= 7e-6
    assert rel(acc.estimate(), exact) <= 1e-4
    live = acc.cx > 0
    q = acc.ql[:, live]
    np.testing.assert_allclose(q.T @ q, np.eye(int(live.sum())), atol=1e-9)


@pytest.mark.parametrize("unbiased", [True, False])
def test_rank_at_least_the_output_channels_keeps_everything(unbiased: bool) -> None:
    """n <= r: every sum fits the state, so every block (whole sample or pixel blocks) is kept
    exactly, including the parts inside the current span (nothing is skipped)."""
    rng = np.random.default_rng(3)
    n, m, rank = 8, 72, 8
    acc = LowRankAccumulator(n, m, LowRankConfig(rank=rank, unbiased=unbiased))
    pix = LowRankAccumulator(n, m, LowRankConfig(rank=rank, unbiased=unbiased))
    exact = np.zeros((n, m))
    for _ in range(10):
        dz = rng.normal(size=(36, n)) * (rng.random((36, n)) < 0.5)
        patches = np.maximum(rng.normal(size=(36, m)), 0.0)
        exact += dz.T @ patches
        acc.add_sample(dz, patches)
        pix.add_sample(dz, patches, block_pixels=16)
    assert rel(acc.estimate(), exact) <= 1e-9
    assert rel(pix.estimate(), exact) <= 1e-9


def test_block_step_equals_its_columns_when_exact() -> None:
    """A block of k columns adds the same as k one-column steps whenever no truncation is
    needed (total rank <= r)."""
    rng = np.random.default_rng(4)
    n, m, rank, k = 10, 14, 6, 3
    left, right = rng.normal(size=(n, 2 * k)), rng.normal(size=(m, 2 * k))
    block = LowRankAccumulator(n, m, LowRankConfig(rank=rank))
    cols = LowRankAccumulator(n, m, LowRankConfig(rank=rank))
    block.step_block(left[:, :k], right[:, :k])
    block.step_block(left[:, k:], right[:, k:])
    for c in range(2 * k):
        cols.step(left[:, c], right[:, c])
    np.testing.assert_allclose(block.estimate(), left @ right.T, atol=1e-10)
    np.testing.assert_allclose(cols.estimate(), left @ right.T, atol=1e-10)


def test_dependent_columns_add_no_direction() -> None:
    rng = np.random.default_rng(5)
    acc = LowRankAccumulator(6, 9, LowRankConfig(rank=3))
    u, v = rng.normal(size=6), rng.normal(size=9)
    left = np.stack([u, 2 * u, -u], axis=1)  # one direction, three columns
    right = rng.normal(size=(9, 3))
    assert acc.step_block(left, right)
    assert np.count_nonzero(acc.cx) == 1
    np.testing.assert_allclose(acc.estimate(), left @ right.T, atol=1e-10)
    assert acc.step(u, v)
    assert np.count_nonzero(acc.cx) == 1  # u in the span: only the right side grows


def test_zero_vectors_are_skipped_but_consume_a_sign_word() -> None:
    words: list[int] = []

    def source() -> int:
        words.append(len(words))
        return 0

    acc = LowRankAccumulator(3, 4, LowRankConfig(rank=1), signs=source)
    assert not acc.step(np.zeros(3), np.ones(4))
    assert not acc.step(np.ones(3), np.zeros(4))
    assert acc.step(np.ones(3), np.ones(4))
    assert len(words) == 3


# ---- acceptance 2: unbiasedness -------------------------------------------------------------


def test_unbiased_mode_is_unbiased_and_biased_mode_is_not() -> None:
    """Over S seeds, ||mean - exact||^2 S / MSE is chi-square-like with mean 1 for an
    unbiased estimator (band from the effective degrees of freedom of the spread)."""
    seeds, n, m, rank = 2000, 6, 5, 2
    rng = np.random.default_rng(7)
    us, vs = rng.normal(size=(rank + 4, n)), rng.normal(size=(rank + 4, m))
    exact = us.T @ vs  # rank r + 3 or more
    assert np.linalg.matrix_rank(exact) >= rank + 3
    stats_, singles = {}, {}
    for unbiased in (True, False):
        ests = []
        for seed in range(seeds):
            acc = LowRankAccumulator(n, m, LowRankConfig(rank=rank, unbiased=unbiased, seed=seed))
            acc.step_block(us[:3].T, vs[:3].T)  # a block of 3, then single columns
            for u, v in zip(us[3:], vs[3:], strict=True):
                acc.step(u, v)
            ests.append(acc.estimate().ravel())
        arr = np.array(ests)
        mse = float(np.mean(np.sum((arr - exact.ravel()) ** 2, axis=1)))
        stats_[unbiased] = float(np.sum((arr.mean(axis=0) - exact.ravel()) ** 2)) * seeds / mse
        singles[unbiased] = mse
    # chi2(1) / 1 is the widest band (one dominant variance direction): 99.95 % at 12.1
    assert stats_[True] <= stats.chi2.ppf(0.9995, 1), stats_  # measured 0.9
    assert stats_[False] > 100, stats_  # the biased estimate stays off: measured ~2000
    assert singles[False] < singles[True], singles


# ---- flush ----------------------------------------------------------------------------------


def test_flush_delta_is_the_rounded_scaled_gradient() -> None:
    rng = np.random.default_rng(3)
    n, m, rank = 5, 7, 3
    cfg = LowRankConfig(rank=rank, maxnorm=False, lr=0.05, batch_pow=0.5)
    acc = LowRankAccumulator(n, m, cfg)
    exact = np.zeros((n, m))
    for _ in range(rank):  # rank <= r, so the estimate is exact
        u, v = rng.normal(size=n), rng.normal(size=m)
        exact += np.outer(u, v)
        acc.step(u, v)
    for _ in range(10):
        acc.end_sample()
    delta = acc.flush_delta(-7)
    want = np.floor(0.05 * math.sqrt(10) * exact / 2**-7 + 0.5)
    # ties at exactly .5 LSB are measure zero here, so the rounding must agree everywhere
    np.testing.assert_array_equal(delta, want)


def test_flush_maxnorm_bounds_the_update() -> None:
    rng = np.random.default_rng(4)
    n, m, rank = 6, 8, 2
    cfg = LowRankConfig(rank=rank, maxnorm=True, lr=0.01)
    acc = LowRankAccumulator(n, m, cfg)
    for _ in range(20):
        acc.step(rng.normal(size=n) * 1e3, rng.normal(size=m))  # huge raw gradient
    for _ in range(10):
        acc.end_sample()
    delta = acc.flush_delta(-7)
    # |L|, |R| <= 1 after max-norm, so |dW| <= rank * lr * sqrt(B) = 0.063 ~ 8.1 LSB
    assert 0 < np.abs(delta).max() <= math.ceil(rank * 0.01 * math.sqrt(10) / 2**-7)


def test_flush_gates_on_rho_min_and_defers_with_discount() -> None:
    rng = np.random.default_rng(5)
    n, m = 10, 10
    cfg = LowRankConfig(rank=2, maxnorm=False, lr=1.0, rho_min=0.5, discount=0.5)
    acc = LowRankAccumulator(n, m, cfg)
    w = np.zeros((n, m), dtype=np.int8)
    u, v = rng.normal(size=n), rng.normal(size=m)
    acc.step(u * 2**-7, v)  # |dW| < half an LSB almost everywhere: density below 50 %
    acc.end_sample()
    cx = acc.cx.copy()
    new, wrote = acc.flush(w, -7)
    assert not wrote and new is w
    np.testing.assert_allclose(acc.cx, cx * 0.5)
    assert acc.b_eff == 0.5
    for _ in range(30):
        acc.step(u, v)  # a consistent direction: the update grows above one LSB everywhere
        acc.end_sample()
    delta = acc.flush_delta(-7)
    assert np.count_nonzero(delta) >= 50
    new, wrote = acc.flush(w, -7)
    assert wrote
    np.testing.assert_array_equal(new, np.clip(-delta, -128, 127))
    assert acc.b_eff == 0 and not acc.cx.any() and not acc.ql.any()


def test_min_nonzero_rounds_up() -> None:
    acc = LowRankAccumulator(7, 11, LowRankConfig(rho_min=0.01))
    assert acc.min_nonzero() == 1  # ceil(0.77)
    acc = LowRankAccumulator(70, 110, LowRankConfig(rho_min=0.01))
    assert acc.min_nonzero() == 77


# ---- max-norm -------------------------------------------------------------------------------


def test_maxnorm_divisor_follows_the_paper() -> None:
    mn = MaxNorm()
    xs = [3.0, 3.0, 0.01, 5.0]
    mv, beta, eps = 1e-4, 0.999, 1e-4
    for k, x in enumerate(xs, start=1):
        mv = beta * mv + (1 - beta) * (x + eps)
        want = max(x + eps, mv / (1 - beta**k))
        assert mn.divisor(x) == pytest.approx(want, rel=1e-12)
    # after the large tensors, a small one is scaled by the running average, not by its max
    mn2 = MaxNorm()
    for _ in range(50):
        mn2(np.full(4, 2.0))
    out = mn2(np.array([0.1, -0.05]))
    assert np.abs(out).max() < 0.1


def test_maxnorm_output_is_at_most_one() -> None:
    rng = np.random.default_rng(6)
    mn = MaxNorm()
    for _ in range(200):
        x = rng.normal(size=16) * 10 ** rng.uniform(-3, 3)
        assert np.abs(mn(x)).max() <= 1.0


def test_config_rejects_rank_zero() -> None:
    with pytest.raises(ValueError):
        LowRankAccumulator(3, 3, LowRankConfig(rank=0))
