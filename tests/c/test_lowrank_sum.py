"""The exact pseudo-batch sum of whole-sample blocks (lrt_lowrank_sum, the `lrt_conv_sum`
setting) under ASan/UBSan (harness/c/lowrank_driver.c): its int16 block floating point
against the exact integer sum, and its one block step against the float reference's step
with the exact sum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.lowrank import (
    CConfig,
    Script,
    build_driver,
    conv_stream,
    parse_states,
    rel_err,
    sample_blocks,
)
from harness.lowrank import run as run_driver
from lrt.lowrank import LowRankAccumulator


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_driver(tmp_path_factory.mktemp("lowrank_sum"))


def dumped_sum(lines: list[str], n: int, m: int) -> list[tuple[int, int, np.ndarray]]:
    out = []
    for ln in lines:
        if ln.startswith("sum "):
            f = ln.split()
            out.append((int(f[1]), int(f[2]), np.array(f[3:], dtype=np.int64).reshape(n, m)))
    return out


def scenario(kind: str, rng: np.random.Generator, n: int, m: int) -> list[tuple[np.ndarray, int]]:
    """(gradient, exponent) per sample."""
    if kind == "similar":  # gradients of one layer over a pseudo-batch
        return [(rng.integers(-(2**24), 2**24, (n, m)), int(rng.integers(-30, -26)))
                for _ in range(10)]  # fmt: skip
    if kind == "growing":  # each sample larger than the sum so far: the sum rescales
        return [(rng.integers(-(2**20), 2**20, (n, m)), -40 + 3 * k) for k in range(12)]
    if kind == "shrinking":  # later samples far below the sum's LSB round away
        return [(rng.integers(-(2**30), 2**30, (n, m)), 10 - 9 * k) for k in range(8)]
    if kind == "extremes":  # full int32 range, one-entry samples, zero samples
        out = []
        for k in range(16):
            g = np.zeros((n, m), dtype=np.int64)
            if k % 4 == 0:
                g[:] = rng.choice([-(2**31) + 1, 2**31 - 1], (n, m))
            elif k % 4 == 1:
                g[rng.integers(n), rng.integers(m)] = rng.choice([-1, 1])
            elif k % 4 == 2:
                g = rng.integers(-(2**31) + 1, 2**31, (n, m))
            out.append((g, int(rng.choice([-60, 0, 60]))))
        return out
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["similar", "growing", "shrinking", "extremes"])
def test_sum_is_the_exact_sum_within_one_lsb_per_add(driver: Path, kind: str) -> None:
    n, m = 8, 72
    rng = np.random.default_rng(len(kind))
    samples = scenario(kind, rng, n, m)
    script = Script().init(n, m, CConfig(rank=4))
    for g, e in samples:
        script.sum_add(g, e).cmd("G")
    sums = dumped_sum(run_driver(driver, script), n, m)
    exact = np.zeros((n, m))
    largest = 0.0
    for k, ((g, e), (exp, max_abs, s)) in enumerate(zip(samples, sums, strict=True)):
        exact += g.astype(np.float64) * 2.0**e
        largest = max(largest, float(np.abs(g).max()) * 2.0**e)
        if not exact.any() and largest == 0:
            assert max_abs == 0
            continue
        assert max_abs == int(np.abs(s).max()) <= 32767, k
        lsb = 2.0**exp
        # each add rounds the sample and the rescaled sum by at most half an LSB each
        assert np.abs(s * lsb - exact).max() <= (k + 1) * lsb, k
        # and the format keeps 12 bits of the largest sample's scale at least
        assert lsb <= largest * 2.0**-12, k


def test_sum_step_is_the_block_step_of_the_sum(driver: Path) -> None:
    """A pseudo-batch of 10 conv samples (8 channels, 3x3x8 taps, as the trainer forms its
    whole-sample blocks) summed, then one block step: the rank-4 state of the exact sum, as
    the float reference computes it from that sum; the sum is empty afterwards."""
    n, c = 8, 8
    m = 9 * c
    stream = conv_stream(np.random.default_rng(5), 10, n=n, in_c=c, size=10)
    blocks = [sample_blocks(s)[0] for s in stream]
    assert all(b.left.shape == (n, n) for b in blocks)  # whole-sample blocks, left = I
    cfg = CConfig(rank=4, unbiased=False)
    script = Script().init(n, m, cfg)
    exact = np.zeros((n, m))
    for b in blocks:
        script.sum_add(b.right.T, b.r_exp)
        exact += b.right.T * 2.0**b.r_exp
    script.cmd("P 3").cmd("D").cmd("G").cmd("P 3")
    lines = run_driver(driver, script)
    steps = [int(ln.split()[1]) for ln in lines if ln.startswith("sumstep ")]
    assert steps == [1, 0]  # applied, then nothing left to add
    assert dumped_sum(lines, n, m)[0][1] == 0
    state = parse_states(lines, n, m, 4)[-1]
    assert state.steps == 1
    ref = LowRankAccumulator(n, m, cfg.reference())
    ref.step_block(np.eye(n) * 2.0**3, exact.T)
    assert rel_err(state.estimate(), ref.estimate()) <= 2e-3
    # the best rank-4 approximation of the exact sum (Eckart-Young)
    u, s, vt = np.linalg.svd(exact * 2.0**3, full_matrices=False)
    best = (u[:, :4] * s[:4]) @ vt[:4]
    assert rel_err(state.estimate(), best) <= 2e-3
