"""A user's own data for the tests: a small synthetic image set that is not MNIST.

Four classes of colour patterns on 16 x 20 RGB images (horizontal, vertical and diagonal
stripes, a centred blob), each image with its own phase, colour and noise: another shape,
channel count and class count than the shipped digits, and learnable in a few epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPE = (16, 20, 3)
CLASSES = 4


def patterns(
    n: int, seed: int, shape: tuple[int, int, int] = SHAPE
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, *shape] (16 x 20 x 3 by default) and int64 labels [n] in 0..3."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    y = rng.integers(0, CLASSES, n)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = np.empty((n, h, w, c), np.float32)
    for i in range(n):
        phase = rng.uniform(0.0, 2.0 * np.pi)
        base = (
            np.sin(yy * 1.2 + phase),
            np.sin(xx * 1.2 + phase),
            np.sin((yy + xx) * 0.9 + phase),
            2.0 * np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / 12.0) - 1.0,
        )[y[i]]
        colour = rng.uniform(0.3, 1.0, c)
        x[i] = 0.5 + 0.4 * base[..., None] * colour + rng.normal(0.0, 0.08, (h, w, c))
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8), y


def write_dataset(
    path: Path, n_train: int = 600, n_test: int = 200, shape: tuple[int, int, int] = SHAPE
) -> Path:
    """A dataset file (x_train, y_train, x_test, y_test) of ``patterns``."""
    x_train, y_train = patterns(n_train, seed=1, shape=shape)
    x_test, y_test = patterns(n_test, seed=2, shape=shape)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path
