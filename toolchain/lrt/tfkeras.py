"""The only module of the toolchain that imports TensorFlow, lazily (it is the optional
extra ``train``): everything else that needs TensorFlow or Keras calls :func:`tf_keras`, so
the presets, the IR, the budget and the firmware tools work without it."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from lrt import console
from lrt.errors import UserError

TRAIN_EXTRA_MISSING = (
    "training a model needs TensorFlow, which is not installed: pip install 'lrt[train]' "
    "(or build from a trained full-integer .tflite: --model FILE)"
)


TRAIN_MODULES = ("tensorflow", "keras")


def training_available() -> bool:
    """TensorFlow and Keras are installed (looked up without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in TRAIN_MODULES)


@functools.cache
def tf_keras() -> tuple[Any, Any]:
    """(tensorflow, keras), imported on first use with their logs muted."""
    # TensorFlow's C++ logs (3: errors too; its "errors" at start-up are harmless notices)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if console.verbose() else "3")
    # oneDNN's fused kernels may reorder float sums; the QAT graph relies on exact sums.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import keras
        import tensorflow as tf
    except ModuleNotFoundError as exc:
        if exc.name not in TRAIN_MODULES:
            raise  # installed but broken: its own error says more
        raise UserError(TRAIN_EXTRA_MISSING) from None

    if not console.verbose():
        tf.get_logger().setLevel(logging.ERROR)
        with contextlib.suppress(ImportError):
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
    return tf, keras


def keras_api() -> Any:
    """The keras module (for tests and tools that build models the toolchain did not train)."""
    return tf_keras()[1]


def convert_keras_int8(model: Any, representative: np.ndarray) -> bytes:
    """Standard TFLiteConverter full-integer conversion (int8 in/out, builtins int8 only)."""
    tf, _ = tf_keras()
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
