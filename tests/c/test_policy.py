"""The write policy: lrt_policy.c against its Python twin (lrt.policy), the budget a lifetime
sets, and the RAM refusal of sgd-batch on a small board."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers.bp_harness import random_preset_model
from helpers.cbuild import LIB_DIR, compile_c
from lrt import boards
from lrt.budget import plan_budget
from lrt.config import BuildConfig
from lrt.errors import UserError
from lrt.policy import Policy, lifetime_years, policy_of, samples_per_commit

HERE = Path(__file__).resolve().parent
# kind, gate_errors, gate_cells_q16, samples_per_commit, burst | errors, commits, samples,
# cells, rho_min_q16: edge values included (over 1.0, zero budget, one-cell layers)
POLICY_VALUES = [
    [0, 1], range(6), [0, 655, 13107, 65536, 70000], [0, 1, 7, 1578], range(3),
    range(8), range(50), range(20000), [1, 72, 2304, 40000], [0, 655, 65536],
]  # fmt: skip


def test_c_policy_equals_the_python_twin(tmp_path: Path) -> None:
    exe = compile_c([HERE / "policy_driver.c", LIB_DIR / "lrt_policy.c"], tmp_path / "policy")
    rng = np.random.default_rng(3)
    cases = []
    for _ in range(4000):
        pick = [int(rng.choice(v)) for v in POLICY_VALUES]
        cases.append((tuple(pick[:5]), tuple(pick[5:])))
    stdin = "".join(" ".join(map(str, p + s)) + "\n" for p, s in cases)
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, check=True)
    got = [tuple(map(int, line.split())) for line in out.stdout.splitlines()]
    want = []
    for pol, (errors, commits, samples, cells, rho) in cases:
        p = Policy(*pol)
        want.append((int(p.due(errors, commits, samples)), p.min_cells(cells, rho)))
    assert got == want
    assert {g[0] for g in got} == {0, 1}  # both answers exercised


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
