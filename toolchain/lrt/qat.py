"""Quantization-aware training model in the paper's fixed formats (Gural et al. 2020,
"Supporting techniques"; see quant.py).

Every weight layer computes ``y = alpha * conv(x, Wq) + bq``:

* ``Wq`` 8 bit in [-1, 1) (LSB 2**-7), ``alpha = 2**layer_alpha_exp(fan_in, relu)``, so the
  stored int8 weight has the scale ``2**(alpha_exp - 7)``;
* ``bq`` 16 bit in [-8, 8) (LSB 2**-12);
* activations ReLU + clip to [0, 2) at LSB 2**-7 (int8 with zero point -128), logits signed
  8 bit at LSB 2**LOGIT_EXP; the input image [0, 1] at LSB 2**-7, zero point -128.

The Keras forward pass works on the integer grid and rounds its outputs exactly like
TFLite's MultiplyByQuantizedMultiplier does for a power-of-two multiplier, so the Keras
accuracy and the accuracy of the exported integer model agree (up to float32 summation,
which is exact for realistic layers). Straight-through estimators carry the gradients.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from lrt import batchnorm, quant
from lrt.model import Model
from lrt.presets import ACT_LEVELS, INPUT_EXP, LayerPlan, NetSpec, plan_layers
from lrt.tfkeras import tf_keras


def _ste(x: Any, rounded: Any) -> Any:
    """Forward ``rounded``, backward identity (straight-through estimator)."""
    tf, _ = tf_keras()
    return x + tf.stop_gradient(rounded - x)


def _round_pot_tflite(acc: Any, k: int) -> Any:
    """acc / 2**k rounded like TFLite's MultiplyByQuantizedMultiplier(acc, 2**30, 1 - k).

    Float twin of the integer code: SaturatingRoundingDoublingHighMul by 2**30 is
    floor((acc + 1) / 2), RoundingDivideByPOT rounds half away from zero. Valid while the
    integer-valued float32 inputs are below 2**24.
    """
    tf, _ = tf_keras()
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
    tf, keras = tf_keras()

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
    _, keras = tf_keras()
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
