"""lrt-experiment --set / --sweep: option combinations, cell keys and the sweep report."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrt.errors import UserError
from lrt.experiment import Cell, model_options, parse_options
from lrt.sweep_report import group_rows, heat_maps, markdown_sweep


def test_sweeps_are_a_cartesian_product_with_fixed_settings() -> None:
    combos = parse_options(["epochs=0"], ["rank=1,4", "weight_bits=2,8"])
    assert len(combos) == 4
    assert (("epochs", 0), ("rank", 4), ("weight_bits", 2)) in combos
    assert all(dict(c)["epochs"] == 0 for c in combos)
    assert parse_options([], []) == [()]


@pytest.mark.parametrize(
    ("sets", "sweeps", "needle"),
    [
        ([], ["rank"], "expected KEY=V1,V2"),
        ([], ["rank=1", "rank=2"], "given twice"),
        (["rank=1"], ["rank=2,3"], "given twice"),
        ([], ["rank=x"], "needs an integer"),
        (["nope=1"], [], "unknown field"),
        (["seed=3"], [], "use --seeds"),
        ([], ["scheme=sgd,lrt"], "use --schemes"),
        (["preset=paper"], [], "use --preset"),
        (["train_layers=dense_1"], [], "not supported"),
    ],
)
def test_bad_options(sets: list[str], sweeps: list[str], needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        parse_options(sets, sweeps)


def test_options_name_the_cell_and_the_model() -> None:
    opts = (("epochs", 0), ("rank", 2))
    cell = Cell("control", "lrt", 3, 100, 100, "mcu", "host", opts)
    assert cell.key == "control__lrt__s3__epochs=0__rank=2"
    assert model_options(cell) == {"epochs": 0}  # rank only changes the firmware


def _result(scheme: str, seed: int, rank: int, bits: int, acc: float, writes: int) -> dict:
    cell = Cell(
        "control", scheme, seed, 100, 100, "mcu", "host", (("rank", rank), ("weight_bits", bits))
    )
    return {
        "cell": {**cell.__dict__, "options": [list(o) for o in cell.options]},
        "online_accuracy_last_n": acc,
        "online_accuracy_ema": acc,
        "last_n": 50,
        "max_writes_per_cell": writes,
    }


def test_sweep_rows_average_seeds_and_keep_the_worst_writes(tmp_path: Path) -> None:
    results = [
        _result("lrt", 0, 1, 2, 0.5, 10),
        _result("lrt", 1, 1, 2, 0.7, 30),
        _result("lrt", 0, 4, 8, 0.9, 5),
        _result("lrt", 0, 1, 8, 0.8, 5),
        _result("lrt", 0, 4, 2, 0.6, 5),
    ]
    rows = group_rows(results)
    first = next(r for r in rows if r["options"] == {"rank": 1, "weight_bits": 2})
    assert first["seeds"] == 2 and first["max_writes"] == 30
    assert first["acc_last"] == pytest.approx(0.6) and first["acc_last_std"] == pytest.approx(0.1)
    table = markdown_sweep(rows)
    assert "| rank | weight_bits |" in table and "60.0% ± 10.0 (N=50)" in table
    names = heat_maps(tmp_path, rows)
    assert names == ["heatmap_control_lrt_rank_x_weight_bits.png"]
    assert (tmp_path / names[0]).stat().st_size > 1000


def test_settings_shared_by_every_row_are_listed_once() -> None:
    rows = group_rows([_result("lrt", 0, 1, 8, 0.5, 1), _result("lrt", 0, 2, 8, 0.6, 1)])
    table = markdown_sweep(rows)
    assert table.startswith("Every cell: `weight_bits=8`.")
    assert "| rank |" in table and "weight_bits |" not in table


def test_sweep_rows_order_numeric_settings_by_value() -> None:
    rows = group_rows([_result("lrt", 0, r, 8, 0.5, 1) for r in (32, 8, 2, 16)])
    assert [r["options"]["rank"] for r in rows] == [2, 8, 16, 32]
