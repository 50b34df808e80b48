"""The backward pass / training driver (harness/c/bp_driver.c): net files, the driver build,
random power-of-two models and numpy references of the backward kernels.

Imported by tests/c/test_backprop*.py, tests/c/test_train*.py,
tests/golden/test_grad_oracle*.py and bench/lrt_estimator_quality.py.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from harness.cbuild import DRIVERS, LIB_DIR, compile_c
from lrt import batchnorm, quant
from lrt.model import Layer, Model, QParams

NET_MAGIC = 0x544E5042
KIND = {"conv2d": 1, "maxpool2d": 2, "dense": 3, "flatten": 4, "batchnorm": 5}
EXP_NONE = 127
SCHEME = {"inference": 0, "bias": 1, "sgd": 2, "lrt": 3, "sgd-batch": 4}


# ---- driver ---------------------------------------------------------------------------------


def driver_sources() -> list[Path]:
    libs = ["lrt_backprop", "lrt_train", "lrt_policy", "lrt_fixmath", "lrt_wstore", "lrt_net",
            "lrt_kernels", "lrt_common"]
    return [DRIVERS / "bp_driver.c", *(LIB_DIR / f"{n}.c" for n in libs)]


def build_driver(out_dir: Path) -> Path:
    """bp_driver compiled with -Wall -Wextra -Werror -pedantic and ASan/UBSan."""
    return compile_c(driver_sources(), out_dir / "bp_driver")


def run_driver(driver: Path, net: Path | str, args: list[str], stdin: bytes = b"") -> bytes:
    proc = subprocess.run(
        [str(driver), str(net), *args], input=stdin, capture_output=True, timeout=600
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"bp_driver {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.decode()}"
        )
    return proc.stdout


class Reader:
    """Sequential reader of the driver's little-endian output."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def i32(self, n: int | None = None) -> np.ndarray | int:
        k = 1 if n is None else n
        arr = np.frombuffer(self.data, dtype="<i4", count=k, offset=self.pos).astype(np.int64)
        self.pos += 4 * k
        return int(arr[0]) if n is None else arr

    def arr32(self, n: int) -> np.ndarray:
        out = self.i32(n)
        assert isinstance(out, np.ndarray)
        return out

    def int32(self) -> int:
        out = self.i32()
        assert isinstance(out, int)
        return out

    def u64(self) -> int:
        lo, hi = struct.unpack_from("<II", self.data, self.pos)
        self.pos += 8
        return int(lo) | (int(hi) << 32)

    def s8(self, n: int) -> np.ndarray:
        arr = np.frombuffer(self.data, dtype=np.int8, count=n, offset=self.pos).copy()
        self.pos += n
        return arr

    def done(self) -> bool:
        return self.pos == len(self.data)


# ---- net files ------------------------------------------------------------------------------


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return int(shape[0]), int(shape[1]), int(shape[2])
    return 1, 1, int(shape[0])


def _align(x: int) -> int:
    return (x + 3) // 4 * 4


def kernel_of(layer: Layer) -> tuple[int, int]:
    if layer.kind == "conv2d":
        assert layer.weights is not None
        return int(layer.weights.shape[1]), int(layer.weights.shape[2])
    if layer.kind == "maxpool2d":
        return int(layer.pool[0]), int(layer.pool[1])
    return 1, 1


def pads_of(layer: Layer) -> tuple[int, int]:
    """(pad_top, pad_left) as codegen computes them."""
    if layer.padding != "same":
        return 0, 0
    in_h, in_w, _ = _hwc(layer.in_shape)
    out_h, out_w, _ = _hwc(layer.out_shape)
    kh, kw = kernel_of(layer)
    pad_h = max((out_h - 1) * layer.stride[0] + kh - in_h, 0)
    pad_w = max((out_w - 1) * layer.stride[1] + kw - in_w, 0)
    return pad_h // 2, pad_w // 2


def blob_layout(layers: list[Layer]) -> tuple[list[int], list[int], int]:
    """(w_offset, b_offset, size) with codegen's layout: weights (4-aligned), then biases."""
    w_off, b_off = [], []
    off = 0
    for lay in layers:
        n = int(lay.weights.size) if lay.weights is not None else 0
        w_off.append(off if n else 0)
        off = _align(off + n)
    for lay in layers:
        if lay.bias is not None:
            b_off.append(off)
            off += 4 * int(lay.bias.size)
        elif lay.kind == "batchnorm":
            b_off.append(off)
            off += batchnorm.snapshot_size(int(lay.out_shape[-1]))
        else:
            b_off.append(0)
    return w_off, b_off, off


def _e(v: int | None) -> int:
    return EXP_NONE if v is None else int(v)


def net_bytes(
    layers: list[Layer], input_shape: tuple[int, ...], n_classes: int, bn_batch: int = 10
) -> bytes:
    w_off, b_off, size = blob_layout(layers)
    in_h, in_w, in_c = _hwc(input_shape)
    words = [NET_MAGIC, len(layers), in_h, in_w, in_c, n_classes, size]
    blob = bytearray(size)
    for i, lay in enumerate(layers):
        ih, iw, ic = _hwc(lay.in_shape)
        oh, ow, oc = _hwc(lay.out_shape)
        kh, kw = kernel_of(lay)
        pt, pl = pads_of(lay)
        has_w = lay.has_weights
        words += [
            KIND[lay.kind], int(lay.relu), ih, iw, ic, oh, ow, oc, kh, kw,
            lay.stride[0], lay.stride[1], pt, pl,
            -lay.input_q.zero_point, lay.output_q.zero_point, lay.act_min, lay.act_max,
            w_off[i], int(lay.weights.size) if has_w else 0, b_off[i],  # type: ignore[union-attr]
            _e(lay.input_q.exp), _e(lay.output_q.exp), _e(lay.weight_exp), _e(lay.bias_exp),
            int(lay.trainable and (has_w or lay.kind == "batchnorm")),
        ]  # fmt: skip
        if has_w:
            assert lay.weights is not None and lay.bias is not None
            assert lay.out_multiplier is not None and lay.out_shift is not None
            words += [int(v) for v in lay.out_multiplier]
            words += [int(v) for v in lay.out_shift]
            words += [int(v) for v in lay.bias]
            w = np.ascontiguousarray(lay.weights, dtype=np.int8).tobytes()
            blob[w_off[i] : w_off[i] + len(w)] = w
            b = np.ascontiguousarray(lay.bias, dtype="<i4").tobytes()
            blob[b_off[i] : b_off[i] + len(b)] = b
        if lay.kind == "batchnorm":
            state = (lay.bn_gamma, lay.bn_beta, lay.bn_mean, lay.bn_msq)
            assert all(a is not None for a in state) and lay.bn_pow_q30 is not None
            for a in state:
                words += [int(v) for v in a]  # type: ignore[union-attr]
            words += [int(lay.bn_pow_q30), bn_batch]
            snap = batchnorm.snapshot_words(*state, lay.bn_pow_q30).tobytes()  # type: ignore[arg-type]
            blob[b_off[i] : b_off[i] + len(snap)] = snap
    head = np.array(words, dtype=np.int64)
    return head.astype("<i4").tobytes() + bytes(blob)


def write_net(path: Path, model: Model, bn_batch: int = 10) -> Path:
    path.write_bytes(net_bytes(model.layers, model.input_shape, model.num_classes, bn_batch))
    return path


# ---- random power-of-two models --------------------------------------------------------------


def _act_q(exp: int = quant.ACT_EXP, zp: int = quant.ACT_ZERO_POINT) -> QParams:
    return QParams(2.0**exp, zp, exp)


def weight_layer(
    rng: np.random.Generator,
    kind: Literal["conv2d", "dense"],
    name: str,
    in_shape: tuple[int, ...],
    out_c: int,
    kernel: int = 3,
    stride: int = 1,
    padding: Literal["valid", "same"] = "valid",
    relu: bool = True,
    wrange: int = 128,
    bias_scale: float = 0.5,
    in_q: QParams | None = None,
) -> Layer:
    """A conv/dense layer in the toolchain's power-of-two formats with random weights."""
    if kind == "conv2d":
        h, w, c = in_shape
        if padding == "same":
            oh, ow = -(-h // stride), -(-w // stride)
        else:
            oh, ow = (h - kernel) // stride + 1, (w - kernel) // stride + 1
        out_shape: tuple[int, ...] = (oh, ow, out_c)
        wshape: tuple[int, ...] = (out_c, kernel, kernel, c)
        fan_in = kernel * kernel * c
    else:
        fan_in = int(np.prod(in_shape))
        out_shape = (out_c,)
        wshape = (out_c, fan_in)
    alpha = quant.layer_alpha_exp(fan_in, relu)
    weight_exp = alpha + quant.WEIGHT_EXP
    in_q = in_q or _act_q()
    assert in_q.exp is not None
    out_q = _act_q() if relu else _act_q(quant.LOGIT_EXP, 0)
    acc_exp = in_q.exp + weight_exp
    weights = rng.integers(-wrange, wrange, size=wshape).astype(np.int8)
    b_real = rng.normal(0.0, bias_scale, size=out_c)
    b_int = np.clip(np.round(b_real / 2.0**quant.BIAS_EXP), -(2**15), 2**15 - 1).astype(np.int64)
    bias = (b_int << (quant.BIAS_EXP - acc_exp)).astype(np.int32)
    mult, shift = quant.quantize_multipliers(np.full(out_c, 2.0 ** (acc_exp - out_q.exp)))  # type: ignore[operator]
    lo, hi = (-128, 127)
    return Layer(
        kind=kind, name=name, in_shape=tuple(in_shape), out_shape=out_shape,
        input_q=in_q, output_q=out_q, weights=weights, bias=bias,
        weight_scales=np.full(out_c, 2.0**weight_exp), out_multiplier=mult, out_shift=shift,
        act_min=lo, act_max=hi, relu=relu, stride=(stride, stride), padding=padding,
        weight_exp=weight_exp, bias_exp=quant.BIAS_EXP,
    )  # fmt: skip


def pool_layer(name: str, in_shape: tuple[int, ...], pool: int = 2) -> Layer:
    h, w, c = in_shape
    return Layer(
        kind="maxpool2d", name=name, in_shape=tuple(in_shape),
        out_shape=(h // pool, w // pool, c), input_q=_act_q(), output_q=_act_q(),
        stride=(pool, pool), pool=(pool, pool), trainable=False,
    )  # fmt: skip


def flatten_layer(name: str, in_shape: tuple[int, ...], q: QParams | None = None) -> Layer:
    return Layer(
        kind="flatten", name=name, in_shape=tuple(in_shape),
        out_shape=(int(np.prod(in_shape)),), input_q=q or _act_q(), output_q=q or _act_q(),
        trainable=False,
    )  # fmt: skip


def bn_layer(
    rng: np.random.Generator, name: str, in_shape: tuple[int, ...], x: np.ndarray | None = None
) -> Layer:
    """A batch-norm layer (lrt.batchnorm) with random gamma/beta (gamma 0.8 .. 1.2, as trained
    ones; tests/c/test_batchnorm_c.py covers the extremes); statistics of x (int8
    [N, H, W, C] inputs of the layer) when given, else random plausible ones."""
    c = int(in_shape[-1])
    gamma = np.round(rng.uniform(0.8, 1.2, c) * 4096)  # trained gammas stay near 1
    beta = np.round(rng.normal(0.0, 0.3, c) * 4096)
    if x is not None:
        mean, msq = batchnorm.population_stats(x, quant.ACT_ZERO_POINT)
    else:
        m = rng.uniform(5, 120, c)
        sd = rng.uniform(2, 60, c)
        mean, msq = np.round(m * 2**16), np.round((m * m + sd * sd) * 2**8)
    return Layer(
        kind="batchnorm", name=name, in_shape=tuple(in_shape), out_shape=tuple(in_shape),
        input_q=_act_q(), output_q=_act_q(batchnorm.OUT_EXP, batchnorm.OUT_ZERO_POINT),
        trainable=True, bn_gamma=gamma.astype(np.int32), bn_beta=beta.astype(np.int32),
        bn_mean=np.asarray(mean).astype(np.int32), bn_msq=np.asarray(msq).astype(np.int32),
        bn_pow_q30=0,
    )  # fmt: skip


def random_preset_model(
    preset: str = "mcu", seed: int = 0, calib: np.ndarray | None = None
) -> Model:
    """The preset's topology (presets.plan_layers, no TensorFlow) with random weights; batch-norm
    statistics are those of the random network on ``calib`` (int8 inputs [N, H, W, C]),
    random images by default."""
    from lrt import presets
    from lrt.reference import layer_forward

    rng = np.random.default_rng(seed)
    spec = presets.get_spec(preset)
    layers: list[Layer] = []
    # separate generator: the weights of models without batch norm stay as they were
    if not spec.streaming_bn:
        calib = None
    elif calib is None:
        crng = np.random.default_rng(seed + 10_000)
        calib = crng.integers(-128, 128, (64, *spec.input_shape)).astype(np.int8)
    for p in presets.plan_layers(spec):
        in_q = QParams(2.0**p.in_exp, p.in_zero_point, p.in_exp)
        if p.kind == "conv2d":
            layers.append(
                weight_layer(rng, "conv2d", p.name, p.in_shape, p.out_shape[-1], in_q=in_q)
            )
        elif p.kind == "dense":
            layers.append(
                weight_layer(
                    rng, "dense", p.name, p.in_shape, p.out_shape[-1], relu=p.relu, in_q=in_q
                )
            )
        elif p.kind == "maxpool2d":
            layers.append(pool_layer(p.name, p.in_shape))
        elif p.kind == "batchnorm":
            layers.append(bn_layer(rng, p.name, p.in_shape, calib))
        else:
            layers.append(flatten_layer(p.name, p.in_shape, in_q))
        if calib is not None:
            calib = layer_forward(layers[-1], calib)
    return Model(
        name=f"random-{preset}", input_shape=tuple(spec.input_shape), input_q=_act_q(),
        num_classes=spec.num_classes, layers=layers, preset=preset,
    )  # fmt: skip


# ---- numpy references of the backward kernels -------------------------------------------------


def round_shift(v: np.ndarray | int, s: int) -> np.ndarray:
    """v / 2**s rounded half away from zero (exact integer arithmetic)."""
    v = np.asarray(v, dtype=np.int64)
    if s == 0:
        return v
    half = np.int64(1) << (s - 1)
    mag = (np.abs(v) + half) >> s
    return np.where(v < 0, -mag, mag)


def bfp_shift(max_abs: int) -> int:
    s = 0
    while int(round_shift(max_abs, s)) > 127:
        s += 1
    return s


def bfp_quantize(v: np.ndarray) -> tuple[np.ndarray, int]:
    """(int8 values, shift) of lrt_bp's block-float requantization."""
    s = bfp_shift(int(np.max(np.abs(v))) if v.size else 0)
    return round_shift(v, s).astype(np.int8), s


def im2col(layer: Layer, x: np.ndarray) -> np.ndarray:
    """[out_pixels, m] patches of one input [h, w, c] (padding = zero point)."""
    if layer.kind == "dense":
        return x.reshape(1, -1)
    kh, kw = kernel_of(layer)
    pt, pl = pads_of(layer)
    oh, ow, _ = _hwc(layer.out_shape)
    h, w, c = _hwc(layer.in_shape)
    sh, sw = layer.stride
    pb = max((oh - 1) * sh + kh - h - pt, 0)
    pr = max((ow - 1) * sw + kw - w - pl, 0)
    xp = np.pad(
        x.reshape(h, w, c), ((pt, pb), (pl, pr), (0, 0)), constant_values=layer.input_q.zero_point
    )
    win = sliding_window_view(xp, (kh, kw), axis=(0, 1))  # [H', W', c, kh, kw]
    win = win[: (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]
    return win.transpose(0, 1, 3, 4, 2).reshape(oh * ow, kh * kw * c).astype(np.int64)


def input_grad_exact(layer: Layer, dz: np.ndarray) -> np.ndarray:
    """W^T dz scattered back onto the input (int64), the adjoint of im2col."""
    assert layer.weights is not None
    n = int(layer.weights.shape[0])
    wmat = layer.weights.reshape(n, -1).astype(np.int64)
    if layer.kind == "dense":
        return (dz.reshape(1, n).astype(np.int64) @ wmat).reshape(-1)
    kh, kw = kernel_of(layer)
    pt, pl = pads_of(layer)
    oh, ow, _ = _hwc(layer.out_shape)
    h, w, c = _hwc(layer.in_shape)
    sh, sw = layer.stride
    cols = dz.reshape(oh * ow, n).astype(np.int64) @ wmat  # [pixels, kh*kw*c]
    big = np.zeros(((oh - 1) * sh + kh + h, (ow - 1) * sw + kw + w, c), dtype=np.int64)
    for p in range(oh * ow):
        oy, ox = divmod(p, ow)
        big[oy * sh : oy * sh + kh, ox * sw : ox * sw + kw] += cols[p].reshape(kh, kw, c)
    return big[pt : pt + h, pl : pl + w].reshape(-1)
