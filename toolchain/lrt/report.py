"""Results of an online run: JSON, markdown and matplotlib plots."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrt.policy import lifetime_years, sgd_lifetime_years

EMA_BETA = 0.999


def ema_curve(correct: np.ndarray, beta: float = EMA_BETA) -> np.ndarray:
    """Bias-corrected exponential moving average of per-sample correctness (the paper's metric).

    Bias correction (divide by 1 - beta^t) makes short streams comparable: without it the
    EMA starts at 0 and needs thousands of samples to forget that start.
    """
    out = np.empty(len(correct), dtype=np.float64)
    acc = 0.0
    for t, c in enumerate(correct.astype(np.float64), start=1):
        acc = beta * acc + (1.0 - beta) * c
        out[t - 1] = acc / (1.0 - beta**t)
    return out


@dataclass
class OnlineResult:
    board: str
    scheme: str
    stream: str
    samples: int
    online_accuracy: float  # mean over the whole stream
    online_accuracy_ema: float  # bias-corrected EMA(0.999) at the end
    online_accuracy_last_n: float
    last_n: int
    max_writes_per_cell: int
    paper_sgd_writes: int | None
    flushes: int
    layers: list[dict[str, Any]]
    seconds: float
    samples_per_second: float
    ema: list[float] = field(default_factory=list, repr=False)
    # (sample, max writes per cell, paper per-pixel max) sampled during the run
    writes_curve: list[tuple[int, int, int]] = field(default_factory=list, repr=False)
    # QEMU boards: exact guest instructions per training sample (TCG plugin)
    instructions_per_sample: float | None = None
    # the device's weight store at boot (HELLO): generation, fallback, degraded, ...
    store: str = ""
    # Physical wear, from the NVM layer's own counters (WEAR request): programs of the most
    # programmed weight cell (slot catch-up copies and drift re-writes included), of the
    # metadata, erases of the most erased page (flash), and the lifetime they project
    nvm_tech: str = "none"
    max_programs_per_cell: int = 0
    max_programs_meta: int = 0
    max_erases_per_page: int = 0
    endurance: int = 0
    sample_rate_hz: float = 0.0
    # programs of the most-worn unit charged to this run: all it has had when the store was
    # blank at boot (the first commit included), its increase during the run otherwise
    programs_in_run: int = 0
    programs_before_run: int = 0  # the most-worn unit's programs at boot, if not blank then
    lifetime_years: float | None = None  # this build, at the wear observed; None: no program
    sgd_lifetime_years: float | None = None  # per-sample SGD on the same NVM
    # the stream's seed and, for `shift`, its segment length (samples per environment mix)
    stream_seed: int | None = None
    segment: int | None = None

    def add_wear(
        self,
        wear: Any,
        endurance: int,
        n_slots: int,
        sample_rate_hz: float,
        before: Any = None,
        blank_at_boot: bool = True,
    ) -> None:
        """Fill the physical-wear fields from a WEAR reply (lrt.emulate.protocol.Wear) at the
        end of the run; `before` is the reply at its start (after boot). A run that programs
        nothing projects no lifetime; a store that had been worn before the run (not blank at
        boot) charges the run only the increase of its most-worn unit, a lower bound of the
        run's own programs there (the unit worn most by the run may have started lower)."""
        self.nvm_tech = wear.tech
        for lay, programs in zip(self.layers, wear.layers, strict=True):
            lay["max_programs_per_cell"] = int(programs)
        self.max_programs_per_cell = max((int(p) for p in wear.layers), default=0)
        self.max_programs_meta = int(wear.max_meta)
        self.max_erases_per_page = int(wear.max_erases_per_page)
        if wear.tech == "none":
            return
        self.endurance = endurance
        self.sample_rate_hz = sample_rate_hz
        worst = max(wear.max_blob, wear.max_meta)
        if before is not None and before == wear:
            worst = 0
        elif before is not None and not blank_at_boot:
            self.programs_before_run = max(before.max_blob, before.max_meta)
            # the run programmed something (the reply changed): at least once, even where an
            # older slot's units only caught up with the most-worn one
            worst = max(worst - self.programs_before_run, 1)
        self.programs_in_run = worst
        self.lifetime_years = lifetime_years(endurance, worst, self.samples, sample_rate_hz)
        self.sgd_lifetime_years = sgd_lifetime_years(endurance, n_slots, sample_rate_hz)

    @classmethod
    def from_run(
        cls,
        board: str,
        scheme: str,
        stream: str,
        labels: np.ndarray,
        preds: np.ndarray,
        stats: Any,
        layer_names: list[str],
        layer_cells: list[int],
        seconds: float,
        last_n: int = 500,
    ) -> OnlineResult:
        correct = (np.asarray(preds) == np.asarray(labels)).astype(np.float64)
        n = len(correct)
        last = min(last_n, n)
        curve = ema_curve(correct)
        layers: list[dict[str, Any]] = []
        for i, name in enumerate(layer_names):
            ls = stats.layers[i]
            layers.append(
                {
                    "layer": name,
                    "cells": layer_cells[i],
                    "max_writes_per_cell": int(ls.max_writes),
                    "mean_writes_per_cell": float(ls.total_writes) / max(layer_cells[i], 1),
                    "paper_sgd_writes": int(ls.paper_max_writes),
                }
            )
        max_w = max((int(lay["max_writes_per_cell"]) for lay in layers), default=0)
        paper = max((int(lay["paper_sgd_writes"]) for lay in layers), default=0)
        return cls(
            board=board,
            scheme=scheme,
            stream=stream,
            samples=n,
            online_accuracy=float(correct.mean()),
            online_accuracy_ema=float(curve[-1]),
            online_accuracy_last_n=float(correct[-last:].mean()),
            last_n=last,
            max_writes_per_cell=int(max_w),
            paper_sgd_writes=int(paper) if scheme == "sgd" else None,
            flushes=int(stats.flushes),
            layers=layers,
            seconds=round(seconds, 3),
            samples_per_second=round(n / seconds, 1) if seconds > 0 else 0.0,
            ema=[round(float(v), 5) for v in curve[:: max(1, n // 500)]],
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    def markdown(self) -> str:
        lines = [
            f"## Online run: scheme `{self.scheme}`, stream `{self.stream}`, board `{self.board}`",
            "",
            "| metric | value |",
            "|---|---|",
            f"| samples | {self.samples} |",
            *([f"| stream seed | {self.stream_seed} |"] if self.stream_seed is not None else []),
            *(
                [
                    f"| shift segment length (samples per mix) | {self.segment:,d} "
                    f"({-(-self.samples // self.segment)} segment(s) in this run) |"
                ]
                if self.segment is not None and self.stream == "shift"
                else []
            ),
            f"| online accuracy (mean) | {self.online_accuracy:.4f} |",
            f"| online accuracy (EMA 0.999, end) | {self.online_accuracy_ema:.4f} |",
            f"| online accuracy (last {self.last_n}) | {self.online_accuracy_last_n:.4f} |",
            "| max programs per cell (NVM, physical"
            + (", since the store was created" if self.programs_before_run else "")
            + f") | {self.max_programs_per_cell} |",
            f"| max writes per cell (logical value changes) | {self.max_writes_per_cell} |",
        ]
        if self.nvm_tech != "none":
            lines.append(f"| max programs of the metadata | {self.max_programs_meta} |")
        if self.nvm_tech == "flash":
            lines.append(f"| max erases per page | {self.max_erases_per_page} |")
        if self.programs_before_run:
            lines.append(
                f"| programs of the most-worn unit before this run / during it | "
                f"{self.programs_before_run} / {self.programs_in_run} |"
            )
        lifetime = (
            f"{self.lifetime_years:.3g} years"
            if self.lifetime_years is not None
            else "not projected: the run programmed no NVM unit"
            if self.programs_in_run == 0 and self.endurance > 0
            else None
        )
        if lifetime is not None:
            lines.append(
                f"| projected lifetime (endurance {self.endurance:,d}, "
                f"{self.sample_rate_hz:g} samples/s) | {lifetime} |"
            )
        if self.sgd_lifetime_years is not None:
            lines.append(
                f"| per-sample SGD on the same NVM (one commit per sample) | "
                f"{self.sgd_lifetime_years:.3g} years |"
            )
        if self.paper_sgd_writes is not None:
            lines.append(f"| paper_sgd_writes (per-pixel accounting) | {self.paper_sgd_writes} |")
        lines += [
            f"| weight flushes | {self.flushes} |",
            *([f"| weight store at boot | {self.store} |"] if self.store else []),
            f"| throughput | {self.samples_per_second} samples/s |",
            *(
                [f"| instructions per sample (QEMU, exact) | {self.instructions_per_sample:,.0f} |"]
                if self.instructions_per_sample is not None
                else []
            ),
            "",
            "| layer | cells | max programs/cell | max writes/cell | mean writes/cell |"
            + (" paper per-pixel max |" if self.paper_sgd_writes is not None else ""),
            "|---|---|---|---|---|" + ("---|" if self.paper_sgd_writes is not None else ""),
        ]
        for lay in self.layers:
            row = (
                f"| {lay['layer']} | {lay['cells']} | {lay.get('max_programs_per_cell', 0)} | "
                f"{lay['max_writes_per_cell']} | {lay['mean_writes_per_cell']:.3f} |"
            )
            if self.paper_sgd_writes is not None:
                row += f" {lay['paper_sgd_writes']} |"
            lines.append(row)
        return "\n".join(lines) + "\n"
