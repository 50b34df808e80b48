"""The one pseudo-random generator of the firmware, in Python: Marsaglia's xorshift32
(13/17/5), bit for bit the C's ``lrt_xorshift32_seed`` / ``lrt_xorshift32_next``
(firmware_templates/lib/lrt_util.h). It draws the LRT's random signs (``lrt.lowrank``) and
the simulated NVM drift (``lrt.nvm``); tests/c/test_rng.py runs both against each other."""

from __future__ import annotations

MASK32 = 0xFFFFFFFF
# xorshift's one fixed point, 0, is replaced by this state (as in the C)
ZERO_STATE = 0x9E3779B9


def xorshift32_seed(seed: int) -> int:
    """Initial state of a user seed (murmur3 finaliser); never 0."""
    h = (seed + 0x9E3779B9) & MASK32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK32
    h ^= h >> 16
    return h if h else 0x6D2B79F5


def xorshift32(state: int) -> int:
    """The state after ``state`` (which is also the drawn word); a zero state is ZERO_STATE."""
    x = state or ZERO_STATE
    x ^= (x << 13) & MASK32
    x ^= x >> 17
    x ^= (x << 5) & MASK32
    return x


class XorShift32:
    """A stream seeded like the C's: ``XorShift32(seed)()`` is ``lrt_xorshift32_next`` from
    ``lrt_xorshift32_seed(seed)``."""

    def __init__(self, seed: int) -> None:
        self.state = xorshift32_seed(seed)

    def __call__(self) -> int:
        self.state = xorshift32(self.state)
        return self.state
