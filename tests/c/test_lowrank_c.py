"""The integer LRT accumulator (lrt_lowrank.c) against the float reference (lrt.lowrank) and
exact sums, under ASan/UBSan (harness/c/lowrank_driver.c). Measured values in the comments.

  * rank <= r streams are reproduced (C <= 1e-2 relative Frobenius error);
  * biased mode: the C estimate after a whole pseudo-batch of blocks (formed as the trainer
    forms them) is within 2 % of the reference on every mcu and paper layer shape at ranks
    1, 4 and 8 (rank >= the output channels included);
  * unbiased mode, with the seed loop in C (>= 2,000 seeds): ||mean - exact||^2 S / MSE lies
    in the chi-square band of an unbiased estimate and the C and reference MSEs agree within
    5 % (a single random path is discontinuous where the SVD basis of equal singular values
    jumps, so two precisions are compared in distribution, not path by path);
  * bases orthonormal within 1e-2 after 10,000 updates; everything runs sanitized.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.cbuild import LIB_DIR
from harness.lowrank import (
    Block,
    CConfig,
    Script,
    Term,
    build_driver,
    conv_stream,
    dense_stream,
    feed_blocks,
    parse_states,
    rel_err,
    run,
    sample_blocks,
    script_blocks,
    script_stream,
)
from lrt.lowrank import LowRankAccumulator, MaxNorm, XorShift32

N, M = 16, 72  # conv layer: 16 output channels, 3x3x8 patches


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_driver(tmp_path_factory.mktemp("lowrank"))


@pytest.fixture(scope="module")
def stream() -> list[list[Term]]:
    """17 samples x 36 pixels = 612 updates of a 16 x 72 conv layer."""
    return conv_stream(np.random.default_rng(0), 17)


# ---- sign source ----------------------------------------------------------------------------


def test_xorshift_state_matches_reference(driver: Path) -> None:
    script = Script().init(3, 4, CConfig(rank=1, seed=987654321))
    zero = np.zeros(3, dtype=int)
    for k in range(37):  # skipped steps draw a word too
        script.step(zero, 0, np.arange(4), 0, 0)
        if k in (0, 36):
            script.cmd("D")
    states = parse_states(run(driver, script), 3, 4, 1)
    ref = XorShift32(987654321)
    words = [ref() for _ in range(37)]
    assert [s.rng for s in states] == [words[0], words[36]]
    assert [s.steps for s in states] == [1, 37] and states[-1].applied == 0


# ---- acceptance 1: exactness ----------------------------------------------------------------


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("rank", [1, 4, 8])
def test_c_is_exact_on_low_rank_streams(driver: Path, rank: int, unbiased: bool) -> None:
    rng = np.random.default_rng(10 + rank)
    n, m, steps = 20, 50, 300
    dirs = rng.integers(-60, 61, size=(rank, n))
    script = Script().init(n, m, CConfig(rank=rank, unbiased=unbiased))
    exact = np.zeros((n, m))
    for t in range(steps):
        u = dirs[t % rank] * rng.choice([-2, -1, 1, 2])
        v = rng.integers(-128, 128, size=m)
        u_exp, v_exp = int(rng.integers(-12, -4)), -7  # block-float gradients: exponent varies
        exact += np.outer(u * 2.0**u_exp, (v + 128) * 2.0**v_exp)
        script.step(u, u_exp, v, 128, v_exp)
    state = parse_states(run(driver, script.cmd("D")), n, m, rank)[-1]
    err = rel_err(state.estimate(), exact)
    assert err <= 1e-2, err  # measured 2e-5 .. 2e-4


# ---- biased mode: whole pseudo-batches of every layer shape -------------------------------

# (name, n, input channels or dense width, conv output size or 0 for dense). Conv layers of
# the paper preset are 26x26 / 24x24 / 10x10 / 8x8 pixels; here 6x6 pixels per sample keep
# the driver's text input small (the shape n x m, the pixel-block path and B are the same).
SHAPES = [("mcu-conv1", 8, 1, 26), ("mcu-conv2", 8, 8, 24), ("mcu-conv3", 16, 8, 10),
          ("mcu-conv4", 16, 16, 8), ("mcu-dense", 64, 256, 0), ("mcu-dense1", 10, 64, 0),
          ("paper-conv1", 128, 1, 6), ("paper-conv2-4", 128, 128, 6),
          ("paper-dense", 512, 2048, 0), ("paper-dense1", 10, 512, 0)]  # fmt: skip


def pseudo_batch(n: int, c: int, out: int, seed: int = 1) -> tuple[int, list[list[Block]]]:
    """B = 10 conv samples or 100 dense samples, as blocks."""
    rng = np.random.default_rng(seed)
    if out:
        stream = conv_stream(rng, 10, n=n, in_c=c, size=out + 2)
        return 9 * c, [sample_blocks(s) for s in stream]
    return c, [sample_blocks(s) for s in dense_stream(rng, 100, n, c)]


@pytest.mark.parametrize("rank", [1, 4, 8])
@pytest.mark.parametrize(("name", "n", "c", "out"), SHAPES, ids=[s[0] for s in SHAPES])
def test_c_biased_pseudo_batch_matches_reference(
    driver: Path, name: str, n: int, c: int, out: int, rank: int
) -> None:
    m, blocks = pseudo_batch(n, c, out)
    cfg = CConfig(rank=rank, unbiased=False)
    lines = run(driver, script_blocks(Script().init(n, m, cfg), blocks).cmd("D"))
    state = parse_states(lines, n, m, rank)[-1]
    ref = LowRankAccumulator(n, m, cfg.reference())
    exact = feed_blocks(ref, blocks)
    err = rel_err(state.estimate(), ref.estimate())
    assert err <= 0.02, err  # measured 6e-5 .. 4.4e-4
    if rank >= n:  # the state holds the whole sum: nothing may be lost
        assert rel_err(state.estimate(), exact) <= 1e-3


# ---- unbiased mode: the seed loop in C ---------------------------------------------------


def c_seed_moments(driver: Path, n: int, m: int, cfg: CConfig, blocks: list[list[Block]],
                   seeds: int) -> tuple[np.ndarray, float]:  # fmt: skip
    """Mean estimate over seeds 0..seeds-1 and the mean ||est - mean||^2, from the driver."""
    lines = run(driver, script_blocks(Script().init(n, m, cfg), blocks).cmd(f"W {seeds}"))
    mean = np.array([float(x) for x in next(ln for ln in lines if ln.startswith("wmean"))
                     .split()[1:]]).reshape(n, m)  # fmt: skip
    spread = float(next(ln for ln in lines if ln.startswith("wvar")).split()[1])
    return mean, spread


@pytest.mark.parametrize(("name", "n", "c", "out"), SHAPES[:4], ids=[s[0] for s in SHAPES[:4]])
def test_c_unbiased_mode_is_unbiased_over_seeds(
    driver: Path, name: str, n: int, c: int, out: int
) -> None:
    """Rank 4 on the mcu conv shapes, one pseudo-batch, 2,000 seeds in C, 500 in the
    reference. For an unbiased estimate S ||mean - exact||^2 / MSE ~ chi2(d) / d with d the
    effective number of independent variance directions (Satterthwaite, from the reference's
    spread); a biased one grows with S."""
    seeds, ref_seeds, rank = 2000, 500, 4
    m, blocks = pseudo_batch(n, c, out, seed=2)
    cfg = CConfig(rank=rank, unbiased=True)
    mean, spread = c_seed_moments(driver, n, m, cfg, blocks, seeds)
    ests = []
    for seed in range(ref_seeds):
        ref = LowRankAccumulator(n, m, CConfig(rank=rank, unbiased=True, seed=seed).reference())
        exact = feed_blocks(ref, blocks)
        ests.append(ref.estimate().ravel())
    arr = np.array(ests)
    dev = arr - arr.mean(axis=0)
    lam = np.linalg.eigvalsh(dev @ dev.T / ref_seeds)
    lam = lam[lam > 1e-12 * lam.max()]
    dof = float(lam.sum() ** 2 / (lam**2).sum())
    bias2 = float(np.sum((mean - exact) ** 2))
    mse_c = bias2 + spread
    mse_ref = float(np.mean(np.sum((arr - exact.ravel()) ** 2, axis=1)))
    stat = bias2 * seeds / mse_c
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], dof) / dof
    assert lo <= stat <= hi, (stat, lo, hi, dof)  # measured 0.79 .. 1.16, dof 36 .. 295
    assert abs(mse_c / mse_ref - 1.0) <= 0.05, (mse_c, mse_ref)  # measured <= 0.11 %
    # within 3 / sqrt(S) of the exact sum, relative to the single-run error
    assert math.sqrt(bias2) <= 3 * math.sqrt(mse_c / seeds)


def test_c_biased_mode_fails_the_unbiasedness_check(driver: Path) -> None:
    """The same statistic flags the biased truncation (so the check above can fail)."""
    seeds = 400
    m, blocks = pseudo_batch(8, 8, 24, seed=2)
    mean, spread = c_seed_moments(driver, 8, m, CConfig(rank=1, unbiased=False), blocks, seeds)
    ref = LowRankAccumulator(8, m, CConfig(rank=1).reference())
    exact = feed_blocks(ref, blocks)
    bias2 = float(np.sum((mean - exact) ** 2))
    # deterministic: every seed gives the same estimate (spread = double rounding only)
    assert spread <= 1e-9 * float(np.sum(mean**2))
    assert bias2 * seeds / (bias2 + spread) > 100


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("rank", [1, 4, 8])
def test_c_block_steps_match_reference_from_the_same_state(
    driver: Path, rank: int, unbiased: bool
) -> None:
    """Each block step of a pseudo-batch, started from the C state with the same sign word.
    Unbiased steps after the first start from equal singular values (the mixed tail), whose
    basis is arbitrary: those are compared in distribution above, here only the first."""
    n, c, out = 16, 8, 10
    m, blocks = pseudo_batch(n, c, out)
    flat = [b for sample in blocks for b in sample]
    cfg = CConfig(rank=rank, unbiased=unbiased)
    script = Script().init(n, m, cfg).cmd("D")
    for b in flat:
        script.block(b.left, b.l_exp, b.right, b.r_exp).cmd("D")
    states = parse_states(run(driver, script), n, m, rank)
    words = XorShift32(cfg.seed)
    errs = []
    for i, b in enumerate(flat if not unbiased else flat[:1]):
        word = words()
        ref = LowRankAccumulator(n, m, cfg.reference(), signs=constant(word))
        ref.ql, ref.qr = states[i].ql_real(), states[i].qr_real()
        ref.cx = states[i].cx_real()
        ref.step_block(*b.real())
        errs.append(rel_err(states[i + 1].estimate(), ref.estimate()))
    assert max(errs) <= 2e-3, errs  # measured <= 3e-4


@pytest.mark.parametrize(("rank", "unbiased"), [(4, True), (4, False), (8, True), (8, False)])
def test_c_bases_stay_orthonormal(driver: Path, rank: int, unbiased: bool) -> None:
    steps = 10_000
    terms = [t for s in conv_stream(np.random.default_rng(3), steps // 36 + 1) for t in s]
    script = Script().init(N, M, CConfig(rank=rank, unbiased=unbiased))
    for t in terms[:steps]:
        script.step(t.u, t.u_exp, t.v, t.v_off, t.v_exp)
    state = parse_states(run(driver, script.cmd("D")), N, M, rank)[-1]
    assert state.applied == steps
    for q in (state.ql_real(), state.qr_real()):
        err = np.abs(q.T @ q - np.eye(rank)).max()
        assert err <= 1e-2, (
            err
        )  # measured 3e-5 .. 7e-5 (2e-3 .. 1.5e-2 without re-orthonormalising)


# ---- flush ----------------------------------------------------------------------------------


@dataclass
class Flush:
    rc: int
    shift: int
    min_nonzero: int
    lr_eff: float
    div_l: float
    div_r: float
    w: list[int]
    count: int
    count_stop: int
    delta: np.ndarray


def parse_flush(lines: list[str], n: int, m: int, rank: int) -> Flush:
    i = next(k for k, ln in enumerate(lines) if ln.startswith("plan "))
    p = [int(x) for x in lines[i].split()[1:]]
    counts = [int(x) for x in lines[i + 1].split()[1:]]
    delta = np.array([int(x) for x in lines[i + 2].split()[1:]]).reshape(n, m)
    return Flush(p[0], p[1], p[2], p[3] * 2.0 ** p[4], p[5] * 2.0 ** p[6], p[7] * 2.0 ** p[8],
                 p[9 : 9 + rank], counts[0], counts[1], delta)  # fmt: skip


def constant(word: int) -> Callable[[], int]:
    return lambda: word


@pytest.mark.parametrize(
    ("maxnorm", "batch_pow2", "b_cap", "beta"),
    [(True, 1, 0, 0.999), (False, 1, 0, 0.999), (False, 0, 0, 0.999), (True, 2, 0, 0.999),
     (True, 1, 4, 0.999), (False, 2, 3, 0.999), (True, 1, 0, 0.5), (True, 1, 0, 0.9)],
)  # fmt: skip
def test_c_flush_delta_matches_float_of_its_state(
    driver: Path, stream: list[list[Term]], maxnorm: bool, batch_pow2: int, b_cap: int,
    beta: float,
) -> None:
    """b_cap: the write step counts at most b_cap of the 10 samples summed; beta: the max-norm
    averages' (0.999 through the library's constant, the others through the config)."""
    rank, wexp = 4, -7
    beta_q30 = 0 if beta == 0.999 else round(beta * 2**30)
    cfg = CConfig(rank=rank, maxnorm=maxnorm, batch_pow2=batch_pow2, lr_q24=int(0.01 * 2**24),
                  b_cap=b_cap, maxnorm_beta_q30=beta_q30)  # fmt: skip
    script = script_stream(Script().init(N, M, cfg), stream[:10])
    for _ in range(3):  # three flush attempts: the max-norm averages evolve
        script.cmd("D").cmd(f"F {wexp}")
    lines = run(driver, script)
    states = parse_states(lines, N, M, rank)
    flushes = [
        parse_flush(lines[k:], N, M, rank) for k, ln in enumerate(lines) if ln.startswith("plan ")
    ]
    mn_l, mn_r = MaxNorm(cfg.reference().maxnorm_beta), MaxNorm(cfg.reference().maxnorm_beta)
    for st, fl in zip(states, flushes, strict=True):
        assert fl.rc == 0
        b_eff = st.b_eff_q16 / 65536
        assert b_eff == 10
        lr_eff = cfg.lr_q24 / 2**24 * min(b_eff, b_cap or b_eff) ** (batch_pow2 / 2)
        assert fl.lr_eff == pytest.approx(lr_eff, rel=1e-8)
        left = st.ql_real() * np.sqrt(st.cx_real())
        right = st.qr_real() * np.sqrt(st.cx_real())
        if maxnorm:
            dl, dr = mn_l.divisor(np.abs(left).max()), mn_r.divisor(np.abs(right).max())
            assert fl.div_l == pytest.approx(dl, rel=2e-8)
            assert fl.div_r == pytest.approx(dr, rel=2e-8)
            left, right = left / dl, right / dr
        want = lr_eff * (left @ right.T) / 2.0**wexp
        delta = fl.delta
        # the C scale factors have 15-bit mantissas: exact except within ~1e-3 LSB of a tie
        tie = np.abs(want - np.floor(want) - 0.5) < 2e-3 * max(1.0, np.abs(want).max())
        np.testing.assert_array_equal(delta[~tie], np.floor(want[~tie] + 0.5))
        assert np.all(np.abs(delta[tie] - want[tie]) <= 1.0)
        assert np.abs(delta).max() > 0
        assert fl.count == np.count_nonzero(delta)
        assert fl.min_nonzero == max(1, math.ceil(cfg.rho_min_q16 * N * M / 65536))
        assert fl.count_stop >= min(fl.count, fl.min_nonzero)


def test_c_flush_check_defers_then_writes_and_reset_empties(driver: Path) -> None:
    rng = np.random.default_rng(8)
    n, m = 12, 20
    cfg = CConfig(rank=2, maxnorm=False, batch_pow2=0, rho_min_q16=32768,
                  lr_q24=1 << 24, discount_q16=49152)  # fmt: skip
    u, v = rng.integers(-127, 128, size=n), rng.integers(-128, 128, size=m)
    script = Script().init(n, m, cfg).step(u, -20, v, 128, -7).cmd("E").cmd("D")
    script.cmd("C -7").cmd("D")  # |dW| ~ 2^-13 << 1 LSB: deferred, cx and B_eff x 0.75
    for _ in range(50):
        script.step(u, -7, v, 128, -7).cmd("E")
    script.cmd("C -7").cmd("R").cmd("D").cmd("F -7")
    lines = run(driver, script)
    checks = [int(ln.split()[1]) for ln in lines if ln.startswith("check ")]
    assert checks == [0, 1]
    before, deferred, after = parse_states(lines, n, m, 2)
    assert deferred.b_eff_q16 == before.b_eff_q16 * 3 // 4
    np.testing.assert_array_equal(deferred.cx, np.floor(before.cx * 0.75))
    assert after.b_eff_q16 == 0 and not after.cx.any() and not after.ql.any() and not after.qr.any()
    assert after.rng != before.rng  # the sign stream goes on across resets
    fl = parse_flush(lines, n, m, 2)
    assert fl.count == 0 and not fl.delta.any()


# ---- max-norm and the pseudo-float -------------------------------------------------------------


def test_c_maxnorm_matches_reference(driver: Path) -> None:
    rng = np.random.default_rng(9)
    xs = [float(x) for x in 10 ** rng.uniform(-6, 3, size=300)]
    script = Script()
    for x in xs:
        e = math.frexp(x)[1] - 32
        script.cmd(f"M {round(x / 2.0**e)} {e}")
    got = [int(ln.split()[1]) * 2.0 ** int(ln.split()[2]) for ln in run(driver, script)]
    ref = MaxNorm()
    want = [ref.divisor(x) for x in xs]
    np.testing.assert_allclose(got, want, rtol=2e-8)  # measured 5e-9 over 3000 calls


def test_c_maxnorm_scales_vectors(driver: Path) -> None:
    rng = np.random.default_rng(11)
    script = Script()
    cases = []
    for k in range(40):
        bits = 8 if k % 2 == 0 else 32
        hi = 127 if bits == 8 else 2**30
        x = rng.integers(-hi, hi + 1, size=12)
        x_exp, out_exp = int(rng.integers(-20, 5)), -7 if bits == 8 else -24
        cases.append((bits, x, x_exp, out_exp))
        script.cmd(f"N {bits} {x_exp} {out_exp} {len(x)} " + " ".join(map(str, x)))
    lines = run(driver, script)
    ref = MaxNorm()
    for (bits, x, x_exp, out_exp), ln in zip(cases, lines, strict=True):
        out = np.array([int(t) for t in ln.split()[2:]])
        assert int(ln.split()[1]) == 0
        want = ref(x * 2.0**x_exp) / 2.0**out_exp
        lim = 127 if bits == 8 else 2**31 - 1
        want = np.clip(want, -lim - 1, lim)
        assert np.all(np.abs(out - want) <= 0.5 + 1e-6 * np.abs(want)), (bits, out, want)
        assert np.abs(out).max() <= 2.0**-out_exp + 1


def test_c_ufx_arithmetic(driver: Path) -> None:
    rng = np.random.default_rng(12)
    script, pairs = Script(), []
    for _ in range(300):
        m1, m2 = (
            max(1, int(x)) for x in rng.integers(1, 2**62, size=2) >> rng.integers(0, 60, size=2)
        )
        e1, e2 = (int(x) for x in rng.integers(-80, 40, size=2))
        pairs.append((m1, e1, m2, e2))
        script.cmd(f"U {m1} {e1} {m2} {e2}")
    for (m1, e1, m2, e2), ln in zip(pairs, run(driver, script), strict=True):
        f = [int(t) for t in ln.split()[1:]]
        got = [f[2 * k] * 2.0 ** f[2 * k + 1] for k in range(5)]
        a, b = m1 * 2.0**e1, m2 * 2.0**e2
        want = [a * b, a / b, a + b, max(a - b, 0.0), math.sqrt(a)]
        for g, w in zip(got, want, strict=True):
            assert g == pytest.approx(w, rel=2**-30, abs=abs(a + b) * 2**-60)
        assert f[10] == (a > b) - (a < b)
        assert f[11] == math.isqrt(m1)


# ---- API details ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "m", "rank"), [(16384, 16384, 8), (1, 1, 1), (2, 16384, 8), (16384, 3, 8)]
)
def test_c_extreme_ranges_are_sanitizer_clean(driver: Path, n: int, m: int, rank: int) -> None:
    """Largest dimensions, saturated values and offsets, exponents jumping by 2^128."""
    rng = np.random.default_rng(n + m)
    script = Script().init(n, m, CConfig(rank=rank))
    for k in range(12):
        if k % 4 == 0:
            u, v, off = np.full(n, 127), np.full(m, 127), 256
        elif k % 4 == 1:
            u, v, off = np.where(rng.random(n) < 0.5, -127, 127), np.full(m, -128), -256
        elif k % 4 == 2:
            u, v, off = rng.integers(-128, 128, n), rng.integers(-128, 128, m), 128
        else:
            u, v, off = np.zeros(n, dtype=int), np.zeros(m, dtype=int), 0
            u[rng.integers(n)], v[rng.integers(m)] = -128, 1
        script.step(u, int(rng.choice([-64, 64, 0])), v, off, int(rng.choice([-64, 64, 3])))
        script.cmd("E")
    script.cmd("D")
    if n * m < 2**20:
        script.cmd("F -64").cmd("F 64").cmd("F -7")
    lines = run(driver, script)
    state = parse_states(lines, n, m, rank)[-1]
    assert state.applied == 12
    live = state.cx > 0
    for q in (state.ql_real()[:, live], state.qr_real()[:, live]):
        assert np.abs(q.T @ q - np.eye(int(live.sum()))).max() <= 1e-3
    counts = [int(ln.split()[1]) for ln in lines if ln.startswith("count ")]
    if counts:  # a finer weight LSB can only make more deltas non-zero; 2^64 leaves none
        assert counts[0] >= counts[2] > 0 and counts[1] == 0


def test_c_rejects_bad_arguments(driver: Path) -> None:
    bad = ["I 4 5 0 0 1 1 16 655 1 65536 0 0 1", "I 4 5 9 0 1 1 16 655 1 65536 0 0 1",
           "I 0 5 2 0 1 1 16 655 1 65536 0 0 1", "I 4 5 2 2 1 1 16 655 1 65536 0 0 1",
           "I 4 5 2 0 1 3 16 655 1 65536 0 0 1", "I 4 5 2 0 1 1 16 655 1 65537 0 0 1",
           "I 20000 5 2 0 1 1 16 655 1 65536 0 0 1", "I 4 5 2 0 1 1 0 655 1 65536 0 0 1",
           "I 4 5 2 0 1 1 17 655 1 65536 0 0 1"]  # fmt: skip
    lines = run(driver, "\n".join([*bad, "Q", ""]))
    assert [int(ln.split()[1]) for ln in lines] == [-1] * len(bad)
    # a block wider than max_block
    text = "I 2 3 1 0 1 1 2 655 1 65536 0 0 1\nB 3 0 0 " + " ".join(["1"] * 15) + "\nQ\n"
    proc = subprocess.run([str(driver)], input=text, capture_output=True, text=True)
    assert proc.stdout.splitlines()[1] == "step -1"


def test_firmware_code_has_no_floats_and_cross_compiles(tmp_path: Path) -> None:
    for src in ("lrt_lowrank.c", "lrt_lowrank.h", "lrt_fixmath.c", "lrt_fixmath.h"):
        code = re.sub(r"/\*.*?\*/", "", (LIB_DIR / src).read_text(), flags=re.S)
        assert not re.search(r"\b(float|double)\b", code), src
    if not shutil.which("arm-none-eabi-gcc"):
        pytest.skip("arm-none-eabi-gcc missing")
    targets = [["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"],
               ["-mcpu=cortex-m4", "-mthumb"], ["-mcpu=cortex-m0plus", "-mthumb"]]  # fmt: skip
    for flags in targets:
        for src in ("lrt_lowrank.c", "lrt_fixmath.c"):
            obj = tmp_path / (src + ".o")
            cmd = ["arm-none-eabi-gcc", *flags, "-std=c99", "-Wall", "-Wextra", "-Werror",
                   "-pedantic", "-O2", "-c", str(LIB_DIR / src), "-o", str(obj)]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
            undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True,
                                       text=True).stdout  # fmt: skip
            # soft-float helpers would be __aeabi_f* / __aeabi_d*; 64-bit integer helpers are fine
            assert "__aeabi_f" not in undefined and "__aeabi_d" not in undefined, undefined
