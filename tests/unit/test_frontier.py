"""The frontier's LRT-vs-SGD verdict on hand-made points."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from lrt.errors import UserError
from lrt.frontier import (
    best_point_within,
    frontier_points,
    lrt_vs_sgd,
    paired_difference,
    verdict_table,
)


def point(scheme: str, acc: float, programs: int, env: str = "shift") -> dict[str, Any]:
    return {"env": env, "scheme": scheme, "knob": "-", "seeds": 3, "acc_ema": acc,
            "max_programs": programs, "max_writes": programs}  # fmt: skip


def test_best_point_within_is_the_envelope() -> None:
    pts = [point("sgd", 0.80, 10), point("sgd", 0.90, 100), point("sgd", 0.85, 1000)]

    def best(programs: int) -> float | None:
        p = best_point_within(pts, programs)
        return None if p is None else p["acc_ema"]

    assert best(5) is None
    assert best(10) == 0.80
    assert best(999) == 0.90 and best(5000) == 0.90


def test_verdict_compares_only_levels_where_both_have_a_point() -> None:
    # LRT's cheapest point (50 programs) is better than every SGD point up to 1000 programs;
    # SGD's 10-program point has no LRT point within it, so that level is not compared
    pts = [point("sgd", 0.80, 10), point("sgd", 0.88, 1000), point("lrt-maxnorm", 0.89, 50)]
    (v,) = lrt_vs_sgd(pts)
    assert v["holds"] and v["levels"] == 2 and v["worst"] == (1000, 0.89, 0.88)
    # one SGD point within LRT's budget beats it: the verdict fails there
    (v,) = lrt_vs_sgd([*pts, point("sgd", 0.90, 40)])
    assert not v["holds"] and v["worst"] == (50, 0.89, 0.90)
    assert "| shift | 2 | no | 50: 89.00% vs 90.00% (-1.00) | - |" in verdict_table([v])
    # a verdict lost by 0.01 points shows as such, not as a tie
    (v,) = lrt_vs_sgd([point("sgd", 0.9243, 3), point("lrt-maxnorm", 0.9242, 1)])
    assert "| shift | 1 | no | 3: 92.42% vs 92.43% (-0.01) | - |" in verdict_table([v])


def _cell(scheme: str, seed: int, acc: float, programs: int, **options: Any) -> dict[str, Any]:
    return {"cell": {"env": "control", "scheme": scheme, "seed": seed,
                     "options": list(options.items())},
            "online_accuracy_ema": acc, "max_programs_per_cell": programs,
            "max_writes_per_cell": programs}  # fmt: skip


def test_the_deciding_margin_is_paired_per_seed() -> None:
    # LRT loses on the mean by 0.07 points: seed 2 carries SGD, the others favour LRT; the
    # paired difference is computed on the two points that decide the worst level, not on
    # the SGD point with more programs (lr 0.01, 40 programs, far behind)
    lrt = [0.920, 0.930, 0.900, 0.925]
    sgd = [0.918, 0.928, 0.9084, 0.9234]
    results = [_cell("lrt-maxnorm", k, a, 1, gate_errors=32) for k, a in enumerate(lrt)]
    results += [_cell("sgd", k, a, 3, lr=0.001) for k, a in enumerate(sgd)]
    results += [_cell("sgd", k, 0.80, 40, lr=0.01) for k in range(4)]
    (v,) = lrt_vs_sgd(frontier_points(results))
    assert not v["holds"] and v["worst"][0] == 3
    mean, se, n = v["paired"]
    diffs = [a - b for a, b in zip(lrt, sgd, strict=True)]
    assert n == 4 and abs(mean - sum(diffs) / 4) < 1e-12
    assert abs(mean - (v["worst"][1] - v["worst"][2])) < 1e-12  # same seeds: mean of diffs
    assert se == pytest.approx(statistics.stdev(diffs) / 2)  # sample stdev / sqrt(4)
    assert f"| {100 * mean:+.2f} ± {100 * se:.2f} (4 seeds) |" in verdict_table([v])
    # fewer than two shared seeds: no paired figure
    assert paired_difference({"per_seed": {0: 0.9}}, {"per_seed": {0: 0.8, 1: 0.7}}) is None


def test_environments_without_both_schemes_have_no_verdict() -> None:
    pts = [point("sgd", 0.8, 10, "control"), point("lrt", 0.9, 5, "shift")]
    assert lrt_vs_sgd(pts) == []


def test_a_repeated_seed_or_a_cell_without_programs_is_refused() -> None:
    """A merged input with one stream twice would weigh it double in the mean (and keep one
    of the two in the pairing); a cell without physical programs would read as no wear and
    win every write level."""
    cells = [_cell("sgd", 0, 0.9, 3, lr=0.001), _cell("sgd", 0, 0.8, 3, lr=0.001)]
    with pytest.raises(UserError, match="seed appears twice"):
        frontier_points(cells)
    bare = _cell("lrt-maxnorm", 1, 0.9, 1, gate_errors=32)
    del bare["max_programs_per_cell"]
    with pytest.raises(UserError, match="without max_programs_per_cell"):
        frontier_points([bare])
