"""Gradient oracle (acceptance test of the on-device backward pass).

For the `mcu` preset, each weight layer's integer weight and bias gradient computed by the C
firmware code (lrt_backprop.c through lrt_train.c's layer hook), dequantized, must have
cosine similarity >= 0.98 with TensorFlow's float gradient of the same dequantized network on
the same sample (lrt.grad_oracle.float_gradients: ReLU/clamp masks from the quantized forward,
clipped STE), on every one of >= 20 samples.

Two models: the trained `mcu` IR (train.py, cached in build/test-cache and shared with
tests/unit/test_train_tf.py) and a random-weight IR of the same topology (fast, no training).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.backprop import (
    Reader,
    build_driver,
    random_preset_model,
    run_driver,
    write_net,
)
from helpers.e2e_support import plain_trained
from lrt.model import Model

pytestmark = [
    pytest.mark.tf,
    pytest.mark.skipif(
        importlib.util.find_spec("tensorflow") is None, reason="needs the 'train' extra"
    ),
]

N_SAMPLES = 24
MIN_COSINE = 0.98
# Same key and layout as tests/unit/test_train_tf.py, so the suite trains `mcu` only once.

@pytest.fixture(scope="module")
def data() -> Any:
    from lrt.data import load_dataset

    return load_dataset("mnist5k", seed=0)


@pytest.fixture(scope="module")
def trained_mcu() -> Model:
    return Model.load(plain_trained("mcu") / "ir")


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_driver(tmp_path_factory.mktemp("bp"))


def c_gradients(
    driver: Path, tmp: Path, model: Model, xq: np.ndarray, labels: np.ndarray
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per weight layer, per sample: (dequantized weight gradient, bias gradient) from C."""
    net = write_net(tmp / "net.bin", model)
    stdin = np.array([len(xq)], "<i4").tobytes()
    for x, y in zip(xq, labels, strict=True):
        stdin += x.astype(np.int8).tobytes() + np.array([y], "<i4").tobytes()
    r = Reader(run_driver(driver, net, ["grads"], stdin))
    windex = [i for i, lay in enumerate(model.layers) if lay.has_weights]
    out: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in windex]
    for _ in range(len(xq)):
        r.s8(model.num_classes)
        r.int32()
        while True:
            li = r.int32()
            if li == -1:
                break
            w_exp, b_exp, n, m = r.int32(), r.int32(), r.int32(), r.int32()
            dw = r.arr32(n * m) * 2.0**w_exp
            db = r.arr32(n) * 2.0**b_exp
            shape = model.layers[li].weights.shape  # type: ignore[union-attr]
            out[windex.index(li)].append((dw.reshape(shape), db))
    assert r.done()
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a.ravel(), b.ravel()) / (na * nb))


def check_oracle(
    driver: Path, tmp: Path, model: Model, x: np.ndarray, y: np.ndarray
) -> dict[str, tuple[float, float]]:
    from lrt import grad_oracle

    xq = model.quantize_input(x)
    ref = grad_oracle.float_gradients(model, xq, y)
    got = c_gradients(driver, tmp, model, xq, y)
    summary: dict[str, tuple[float, float]] = {}
    failures = []
    for lay, r, g in zip(model.weight_layers(), ref, got, strict=True):
        assert len(g) == len(xq), f"{lay.name}: C reported {len(g)} of {len(xq)} samples"
        for key, k in (("weights", 0), ("bias", 1)):
            cos = np.array([cosine(g[s][k], r[key][s]) for s in range(len(xq))])
            summary[f"{lay.name}.{key}"] = (float(cos.min()), float(cos.mean()))
            if cos.min() < MIN_COSINE:
                worst = int(np.argmin(cos))
                failures.append(f"{lay.name}.{key}: min cosine {cos.min():.4f} (sample {worst})")
    print("\ncosine similarity C vs TF (min, mean over samples):")
    for name, (lo, mean) in summary.items():
        print(f"  {name:<16} {lo:.5f} {mean:.5f}")
    assert not failures, "layers below cosine 0.98: " + "; ".join(failures)
    return summary


def test_grad_oracle_random_mcu(driver: Path, tmp_path: Path, data: Any) -> None:
    model = random_preset_model("mcu", seed=1)
    check_oracle(driver, tmp_path, model, data.x_test[:N_SAMPLES], data.y_test[:N_SAMPLES])


@pytest.mark.slow
def test_grad_oracle_trained_mcu(
    driver: Path, tmp_path: Path, trained_mcu: Model, data: Any
) -> None:
    assert trained_mcu.power_of_two
    # the online split: samples the offline training never saw
    check_oracle(
        driver, tmp_path, trained_mcu, data.x_online[:N_SAMPLES], data.y_online[:N_SAMPLES]
    )
