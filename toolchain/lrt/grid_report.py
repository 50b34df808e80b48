"""Markdown table + PNG plots of an experiment grid (see experiment.py)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lrt.config import SCHEMES

SCHEME_ORDER = SCHEMES  # tables and plots list the schemes in the config's order


def _by_env(results: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    table: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        table[r["cell"]["env"]][r["cell"]["scheme"]].append(r)
    return table


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def _max(rows: list[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return max(vals) if vals else float("nan")


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per environment with accuracy and write figures per scheme and the ratios."""
    rows = []
    for env, schemes in sorted(_by_env(results).items()):
        row: dict[str, Any] = {"env": env}
        for s, rs in schemes.items():
            row[f"{s}:acc_ema"] = _mean(rs, "online_accuracy_ema")
            row[f"{s}:acc"] = _mean(rs, "online_accuracy")
            row[f"{s}:max_writes"] = _max(rs, "max_writes_per_cell")
            row[f"{s}:max_programs"] = _max(rs, "max_programs_per_cell")
        sgd = schemes.get("sgd", [])
        lrt = schemes.get("lrt-maxnorm") or schemes.get("lrt") or []
        if sgd and lrt:
            lw = max(_max(lrt, "max_writes_per_cell"), 1.0)
            row["paper_ratio"] = _max(sgd, "paper_sgd_writes") / lw
            row["honest_ratio"] = _max(sgd, "max_writes_per_cell") / lw
            row["programs_ratio"] = _max(sgd, "max_programs_per_cell") / max(
                _max(lrt, "max_programs_per_cell"), 1.0
            )
        rows.append(row)
    return rows


def markdown_table(results: list[dict[str, Any]]) -> str:
    rows = summary_rows(results)
    schemes = [s for s in SCHEME_ORDER if any(f"{s}:acc_ema" in r for r in rows)]
    head = "| environment | " + " | ".join(f"{s} acc" for s in schemes)
    head += " | " + " | ".join(f"{s} max programs" for s in schemes if s != "inference")
    head += " | " + " | ".join(f"{s} max writes" for s in schemes if s != "inference")
    head += " | SGD / LRT programs | SGD(paper) / LRT writes | SGD(logical) / LRT writes |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r["env"]]
        cells += [f"{100 * r.get(f'{s}:acc_ema', float('nan')):.1f}%" for s in schemes]
        for what in ("max_programs", "max_writes"):
            cells += [
                f"{r.get(f'{s}:{what}', float('nan')):.0f}" for s in schemes if s != "inference"
            ]
        cells.append(f"{r['programs_ratio']:.1f}x" if "programs_ratio" in r else "-")
        cells.append(f"{r['paper_ratio']:.0f}x" if "paper_ratio" in r else "-")
        cells.append(f"{r['honest_ratio']:.1f}x" if "honest_ratio" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _figure() -> tuple[Any, Any]:
    return plt.subplots(figsize=(6, 3.5))


def _save(fig: Any, ax: Any, out: Path, name: str, title: str, ylabel: str, log: bool) -> str:
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:  # a grid of inference only draws no write curve
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _plot_env(out: Path, env: str, schemes: dict[str, list[dict[str, Any]]]) -> list[str]:
    firsts = [(s, schemes[s][0]) for s in SCHEME_ORDER if schemes.get(s)]

    fig, ax = _figure()
    for s, r in firsts:
        ema = r.get("ema") or []
        if ema:
            step = max(r["samples"] // len(ema), 1)
            ax.plot([i * step for i in range(len(ema))], [100 * v for v in ema], label=s)
    ax.set_xlabel("online sample")
    acc = _save(
        fig,
        ax,
        out,
        f"accuracy_{env}.png",
        f"{env}: online accuracy",
        "online accuracy, EMA 0.999 (%)",
        log=False,
    )

    fig, ax = _figure()
    for s, r in firsts:
        curve = r.get("writes_curve") or []
        if curve:
            xs = [c[0] for c in curve]
            ax.plot(xs, [max(c[1], 0.5) for c in curve], label=s)
            if s == "sgd" and len(curve[0]) > 2:
                ax.plot(xs, [max(c[2], 0.5) for c in curve], "--", label="sgd (paper per-pixel)")
    ax.set_xlabel("online sample")
    writes = _save(
        fig,
        ax,
        out,
        f"writes_{env}.png",
        f"{env}: worst-case writes per cell",
        "max writes per cell",
        log=True,
    )

    fig, ax = _figure()
    trained = [(s, r) for s, r in firsts if s != "inference"]
    width = 0.8 / max(len(trained), 1)
    for k, (s, r) in enumerate(trained):
        layers = r["layers"]
        xs = [i + k * width for i in range(len(layers))]
        ax.bar(xs, [max(lay["max_writes_per_cell"], 0.5) for lay in layers], width, label=s)
        ax.set_xticks(
            [i + 0.4 for i in range(len(layers))], [lay["layer"] for lay in layers], fontsize=7
        )
    per_layer = _save(
        fig,
        ax,
        out,
        f"layers_{env}.png",
        f"{env}: writes per layer",
        "max writes per cell",
        log=True,
    )
    return [acc, writes, per_layer]


def write_grid_report(out: Path, results: list[dict[str, Any]]) -> Path:
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    if any(r["cell"].get("options") for r in results):
        # a sweep: averaging over option values would mix different configurations
        from lrt.frontier import frontier_section
        from lrt.sweep_report import sweep_section

        path = out / "REPORT.md"
        md = ["# Experiment sweep", "", *sweep_section(plots, results)]
        path.write_text("\n".join([*md, *frontier_section(plots, results)]))
        return path
    md = ["# Experiment grid", "", markdown_table(results)]
    for env, schemes in sorted(_by_env(results).items()):
        md.append(f"## {env}")
        md.append("")
        for name in _plot_env(plots, env, schemes):
            md.append(f"![{name}](plots/{name})")
        md.append("")
    from lrt.frontier import frontier_section

    md += frontier_section(plots, results)
    path = out / "REPORT.md"
    path.write_text("\n".join(md) + "\n")
    return path
