"""Keras training, quantization-aware training in the paper's formats, export (.tflite + IR).

This is the only module of the toolchain that imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf


def convert_keras_int8(model: Any, representative: np.ndarray) -> bytes:
    """Standard TFLiteConverter full-integer conversion (int8 in/out, builtins int8 only)."""
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
    return bytes(converter.convert())
