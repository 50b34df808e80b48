"""lrt-experiment: grid cells, resumability, report, local and Dask executors agree."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.e2e_support import trained_model
from lrt.experiment import Cell, run_grid

pytestmark = pytest.mark.slow
SAMPLES = 150


def _cells(envs: tuple[str, ...], schemes: tuple[str, ...]) -> list[Cell]:
    return [Cell(e, s, 0, SAMPLES, 50, "mcu", "host") for e in envs for s in schemes]


def test_grid_runs_resumes_and_reports(tmp_path: Path) -> None:
    cells = _cells(("control", "digital", "analog"), ("inference", "sgd", "lrt-maxnorm"))
    res = run_grid(tmp_path, cells, jobs=2, progress=False, trained=trained_model())
    assert len(res) == 9
    files = sorted((tmp_path / "cells").glob("*.json"))
    assert len(files) == 9
    stamps = {f: f.stat().st_mtime_ns for f in files}
    run_grid(tmp_path, cells, jobs=2, progress=False, trained=trained_model())
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # nothing rerun
    md = (tmp_path / "REPORT.md").read_text()
    assert "| control |" in md and "| digital |" in md
    for env in ("control", "digital", "analog"):
        for kind in ("accuracy", "writes", "layers"):
            assert (tmp_path / "plots" / f"{kind}_{env}.png").stat().st_size > 1000
    by = {(r["cell"]["env"], r["cell"]["scheme"]): r for r in res}
    # drift reaches the stored weights: inference predictions change under digital drift
    assert by[("digital", "inference")]["online_accuracy"] != by[("control", "inference")][
        "online_accuracy"
    ] or by[("analog", "inference")]["online_accuracy"] != by[("control", "inference")][
        "online_accuracy"
    ]
    assert by[("control", "sgd")]["paper_sgd_writes"] >= by[("control", "sgd")][
        "max_writes_per_cell"
    ]
    assert by[("control", "lrt-maxnorm")]["writes_curve"], "writes sampled during the run"


def test_dask_executor_gives_the_same_cells(tmp_path: Path) -> None:
    distributed = pytest.importorskip("dask.distributed")
    cells = _cells(("shift",), ("bias", "lrt"))
    local = run_grid(tmp_path / "local", cells, jobs=1, progress=False, trained=trained_model())
    # the same firmware for both executors: builds happen before either runs a cell (the
    # grid test above builds through run_grid), so the dask grid starts from the local ones
    shutil.copytree(tmp_path / "local" / "builds", tmp_path / "dask" / "builds")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        remote = run_grid(
            tmp_path / "dask",
            cells,
            executor="dask",
            scheduler=cluster.scheduler_address,
            progress=False,
            trained=trained_model(),
        )
    for a, b in zip(local, remote, strict=True):
        assert a["cell"] == b["cell"]
        for key in ("online_accuracy", "max_writes_per_cell", "flushes", "layers"):
            assert a[key] == b[key], key
    assert json.loads((tmp_path / "dask" / "cells" / f"{cells[0].key}.json").read_text())


def test_sweep_builds_one_firmware_per_value_and_reports_a_heat_map(tmp_path: Path) -> None:
    from lrt.experiment import parse_options

    combos = parse_options(["batch_conv=5"], ["rank=1,3", "weight_bits=4,8"])
    cells = [
        Cell("control", "lrt", 0, SAMPLES, 50, "mcu", "host", opts, last_n=100)
        for opts in combos
    ]
    res = run_grid(tmp_path, cells, jobs=2, progress=False, trained=trained_model())
    assert len(res) == 4
    for r in res:  # each cell ran the firmware its options describe
        opts = dict(r["cell"]["options"])
        name = "mcu-lrt-s0-" + "-".join(f"{k}={v}" for k, v in sorted(opts.items()))
        build = json.loads((tmp_path / "builds" / name / "report.json").read_text())
        assert build["config"]["rank"] == opts["rank"]
        assert build["config"]["weight_bits"] == opts["weight_bits"]
        assert build["config"]["batch_conv"] == 5
        assert r["last_n"] == 100
    md, frontier = (tmp_path / "REPORT.md").read_text().split("## Wear-accuracy frontier")
    assert "| rank | weight_bits |" in md and md.count("| control | lrt |") == 4
    assert frontier.count("| control | lrt | rank=") == 4  # one point per option set
    assert (tmp_path / "plots" / "heatmap_control_lrt_rank_x_weight_bits.png").is_file()


def test_frontier_of_a_tiny_sweep(tmp_path: Path) -> None:
    """--knob gives each scheme its own axis; the report draws one point per knob value."""
    from lrt.experiment import parse_knobs, parse_options

    schemes = ["sgd", "sgd-batch", "lrt-maxnorm"]
    combos = parse_options(["write_policy=gated"], [])
    knobs = parse_knobs(
        ["sgd:lr=0.01,0.05", "sgd-batch:gate_errors=1,4", "lrt-maxnorm:gate_errors=1,4"],
        schemes,
        {"write_policy"},
    )
    cells = [
        Cell("shift", s, 0, 60, 30, "mcu", "host", tuple(sorted(combos[0] + own)), last_n=60)
        for s in schemes
        for own in knobs[s]
    ]
    res = run_grid(tmp_path, cells, jobs=2, progress=False, trained=trained_model())
    assert len(res) == 6
    png = tmp_path / "plots" / "frontier_shift.png"
    assert png.stat().st_size > 1000
    md = (tmp_path / "REPORT.md").read_text()
    table = md[md.index("## Wear-accuracy frontier") :]
    for r in res:
        scheme, opts = r["cell"]["scheme"], dict(r["cell"]["options"])
        knob = "lr" if scheme == "sgd" else "gate_errors"
        row = (
            f"| shift | {scheme} | {knob}={opts[knob]} | 1 | "
            f"{100 * r['online_accuracy_ema']:.1f}% | {r['max_programs_per_cell']} | "
            f"{r['max_writes_per_cell']} |"
        )
        assert row in table, row
    assert sum(table.count(f"| shift | {s} |") for s in schemes) == 6
    # the LRT-vs-SGD verdict: sgd's two points and LRT's two give four write levels at most
    assert re.search(r"\| shift \| [1-4] \| (yes|no) \| \d+: ", table), table


def test_rerun_with_other_settings_recomputes_the_cell(tmp_path: Path) -> None:
    cell = Cell("control", "inference", 0, 20, 5, "mcu", "host", last_n=20)
    run_grid(tmp_path, [cell], progress=False, trained=trained_model(), report=False)
    path = tmp_path / "cells" / f"{cell.key}.json"
    more = Cell("control", "inference", 0, 40, 10, "mcu", "host", last_n=40)
    assert more.key == cell.key  # same file: its stored settings decide
    (res,) = run_grid(tmp_path, [more], progress=False, trained=trained_model(), report=False)
    assert res["samples"] == 40 and json.loads(path.read_text())["cell"]["samples"] == 40


def test_quiet_grid_prints_nothing(tmp_path: Path) -> None:
    args = [
        str(Path(sys.executable).parent / "lrt-experiment"), "--model-dir", str(trained_model()),
        "--samples", "60", "--segment", "30", "--envs", "control", "--seeds", "0",
        "--schemes", "inference", "--jobs", "1",
    ]
    quiet = subprocess.run([*args, "--out", str(tmp_path / "q"), "--quiet"],
                           capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert (tmp_path / "q" / "REPORT.md").is_file()
    loud = subprocess.run([*args, "--out", str(tmp_path / "l")],
                          capture_output=True, text=True, timeout=600)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert f"report: {tmp_path / 'l' / 'REPORT.md'}" in loud.stdout


def test_report_only_pools_two_knobs_of_one_scheme(tmp_path: Path) -> None:
    """Two invocations into one directory (the error gate, then the lifetime budget of one
    scheme: a union of two axes, not their product), pooled by --report-only into one
    frontier; cells of another stream length are refused, not mixed in."""
    from lrt.cli import experiment_main
    from lrt.errors import UserError
    from lrt.experiment import parser, run_from_args

    out = tmp_path / "pool"
    common = ["--out", str(out), "--model-dir", str(trained_model()), "--samples", "60",
              "--segment", "30", "--envs", "shift", "--seeds", "0", "--jobs", "2", "--quiet"]
    assert experiment_main([*common, "--schemes", "sgd,lrt-maxnorm", "--knob", "sgd:lr=0.01",
                            "--knob", "lrt-maxnorm:gate_errors=1,4"]) == 0
    assert experiment_main([*common, "--schemes", "lrt-maxnorm", "--set", "sample_rate_hz=10",
                            "--knob", "lrt-maxnorm:lifetime_years=0.001"]) == 0
    second = (out / "REPORT.md").read_text()
    assert "gate_errors=1" not in second  # an invocation reports its own cells
    assert experiment_main(["--out", str(out), "--report-only", "--quiet"]) == 0
    table = (out / "REPORT.md").read_text().split("## Wear-accuracy frontier")[1]
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == 4
    for path in cells:
        r = json.loads(path.read_text())
        scheme, opts = r["cell"]["scheme"], dict(r["cell"]["options"])
        # the knob names what the scheme's points do not share: here every option but the
        # write policy's defaults (sgd has one point: nothing varies)
        shown = ", ".join(f"{k}={v}" for k, v in sorted(opts.items()) if scheme != "sgd")
        row = f"| shift | {scheme} | {shown or '-'} | 1 | "
        assert row in table, (row, table)
    assert re.search(r"\| shift \| [1-4] \| (yes|no) \|", table), table

    # the same directory with a longer run in it: no frontier across stream lengths
    longer = [*common[:5], "80", *common[6:], "--schemes", "inference"]
    assert experiment_main(longer) == 0
    args = parser().parse_args(["--out", str(out), "--report-only"])
    with pytest.raises(UserError, match=r"differ in samples \(60, 80\)"):
        run_from_args(args)
    (out / "cells" / "stray.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"stray\.json is not a cell result"):
        run_from_args(args)
