"""The write policy: lrt_policy.c against its Python twin (lrt.policy), the budget a lifetime
sets, and the RAM refusal of sgd-batch on a small board."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.backprop import random_preset_model
from harness.cbuild import LIB_DIR, compile_c
from lrt import boards
from lrt.budget import plan_budget
from lrt.config import BuildConfig
from lrt.errors import UserError
from lrt.policy import Policy, lifetime_years, policy_of, samples_per_commit

HERE = Path(__file__).resolve().parent
# kind, gate_errors, gate_rate_q16, gate_cells_q16, samples_per_commit, burst | error excess
# (Q16), commits, samples, cells, rho_min_q16, mispredicted: edge values included (over 1.0,
# zero budget, one-cell layers, a saturating excess), step bound, pseudo-batch
POLICY_VALUES = [
    [0, 1], [0, 1, 2, 5, 65535], [0, 1, 5243, 65536], [0, 655, 13107, 65536, 70000],
    [0, 1, 7, 1578], range(3),
    [0, 1, 65535, 65536, 131071, 327680, 0xFFFF0000, 0xFFFFFFFF], range(50), range(20000),
    [1, 72, 2304, 40000], [0, 655, 65536], [0, 1], [0, 1, 2], [0, 1, 10, 100, 65535],
]  # fmt: skip


def test_c_policy_equals_the_python_twin(tmp_path: Path) -> None:
    exe = compile_c([HERE / "policy_driver.c", LIB_DIR / "lrt_policy.c"], tmp_path / "policy")
    rng = np.random.default_rng(3)
    cases = []
    for _ in range(4000):
        pick = [int(rng.choice(v)) for v in POLICY_VALUES]
        cases.append((tuple(pick[:6]), tuple(pick[6:])))
    stdin = "".join(" ".join(map(str, p + s)) + "\n" for p, s in cases)
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, check=True)
    got = [tuple(map(int, line.split())) for line in out.stdout.splitlines()]
    want = []
    for pol, (excess, commits, samples, cells, rho, mis, bound, batch) in cases:
        p = Policy(*pol, step_bound=bound)
        want.append((int(p.due(excess, commits, samples)), p.min_cells(cells, rho),
                     p.gate_update(excess, bool(mis)), p.step_samples(excess, batch),
                     int(p.joins)))  # fmt: skip
    assert got == want
    assert {g[4] for g in got} == {0, 1}  # a budget joins layers into a commit, else not
    assert {g[0] for g in got} == {0, 1}  # both answers exercised
    assert {0, 0xFFFFFFFF} <= {g[2] for g in got}  # the excess floors at 0 and saturates
    assert {0, 1, 65535} <= {g[3] for g in got}  # unbounded, one sample, saturated


def _gate_openings(p: Policy, mispredicted: np.ndarray) -> int:
    """Times the gate opens (and the layer writes, resetting the excess) over a stream."""
    s = opened = 0
    for mis in mispredicted:
        s = p.gate_update(s, bool(mis))
        if p.due(s, 0, 1):
            opened, s = opened + 1, 0
    return opened


def test_error_excess_is_a_cusum() -> None:
    """A stream at the model's own error rate (8%) rarely opens a gate whose reference is
    that rate plus a margin, where the plain count opens it every few dozen samples; a drift
    to 40% errors opens it within a few dozen samples."""
    rng = np.random.default_rng(0)
    calm = rng.random(10_000) < 0.08
    cusum = Policy(kind=1, gate_errors=8, gate_rate_q16=round(0.10 * 65536))
    plain = Policy(kind=1, gate_errors=8)
    assert _gate_openings(cusum, calm) <= 10 < 80 <= _gate_openings(plain, calm)
    drift = rng.random(60) < 0.4
    assert _gate_openings(cusum, drift) >= 1
    assert plain.gate_update(plain.gate_update(0, True), False) == 1 << 16  # rate 0: a count


def test_fixed_policy_is_todays_schedule() -> None:
    p = Policy()
    assert p.due(0, 10**6, 1)  # no gate, no budget
    assert p.min_cells(72, 655) == 1  # rho_min 1 %: one cell of conv1's 72 is enough
    assert p.min_cells(2304, 655) == 24


def test_lifetime_sets_the_budget() -> None:
    # 10 years at 10 samples/s on 1e6-cycle RRAM with 2 slots: one commit per 1,578 samples
    spc = samples_per_commit(10.0, 10.0, 1_000_000, 2)
    assert spc == 1578
    cfg = BuildConfig(write_policy="gated", lifetime_years=10.0, sample_rate_hz=10.0)
    assert policy_of(cfg, 1_000_000, 2).samples_per_commit == spc
    fixed = BuildConfig(write_policy="fixed", lifetime_years=10.0)  # the NVM throttle's job
    assert policy_of(fixed, 1_000_000, 2).samples_per_commit == 0
    # a build that keeps to the budget lasts at least the target: worst cell = commits / slots
    samples = 10 * spc
    life = lifetime_years(1_000_000, (samples // spc) // 2, samples, 10.0)
    assert life is not None and life >= 10.0


@pytest.mark.parametrize("board", ["lm3s6965evb"])
def test_sgd_batch_is_refused_where_its_sums_do_not_fit(board: str) -> None:
    model = random_preset_model("mcu")
    brd = boards.load_board(board)
    lrt = plan_budget(model, BuildConfig(scheme="lrt-maxnorm"), brd)
    sgdb = plan_budget(model, BuildConfig(scheme="sgd-batch"), brd)
    sums = sgdb.ram_items["train: sgd-batch gradient sums (n x m int32)"]
    assert sums == 4 * sum(lay.n_weights for lay in model.weight_layers())
    # the exact n x m sums cost far more than the rank-r state and its block buffers
    assert sgdb.ram - lrt.ram > sums // 2
    with pytest.raises(UserError, match=rf"over by {sgdb.ram - brd.ram_budget:,d} B"):
        sgdb.check(brd)
