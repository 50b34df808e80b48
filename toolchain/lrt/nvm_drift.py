"""Simulated NVM cell drift in Python: integer twins, bit for bit, of lrt_nvm_drift_bits /
lrt_nvm_drift_noise (firmware_templates/lib/lrt_nvm_drift.c), and the paper's drift rates."""

from __future__ import annotations

import math

import numpy as np

from lrt.nvm_lifetime import U32_MAX
from lrt.rng import xorshift32


def drift_bits(buf: bytes, p_q32: int, seed: int) -> tuple[bytes, int]:
    """Flip each bit with probability p_q32 / 2**32; returns (bytes, flips)."""
    out = bytearray(buf)
    rng, flips = seed, 0
    for i in range(len(out)):
        for bit in range(8):
            rng = xorshift32(rng)
            if rng < p_q32:
                out[i] ^= 1 << bit
                flips += 1
    return bytes(out), flips


def drift_noise(w: np.ndarray, sigma_q16: int, seed: int) -> np.ndarray:
    """Add round(sigma * N(0,1)) (Irwin-Hall of 12 uniforms) to int8 weights, clip."""
    out = np.asarray(w, dtype=np.int8).copy().ravel()
    rng = seed
    for i in range(out.size):
        s = 0
        for _ in range(6):
            rng = xorshift32(rng)
            s += (rng & 0xFFFF) + (rng >> 16)
        q = (s - 6 * 65536) * sigma_q16 + (1 << 31)
        out[i] = max(-128, min(127, int(out[i]) + (q >> 32)))
    return out.reshape(np.shape(w))


def digital_drift_p_q32(p0: float = 10.0, d: int = 10) -> int:
    """The paper's digital drift p = p0 / (1e6 / d) per bit per application, as Q32."""
    return min(round(p0 / (1e6 / d) * 2**32), U32_MAX)


def analog_drift_sigma_q16(sigma0: float = 10.0, d: int = 10, weight_exp: int = -7) -> int:
    """The paper's analog drift sigma = sigma0 / sqrt(1e6 / d) (weight units, weights in
    [-1, 1)) in LSB of 2**weight_exp, as Q16."""
    return round(sigma0 / math.sqrt(1e6 / d) / 2.0**weight_exp * 65536)
