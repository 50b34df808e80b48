"""Python re-derivation of the dummy request server documented in proto_dummy.h (the
expected replies for the client tests; independent of the C code)."""

from __future__ import annotations

import numpy as np

IN_SHAPE = (4, 4, 3)
INPUT_SIZE = 48
CLASSES = 10
LAYERS = 2
BLOB_SIZE = 5000


def dummy_reply(x: np.ndarray) -> tuple[np.ndarray, int]:
    u = np.asarray(x, dtype=np.int8).reshape(-1).view(np.uint8)
    logits = np.array([u[i % INPUT_SIZE] ^ i for i in range(CLASSES)], dtype=np.uint8)
    return logits.view(np.int8), int(u[0]) % CLASSES


def blob_bytes(offset: int, n: int) -> bytes:
    return bytes(((i * 7 + 3) & 0xFF) for i in range(offset, offset + n))


def random_inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    xs = rng.integers(-128, 128, size=(n, *IN_SHAPE), dtype=np.int8)
    flat = xs.reshape(n, -1)
    flat[(flat[:, 0] == 0x7F) & (flat[:, 1] == 0x7F), 1] = 0  # the handler-error trigger
    return xs
