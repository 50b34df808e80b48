"""QAT training and export of lrt.train, checked against the TFLite reference interpreter.

One `mcu` training run on the real mnist5k data is cached in build/test-cache (keyed by the
sources that determine it) and shared by the tests and xdist workers.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.e2e_support import plain_trained
from lrt import quant
from lrt.data import Dataset, load_dataset
from lrt.model import Model
from lrt.reference import forward_int8

pytestmark = [
    pytest.mark.tf,
    pytest.mark.skipif(
        importlib.util.find_spec("tensorflow") is None, reason="needs the 'train' extra"
    ),
]


@dataclass
class Trained:
    model: Model
    tflite: bytes
    float_accuracy: float
    int8_accuracy: float
    train_seconds: float


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset("mnist5k", seed=0)


@pytest.fixture(scope="module")
def mcu() -> Trained:
    path = plain_trained("mcu")
    info = json.loads((path / "result.json").read_text())
    return Trained(
        Model.load(path / "ir"), (path / "model.tflite").read_bytes(),
        info["float_accuracy"], info["int8_accuracy"], info["train_seconds"],
    )  # fmt: skip


def _interpreter(tflite: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=tflite, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    return it


def _run_tflite(tflite: bytes, x_int8: np.ndarray) -> np.ndarray:
    it = _interpreter(tflite)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    logits = []
    for i in range(len(x_int8)):
        it.set_tensor(inp["index"], x_int8[i : i + 1])
        it.invoke()
        logits.append(it.get_tensor(out["index"])[0].copy())
    return np.stack(logits)


def test_convert_keras_int8_standard_conversion() -> None:
    from lrt import export, tfkeras

    keras = tfkeras.keras_api()

    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    rep = np.random.default_rng(0).random((8, 8, 8, 1)).astype(np.float32)
    tfl = tfkeras.convert_keras_int8(m, rep)
    it = _interpreter(tfl)
    assert it.get_input_details()[0]["dtype"] == np.int8
    assert it.get_output_details()[0]["dtype"] == np.int8
    ops = export.tflite_op_names(tfl)
    assert "CONV_2D" in ops and "FULLY_CONNECTED" in ops
    assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops


def test_mcu_int8_accuracy_matches_float(mcu: Trained, data: Dataset) -> None:
    # Recompute the integer accuracy from the saved IR instead of trusting the record.
    logits = forward_int8(mcu.model, mcu.model.quantize_input(data.x_test))
    int8_acc = float(np.mean(np.argmax(logits, axis=1) == data.y_test))
    assert int8_acc == pytest.approx(mcu.int8_accuracy)
    assert abs(int8_acc - mcu.float_accuracy) <= 0.01
    assert int8_acc >= 0.9, f"mcu int8 test accuracy {int8_acc:.3f}: training went wrong"
    print(
        f"mcu: float {mcu.float_accuracy:.4f} int8 {int8_acc:.4f} train {mcu.train_seconds:.1f} s"
    )


def test_tflite_matches_numpy_integer_forward(mcu: Trained, data: Dataset) -> None:
    x = mcu.model.quantize_input(data.x_test[:150])
    ref = forward_int8(mcu.model, x)
    got = _run_tflite(mcu.tflite, x)
    np.testing.assert_array_equal(got, ref)
    # Not a vacuous match: the logits spread and classify.
    assert len(np.unique(ref)) > 50
    assert np.mean(np.argmax(ref, axis=1) == data.y_test[:150]) > 0.85


def test_tflite_parameters_are_the_irs(mcu: Trained) -> None:
    from ai_edge_litert import schema_py_generated as schema

    from lrt import export

    assert export.tflite_op_names(mcu.tflite) == [
        "CONV_2D", "CONV_2D", "MAX_POOL_2D", "CONV_2D", "CONV_2D", "MAX_POOL_2D",
        "RESHAPE", "FULLY_CONNECTED", "FULLY_CONNECTED",
    ]  # fmt: skip
    fb = schema.ModelT.InitFromPackedBuf(mcu.tflite, 0)
    g = fb.subgraphs[0]

    def qparams(t: int) -> tuple[list[float], list[int]]:
        q = g.tensors[t].quantization
        return [float(s) for s in q.scale], [int(z) for z in q.zeroPoint]

    def data_of(t: int, dtype: str) -> np.ndarray:
        return np.frombuffer(bytes(fb.buffers[g.tensors[t].buffer].data), dtype=dtype)

    def pot(exp: int | None) -> float:
        assert exp is not None
        return 2.0**exp

    for op, lay in zip(g.operators, mcu.model.layers, strict=True):
        sx, zx = qparams(int(op.inputs[0]))
        sy, zy = qparams(int(op.outputs[0]))
        assert (sx, zx) == ([pot(lay.input_q.exp)], [lay.input_q.zero_point])
        assert (sy, zy) == ([pot(lay.output_q.exp)], [lay.output_q.zero_point])
        if not lay.has_weights:
            continue
        assert lay.weights is not None and lay.bias is not None and lay.weight_exp is not None
        w_t, b_t = int(op.inputs[1]), int(op.inputs[2])
        n = lay.weights.shape[0]
        assert qparams(w_t) == ([2.0**lay.weight_exp] * n, [0] * n)
        assert qparams(b_t) == ([pot(lay.acc_exp)] * n, [0] * n)
        np.testing.assert_array_equal(data_of(w_t, "i1"), lay.weights.ravel())
        np.testing.assert_array_equal(data_of(b_t, "<i4"), lay.bias)
    # what training measured travels with it (the write policy's gate reference)
    from lrt.policy import held_out_error
    from lrt.tflite_import import import_tflite

    imported = import_tflite(mcu.tflite)
    assert imported.meta["int8_field_accuracy"] == mcu.model.meta["int8_field_accuracy"]
    # and so do the layer names --train-layers selects by (they came back as conv2d, ...)
    assert [lay.name for lay in imported.layers] == [lay.name for lay in mcu.model.layers]
    assert held_out_error(imported.meta) == held_out_error(mcu.model.meta) is not None


def test_ir_is_in_the_papers_formats(mcu: Trained) -> None:
    m = mcu.model
    assert m.power_of_two and m.preset == "mcu"
    assert (m.input_q.scale, m.input_q.zero_point) == (2.0**-7, -128)
    for lay in m.weight_layers():
        assert lay.weights is not None and lay.bias is not None
        assert lay.out_multiplier is not None and lay.out_shift is not None
        assert lay.weights.dtype == np.int8 and lay.bias.dtype == np.int32
        assert lay.weight_exp is not None and lay.acc_exp is not None
        assert lay.bias_exp == -12 and lay.acc_exp <= -12
        # int32 bias at the accumulator LSB carries a 16-bit value at LSB 2**-12.
        step = 1 << (-12 - lay.acc_exp)
        assert np.all(lay.bias % step == 0)
        assert np.all(np.abs(lay.bias // step) <= 2**15)
        fan_in = int(np.prod(lay.weights.shape[1:]))
        assert 2.0**lay.weight_exp <= np.sqrt(3 * (2 if lay.relu else 1) / fan_in) / 128
        np.testing.assert_array_equal(lay.weight_scales, 2.0**lay.weight_exp)
        assert lay.output_q.exp is not None
        # multiplier * 2**(shift - 31) is exactly the power-of-two rescale.
        real = lay.out_multiplier.astype(np.float64) * 2.0 ** (lay.out_shift - 31.0)
        np.testing.assert_array_equal(real, 2.0 ** (lay.acc_exp - lay.output_q.exp))
        # Trained weights use the int8 range, not a sliver of it.
        assert np.abs(lay.weights.astype(int)).max() >= 64
    last = m.layers[-1]
    assert (last.relu, last.output_q.exp, last.output_q.zero_point) == (False, quant.LOGIT_EXP, 0)


def test_training_is_deterministic_and_keras_equals_ir(data: Dataset) -> None:
    from lrt import train

    args = (data.x_train, data.y_train, data.x_val[:64], data.y_val[:64])
    test = (data.x_test[:200], data.y_test[:200])
    a = train.train_model("mcu", *args, *test, seed=3, max_steps=25, progress=False)
    b = train.train_model("mcu", *args, *test, seed=3, max_steps=25, progress=False)
    c = train.train_model("mcu", *args, *test, seed=4, max_steps=25, progress=False)
    assert a.model.fingerprint() == b.model.fingerprint()
    assert a.tflite == b.tflite
    assert a.model.fingerprint() != c.model.fingerprint()
    # The Keras QAT forward pass rounds like the integer pipeline: same logits.
    real = a.keras_model.predict(data.x_test[:200], verbose=0)
    ints = forward_int8(a.model, a.model.quantize_input(data.x_test[:200]))
    np.testing.assert_array_equal(real * 2.0**-quant.LOGIT_EXP, ints)
    assert a.float_accuracy == a.int8_accuracy


def test_save_artifacts_round_trip(tmp_path: Path, data: Dataset) -> None:
    from lrt import train

    res = train.train_model(
        "mcu", data.x_train, data.y_train, data.x_val[:32], data.y_val[:32],
        data.x_test[:32], data.y_test[:32], max_steps=3, progress=False,
    )  # fmt: skip
    train.save_artifacts(res, tmp_path / "out")
    assert (tmp_path / "out" / "model.tflite").read_bytes() == res.tflite
    loaded = Model.load(tmp_path / "out" / "ir")
    assert loaded.fingerprint() == res.model.fingerprint()


def test_paper_preset_trains_and_exports(data: Dataset) -> None:
    from lrt import train

    res = train.train_model(
        "paper", data.x_train[:64], data.y_train[:64], data.x_val[:8], data.y_val[:8],
        data.x_test[:8], data.y_test[:8], max_steps=2, progress=False,
    )  # fmt: skip
    assert [lay.out_shape for lay in res.model.weight_layers()] == [
        (26, 26, 128), (24, 24, 128), (10, 10, 128), (8, 8, 128), (512,), (10,),
    ]  # fmt: skip
    assert res.model.layers[-2].in_shape == (2048,)
    x = res.model.quantize_input(data.x_test[:3])
    np.testing.assert_array_equal(_run_tflite(res.tflite, x), forward_int8(res.model, x))
