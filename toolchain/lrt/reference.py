"""Bit-exact numpy reference of the int8 forward pass (TFLite's reference integer kernels).

This is the oracle the C kernels (firmware_templates/lib/lrt_kernels.c) and the TFLite
interpreter are compared against. Arithmetic follows tensorflow/lite/kernels/internal:
int32 accumulation of (input + input_offset) * weight, + bias, then
MultiplyByQuantizedMultiplier, + output offset, clamp to [act_min, act_max].

The rescale of the int32 accumulator is where TFLite's kernels differ. Measured against the
installed ai-edge-litert with OpResolverType.BUILTIN_REF (tests/golden):
  * CONV_2D uses MultiplyByQuantizedMultiplier in its default "double" rounding:
    SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT (gemmlowp semantics);
  * FULLY_CONNECTED rescales in double precision, round(acc * real_scale), half away from
    zero. lrt does that with integers as "away": one rounding of acc * multiplier *
    2**(shift - 31), half away from zero. Exact whenever the real scale has at most 31
    significant bits (every power-of-two model); otherwise the two can only differ when
    acc * scale lies within about |acc * scale| * 2**-31 of a rounding boundary.
  * "single" is TFLite's TFLITE_SINGLE_ROUNDING build (round half up); not used by any
    layer, kept so tests can show that the variants are distinguishable.

Integer semantics: intermediates are int64 and every int32 result is wrapped to int32 the
way the C code does. Dot products run as float64 matrix products, which is exact as long as
every partial sum stays below 2**53 (|product| <= 255 * 128, so any realistic layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lrt import batchnorm
from lrt.model import Layer, Model

Rounding = Literal["double", "single", "away"]
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
_CHUNK = 256  # samples per conv batch: bounds the im2col buffer to a few tens of MB


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to the int32 range (kept as int64)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values (returned as int64)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    s = ab + nudge
    # C++ integer division truncates toward zero; numpy's >> floors.
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))
    overflow = (a == b) & (a == INT32_MIN)
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2**exponent, round half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    x: np.ndarray,
    multiplier: np.ndarray | int,
    shift: np.ndarray | int,
    rounding: Rounding = "double",
) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (shift > 0 = left). Broadcasts over arrays.

    rounding: "double" (TFLite default), "single" (TFLITE_SINGLE_ROUNDING) or "away" (one
    rounding, half away from zero, saturated to int32: lrt's FULLY_CONNECTED rescale).
    """
    x = np.asarray(x, dtype=np.int64)
    m = np.asarray(multiplier, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    if rounding in ("single", "away"):
        total = 31 - s
        r = np.int64(1) << (total - 1)
        if rounding == "single":
            return wrap_int32((x * m + r) >> total)
        mag = (np.abs(x) * m + r) >> total
        return np.clip(np.where(x < 0, -mag, mag), INT32_MIN, INT32_MAX)
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    # x * (1 << left) in int32: wraps on overflow, as the C code does.
    shifted = wrap_int32(x << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m), right)


def same_padding(in_size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(output size, padding before) of TFLite 'SAME' padding (extra pad goes after)."""
    out = (in_size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - in_size, 0)
    return out, total // 2


def output_size(in_size: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "same":
        return same_padding(in_size, kernel, stride)[0]
    if padding == "valid":
        return (in_size - kernel) // stride + 1
    raise ValueError(f"unknown padding {padding!r}")


def pad_amounts(
    h: int, w: int, kh: int, kw: int, stride: Sequence[int], padding: str
) -> tuple[int, int, int, int, int, int]:
    """(out_h, out_w, top, bottom, left, right) such that the padded input gives a valid op."""
    sh, sw = int(stride[0]), int(stride[1])
    if padding == "same":
        oh, top = same_padding(h, kh, sh)
        ow, left = same_padding(w, kw, sw)
    else:
        oh, ow, top, left = output_size(h, kh, sh, "valid"), output_size(w, kw, sw, "valid"), 0, 0
    bottom = max((oh - 1) * sh + kh - h - top, 0)
    right = max((ow - 1) * sw + kw - w - left, 0)
    return oh, ow, top, bottom, left, right


def _requantize(
    acc: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    output_offset: int,
    act_min: int,
    act_max: int,
    rounding: Rounding,
) -> np.ndarray:
    out = multiply_by_quantized_multiplier(acc, multiplier, shift, rounding)
    out = out + output_offset
    return np.clip(out, act_min, act_max).astype(np.int8)


def conv2d_acc(
    x: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None,
    input_offset: int,
    stride: Sequence[int] = (1, 1),
    padding: str = "valid",
) -> np.ndarray:
    """int32 accumulators (as int64) of an int8 conv: sum (x + input_offset) * w + bias."""
    x = np.asarray(x)
    n, h, w, _ = x.shape
    c_out, kh, kw, c_in = weights.shape
    oh, ow, top, bottom, left, right = pad_amounts(h, w, kh, kw, stride, padding)
    sh, sw = int(stride[0]), int(stride[1])
    wmat = np.asarray(weights, dtype=np.float64).reshape(c_out, -1).T
    xs = x.astype(np.float64) + input_offset
    # Padding contributes (zero_point + input_offset) = 0, exactly TFLite's skipped taps.
    xs = np.pad(xs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    win = sliding_window_view(xs, (kh, kw), axis=(1, 2))  # [n, H', W', C, kh, kw]
    win = win[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]
    patches = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * c_in)
    acc = (patches @ wmat).astype(np.int64).reshape(n, oh, ow, c_out)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    return wrap_int32(acc)


def conv2d_s8(
    x: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None,
    multiplier: np.ndarray,
    shift: np.ndarray,
    input_offset: int,
    output_offset: int,
    act_min: int = -128,
    act_max: int = 127,
    stride: Sequence[int] = (1, 1),
    padding: str = "valid",
    rounding: Rounding = "double",
) -> np.ndarray:
    """int8 conv, x [N, H, W, C_in], weights [C_out, KH, KW, C_in] -> [N, OH, OW, C_out]."""
    x = np.asarray(x)
    parts = [
        _requantize(
            conv2d_acc(x[start : start + _CHUNK], weights, bias, input_offset, stride, padding),
            multiplier, shift, output_offset, act_min, act_max, rounding,
        )
        for start in range(0, x.shape[0], _CHUNK)
    ]
    return np.concatenate(parts) if parts else np.empty((0,), np.int8)


def dense_acc(
    x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None, input_offset: int
) -> np.ndarray:
    """int32 accumulators (as int64) of an int8 fully connected layer, x [N, n_in]."""
    xs = np.asarray(x).reshape(x.shape[0], -1).astype(np.float64) + input_offset
    acc = (xs @ np.asarray(weights, dtype=np.float64).T).astype(np.int64)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    return wrap_int32(acc)


def dense_s8(
    x: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None,
    multiplier: np.ndarray,
    shift: np.ndarray,
    input_offset: int,
    output_offset: int,
    act_min: int = -128,
    act_max: int = 127,
    rounding: Rounding = "away",
) -> np.ndarray:
    """int8 fully connected, x [N, n_in], weights [n_out, n_in] -> [N, n_out]."""
    acc = dense_acc(x, weights, bias, input_offset)
    return _requantize(acc, multiplier, shift, output_offset, act_min, act_max, rounding)


def maxpool2d_s8(
    x: np.ndarray,
    pool: Sequence[int] = (2, 2),
    stride: Sequence[int] | None = None,
    padding: str = "valid",
    act_min: int = -128,
    act_max: int = 127,
) -> np.ndarray:
    """int8 max pool, x [N, H, W, C]; padded taps are ignored (TFLite semantics)."""
    x = np.asarray(x)
    _, h, w, _ = x.shape
    kh, kw = int(pool[0]), int(pool[1])
    stride = tuple(pool) if stride is None else stride
    sh, sw = int(stride[0]), int(stride[1])
    oh, ow, top, bottom, left, right = pad_amounts(h, w, kh, kw, stride, padding)
    xs = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-128)
    win = sliding_window_view(xs, (kh, kw), axis=(1, 2))
    win = win[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]
    return np.clip(win.max(axis=(4, 5)), act_min, act_max).astype(np.int8)


def batchnorm_s8(layer: Layer, x: np.ndarray) -> np.ndarray:
    """The batch-norm layer's per-channel affine (TFLite DEPTHWISE_CONV_2D 1x1 arithmetic)
    with the tables derived from its state (lrt.batchnorm)."""
    t = batchnorm.layer_tables(layer)
    acc = (np.asarray(x, dtype=np.int64) - layer.input_q.zero_point) * t.w.astype(np.int64)
    acc = wrap_int32(acc + t.bias.astype(np.int64))
    out = multiply_by_quantized_multiplier(acc, 1 << 30, t.shift.astype(np.int64), "double")
    out = out + layer.output_q.zero_point
    return np.clip(out, layer.act_min, layer.act_max).astype(np.int8)


def _out_params(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    assert layer.out_multiplier is not None and layer.out_shift is not None
    return np.asarray(layer.out_multiplier), np.asarray(layer.out_shift)


def layer_forward(layer: Layer, x: np.ndarray) -> np.ndarray:
    """One IR layer on a batch x [N, *layer.in_shape] -> [N, *layer.out_shape] int8.

    conv2d rescales with "double" rounding, dense with "away" (see the module docstring).
    """
    n = x.shape[0]
    if layer.kind == "flatten":
        return x.reshape(n, -1)
    if layer.kind == "maxpool2d":
        return maxpool2d_s8(
            x, layer.pool, layer.stride, layer.padding, layer.act_min, layer.act_max
        )
    if layer.kind == "batchnorm":
        return batchnorm_s8(layer, x)
    assert layer.weights is not None
    mult, shift = _out_params(layer)
    in_off, out_off = -layer.input_q.zero_point, layer.output_q.zero_point
    lo, hi = layer.act_min, layer.act_max
    if layer.kind == "conv2d":
        return conv2d_s8(
            x, layer.weights, layer.bias, mult, shift, in_off, out_off, lo, hi,
            layer.stride, layer.padding, "double",
        )
    if layer.kind == "dense":
        return dense_s8(
            x.reshape(n, -1), layer.weights, layer.bias, mult, shift, in_off, out_off, lo, hi,
            "away",
        )
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def _as_batch(model: Model, x: np.ndarray) -> tuple[np.ndarray, bool]:
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise TypeError(f"input must be int8, got {x.dtype} (use Model.quantize_input)")
    shape = tuple(model.input_shape)
    if x.shape == shape:
        return x[None], True
    if x.shape[1:] != shape:
        raise ValueError(f"input shape {x.shape} does not match N x {shape}")
    return x, False


def forward_int8_layers(model: Model, x: np.ndarray) -> list[np.ndarray]:
    """Outputs of every layer (what the firmware's `keep` buffers hold), batch first."""
    batch, _ = _as_batch(model, x)
    outs: list[np.ndarray] = []
    cur = batch
    for layer in model.layers:
        cur = layer_forward(layer, cur)
        outs.append(cur)
    return outs


def forward_int8(model: Model, x: np.ndarray) -> np.ndarray:
    """int8 logits [N, num_classes] of int8 inputs [N, H, W, C] (or one input [H, W, C])."""
    batch, single = _as_batch(model, x)
    cur = batch
    for layer in model.layers:
        cur = layer_forward(layer, cur)
    logits = cur.reshape(batch.shape[0], -1)
    return logits[0] if single else logits


def predict(model: Model, x: np.ndarray) -> np.ndarray:
    """argmax class of int8 inputs (lowest index on ties, like lrt_argmax_s8)."""
    logits = forward_int8(model, x)
    return np.argmax(logits, axis=-1)
