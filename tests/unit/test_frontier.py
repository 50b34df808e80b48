"""The frontier's LRT-vs-SGD verdict on hand-made points."""

from __future__ import annotations

from typing import Any

from lrt.frontier import best_within, lrt_vs_sgd, verdict_table


def point(scheme: str, acc: float, programs: int, env: str = "shift") -> dict[str, Any]:
    return {"env": env, "scheme": scheme, "knob": "-", "seeds": 3, "acc_ema": acc,
            "max_programs": programs, "max_writes": programs}  # fmt: skip


def test_best_within_is_the_envelope() -> None:
    pts = [point("sgd", 0.80, 10), point("sgd", 0.90, 100), point("sgd", 0.85, 1000)]
    assert best_within(pts, 5) is None
    assert best_within(pts, 10) == 0.80
    assert best_within(pts, 999) == 0.90 and best_within(pts, 5000) == 0.90


def test_verdict_compares_only_levels_where_both_have_a_point() -> None:
    # LRT's cheapest point (50 programs) is better than every SGD point up to 1000 programs;
    # SGD's 10-program point has no LRT point within it, so that level is not compared
    pts = [point("sgd", 0.80, 10), point("sgd", 0.88, 1000), point("lrt-maxnorm", 0.89, 50)]
    (v,) = lrt_vs_sgd(pts)
    assert v["holds"] and v["levels"] == 2 and v["worst"] == (1000, 0.89, 0.88)
    # one SGD point within LRT's budget beats it: the verdict fails there
    (v,) = lrt_vs_sgd([*pts, point("sgd", 0.90, 40)])
    assert not v["holds"] and v["worst"] == (50, 0.89, 0.90)
    assert "| shift | 2 | no | 50: 89.00% vs 90.00% (-1.00) |" in verdict_table([v])
    # a verdict lost by 0.01 points shows as such, not as a tie
    (v,) = lrt_vs_sgd([point("sgd", 0.9243, 3), point("lrt-maxnorm", 0.9242, 1)])
    assert "| shift | 1 | no | 3: 92.42% vs 92.43% (-0.01) |" in verdict_table([v])


def test_environments_without_both_schemes_have_no_verdict() -> None:
    pts = [point("sgd", 0.8, 10, "control"), point("lrt", 0.9, 5, "shift")]
    assert lrt_vs_sgd(pts) == []
