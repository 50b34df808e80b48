"""The paper's fixed power-of-two number formats and TFLite's fixed-point rescale (numpy only).

Formats (Gural et al. 2020, "Supporting techniques"):
  weights 8 bit in [-1, 1)      -> LSB 2**-7, times the layer's power-of-two alpha
  biases 16 bit in [-8, 8)      -> LSB 2**-12
  activations 8 bit in [0, 2)   -> LSB 2**-7, stored as int8 with zero point -128
  gradients 8 bit in [-1, 1)    -> LSB 2**-7
"""

from __future__ import annotations

import math

import numpy as np

WEIGHT_EXP = -7
BIAS_EXP = -12
BIAS_BITS = 16
ACT_EXP = -7
ACT_ZERO_POINT = -128
GRAD_EXP = -7
LOGIT_EXP = -4  # logits are signed: 8 bit in [-8, 8)


def snap_weight_bits(weights: np.ndarray, bits: int) -> np.ndarray:
    """int8 weights on the grid of a ``bits``-wide weight format in [-1, 1) (round half up).

    The grid is mid-tread (it holds zero) for every width; the authors' code switches to a
    mid-rise grid at 1-2 bits. 8 bits returns the weights unchanged.
    """
    step = 1 << (8 - bits)
    snapped = np.floor(weights.astype(np.float64) / step + 0.5) * step
    return np.clip(snapped, -128, 128 - step).astype(np.int8)


def layer_alpha_exp(fan_in: int, relu_follows: bool) -> int:
    """Exponent of the layer's fixed multiplier alpha = 2**floor(log2(sqrt(3 g / fan_in)))."""
    g = 2.0 if relu_follows else 1.0
    return math.floor(math.log2(math.sqrt(3.0 * g / fan_in)))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = q * 2**(shift - 31), q in [2**30, 2**31).

    Returns (q, shift) with shift > 0 meaning a left shift, as in
    tensorflow/lite/kernels/internal/quantization_util.cc.
    """
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    q = round(mantissa * (1 << 31))
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        shift = 30
        q = (1 << 31) - 1
    return int(q), int(shift)


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(reals, dtype=np.float64).ravel()]
    q = np.array([p[0] for p in pairs], dtype=np.int32)
    s = np.array([p[1] for p in pairs], dtype=np.int32)
    return q, s


def is_power_of_two(x: float) -> bool:
    if x <= 0:
        return False
    m, _ = math.frexp(x)
    return m == 0.5


def exp_of(x: float) -> int | None:
    """k with x == 2**k, or None."""
    return (math.frexp(x)[1] - 1) if is_power_of_two(x) else None


def fake_quant(x: np.ndarray, exp: int, lo: float, hi: float) -> np.ndarray:
    """Round to the grid 2**exp and clip to [lo, hi] (numpy twin of the QAT quantizer)."""
    step = 2.0**exp
    return np.clip(np.round(x / step) * step, lo, hi - step)
