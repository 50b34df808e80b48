"""The wear-accuracy frontier of an experiment: per environment, end-EMA accuracy against the
worst cell's physical NVM programs, one curve per scheme across its knob (sgd: lr; the
batched schemes: the write policy's knob), as a PNG and a markdown table."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lrt.config import LRT_SCHEMES
from lrt.errors import UserError
from lrt.grid_report import SCHEME_ORDER

Key = tuple[str, str, tuple[tuple[str, Any], ...]]


def frontier_points(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per (environment, scheme, options): accuracy is the mean over seeds, programs
    the worst case over seeds; `knob` names what varies between a scheme's points; `per_seed`
    the end-EMA accuracy of each seed (for paired comparisons)."""
    groups: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["cell"]["scheme"] == "inference":
            continue  # no training, no writes: not a trade-off
        opts = tuple((k, v) for k, v in r["cell"].get("options", ()))
        groups[(r["cell"]["env"], r["cell"]["scheme"], opts)].append(r)
    varying: dict[tuple[str, str], set[str]] = defaultdict(set)
    seen: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for env, scheme, opts in groups:
        for k, v in opts:
            seen[(env, scheme)][k].add(repr(v))
    for env, scheme, opts in groups:  # a key some points lack varies too (pooled knobs)
        for k in seen[(env, scheme)].keys() - {k for k, _ in opts}:
            seen[(env, scheme)][k].add("absent")
    for es, values in seen.items():
        varying[es] = {k for k, vs in values.items() if len(vs) > 1}
    points = []
    for (env, scheme, opts), rs in groups.items():
        seeds = [int(r["cell"]["seed"]) for r in rs]
        if len(set(seeds)) < len(seeds):  # one stream would count twice in the mean
            raise UserError(f"{env}/{scheme} {opts}: a stream seed appears twice: {seeds}")
        if any("max_programs_per_cell" not in r for r in rs):  # it would read as no wear
            raise UserError(f"{env}/{scheme} {opts}: a cell without max_programs_per_cell "
                            "(run before physical wear was counted: run it again)")
        knob = ", ".join(f"{k}={v}" for k, v in opts if k in varying[(env, scheme)])
        points.append(
            {
                "env": env,
                "scheme": scheme,
                "knob": knob or "-",
                "seeds": len(rs),
                "acc_ema": sum(float(r["online_accuracy_ema"]) for r in rs) / len(rs),
                "max_programs": max(int(r["max_programs_per_cell"]) for r in rs),
                "max_writes": max(int(r["max_writes_per_cell"]) for r in rs),
                "per_seed": {int(r["cell"]["seed"]): float(r["online_accuracy_ema"]) for r in rs},
            }
        )
    order = {s: i for i, s in enumerate(SCHEME_ORDER)}
    points.sort(key=lambda p: (str(p["env"]), order.get(str(p["scheme"]), 99), p["max_programs"]))
    return points


def frontier_table(points: list[dict[str, Any]]) -> str:
    head = ["environment", "scheme", "knob", "seeds", "acc EMA (mean)", "max programs/cell",
            "max writes/cell"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        lines.append(
            f"| {p['env']} | {p['scheme']} | {p['knob']} | {p['seeds']} | "
            f"{100 * p['acc_ema']:.1f}% | {p['max_programs']} | {p['max_writes']} |"
        )
    return "\n".join(lines) + "\n"


def plot_frontier(out: Path, env: str, points: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    by_scheme: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        if p["env"] == env:
            by_scheme[p["scheme"]].append(p)
    for scheme, ps in by_scheme.items():
        ps = sorted(ps, key=lambda p: p["max_programs"])
        xs = [max(p["max_programs"], 0.5) for p in ps]  # zero wear drawn at 0.5 on the log axis
        ax.plot(xs, [100 * p["acc_ema"] for p in ps], "o-", label=scheme)
        for x, p in zip(xs, ps, strict=True):
            if p["knob"] != "-":
                ax.annotate(p["knob"].split("=", 1)[-1], (x, 100 * p["acc_ema"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("max programs per cell (NVM, physical)")
    ax.set_ylabel("online accuracy, EMA 0.999, end (%)")
    ax.set_title(f"{env}: wear-accuracy frontier")
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = f"frontier_{env}.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def best_point_within(points: list[dict[str, Any]], programs: int) -> dict[str, Any] | None:
    """The most accurate of the points that wear no cell more than `programs` times."""
    within = [p for p in points if p["max_programs"] <= programs]
    return max(within, key=lambda p: float(p["acc_ema"])) if within else None


def paired_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float, int] | None:
    """Mean and standard error of a's accuracy minus b's over the seeds both were run on, and
    that number of seeds (None below two): how far a margin stands out of the seed noise."""
    sa, sb = a.get("per_seed", {}), b.get("per_seed", {})
    diffs = [sa[k] - sb[k] for k in sorted(set(sa) & set(sb))]
    if len(diffs) < 2:
        return None
    return statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs)), len(diffs)


def lrt_vs_sgd(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per environment: at every write level (any point's programs) where both an LRT scheme
    and per-sample SGD have a point within it, the best LRT accuracy against the best SGD
    accuracy. `holds` is True when LRT is at least as accurate at every such level; `worst`
    is (level, LRT accuracy, SGD accuracy) where LRT's margin is smallest, `paired` the paired
    difference of the two points that decide it (paired_difference)."""
    verdicts = []
    for env in sorted({str(p["env"]) for p in points}):
        lrt = [p for p in points if p["env"] == env and p["scheme"] in LRT_SCHEMES]
        sgd = [p for p in points if p["env"] == env and p["scheme"] == "sgd"]
        if not lrt or not sgd:
            continue
        levels = sorted({int(p["max_programs"]) for p in lrt + sgd})
        compared = []
        for w in levels:
            a, b = best_point_within(lrt, w), best_point_within(sgd, w)
            if a is not None and b is not None:
                compared.append((w, a, b))
        worst = min(compared, key=lambda c: c[1]["acc_ema"] - c[2]["acc_ema"]) if compared else None
        verdicts.append(
            {
                "env": env,
                "levels": len(compared),
                "holds": all(a["acc_ema"] >= b["acc_ema"] for _, a, b in compared),
                "worst": (worst[0], worst[1]["acc_ema"], worst[2]["acc_ema"]) if worst else None,
                "paired": paired_difference(worst[1], worst[2]) if worst else None,
            }
        )
    return verdicts


def verdict_table(verdicts: list[dict[str, Any]]) -> str:
    lines = [
        "| environment | write levels compared | best LRT >= best SGD at every level | "
        "smallest margin (programs: LRT vs SGD) | that margin paired per seed |",
        "|---|---|---|---|---|",
    ]
    for v in verdicts:
        w = v["worst"]
        # two decimals and the difference: a verdict can turn on less than 0.05 points
        margin = (
            f"{w[0]}: {100 * w[1]:.2f}% vs {100 * w[2]:.2f}% ({100 * (w[1] - w[2]):+.2f})"
            if w
            else "-"
        )
        pd = v.get("paired")
        paired = f"{100 * pd[0]:+.2f} ± {100 * pd[1]:.2f} ({pd[2]} seeds)" if pd else "-"
        lines.append(f"| {v['env']} | {v['levels']} | {'yes' if v['holds'] else 'no'} | "
                     f"{margin} | {paired} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def frontier_section(plots: Path, results: list[dict[str, Any]]) -> list[str]:
    points = frontier_points(results)
    if not points:
        return []
    md = ["## Wear-accuracy frontier", "", frontier_table(points)]
    verdicts = lrt_vs_sgd(points)
    if verdicts:
        md += [
            "At each write level W (the programs of any point), the best accuracy among the "
            "points that program no cell more than W times:",
            "",
            verdict_table(verdicts),
        ]
    for env in sorted({p["env"] for p in points}):
        name = plot_frontier(plots, env, points)
        md.append(f"![{name}](plots/{name})")
    md.append("")
    return md
