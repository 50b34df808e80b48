"""Write policy of the batched schemes and the lifetime it buys: the Python twin of
firmware_templates/lib/lrt_policy.[ch] (same integer arithmetic, tested against the C), the
write budget a lifetime target sets, and lifetime projections from measured wear.

A commit programs every NVM cell at most once, into one of the store's n_slots slots (round
robin), and every commit rewrites the slot's metadata. So ``commits / n_slots`` is the wear
of the most-worn cell, and a budget of one commit per ``samples_per_commit`` samples makes
the memory last ``n_slots * endurance * samples_per_commit`` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lrt.config import BuildConfig
from lrt.model import META_FIELD_ACCURACY, META_TEST_ACCURACY

POLICY_KIND = {"fixed": 0, "gated": 1}
# lrt_policy_step_bound: the samples an LRT write counts in its step
STEP_BOUND = {"all": 0, "batch": 1, "evidence": 2}
SECONDS_PER_YEAR = 365.25 * 86400


@dataclass(frozen=True)
class Policy:
    """lrt_policy (lrt_policy.h)."""

    kind: int = 0
    gate_errors: int = 0
    gate_rate_q16: int = 0
    gate_cells_q16: int = 0
    samples_per_commit: int = 0
    burst: int = 0
    step_bound: int = 0

    def gate_update(self, excess_q16: int, mispredicted: bool) -> int:
        """lrt_policy_gate_update: a layer's error excess (CUSUM, Q16) after one more sample."""
        s = excess_q16 + (65536 if mispredicted else 0)
        return min(max(s - self.gate_rate_q16, 0), 0xFFFFFFFF)

    def due(self, excess_q16: int, commits: int, samples: int) -> bool:
        """lrt_policy_due: may a layer whose pseudo-batch is complete try to write?"""
        if self.kind != POLICY_KIND["gated"]:
            return True
        if excess_q16 < self.gate_errors << 16:
            return False
        if self.samples_per_commit:
            return commits + 1 <= self.burst + samples // self.samples_per_commit
        return True

    @property
    def joins(self) -> bool:
        """lrt_policy_joins: does a commit carry every layer whose complete pseudo-batch was
        kept (under a write budget), not only those whose pseudo-batch ends at its sample?"""
        return self.kind == POLICY_KIND["gated"] and self.samples_per_commit != 0

    def step_samples(self, excess_q16: int, batch: int) -> int:
        """lrt_policy_step_samples: the most samples an LRT write may count in its step (0: no
        bound): one pseudo-batch, or (gated) one per whole surplus error, at most 65,535."""
        n = max(batch, 1)
        if self.step_bound == STEP_BOUND["all"]:
            return 0
        if self.step_bound == STEP_BOUND["evidence"]:
            if self.kind != POLICY_KIND["gated"]:
                return 0
            n *= max(excess_q16 >> 16, 1)
        return min(n, 65535)

    def min_cells(self, cells: int, rho_min_q16: int) -> int:
        """lrt_policy_min_cells: cells the update must change to be written."""
        q16 = rho_min_q16
        if self.kind == POLICY_KIND["gated"] and self.gate_cells_q16:
            q16 = self.gate_cells_q16
        return max(1, (min(q16, 65536) * cells + 65535) >> 16)


def samples_per_commit(
    lifetime_years: float, sample_rate_hz: float, endurance: int, n_slots: int
) -> int:
    """Samples per weight commit that make the worst cell reach `endurance` no earlier than
    `lifetime_years` (rounded up: the budget errs on the long side)."""
    if endurance <= 0 or n_slots <= 0:
        return 0
    samples = lifetime_years * SECONDS_PER_YEAR * sample_rate_hz
    return max(1, math.ceil(samples / (endurance * n_slots)))


def held_out_error(meta: dict[str, Any]) -> float | None:
    """A model's held-out int8 error rate from its metadata: on field-like (deformed) test
    images where measured, else on the clean test split; None when not measured or when the
    model was not trained offline (its error says nothing about what the device can reach,
    and as a reference it would keep a from-scratch device from ever learning)."""
    if meta.get("epochs") == 0:
        return None
    acc = meta.get(META_FIELD_ACCURACY, meta.get(META_TEST_ACCURACY))
    return None if acc is None else 1.0 - float(acc)


def policy_of(
    cfg: BuildConfig, endurance: int, n_slots: int, model_error: float | None = None
) -> Policy:
    """The firmware's lrt_policy for a build config on a board's NVM; `model_error` is the
    model's held-out int8 error rate (None: unknown, e.g. an imported model)."""
    spc = 0
    if cfg.policy_name == "gated" and cfg.lifetime_years:
        spc = samples_per_commit(cfg.lifetime_years, cfg.sample_rate_hz, endurance, n_slots)
    return Policy(
        kind=POLICY_KIND[cfg.policy_name],
        gate_errors=cfg.gate_errors,
        gate_rate_q16=min(round(cfg.gate_rate_for(model_error) * 65536), 65536),
        gate_cells_q16=round(cfg.gate_cells * 65536),
        samples_per_commit=spc,
        burst=cfg.write_burst,
        step_bound=STEP_BOUND[
            "evidence" if cfg.step_evidence else "batch" if cfg.step_cap else "all"
        ],
    )


def lifetime_years(
    endurance: int, worst_programs: int, samples: int, sample_rate_hz: float
) -> float | None:
    """Years until the most-worn cell reaches `endurance` at the wear rate observed
    (`worst_programs` after `samples` samples); None without wear."""
    if worst_programs <= 0 or samples <= 0 or endurance <= 0 or sample_rate_hz <= 0:
        return None
    return endurance * samples / worst_programs / sample_rate_hz / SECONDS_PER_YEAR


def sgd_lifetime_years(endurance: int, n_slots: int, sample_rate_hz: float) -> float | None:
    """Per-sample SGD commits after every sample that changes a weight (in practice every
    sample): its most-worn cell (a slot's metadata) takes one program per n_slots samples."""
    return lifetime_years(endurance, 1, n_slots, sample_rate_hz)
