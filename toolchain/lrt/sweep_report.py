"""Tables and heat maps of an ablation / hyper-parameter sweep (cells with options).

Seeds are averaged: accuracy is the mean (± standard deviation over seeds) of the accuracy
over each run's last N samples — the paper's ablation metric — and writes are the worst
case over seeds.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

Group = tuple[str, str, tuple[tuple[str, Any], ...]]


def _options(r: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in r["cell"].get("options", ()))


def _group_order(group: Group) -> tuple[str, str, list[tuple[str, tuple[int, float, str]]]]:
    """Environment, scheme, then each option's value: numbers by value (8 before 32)."""
    env, scheme, options = group

    def value(v: Any) -> tuple[int, float, str]:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return (0, float(v), "")
        return (1, 0.0, repr(v))

    return env, scheme, [(k, value(v)) for k, v in options]


def group_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (environment, scheme, options) with seed statistics."""
    groups: dict[Group, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["cell"]["env"], r["cell"]["scheme"], _options(r))].append(r)
    rows = []
    for (env, scheme, options), rs in sorted(groups.items(), key=lambda kv: _group_order(kv[0])):
        last = np.array([r["online_accuracy_last_n"] for r in rs], dtype=np.float64)
        rows.append(
            {
                "env": env,
                "scheme": scheme,
                "options": dict(options),
                "seeds": len(rs),
                "last_n": rs[0].get("last_n", 500),
                "acc_last": float(last.mean()),
                "acc_last_std": float(last.std()) if len(rs) > 1 else 0.0,
                "acc_ema": float(np.mean([r["online_accuracy_ema"] for r in rs])),
                "max_writes": int(max(r["max_writes_per_cell"] for r in rs)),
                "max_programs": int(max(r.get("max_programs_per_cell", 0) for r in rs)),
                "paper_sgd_writes": max(
                    (int(r["paper_sgd_writes"]) for r in rs if r.get("paper_sgd_writes")),
                    default=None,
                ),
            }
        )
    return rows


def markdown_sweep(rows: list[dict[str, Any]]) -> str:
    """The table; settings shared by every row are listed once above it."""
    all_keys = sorted({k for r in rows for k in r["options"]})
    keys = [k for k in all_keys if _varies(rows, k)] if len(rows) > 1 else all_keys
    fixed = [f"`{k}={rows[0]['options'].get(k)}`" for k in all_keys if k not in keys]
    head = ["environment", "scheme", *keys, "seeds", "acc last N", "acc EMA",
            "max programs/cell", "max writes/cell", "paper SGD writes"]  # fmt: skip
    lines = [f"Every cell: {', '.join(fixed)}.", ""] if fixed else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        std = f" ± {100 * r['acc_last_std']:.1f}" if r["seeds"] > 1 else ""
        cells = [r["env"], r["scheme"], *(str(r["options"].get(k, "-")) for k in keys)]
        cells += [
            str(r["seeds"]),
            f"{100 * r['acc_last']:.1f}%{std} (N={r['last_n']})",
            f"{100 * r['acc_ema']:.1f}%",
            str(r["max_programs"]),
            str(r["max_writes"]),
            "-" if r["paper_sgd_writes"] is None else str(r["paper_sgd_writes"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def heat_maps(out: Path, rows: list[dict[str, Any]]) -> list[str]:
    """With exactly two swept keys: one accuracy heat map per (environment, scheme)."""
    keys = sorted({k for r in rows for k in r["options"] if _varies(rows, k)})
    if len(keys) != 2:
        return []
    ky, kx = keys
    names = []
    by_panel: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_panel[(r["env"], r["scheme"])].append(r)
    for (env, scheme), panel in sorted(by_panel.items()):
        # per-scheme knobs (--knob) vary one key in some schemes only
        rs = [r for r in panel if ky in r["options"] and kx in r["options"]]
        if not rs:
            continue
        ys = sorted({r["options"][ky] for r in rs})
        xs = sorted({r["options"][kx] for r in rs})
        grid = np.full((len(ys), len(xs)), np.nan)
        for r in rs:
            grid[ys.index(r["options"][ky]), xs.index(r["options"][kx])] = 100 * r["acc_last"]
        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(xs), 1.0 + 0.5 * len(ys)))
        im = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
        for i in range(len(ys)):
            for j in range(len(xs)):
                if not np.isnan(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if grid[i, j] < np.nanmean(grid) else "black",
                    )
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_yticks(range(len(ys)), [str(y) for y in ys])
        ax.set_xlabel(kx)
        ax.set_ylabel(ky)
        ax.set_title(f"{env} / {scheme}: accuracy, last {rs[0]['last_n']} (%)", fontsize=8)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        name = f"heatmap_{env}_{scheme}_{ky}_x_{kx}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def _varies(rows: list[dict[str, Any]], key: str) -> bool:
    return len({repr(r["options"].get(key)) for r in rows}) > 1


def sweep_section(plots: Path, results: list[dict[str, Any]]) -> list[str]:
    rows = group_rows(results)
    md = ["## Sweep", "", markdown_sweep(rows)]
    for name in heat_maps(plots, rows):
        md.append(f"![{name}](plots/{name})")
    md.append("")
    return md
