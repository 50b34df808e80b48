"""Quantization-aware training in the paper's fixed formats, export to the IR and to .tflite.

This is the only module of the toolchain that imports TensorFlow, and it does so lazily:
the presets (:data:`PRESETS`), the layer plan and :func:`architecture` (the IR's shapes
with zero parameters, what the RAM budget needs before any training) work without
TensorFlow installed (it is the optional extra ``train``).

Every weight layer computes ``y = alpha * conv(x, Wq) + bq`` in the paper's formats
(Gural et al. 2020, "Supporting techniques"; see quant.py):

* ``Wq`` 8 bit in [-1, 1) (LSB 2**-7), ``alpha = 2**layer_alpha_exp(fan_in, relu)``, so the
  stored int8 weight has the scale ``2**(alpha_exp - 7)``;
* ``bq`` 16 bit in [-8, 8) (LSB 2**-12);
* activations ReLU + clip to [0, 2) at LSB 2**-7 (int8 with zero point -128), logits signed
  8 bit at LSB 2**LOGIT_EXP; the input image [0, 1] at LSB 2**-7, zero point -128.

The Keras forward pass works on the integer grid and rounds its outputs exactly like
TFLite's MultiplyByQuantizedMultiplier does for a power-of-two multiplier, so the Keras
accuracy and the accuracy of the exported integer model agree (up to float32 summation,
which is exact for realistic layers). Straight-through estimators carry the gradients.

The IR (:class:`lrt.model.Model`) is the source of truth; the .tflite is built from it:
a float Keras model with the dequantized weights goes through the standard converter, then
the flatbuffer is rewritten so every scale, zero point, weight and bias equals the IR's.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrt import batchnorm, console, quant
from lrt.model import Layer, Model, QParams

WEIGHT_BITS = 8
ACT_LEVELS = 256  # activations: int8 with zero point -128 -> 0 .. 255 steps of 2**ACT_EXP
LOGIT_ZERO_POINT = 0
INPUT_EXP = quant.ACT_EXP
INPUT_ZERO_POINT = quant.ACT_ZERO_POINT


# ---- network specification --------------------------------------------------------------


@dataclass(frozen=True)
class NetSpec:
    """A CNN of 3x3 valid convolutions, 2x2 max-pools and dense layers (paper topology).

    ``dense`` lists the hidden dense widths; the classifier (``num_classes`` logits) is
    appended, and the first dense layer's input is the flattened last feature map.
    """

    name: str
    convs: tuple[int, ...]
    pool_after: tuple[int, ...]  # 1-based indices of the convs followed by a 2x2 max-pool
    dense: tuple[int, ...]
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (28, 28, 1)
    kernel: int = 3
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 5e-3
    # the paper's streaming batch norm after each pool (lrt.batchnorm); eta = 1 - 1/bn_batch
    # in the offline QAT (per mini-batch), the firmware uses the build's batch_conv
    streaming_bn: bool = False
    bn_batch: int = 10

    def __post_init__(self) -> None:
        bad = [i for i in self.pool_after if not 1 <= i <= len(self.convs)]
        if bad:
            raise ValueError(f"{self.name}: pool_after {bad} not in 1..{len(self.convs)}")
        if self.streaming_bn and not self.pool_after:
            raise ValueError(f"{self.name}: streaming batch norm follows the pools; there are none")
        if self.bn_batch < 1:
            raise ValueError(f"{self.name}: bn_batch must be >= 1")


PRESETS: dict[str, NetSpec] = {
    # Gural et al. 2020: 4 x conv 3x3 (128), pool after conv 2 and 4, dense 2048 -> 512 -> 10.
    "paper": NetSpec("paper", (128, 128, 128, 128), (2, 4), (512,), epochs=4, learning_rate=2e-3),
    # Same topology, narrow enough to train on a Cortex-M4 in < 64 KB of RAM (the budget of
    # its lrt-maxnorm firmware: about 51 KB at rank 4).
    "mcu": NetSpec("mcu", (8, 8, 16, 16), (2, 4), (64,)),
    # Same topology again for the smallest parts (Cortex-M3/M0+ with 64 KB RAM and a few
    # KB of NVM for two weight sets): about 5.8 KB of weights.
    "tiny": NetSpec("tiny", (4, 4, 8, 8), (2, 4), (32,)),
    # The paper's streaming batch norm after each pool (mcu = the ablation without it).
    "mcu-bn": NetSpec("mcu-bn", (8, 8, 16, 16), (2, 4), (64,), streaming_bn=True),
    "paper-bn": NetSpec(
        "paper-bn",
        (128, 128, 128, 128),
        (2, 4),
        (512,),
        epochs=4,
        learning_rate=2e-3,
        streaming_bn=True,
    ),
}
DEFAULT_PRESET = "mcu"


@dataclass(frozen=True)
class LayerPlan:
    """Shapes and formats of one layer, derived from a NetSpec (no TensorFlow needed)."""

    kind: str  # conv2d | maxpool2d | flatten | dense
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    relu: bool = False
    fan_in: int = 0
    alpha_exp: int = 0
    in_exp: int = quant.ACT_EXP
    out_exp: int = quant.ACT_EXP
    kernel: int = 0  # conv kernel size
    in_zero_point: int = quant.ACT_ZERO_POINT

    @property
    def weight_exp(self) -> int:
        return self.alpha_exp + quant.WEIGHT_EXP

    @property
    def acc_exp(self) -> int:
        return self.in_exp + self.weight_exp

    @property
    def has_weights(self) -> bool:
        return self.kind in ("conv2d", "dense")

    @property
    def out_zero_point(self) -> int:
        if self.kind == "batchnorm":
            return batchnorm.OUT_ZERO_POINT
        if self.kind in ("maxpool2d", "flatten"):
            return self.in_zero_point
        return quant.ACT_ZERO_POINT if self.relu else LOGIT_ZERO_POINT

    @property
    def out_int_range(self) -> tuple[int, int]:
        """Range of (q - zero_point) of the output: [0, 255] after ReLU, [-128, 127] logits."""
        if (self.kind == "dense" and not self.relu) or self.kind == "batchnorm":
            return -128, 127
        return 0, ACT_LEVELS - 1


def get_spec(preset: str | NetSpec) -> NetSpec:
    if isinstance(preset, NetSpec):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}") from None


def plan_layers(spec: NetSpec) -> list[LayerPlan]:
    """The layer sequence of ``spec`` with shapes, fan-ins and power-of-two exponents."""
    plans: list[LayerPlan] = []
    h, w, c = spec.input_shape
    k = spec.kernel
    # format of the activation the next layer reads: ReLU outputs, or batch-norm outputs
    a_exp, a_zp = quant.ACT_EXP, quant.ACT_ZERO_POINT
    for i, filters in enumerate(spec.convs, start=1):
        if h < k or w < k:
            raise ValueError(f"{spec.name}: conv{i} input {h}x{w} is smaller than the kernel")
        fan_in = k * k * c
        plans.append(
            LayerPlan(
                "conv2d",
                f"conv{i}",
                (h, w, c),
                (h - k + 1, w - k + 1, filters),
                True,
                fan_in,
                quant.layer_alpha_exp(fan_in, True),
                in_exp=a_exp,
                kernel=k,
                in_zero_point=a_zp,
            )
        )
        h, w, c = h - k + 1, w - k + 1, filters
        a_exp, a_zp = quant.ACT_EXP, quant.ACT_ZERO_POINT
        if i in spec.pool_after:
            plans.append(LayerPlan("maxpool2d", f"pool{i}", (h, w, c), (h // 2, w // 2, c)))
            h, w = h // 2, w // 2
            if spec.streaming_bn:
                plans.append(
                    LayerPlan(
                        "batchnorm", f"bn{i}", (h, w, c), (h, w, c), out_exp=batchnorm.OUT_EXP
                    )
                )
                a_exp, a_zp = batchnorm.OUT_EXP, batchnorm.OUT_ZERO_POINT
    n = h * w * c
    plans.append(
        LayerPlan(
            "flatten", "flatten", (h, w, c), (n,), in_exp=a_exp, out_exp=a_exp, in_zero_point=a_zp
        )
    )
    widths = [*spec.dense, spec.num_classes]
    for j, units in enumerate(widths, start=1):
        last = j == len(widths)
        plans.append(
            LayerPlan(
                "dense",
                f"dense{j}",
                (n,),
                (units,),
                not last,
                n,
                quant.layer_alpha_exp(n, not last),
                in_exp=a_exp,
                out_exp=quant.LOGIT_EXP if last else quant.ACT_EXP,
                in_zero_point=a_zp,
            )
        )
        n = units
        a_exp, a_zp = quant.ACT_EXP, quant.ACT_ZERO_POINT
    return plans


# ---- TensorFlow (lazy) ---------------------------------------------------------------------


@functools.cache
def _tf() -> tuple[Any, Any]:
    # TensorFlow's C++ logs (3: errors too; its "errors" at start-up are harmless notices)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if console.verbose() else "3")
    # oneDNN's fused kernels may reorder float sums; the QAT graph relies on exact sums.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras
    import tensorflow as tf

    if not console.verbose():
        import logging

        tf.get_logger().setLevel(logging.ERROR)
        with contextlib.suppress(ImportError):
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
    return tf, keras


def keras_api() -> Any:
    """The keras module (for tests and tools that build models the toolchain did not train)."""
    return _tf()[1]


def convert_keras_int8(model: Any, representative: np.ndarray) -> bytes:
    """Standard TFLiteConverter full-integer conversion (int8 in/out, builtins int8 only)."""
    tf, _ = _tf()
    rep = np.asarray(representative, dtype=np.float32)

    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(rep.shape[0]):
            yield [rep[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = gen
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # Keras prints the SavedModel signature; TF warns about the int8 input statistics,
        # which the representative dataset provides.
        warnings.filterwarnings("ignore", "Statistics for quantized inputs", UserWarning)
        return bytes(converter.convert())


def _ste(x: Any, rounded: Any) -> Any:
    """Forward ``rounded``, backward identity (straight-through estimator)."""
    tf, _ = _tf()
    return x + tf.stop_gradient(rounded - x)


def _round_pot_tflite(acc: Any, k: int) -> Any:
    """acc / 2**k rounded like TFLite's MultiplyByQuantizedMultiplier(acc, 2**30, 1 - k).

    Float twin of the integer code: SaturatingRoundingDoublingHighMul by 2**30 is
    floor((acc + 1) / 2), RoundingDivideByPOT rounds half away from zero. Valid while the
    integer-valued float32 inputs are below 2**24.
    """
    tf, _ = _tf()
    acc = tf.round(acc)
    if k <= 0:
        return acc * float(2.0 ** (-k))
    half = tf.floor((acc + 1.0) * 0.5)
    if k == 1:
        return half
    e = float(2.0 ** (k - 1))
    return tf.sign(half) * tf.floor(tf.abs(half) / e + 0.5)


@functools.cache
def _qat_classes() -> dict[str, type]:
    """Keras layers of the QAT model, defined on first use (keeps TF import lazy)."""
    tf, keras = _tf()

    class ClipConstraint(keras.constraints.Constraint):  # type: ignore[name-defined]
        def __init__(self, lo: float, hi: float) -> None:
            self.lo, self.hi = lo, hi

        def __call__(self, w: Any) -> Any:
            return keras.ops.clip(w, self.lo, self.hi)

        def get_config(self) -> dict[str, float]:
            return {"lo": self.lo, "hi": self.hi}

    class QuantizeInput(keras.layers.Layer):  # type: ignore[name-defined]
        """Images in [0, 1] -> the int8 input grid (same rounding as Model.quantize_input)."""

        def call(self, x: Any) -> Any:
            step = 2.0**INPUT_EXP
            q = tf.clip_by_value(tf.round(x / step), 0.0, float(ACT_LEVELS - 1))
            return q * step

    class QLayer(keras.layers.Layer):  # type: ignore[name-defined]
        """Base of QConv2D / QDense: latent float weights, fake-quantized in the forward pass."""

        def __init__(self, plan: LayerPlan, seed: int, **kwargs: Any) -> None:
            super().__init__(name=plan.name, **kwargs)
            self.plan = plan
            self.seed = seed
            assert plan.acc_exp <= quant.BIAS_EXP, "bias LSB finer than the accumulator LSB"

        def _make(self, shape: tuple[int, ...]) -> None:
            wmax = 1.0 - 2.0**quant.WEIGHT_EXP
            bmax = 8.0 - 2.0**quant.BIAS_EXP
            self.kernel = self.add_weight(
                name="kernel",
                shape=shape,
                initializer=keras.initializers.RandomUniform(-1.0, wmax, seed=self.seed),
                constraint=ClipConstraint(-1.0, wmax),
            )
            self.bias = self.add_weight(
                name="bias",
                shape=(self.plan.out_shape[-1],),
                initializer="zeros",
                constraint=ClipConstraint(-8.0, bmax),
            )

        def int_weights(self) -> tuple[Any, Any]:
            """(int8 weights, int16 biases) as integer-valued floats, STE gradients."""
            ws = 2.0 ** (-quant.WEIGHT_EXP)
            bs = 2.0 ** (-quant.BIAS_EXP)
            lim = 2 ** (quant.BIAS_BITS - 1)
            w = self.kernel * ws
            b = self.bias * bs
            wq = _ste(w, tf.clip_by_value(tf.round(w), -128.0, 127.0))
            bq = _ste(b, tf.clip_by_value(tf.round(b), float(-lim), float(lim - 1)))
            return wq, bq

        def requantize(self, acc_wo_bias: Any, bq: Any) -> Any:
            p = self.plan
            acc = acc_wo_bias + bq * float(2.0 ** (quant.BIAS_EXP - p.acc_exp))
            k = p.out_exp - p.acc_exp
            lin = acc * float(2.0 ** (-k))
            out = _ste(lin, _round_pot_tflite(acc, k))
            lo, hi = p.out_int_range
            # clip_by_value passes gradients only inside [lo, hi]: ReLU + saturation.
            return tf.clip_by_value(out, float(lo), float(hi)) * float(2.0**p.out_exp)

    class QConv2D(QLayer):
        def build(self, input_shape: Any) -> None:
            k = self.plan.kernel
            self._make((k, k, self.plan.in_shape[-1], self.plan.out_shape[-1]))

        def call(self, x: Any) -> Any:
            wq, bq = self.int_weights()
            xi = x * float(2.0 ** (-self.plan.in_exp))
            acc = tf.nn.conv2d(xi, wq, strides=1, padding="VALID")
            return self.requantize(acc, bq)

    class QDense(QLayer):
        def build(self, input_shape: Any) -> None:
            self._make((self.plan.fan_in, self.plan.out_shape[-1]))

        def call(self, x: Any) -> Any:
            wq, bq = self.int_weights()
            xi = x * float(2.0 ** (-self.plan.in_exp))
            return self.requantize(tf.matmul(xi, wq), bq)

    class QBatchNorm(keras.layers.Layer):  # type: ignore[name-defined]
        """The paper's streaming batch norm (lrt.batchnorm) for offline QAT.

        Training normalises with running statistics: each mini-batch's per-channel mean and
        mean square enter an exponential moving average (eta = 1 - 1/bn_batch, bias-corrected
        by 1 - eta**step) that includes the batch, and no gradient flows into them (the
        paper's rule, and the firmware's backward pass). Inference uses the same running
        statistics. gamma/beta are fake-quantized to 2**-12 (16 bit), the output to the signed
        8-bit grid 2**-6 in [-2, 2), with straight-through gradients.
        """

        def __init__(self, plan: LayerPlan, bn_batch: int, **kwargs: Any) -> None:
            super().__init__(name=plan.name, **kwargs)
            self.plan = plan
            self.eta = 1.0 - 1.0 / bn_batch

        def build(self, input_shape: Any) -> None:
            c = self.plan.out_shape[-1]
            pmax = 8.0 - 2.0**batchnorm.PARAM_EXP
            clip = ClipConstraint(-8.0, pmax)
            self.gamma = self.add_weight(
                name="gamma", shape=(c,), initializer="ones", constraint=clip
            )
            self.beta = self.add_weight(
                name="beta", shape=(c,), initializer="zeros", constraint=clip
            )
            self.ema_mean = self.add_weight(
                name="ema_mean", shape=(c,), initializer="zeros", trainable=False
            )
            self.ema_msq = self.add_weight(
                name="ema_msq", shape=(c,), initializer="zeros", trainable=False
            )
            self.eta_pow = self.add_weight(
                name="eta_pow", shape=(), initializer="ones", trainable=False
            )

        def statistics(self) -> tuple[Any, Any]:
            """Bias-corrected running (mean, variance); (0, 1) before the first batch."""
            corr = 1.0 - self.eta_pow
            safe = tf.maximum(corr, 1e-12)
            mu = tf.where(corr > 0.0, self.ema_mean / safe, tf.zeros_like(self.ema_mean))
            msq = tf.where(corr > 0.0, self.ema_msq / safe, tf.ones_like(self.ema_msq))
            return mu, tf.maximum(msq - mu * mu, 0.0)

        def call(self, x: Any, training: bool | None = None) -> Any:
            if training:
                xs = tf.stop_gradient(x)
                m = tf.reduce_mean(xs, axis=[0, 1, 2])
                q = tf.reduce_mean(xs * xs, axis=[0, 1, 2])
                self.ema_mean.assign(self.eta * self.ema_mean + (1.0 - self.eta) * m)
                self.ema_msq.assign(self.eta * self.ema_msq + (1.0 - self.eta) * q)
                self.eta_pow.assign(self.eta_pow * self.eta)
            mu, var = (tf.stop_gradient(v) for v in self.statistics())
            inv = tf.math.rsqrt(var + float(2.0**batchnorm.EPS_EXP))
            ps = 2.0 ** (-batchnorm.PARAM_EXP)
            g = self.gamma * ps
            b = self.beta * ps
            gq = _ste(g, tf.round(g)) / ps
            bq = _ste(b, tf.round(b)) / ps
            y = (gq * inv * (x - mu) + bq) * float(2.0 ** (-self.plan.out_exp))
            yq = _ste(y, tf.round(y))
            return tf.clip_by_value(yq, -128.0, 127.0) * float(2.0**self.plan.out_exp)

    return {
        "QuantizeInput": QuantizeInput,
        "QConv2D": QConv2D,
        "QDense": QDense,
        "QBatchNorm": QBatchNorm,
    }


def build_qat_model(spec: NetSpec, seed: int = 0) -> Any:
    """The Keras QAT model of ``spec`` (input float images in [0, 1], output real logits)."""
    _, keras = _tf()
    cls = _qat_classes()
    x = inp = keras.Input(spec.input_shape, name="image")
    x = cls["QuantizeInput"](name="quantize_input")(x)
    for i, p in enumerate(plan_layers(spec)):
        layer_seed = seed * 1000 + i
        if p.kind == "conv2d":
            x = cls["QConv2D"](p, layer_seed)(x)
        elif p.kind == "dense":
            x = cls["QDense"](p, layer_seed)(x)
        elif p.kind == "maxpool2d":
            x = keras.layers.MaxPooling2D(2, name=p.name)(x)
        elif p.kind == "batchnorm":
            x = cls["QBatchNorm"](p, spec.bn_batch)(x)
        else:
            x = keras.layers.Flatten(name=p.name)(x)
    return keras.Model(inp, x, name=f"lrt_{spec.name}")


# ---- export: IR --------------------------------------------------------------------------


def _pot(exp: int) -> float:
    return float(2.0**exp)


BN_STATS_SAMPLES = 512  # training images whose statistics a batch-norm layer exports


def _bn_layer(p: LayerPlan, kl: Any, in_q: QParams, out_q: QParams, x: np.ndarray | None) -> Layer:
    """IR batch-norm layer: gamma/beta of the QAT layer in the 16-bit format; statistics of
    its integer input x (the exact integer forward of the layers below on training images)
    or, without x, the QAT layer's running averages. Offline statistics are warmed up
    (eta**step = 0)."""
    ps = 2.0 ** (-batchnorm.PARAM_EXP)
    lo, hi = batchnorm.PARAM_MIN, batchnorm.PARAM_MAX
    gamma = np.clip(np.round(np.asarray(kl.gamma.numpy(), np.float64) * ps), lo, hi)
    beta = np.clip(np.round(np.asarray(kl.beta.numpy(), np.float64) * ps), lo, hi)
    if x is not None:
        mean, msq = batchnorm.population_stats(x, in_q.zero_point)
    else:
        mu, var = (np.asarray(v.numpy(), np.float64) for v in kl.statistics())
        lsb = 2.0**-p.in_exp  # real -> input LSBs
        mean = np.round(mu * lsb * 2.0**batchnorm.MEAN_FRAC)
        msq = np.round((var + mu * mu) * lsb * lsb * 2.0**batchnorm.MSQ_FRAC)
    return Layer(
        kind="batchnorm",
        name=p.name,
        in_shape=p.in_shape,
        out_shape=p.out_shape,
        input_q=in_q,
        output_q=out_q,
        trainable=True,
        bn_gamma=gamma.astype(np.int32),
        bn_beta=beta.astype(np.int32),
        bn_mean=np.asarray(mean).astype(np.int32),
        bn_msq=np.asarray(msq).astype(np.int32),
        bn_pow_q30=0,
    )


def sync_qat_batchnorm(qat_model: Any, ir: Model) -> None:
    """Set the QAT model's running statistics to the IR's (so Keras evaluates with the
    statistics the firmware starts from)."""
    for lay in ir.layers:
        if lay.kind != "batchnorm":
            continue
        assert lay.bn_mean is not None and lay.bn_msq is not None and lay.input_q.exp is not None
        kl = qat_model.get_layer(lay.name)
        lsb = 2.0**lay.input_q.exp
        mean = lay.bn_mean.astype(np.float64) * 2.0**-batchnorm.MEAN_FRAC * lsb
        msq = lay.bn_msq.astype(np.float64) * 2.0**-batchnorm.MSQ_FRAC * lsb * lsb
        kl.ema_mean.assign(mean.astype(np.float32))
        kl.ema_msq.assign(msq.astype(np.float32))
        kl.eta_pow.assign(0.0)


def export_ir(
    qat_model: Any,
    spec: NetSpec,
    meta: dict[str, Any] | None = None,
    stats_x: np.ndarray | None = None,
) -> Model:
    """Integer IR of a trained QAT model (the same integers its forward pass used).

    ``stats_x`` (float images in [0, 1]): the batch-norm layers' exported statistics are the
    exact integer statistics of their input on these images (else the QAT running averages).
    """
    from lrt.reference import layer_forward

    layers: list[Layer] = []
    plans = plan_layers(spec)
    n_stats = max([i + 1 for i, p in enumerate(plans) if p.kind == "batchnorm"] or [0])
    cur: np.ndarray | None = None  # integer input of the current layer (batch-norm stats)
    if stats_x is not None and n_stats:
        xs = np.asarray(stats_x, dtype=np.float64)[:BN_STATS_SAMPLES]
        cur = np.clip(np.round(xs / 2.0**INPUT_EXP) + INPUT_ZERO_POINT, -128, 127)
        cur = cur.astype(np.int8)
    for i, p in enumerate(plans):
        in_q = QParams(_pot(p.in_exp), p.in_zero_point, p.in_exp)
        out_q = QParams(_pot(p.out_exp), p.out_zero_point, p.out_exp)
        if layers and cur is not None and i < n_stats:
            cur = layer_forward(layers[-1], cur)
        if p.kind == "batchnorm":
            layers.append(_bn_layer(p, qat_model.get_layer(p.name), in_q, out_q, cur))
            continue
        if not p.has_weights:
            layers.append(
                Layer(
                    kind=p.kind,  # type: ignore[arg-type]
                    name=p.name,
                    in_shape=p.in_shape,
                    out_shape=p.out_shape,
                    input_q=in_q,
                    output_q=out_q,
                    stride=(2, 2) if p.kind == "maxpool2d" else (1, 1),
                    trainable=False,
                )
            )
            continue
        kl = qat_model.get_layer(p.name)
        w = np.asarray(kl.kernel.numpy(), dtype=np.float32)
        b = np.asarray(kl.bias.numpy(), dtype=np.float32)
        lim = 2 ** (quant.BIAS_BITS - 1)
        w_int = np.clip(np.round(w * np.float32(2.0 ** (-quant.WEIGHT_EXP))), -128, 127)
        b_int = np.clip(np.round(b * np.float32(2.0 ** (-quant.BIAS_EXP))), -lim, lim - 1)
        if p.kind == "conv2d":
            weights = w_int.astype(np.int8).transpose(3, 0, 1, 2)  # HWIO -> OHWI
        else:
            weights = w_int.astype(np.int8).T  # [in, out] -> [out, in]
        n_out = p.out_shape[-1]
        bias = b_int.astype(np.int64) << (quant.BIAS_EXP - p.acc_exp)
        mult, shift = quant.quantize_multipliers(np.full(n_out, 2.0 ** (p.acc_exp - p.out_exp)))
        lo, hi = p.out_int_range
        layers.append(
            Layer(
                kind=p.kind,  # type: ignore[arg-type]
                name=p.name,
                in_shape=p.in_shape,
                out_shape=p.out_shape,
                input_q=in_q,
                output_q=out_q,
                weights=np.ascontiguousarray(weights),
                bias=bias.astype(np.int32),
                weight_scales=np.full(n_out, 2.0**p.weight_exp, dtype=np.float64),
                out_multiplier=mult,
                out_shift=shift,
                act_min=lo + p.out_zero_point,
                act_max=hi + p.out_zero_point,
                relu=p.relu,
                weight_exp=p.weight_exp,
                bias_exp=quant.BIAS_EXP,
            )
        )
    return Model(
        name=spec.name,
        input_shape=tuple(spec.input_shape),
        input_q=QParams(_pot(INPUT_EXP), INPUT_ZERO_POINT, INPUT_EXP),
        num_classes=spec.num_classes,
        layers=layers,
        preset=spec.name,
        meta=dict(meta or {}),
    )


class _Zeros:
    """A parameter tensor of zeros with Keras's ``numpy()`` accessor."""

    def __init__(self, *shape: int) -> None:
        self.value = np.zeros(shape, dtype=np.float32)

    def numpy(self) -> np.ndarray:
        return self.value


class _ZeroLayer:
    """Stands in for a trained Keras layer of a plan: every parameter zero."""

    def __init__(self, p: LayerPlan) -> None:
        c = p.out_shape[-1]
        if p.kind == "conv2d":
            self.kernel = _Zeros(p.kernel, p.kernel, p.in_shape[-1], c)  # HWIO
        elif p.kind == "dense":
            self.kernel = _Zeros(p.in_shape[-1], c)
        self.bias = self.gamma = self.beta = _Zeros(c)

    def statistics(self) -> tuple[_Zeros, _Zeros]:
        return self.gamma, self.gamma


class _ZeroModel:
    def __init__(self, spec: NetSpec) -> None:
        self.layers = {p.name: _ZeroLayer(p) for p in plan_layers(spec)}

    def get_layer(self, name: str) -> _ZeroLayer:
        return self.layers[name]


def architecture(preset: str | NetSpec) -> Model:
    """The IR of ``preset`` with every parameter zero: the shapes, formats and layer table
    of the model training would produce, without TensorFlow (what the RAM/flash budget and
    the board checks need before anything is trained)."""
    spec = get_spec(preset)
    return export_ir(_ZeroModel(spec), spec, meta={"architecture_only": True})


# ---- export: .tflite -------------------------------------------------------------------------


def _float_keras_from_ir(model: Model) -> Any:
    """Plain float Keras model with the IR's dequantized weights (batch size 1)."""
    _, keras = _tf()
    x = inp = keras.Input(model.input_shape, batch_size=1, name="image")
    for lay in model.layers:
        if lay.kind == "conv2d":
            assert lay.weights is not None and lay.weight_scales is not None
            kh, kw = int(lay.weights.shape[1]), int(lay.weights.shape[2])
            conv = keras.layers.Conv2D(
                int(lay.weights.shape[0]),
                (kh, kw),
                strides=lay.stride,
                padding=lay.padding,
                activation="relu" if lay.relu else None,
                name=lay.name,
            )
            x = conv(x)
            conv.set_weights(_dequantized(lay, (1, 2, 3, 0)))
        elif lay.kind == "dense":
            assert lay.weights is not None
            dense = keras.layers.Dense(
                int(lay.weights.shape[0]),
                activation="relu" if lay.relu else None,
                name=lay.name,
            )
            x = dense(x)
            dense.set_weights(_dequantized(lay, (1, 0)))
        elif lay.kind == "maxpool2d":
            x = keras.layers.MaxPooling2D(
                lay.pool, strides=lay.stride, padding=lay.padding, name=lay.name
            )(x)
        elif lay.kind == "batchnorm":
            # the per-channel affine the tables encode, as the converter's DEPTHWISE_CONV_2D
            dw = keras.layers.DepthwiseConv2D(1, use_bias=True, name=lay.name)
            x = dw(x)
            w, b, _ = _bn_dequantized(lay)
            dw.set_weights([w.reshape(1, 1, -1, 1).astype(np.float32), b.astype(np.float32)])
        else:
            x = keras.layers.Flatten(name=lay.name)(x)
    return keras.Model(inp, x, name=f"{model.name}_float")


def _bn_dequantized(lay: Layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(real depthwise weights [C], real bias [C], filter scale exponents [C])."""
    assert lay.input_q.exp is not None and lay.output_q.exp is not None
    t = batchnorm.layer_tables(lay)
    e = t.weight_exps(lay.input_q.exp, lay.output_q.exp)
    w = t.w.astype(np.float64) * 2.0**e
    b = t.bias.astype(np.float64) * 2.0 ** (lay.input_q.exp + e)
    return w, b, e


def _dequantized(lay: Layer, perm: tuple[int, ...]) -> list[np.ndarray]:
    assert lay.weights is not None and lay.bias is not None and lay.weight_scales is not None
    scales = np.asarray(lay.weight_scales, dtype=np.float64)
    shape = (-1,) + (1,) * (lay.weights.ndim - 1)
    w = (lay.weights.astype(np.float64) * scales.reshape(shape)).transpose(perm)
    b = lay.bias.astype(np.float64) * lay.input_q.scale * scales
    return [w.astype(np.float32), b.astype(np.float32)]


_TFLITE_OPS = {
    "conv2d": "CONV_2D",
    "maxpool2d": "MAX_POOL_2D",
    "flatten": "RESHAPE",
    "dense": "FULLY_CONNECTED",
    "batchnorm": "DEPTHWISE_CONV_2D",
}


def tflite_op_names(tflite: bytes) -> list[str]:
    """Builtin operator names of the main subgraph, in execution order."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(tflite, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in m.subgraphs[0].operators:
        oc = m.operatorCodes[op.opcodeIndex]
        out.append(names[max(oc.builtinCode, oc.deprecatedBuiltinCode)])
    return out


def export_tflite(model: Model, representative: np.ndarray) -> bytes:
    """Full-int8 .tflite whose integers and scales equal the IR's (power-of-two models)."""
    if not model.power_of_two:
        raise ValueError("export_tflite needs a power-of-two IR (a model trained by lrt)")
    raw = convert_keras_int8(_float_keras_from_ir(model), representative)
    return _rewrite_flatbuffer(raw, model)


def _rewrite_flatbuffer(raw: bytes, model: Model) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    fb = schema.ModelT.InitFromPackedBuf(raw, 0)
    if len(fb.subgraphs) != 1:
        raise RuntimeError(f"converter emitted {len(fb.subgraphs)} subgraphs, expected 1")
    g = fb.subgraphs[0]
    ops = tflite_op_names(raw)
    expected = [_TFLITE_OPS[lay.kind] for lay in model.layers]
    if ops != expected:
        raise RuntimeError(f"converter emitted ops {ops}, expected {expected}")

    def set_q(t_index: int, scales: list[float], zps: list[int], dim: int = 0) -> None:
        qp = schema.QuantizationParametersT()
        qp.scale = [float(s) for s in scales]
        qp.zeroPoint = [int(z) for z in zps]
        qp.quantizedDimension = dim
        g.tensors[t_index].quantization = qp

    def new_buffer(data: np.ndarray) -> int:
        buf = schema.BufferT()
        buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
        fb.buffers.append(buf)
        return len(fb.buffers) - 1

    def bias_tensor(op: Any, lay: Layer, n_out: int) -> int:
        b_idx = int(op.inputs[2]) if len(op.inputs) > 2 else -1
        if b_idx < 0:  # the converter drops an all-zero bias: add it back
            bt = schema.TensorT()
            bt.name = f"{lay.name}/bias".encode()
            bt.shape = np.array([n_out], dtype=np.int32)
            g.tensors.append(bt)
            b_idx = len(g.tensors) - 1
            inputs = [int(i) for i in op.inputs]
            op.inputs = np.array([*inputs[:2], b_idx], dtype=np.int32)
        else:
            replaced.add(int(g.tensors[b_idx].buffer))
        return b_idx

    replaced: set[int] = set()
    set_q(int(g.inputs[0]), [model.input_q.scale], [model.input_q.zero_point])
    for op, lay in zip(g.operators, model.layers, strict=True):
        x_t, y_t = int(op.inputs[0]), int(op.outputs[0])
        set_q(x_t, [lay.input_q.scale], [lay.input_q.zero_point])
        set_q(y_t, [lay.output_q.scale], [lay.output_q.zero_point])
        if lay.kind == "batchnorm":
            t = batchnorm.layer_tables(lay)
            _, _, e = _bn_dequantized(lay)
            c = int(t.w.size)
            w_t = int(op.inputs[1])
            wt = g.tensors[w_t]
            if tuple(int(d) for d in wt.shape) != (1, 1, 1, c):
                raise RuntimeError(f"{lay.name}: tflite filter {list(wt.shape)} != [1, 1, 1, {c}]")
            replaced.add(int(wt.buffer))
            wt.buffer = new_buffer(t.w.reshape(1, 1, 1, c).astype(np.int8))
            wt.type = schema.TensorType.INT8
            set_q(w_t, [2.0 ** int(k) for k in e], [0] * c, 3)
            b_idx = bias_tensor(op, lay, c)
            bt = g.tensors[b_idx]
            bt.type = schema.TensorType.INT32
            bt.buffer = new_buffer(t.bias.astype("<i4"))
            set_q(b_idx, [lay.input_q.scale * 2.0 ** int(k) for k in e], [0] * c, 0)
            op.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.NONE
            continue
        if not lay.has_weights:
            continue
        assert lay.weights is not None and lay.bias is not None
        assert lay.weight_scales is not None
        n_out = int(lay.weights.shape[0])
        w_t = int(op.inputs[1])
        wt = g.tensors[w_t]
        if tuple(int(d) for d in wt.shape) != tuple(lay.weights.shape):
            raise RuntimeError(f"{lay.name}: tflite weight shape {list(wt.shape)} != IR")
        replaced.add(int(wt.buffer))
        wt.buffer = new_buffer(lay.weights.astype(np.int8))
        wt.type = schema.TensorType.INT8
        set_q(w_t, list(lay.weight_scales), [0] * n_out, 0)
        bias_scales = [lay.input_q.scale * float(s) for s in lay.weight_scales]
        b_idx = bias_tensor(op, lay, n_out)
        bt = g.tensors[b_idx]
        bt.type = schema.TensorType.INT32
        bt.buffer = new_buffer(lay.bias.astype("<i4"))
        set_q(b_idx, bias_scales, [0] * n_out, 0)
        opt = op.builtinOptions
        opt.fusedActivationFunction = (
            schema.ActivationFunctionType.RELU if lay.relu else schema.ActivationFunctionType.NONE
        )
    # Free the converter's weight/bias buffers (they may have been shared between tensors).
    used = {int(t.buffer) for t in g.tensors}
    for i in replaced - used:
        fb.buffers[i].data = None
    batchnorm.add_metadata(fb, model.layers)
    builder = flatbuffers.Builder(1024)
    builder.Finish(fb.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# ---- training ------------------------------------------------------------------------------


@dataclass
class TrainResult:
    model: Model
    tflite: bytes
    float_accuracy: float  # Keras QAT model on the test split
    int8_accuracy: float  # integer IR (lrt.reference, TFLite arithmetic) on the test split
    history: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0
    keras_model: Any = field(default=None, repr=False)  # the trained QAT model


def _check_data(spec: NetSpec, name: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != spec.input_shape:
        raise ValueError(f"{name}: images of shape {x.shape}, expected N x {spec.input_shape}")
    if len(y) != len(x):
        raise ValueError(f"{name}: {len(x)} images but {len(y)} labels")
    if len(x) and (float(np.min(x)) < 0.0 or float(np.max(x)) > 1.0):
        raise ValueError(f"{name}: pixel values must lie in [0, 1]")
    if len(y) and (int(np.min(y)) < 0 or int(np.max(y)) >= spec.num_classes):
        raise ValueError(f"{name}: labels must lie in 0..{spec.num_classes - 1}")


def seed_everything(seed: int) -> None:
    tf, keras = _tf()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train_model(
    preset: str | NetSpec,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    epochs: int | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """QAT-train ``preset`` on the given data and export the IR and the .tflite.

    ``max_steps`` caps the number of optimizer steps (one epoch over the first
    max_steps * batch_size training samples), for quick tests.
    """
    from lrt.reference import forward_int8

    spec = get_spec(preset)
    x_train, x_val, x_test = (np.asarray(a, dtype=np.float32) for a in (x_train, x_val, x_test))
    y_train, y_val, y_test = (np.asarray(a).astype(np.int64) for a in (y_train, y_val, y_test))
    for name, x, y in (
        ("train", x_train, y_train),
        ("val", x_val, y_val),
        ("test", x_test, y_test),
    ):
        _check_data(spec, name, x, y)
    if len(x_train) == 0:
        raise ValueError("train: no samples")
    n_epochs = spec.epochs if epochs is None else epochs
    if n_epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {n_epochs}")
    if max_steps is not None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        x_train = x_train[: max_steps * spec.batch_size]
        y_train = y_train[: max_steps * spec.batch_size]
        n_epochs = 1

    _, keras = _tf()
    seed_everything(seed)
    qat = build_qat_model(spec, seed)
    qat.compile(
        optimizer=keras.optimizers.Adam(spec.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    line = console.Progress("train", enabled=progress)
    steps = -(-len(x_train) // spec.batch_size)

    callback_base: Any = keras.callbacks.Callback

    class _OneLine(callback_base):
        """Keras's progress as one redrawn line (Keras's own bar is off)."""

        epoch = 0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            loss = (logs or {}).get("loss", float("nan"))
            line.update(
                f"{spec.name}: epoch {self.epoch + 1}/{n_epochs}, step {batch + 1}/{steps}, "
                f"loss {loss:.3f}"
            )

    t0 = time.perf_counter()
    history: dict[str, Any] = {}
    if n_epochs > 0:  # 0: the paper's from-scratch ablations start from the initial weights
        fit = qat.fit(
            x_train,
            y_train,
            batch_size=spec.batch_size,
            epochs=n_epochs,
            shuffle=True,
            validation_data=(x_val, y_val) if len(x_val) else None,
            verbose=0,
            callbacks=[_OneLine()],
        )
        history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    train_seconds = time.perf_counter() - t0

    meta: dict[str, Any] = {"seed": seed, "epochs": n_epochs, "max_steps": max_steps}
    ir = export_ir(qat, spec, meta, stats_x=x_train if spec.streaming_bn else None)
    sync_qat_batchnorm(qat, ir)  # Keras evaluates with the exported statistics
    float_acc = _accuracy(qat.predict(x_test, batch_size=256, verbose=0), y_test)
    ir.meta["float_accuracy"] = float_acc
    int8_acc = _accuracy(forward_int8(ir, ir.quantize_input(x_test)), y_test)
    ir.meta["int8_accuracy"] = int8_acc
    tflite = export_tflite(ir, x_train[:16])
    line.done(
        f"{spec.name}: {n_epochs} epoch{'s' if n_epochs != 1 else ''}, test accuracy float "
        f"{float_acc:.1%} / int8 {int8_acc:.1%} ({line.seconds():.0f} s)"
    )
    history["train_seconds"] = train_seconds
    return TrainResult(ir, tflite, float_acc, int8_acc, history, train_seconds, qat)


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    return float(np.mean(np.argmax(np.asarray(logits), axis=-1) == y))


def save_artifacts(result: TrainResult, out_dir: Path | str) -> None:
    """out_dir/model.tflite and the IR in out_dir/ir (model.json + model.npz)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.tflite").write_bytes(result.tflite)
    result.model.save(out / "ir")


def per_sample_training_rate(
    preset: str | NetSpec, x: np.ndarray, y: np.ndarray, lr: float = 0.01, warmup: int = 20
) -> float:
    """Samples/s of a TensorFlow per-sample (batch size 1) SGD loop on the same quantized
    (QAT) network: the desktop baseline the firmware's throughput is compared with."""
    import time

    tf, keras = _tf()
    model = build_qat_model(get_spec(preset))
    opt = keras.optimizers.SGD(learning_rate=lr)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    xs = tf.constant(x.astype(np.float32))
    ys = tf.constant(y.astype(np.int32))
    for i in range(min(warmup, len(x))):
        step(xs[i : i + 1], ys[i : i + 1])
    t0 = time.perf_counter()
    for i in range(len(x)):
        step(xs[i : i + 1], ys[i : i + 1])
    return len(x) / (time.perf_counter() - t0)


# ==== float_gradients: oracle of the on-device backward pass ===================================
# (appended for the on-device training work; the firmware side is lrt_backprop.c / lrt_train.c)


def float_gradients(model: Model, x: np.ndarray, y: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Float64 gradients of softmax cross-entropy wrt each weight layer's dequantized weights
    and biases, one gradient per sample.

    The network is the IR's dequantized network taken at the operating point of the integer
    forward pass: every layer's forward value is its dequantized int8 output from
    ``lrt.reference`` (TFLite arithmetic), and the fused clamp passes gradients where the
    int8 output q satisfies act_min < q < act_max (clipped straight-through estimator, the
    firmware's rule). Max-pool routes gradients to the first maximum of each window.

    ``x``: float images in [0, 1] (N x input_shape) or int8 model inputs; ``y``: N labels.
    Returns one dict per weight layer (``model.weight_layers()`` order) holding
    ``"weights"`` [N, *layer.weights.shape] (IR layout: OHWI / [out, in]) and ``"bias"``
    [N, out_c], both dL/d(real value).
    """
    grads = float_gradients_all(model, x, y)
    return [grads[lay.name] for lay in model.weight_layers()]


def float_gradients_all(
    model: Model, x: np.ndarray, y: np.ndarray
) -> dict[str, dict[str, np.ndarray]]:
    """:func:`float_gradients` for every layer with parameters, by layer name: weight layers
    give ``"weights"`` and ``"bias"``, batch-norm layers ``"gamma"`` and ``"beta"`` [N, C]
    (dL/d of the real gamma and beta).

    A batch-norm layer is y = gamma (x - mu) / std + beta with the running statistics mu,
    std of its current state as constants (the paper's streaming batch norm: no gradient
    flows into the statistics), with the float gamma / std (not the forward's 8-bit gain).
    """
    from lrt import batchnorm
    from lrt.reference import forward_int8_layers

    tf, _ = _tf()
    x = np.asarray(x)
    xq = x if x.dtype == np.int8 else model.quantize_input(x)
    labels = np.asarray(y).astype(np.int64).reshape(-1)
    if xq.shape[0] != labels.shape[0]:
        raise ValueError(f"{xq.shape[0]} inputs but {labels.shape[0]} labels")
    outs = forward_int8_layers(model, xq)
    players = [lay for lay in model.layers if lay.has_weights or lay.kind == "batchnorm"]
    variables = []
    consts: dict[str, tuple[Any, Any]] = {}  # batch norm: (mu, std), real units
    keys = {}
    for lay in players:
        if lay.kind == "batchnorm":
            assert lay.bn_gamma is not None and lay.bn_beta is not None
            assert lay.input_q.exp is not None
            t = batchnorm.layer_tables(lay)
            ps = 2.0**batchnorm.PARAM_EXP
            mu = t.mu.astype(np.float64) * 2.0 ** (lay.input_q.exp - batchnorm.MEAN_FRAC)
            std = t.std_q.astype(np.float64) * 2.0 ** (lay.input_q.exp - batchnorm.STD_FRAC)
            consts[lay.name] = (tf.constant(mu), tf.constant(std))
            g = lay.bn_gamma.astype(np.float64) * ps
            b = lay.bn_beta.astype(np.float64) * ps
            keys[lay.name] = ("gamma", "beta")
        else:
            assert lay.weights is not None and lay.bias is not None
            assert lay.weight_scales is not None
            scales = np.asarray(lay.weight_scales, dtype=np.float64)
            g = lay.weights.astype(np.float64) * scales.reshape(
                (-1,) + (1,) * (lay.weights.ndim - 1)
            )
            g = g.transpose(1, 2, 3, 0) if lay.kind == "conv2d" else g.T  # TF layouts
            b = lay.bias.astype(np.float64) * lay.input_q.scale * scales
            keys[lay.name] = ("weights", "bias")
        variables += [tf.Variable(g, dtype=tf.float64), tf.Variable(b, dtype=tf.float64)]

    def deq(q: np.ndarray, qp: QParams) -> Any:
        return tf.constant((q.astype(np.float64) - qp.zero_point) * qp.scale)[None]

    per_layer: dict[str, dict[str, list[np.ndarray]]] = {
        lay.name: {k: [] for k in keys[lay.name]} for lay in players
    }
    for i in range(xq.shape[0]):
        with tf.GradientTape() as tape:
            h = deq(xq[i], model.input_q)
            k = 0
            for li, lay in enumerate(model.layers):
                q = outs[li][i]
                if lay.kind in ("conv2d", "dense", "batchnorm"):
                    w_t, b_t = variables[2 * k], variables[2 * k + 1]
                    k += 1
                    if lay.kind == "conv2d":
                        z = tf.nn.conv2d(h, w_t, strides=lay.stride, padding=lay.padding.upper())
                    elif lay.kind == "dense":
                        z = tf.matmul(tf.reshape(h, [1, -1]), w_t)
                    else:
                        mu_t, std_t = consts[lay.name]
                        z = w_t * (h - mu_t) / std_t
                    z = z + b_t
                    mask = ((q > lay.act_min) & (q < lay.act_max)).astype(np.float64)
                    # forward value: the int8 output; derivative: the clamp's STE mask
                    h = deq(q, lay.output_q) + tf.constant(mask)[None] * (z - tf.stop_gradient(z))
                elif lay.kind == "maxpool2d":
                    h = tf.nn.max_pool2d(
                        h, ksize=lay.pool, strides=lay.stride, padding=lay.padding.upper()
                    )
                else:
                    h = tf.reshape(h, [1, -1])
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.constant(labels[i : i + 1]), logits=tf.reshape(h, [1, -1])
            )
        grads = tape.gradient(loss, variables)
        for k, lay in enumerate(players):
            ga = np.asarray(grads[2 * k].numpy(), dtype=np.float64)
            if lay.kind == "conv2d":
                ga = ga.transpose(3, 0, 1, 2)
            elif lay.kind == "dense":
                ga = ga.T
            first, second = keys[lay.name]
            per_layer[lay.name][first].append(ga)
            per_layer[lay.name][second].append(np.asarray(grads[2 * k + 1].numpy(), np.float64))
    return {name: {key: np.stack(v) for key, v in d.items()} for name, d in per_layer.items()}
