"""Physical wear as reported by the firmware's NVM layer (WEAR) against the NVM image's own
wear table, for every scheme that writes weights; the lifetime it projects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.e2e_support import built, trained_model
from lrt import codegen, nvm, pipeline
from lrt.config import BuildConfig
from lrt.data import load_dataset, make_stream
from lrt.emulate import open_device
from lrt.model import Model
from lrt.policy import policy_of, samples_per_commit

pytestmark = pytest.mark.slow
SAMPLES = 200


@pytest.mark.parametrize(
    ("scheme", "overrides"),
    [
        ("sgd", {}),
        ("sgd-batch", {}),
        ("lrt-maxnorm", {"write_policy": "fixed"}),
        ("lrt-maxnorm", {"write_policy": "gated", "gate_errors": 3}),
    ],
    ids=["sgd", "sgd-batch", "lrt-maxnorm-fixed", "lrt-maxnorm-gated"],
)
def test_programs_per_cell_are_the_nvm_wear_table(
    tmp_path: Path, scheme: str, overrides: dict[str, object]
) -> None:
    build = built(scheme, **overrides)
    image = tmp_path / "nvm.img"
    model = Model.load(build / "ir")
    st = make_stream("shift", load_dataset("mnist5k"), SAMPLES, seed=100, segment=50)
    with open_device(build, pipeline.load_build(build)[0], nvm_path=image) as dev:
        dev.train_many(model.quantize_input(st.x), st.y)
        stats, wear = dev.stats(), dev.wear()
        # the image is the device's mapped NVM: read it while the device still runs (its
        # closing BYE persists the biases in one more commit)
        rep = nvm.inspect_image(image)
    assert rep.layout is not None and rep.wear is not None
    slots = rep.layout.n_slots
    layout = codegen.blob_layout(model)
    offsets = [layout.w_offset[i] for i, lay in enumerate(model.layers) if lay.has_weights]
    cells = [lay.n_weights for lay in model.layers if lay.has_weights]
    assert wear.tech == "rram" and wear.max_erases_per_page == 0
    assert (wear.max_blob, wear.max_meta) == (rep.max_blob_writes, rep.max_meta_writes)
    for programs, logical, off, n in zip(wear.layers, stats.layers, offsets, cells, strict=True):
        # the device's figure is the image's wear table, read independently here
        assert programs == rep.max_range(off, n)
        # every logical change is programmed into the commit's slot; round robin spreads
        # them over the slots, so the most-worn copy carries at least its share
        assert programs * slots >= logical.max_writes
        if scheme != "sgd":
            # batched writes come in increasing offsets: one program per commit into a
            # slot at most, plus the factory set (sgd writes the layers last to first, and
            # a write below an earlier one programs its window again: lrt_nvm.h)
            assert programs <= stats.flushes // slots + 2
            assert programs <= wear.max_meta
    assert max(wear.layers) > 0
    # lrt-emulate --nvm-report --build prints the same per-layer figures
    out = subprocess.run(
        [sys.executable, "-c", "from lrt.cli import emulate_main; emulate_main()",
         "--nvm-report", str(image), "--build", str(build)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    names = [lay.name for lay in model.layers if lay.has_weights]
    for name, off, n in zip(names, offsets, cells, strict=True):
        assert f"{name:<12} {nvm.inspect_image(image).max_range(off, n)}" in out


def test_emulate_reports_programs_and_lifetime(tmp_path: Path) -> None:
    # no error gate: the default (with the classifier's RAM residual) may write no weight in
    # 200 samples, and this test needs writes
    build = built("lrt-maxnorm", write_policy="gated", gate_errors=0)
    res = pipeline.emulate(build, samples=SAMPLES, stream="shift", seed=100, progress=False,
                           count_instructions=False)  # fmt: skip
    assert res.max_programs_per_cell == max(lay["max_programs_per_cell"] for lay in res.layers)
    assert 0 < res.max_programs_per_cell <= res.max_programs_meta
    assert res.nvm_tech == "rram" and res.max_erases_per_page == 0
    # lifetime at the board's endurance from the worst unit (the metadata here), and per-sample
    # SGD's on the same memory (one commit per sample)
    assert res.endurance == 1_000_000 and res.sample_rate_hz == 1.0
    years = res.endurance * SAMPLES / res.max_programs_meta / (365.25 * 86400)
    assert res.lifetime_years == pytest.approx(years)
    assert res.sgd_lifetime_years is not None and res.sgd_lifetime_years < res.lifetime_years
    md = res.markdown()
    assert f"| max programs per cell (NVM, physical) | {res.max_programs_per_cell} |" in md
    assert "projected lifetime" in md and "per-sample SGD on the same NVM" in md


def test_a_run_that_programs_nothing_projects_no_lifetime() -> None:
    """A frozen model's only program is the blank store's first commit at boot: no projection."""
    res = pipeline.emulate(built("inference"), samples=50, stream="shift", seed=100,
                           progress=False, count_instructions=False)  # fmt: skip
    assert res.nvm_tech == "rram" and res.max_programs_per_cell == 1
    assert res.programs_in_run == 0 and res.lifetime_years is None
    assert "| not projected: the run programmed no NVM unit |" in res.markdown()


def test_a_worn_store_charges_the_run_only_its_own_programs(tmp_path: Path) -> None:
    """Run twice on one NVM image: the second run's lifetime comes from the increase of the
    most-worn unit, not from the wear the first run left (which would halve it and more)."""
    build = built("lrt-maxnorm", write_policy="gated", gate_errors=0)  # writes in 200 samples
    image = tmp_path / "nvm.img"
    runs = [
        pipeline.emulate(
            build,
            samples=SAMPLES,
            stream="shift",
            seed=100 + i,
            nvm_path=image,
            progress=False,
            count_instructions=False,
        )
        for i in range(2)
    ]
    first, second = runs
    assert first.programs_before_run == 0
    assert first.programs_in_run == max(first.max_programs_per_cell, first.max_programs_meta)
    worst = max(second.max_programs_per_cell, second.max_programs_meta)
    assert first.programs_in_run <= second.programs_before_run < worst
    assert second.programs_in_run == worst - second.programs_before_run > 0
    years = second.endurance * SAMPLES / second.programs_in_run / (365.25 * 86400)
    assert second.lifetime_years == pytest.approx(years)
    assert f"| {second.programs_before_run} / {second.programs_in_run} |" in second.markdown()
    assert "(NVM, physical, since the store was created) |" in second.markdown()


def test_gated_policy_with_a_lifetime_keeps_to_its_budget(tmp_path: Path) -> None:
    """A lifetime target becomes a commit budget: at most one weight commit per
    samples_per_commit samples, so the worst cell lasts n_slots * endurance * spc samples."""
    target = {"lifetime_years": 0.005, "sample_rate_hz": 1000.0}
    build = built("lrt-maxnorm", write_policy="gated", gate_errors=0, **target)
    image = tmp_path / "nvm.img"
    res = pipeline.emulate(build, samples=SAMPLES, stream="shift", seed=100, nvm_path=image,
                           progress=False, count_instructions=False)  # fmt: skip
    rep = nvm.inspect_image(image)
    assert rep.layout is not None
    cfg = BuildConfig(write_policy="gated", gate_errors=0, **target)  # type: ignore[arg-type]
    spc = policy_of(cfg, res.endurance, rep.layout.n_slots).samples_per_commit
    assert spc == samples_per_commit(0.005, 1000.0, res.endurance, rep.layout.n_slots) > 1
    assert 1 <= res.flushes <= SAMPLES // spc
    # the same build without the target flushes every pseudo-batch that changes a cell
    free = pipeline.emulate(built("lrt-maxnorm", write_policy="gated", gate_errors=0),
                            samples=SAMPLES, stream="shift", seed=100, progress=False,
                            count_instructions=False)  # fmt: skip
    assert free.flushes > res.flushes
    assert spc * res.endurance * rep.layout.n_slots / 1000.0 / (365.25 * 86400) >= 0.005


def test_a_budgeted_commit_carries_every_kept_layer() -> None:
    """Under a lifetime budget the convs' short pseudo-batches reach the allowed commits first;
    the dense layers, whose pseudo-batch (300 here) never ends at an allowed commit, are
    written by joining the convs' commits (without that they were never written)."""
    target = {"lifetime_years": 1.75, "sample_rate_hz": 10.0, "batch_dense": 300}
    build = built("lrt-maxnorm", **target)
    res = pipeline.emulate(build, samples=2000, stream="shift", segment=500, seed=100,
                           progress=False, count_instructions=False)  # fmt: skip
    cfg = BuildConfig(scheme="lrt-maxnorm", **target)  # type: ignore[arg-type]
    spc = policy_of(cfg, res.endurance, 4).samples_per_commit
    assert spc == 139  # allowed commits at 139, 278, ...: never at a multiple of 300
    assert 2 <= res.flushes <= 2000 // spc
    written = {row["layer"]: row["max_writes_per_cell"] for row in res.to_dict()["layers"]}
    assert all(written[name] > 0 for name in ("dense1", "dense2")), written


SUB_PAGE_FLASH = """name = "host-subpage-flash"
description = "host build over flash whose pages are larger than the commit window"
[cpu]
core = "host"
clock_hz = 1000000
cflags = []
[budget]
ram = 131072
flash = 1048576
[nvm]
technology = "flash"
size = 0x800000
page_size = 16384
prog_size = 4
erase_value = 255
endurance = 10000
driver = "host"
[io]
channel = "stdio"
"""


@pytest.mark.parametrize("scheme", ["sgd-batch", "lrt-maxnorm"])
def test_joined_commits_write_forwards(tmp_path: Path, scheme: str) -> None:
    """A dense pseudo-batch (7) that ends while the convs' (10) runs: the layers that join a
    commit are written in blob order, so a flash window below a page (which refuses a backward
    write) takes every commit, and no unit is programmed twice in one (its programs stay
    within the metadata's, programmed once per commit)."""
    board = tmp_path / "host-subpage-flash.toml"
    board.write_text(SUB_PAGE_FLASH)
    build = tmp_path / scheme
    pipeline.build(str(board), build, scheme=scheme, ir_dir=trained_model(), progress=False,
                   gate_errors=0, lifetime_years=0.003, sample_rate_hz=10.0, batch_conv=10,
                   batch_dense=7)  # fmt: skip
    res = pipeline.emulate(build, samples=1500, stream="shift", segment=500, seed=100,
                           progress=False, count_instructions=False)  # fmt: skip
    assert res.flushes >= 20
    d = res.to_dict()
    assert d["max_programs_per_cell"] <= d["max_programs_meta"], d


def test_gated_policy_without_gates_is_the_fixed_schedule() -> None:
    """gate_errors 0, gate_cells 0, no lifetime and no step bound: the same flushes, weights and
    wear as the fixed policy. The default's step bound (one pseudo-batch per surplus error)
    changes the writes of a layer the cell gate deferred, so the two differ with it."""
    runs = [
        pipeline.emulate(
            built("lrt-maxnorm", **kw),
            samples=SAMPLES,
            stream="shift",
            seed=100,
            progress=False,
            count_instructions=False,
        )
        for kw in ({"write_policy": "fixed"}, {"write_policy": "gated", "gate_errors": 0},
                   {"write_policy": "gated", "gate_errors": 0, "lrt_step_evidence": 0})
    ]  # fmt: skip
    fixed, bounded, gated = runs
    assert bounded.layers != fixed.layers
    assert fixed.flushes == gated.flushes > 0
    assert fixed.layers == gated.layers and fixed.online_accuracy == gated.online_accuracy
    assert fixed.max_programs_meta == gated.max_programs_meta


def test_classifier_residual_learns_in_ram_and_programs_nothing(tmp_path: Path) -> None:
    """With the write gate shut, the classifier's RAM residual alone changes what the device
    predicts, and its NVM is programmed exactly as often as without the residual."""
    st = make_stream("control", load_dataset("mnist5k"), SAMPLES, seed=100)
    runs = []
    for head_lr in (0.1, 0.0):
        build = built("lrt-maxnorm", gate_errors=65535, head_lr=head_lr)
        report, model = pipeline.load_build(build)
        assert report["config"]["head_lr"] == head_lr
        with open_device(build, report, nvm_path=tmp_path / f"nvm-{head_lr}.img") as dev:
            logits, _ = dev.train_many(model.quantize_input(st.x), st.y)
            runs.append((logits, dev.stats(), dev.wear()))
    (head_logits, head_stats, head_wear), (plain_logits, plain_stats, plain_wear) = runs
    assert head_stats.flushes == plain_stats.flushes == 0
    assert head_wear == plain_wear
    # the first sample sees a zero residual; later ones see what it learned
    np.testing.assert_array_equal(head_logits[0], plain_logits[0])
    assert not np.array_equal(head_logits, plain_logits)
