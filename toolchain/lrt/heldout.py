"""A model's held-out int8 accuracies, as its metadata records them.

Training measures them on the offline model and the gated write policy reads them as its
reference error (``lrt.policy.held_out_error``); a pull measures the same figures on the
weights a device learned, for its report (the pulled model keeps the training's).
"""

from __future__ import annotations

import numpy as np

from lrt.data.augment import elastic_deform
from lrt.model import META_FIELD_ACCURACY, META_TEST_ACCURACY, Model
from lrt.reference import forward_int8


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of logits against labels (NaN for no sample)."""
    if len(y) == 0:
        return float("nan")
    return float(np.mean(np.argmax(np.asarray(logits), axis=-1) == y))


def int8_accuracy(model: Model, x: np.ndarray, y: np.ndarray) -> float:
    """The integer model's accuracy (TFLite's arithmetic, lrt.reference) on float images."""
    return accuracy(forward_int8(model, model.quantize_input(x)), y)


def field_accuracy(model: Model, x_test: np.ndarray, y_test: np.ndarray, seed: int) -> float:
    """int8 accuracy on the test images deformed like the online streams: what a device with
    nothing to learn sees in the field (the gated write policy's reference error rate)."""
    x_field = elastic_deform(x_test, np.random.default_rng([seed, 0xF1E1D]))
    return int8_accuracy(model, x_field, y_test)


def measure(model: Model, x_test: np.ndarray, y_test: np.ndarray, seed: int) -> dict[str, float]:
    """The metadata entries of `model`'s held-out accuracies;
    `seed` is the training seed, which fixes the field-like deformation."""
    return {
        META_TEST_ACCURACY: int8_accuracy(model, x_test, y_test),
        META_FIELD_ACCURACY: field_accuracy(model, x_test, y_test, seed),
    }
