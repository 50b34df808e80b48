"""A Keras CNN the toolchain did not train, converted by TFLite, run bit-exact by lrt.

Keras model (random init, random biases, one epoch on random data) -> the standard
full-int8 TFLiteConverter (lrt.tfkeras.convert_keras_int8) -> lrt.tflite_import. Then the TFLite
reference interpreter (BUILTIN_REF), lrt.reference.forward_int8 and the C library must give
identical int8 logits on every input. The converted model is cached in build/test-cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_bitexact_net import build_net_driver, interpreter_logits, run_net_driver

from harness.buildcache import cache_lock
from lrt import reference as ref
from lrt.model import Model
from lrt.tflite_import import import_tflite

pytestmark = [
    pytest.mark.tf,
    pytest.mark.skipif(
        importlib.util.find_spec("tensorflow") is None, reason="needs the 'train' extra"
    ),
]

CACHE_NAME = "bitexact_keras_v1"  # bump when the model recipe below changes
N_RANDOM, N_IMAGES = 1000, 300


def _convert() -> bytes:
    from lrt import tfkeras

    keras = tfkeras.keras_api()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ])
    for layer in model.layers:  # non-zero biases, or the converter drops them
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.05, layer.bias.shape).astype(np.float32))
    x = rng.random((256, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return tfkeras.convert_keras_int8(model, x[:128])


@pytest.fixture(scope="module")
def tflite() -> bytes:
    with cache_lock(CACHE_NAME) as directory:
        path = directory / "model.tflite"
        if not path.exists():
            directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(_convert())
            os.replace(tmp, path)
        return path.read_bytes()


@pytest.fixture(scope="module")
def model(tflite: bytes) -> Model:
    return import_tflite(tflite, name="keras_cnn")


@pytest.fixture(scope="module")
def inputs(model: Model) -> np.ndarray:
    """Random int8 tensors plus smooth image-like inputs quantized with the input scale."""
    rng = np.random.default_rng(1)
    noise = rng.integers(-128, 128, (N_RANDOM, *model.input_shape)).astype(np.int8)
    yy, xx = np.mgrid[0:28, 0:28] / 27.0
    blobs = []
    for _ in range(N_IMAGES):
        cx, cy, r = rng.uniform(0.2, 0.8, 3)
        img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.05 + 0.2 * r))
        blobs.append(img[..., None])
    images = model.quantize_input(np.array(blobs))
    return np.concatenate([noise, images])


def test_import_structure(model: Model) -> None:
    assert [lay.kind for lay in model.layers] == [
        "conv2d", "conv2d", "maxpool2d", "flatten", "dense", "dense"]
    conv1, conv2, pool, flat, d1, d2 = model.layers
    assert model.input_shape == (28, 28, 1) and model.num_classes == 10
    assert (conv1.padding, conv1.stride, conv1.out_shape) == ("valid", (1, 1), (26, 26, 8))
    assert (conv2.padding, conv2.stride, conv2.out_shape) == ("same", (2, 2), (13, 13, 16))
    assert (pool.pool, pool.out_shape, flat.out_shape) == ((2, 2), (6, 6, 16), (576,))
    assert conv1.relu and conv2.relu and d1.relu and not d2.relu
    assert d2.act_min == -128 and d2.act_max == 127
    assert conv1.act_min == conv1.output_q.zero_point  # fused ReLU clamps at real 0
    for lay in (conv1, conv2, d1, d2):
        assert lay.bias is not None and np.any(lay.bias != 0)
        assert lay.weight_scales is not None and len(set(lay.weight_scales.tolist())) > 1
        assert lay.bias_exp is None
    assert not model.power_of_two


def test_reference_matches_interpreter(tflite: bytes, model: Model,
                                       inputs: np.ndarray) -> None:
    expect = interpreter_logits(tflite, inputs)
    got = ref.forward_int8(model, inputs)
    exact = int(np.sum(np.all(got == expect, axis=1)))
    assert exact == len(inputs), f"{exact}/{len(inputs)} inputs bit-exact"
    assert len(np.unique(np.argmax(expect, axis=1))) > 2


def test_c_forward_matches_interpreter(tflite: bytes, model: Model, inputs: np.ndarray,
                                       tmp_path: Path) -> None:
    exe = build_net_driver(model, tmp_path)
    logits, argmax, _ = run_net_driver(exe, model, inputs)
    expect = interpreter_logits(tflite, inputs)
    exact = int(np.sum(np.all(logits == expect, axis=1)))
    assert exact == len(inputs), f"{exact}/{len(inputs)} inputs bit-exact"
    assert np.array_equal(argmax, np.argmax(expect, axis=1))


@pytest.mark.slow
def test_lrt_build_model_firmware_matches_interpreter(
    tflite: bytes, inputs: np.ndarray, tmp_path: Path
) -> None:
    """The product path: lrt-build --model F.tflite, then lrt-emulate --inputs/--dump-logits."""
    import subprocess
    import sys

    bindir = Path(sys.executable).parent
    src = tmp_path / "foreign.tflite"
    src.write_bytes(tflite)
    out = tmp_path / "build"
    proc = subprocess.run(
        [str(bindir / "lrt-build"), "--board", "host", "--model", str(src), "--out", str(out)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.tflite").read_bytes() == tflite
    # trained elsewhere: the report names no training stack of ours
    assert json.loads((out / "report.json").read_text())["model"]["trained_with"] is None
    np.save(tmp_path / "x.npy", inputs)
    proc = subprocess.run(
        [str(bindir / "lrt-emulate"), "--build", str(out), "--inputs", str(tmp_path / "x.npy"),
         "--dump-logits", str(tmp_path / "y.npy")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "y.npy")
    expect = interpreter_logits(tflite, inputs)
    exact = int(np.sum(np.all(got == expect, axis=1)))
    assert exact == len(inputs) >= 1000, f"{exact}/{len(inputs)} inputs bit-exact"
