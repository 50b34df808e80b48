"""The desktop baseline the firmware's throughput is compared with (bench/)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from lrt.presets import NetSpec, get_spec
from lrt.qat import build_qat_model
from lrt.tfkeras import tf_keras


def per_sample_training_rate(
    preset: str | NetSpec, x: np.ndarray, y: np.ndarray, lr: float = 0.01, warmup: int = 20
) -> float:
    """Samples/s of a TensorFlow per-sample (batch size 1) SGD loop on the same quantized
    (QAT) network: the desktop baseline the firmware's throughput is compared with."""
    tf, keras = tf_keras()
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
