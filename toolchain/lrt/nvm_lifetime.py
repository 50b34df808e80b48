"""The NVM layer's endurance budget in Python: integer twins, bit for bit, of
lrt_nvm_projected_lifetime_days / lrt_nvm_budget_check (firmware_templates/lib/lrt_nvm_budget.c)."""

from __future__ import annotations

from dataclasses import dataclass

U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF


def _mul_div(a: int, b: int, c: int) -> int:
    if a == 0 or b == 0:
        return 0
    if a <= U64_MAX // b:
        return a * b // c
    a //= c
    if a > U64_MAX // b:
        return U64_MAX
    return a * b


def projected_lifetime_days(endurance: int, worst: int, samples: int, sample_rate_mhz: int
                            ) -> int:
    """Days until the most-worn unit reaches `endurance` at the observed rate (C twin)."""
    if worst == 0 or sample_rate_mhz == 0:
        return U32_MAX
    life = _mul_div(samples, endurance, worst)
    days = _mul_div(life, 1000, 86400 * sample_rate_mhz)
    return min(days, U32_MAX)


@dataclass(frozen=True)
class Throttle:
    allow: bool
    rho_min_q16: int
    allowed: int
    projected_days: int


def budget_check(endurance: int, target_days: int, sample_rate_mhz: int, burst: int,
                 worst_after: int, samples: int, rho_min_q16: int) -> Throttle:
    """Twin of lrt_nvm_budget_check."""
    if target_days == 0 or sample_rate_mhz == 0:
        raise ValueError("target_days and sample_rate_mhz must be > 0")
    if endurance == 0:
        return Throttle(True, rho_min_q16, U32_MAX, U32_MAX)
    target_samples = _mul_div(86400 * target_days, sample_rate_mhz, 1000) or 1
    allowed = min(burst + _mul_div(samples, endurance, target_samples), U32_MAX)
    allow = worst_after <= allowed and worst_after <= endurance
    days = projected_lifetime_days(endurance, worst_after, samples, sample_rate_mhz)
    if allow:
        rho = rho_min_q16
    else:
        r = _mul_div(rho_min_q16, worst_after + 1, allowed + 1)
        rho = max(rho_min_q16, min(r, 65536)) if rho_min_q16 < 65536 else rho_min_q16
    return Throttle(allow, rho, allowed, days)
