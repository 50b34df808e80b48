"""Streaming batch norm end to end on the host emulator: `mcu-bn` preset (batch norm after
each pool) -> .tflite + IR -> generated C -> native firmware.

Oracles: the TFLite reference interpreter (BUILTIN_REF) and lrt.reference for the forward
pass (the firmware derives its batch-norm tables from the state at boot, in C); the data's
labels for online accuracy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.e2e_support import built, tflite_logits, trained_model
from lrt import pipeline
from lrt import reference as ref
from lrt.data import load_dataset, make_stream
from lrt.emulate import open_device
from lrt.model import Model
from lrt.tflite_import import import_tflite

pytestmark = pytest.mark.slow
PRESET = "mcu-bn"


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, np.ndarray]:
    model = Model.load(trained_model(PRESET) / "ir")
    ds = load_dataset("mnist5k")
    st = make_stream("shift", ds, 200, seed=3)  # shifted digits reach other activations
    x = np.concatenate([ds.x_test[:200], st.x])
    y = np.concatenate([ds.y_test[:200], st.y])
    return model.quantize_input(x), y


def test_model_has_streaming_batch_norm() -> None:
    model = Model.load(trained_model(PRESET) / "ir")
    kinds = [lay.kind for lay in model.layers]
    assert kinds.count("batchnorm") == 2
    for i, lay in enumerate(model.layers):
        if lay.kind == "batchnorm":
            assert model.layers[i - 1].kind == "maxpool2d"  # the paper: after each pool
            assert lay.bn_pow_q30 == 0  # offline statistics, warmed up
    assert model.power_of_two
    rep = json.loads((trained_model(PRESET) / "report.json").read_text())
    print("mcu-bn offline accuracy:", rep["accuracy"])
    assert rep["accuracy"]["int8_acc"] > 0.85


def test_firmware_equals_tflite_and_reference(
    tmp_path: Path, inputs: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = inputs
    assert len(x) >= 200
    build = built("inference", preset=PRESET)
    model = Model.load(build / "ir")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "logits.npy"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "lrt-emulate"), "--build", str(build),
            "--inputs", str(tmp_path / "x.npy"), "--dump-logits", str(out),
        ],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    fw = np.load(out)
    tfl = tflite_logits(build / "model.tflite", x)
    numpy_ref = ref.forward_int8(model, x)
    assert fw.shape == tfl.shape == (len(x), 10)
    assert int((fw != tfl).any(axis=1).sum()) == 0, "firmware differs from BUILTIN_REF"
    assert int((numpy_ref != tfl).any(axis=1).sum()) == 0, "lrt.reference differs"
    # the batch-norm layers shape the result: their outputs use the signed range
    outs = ref.forward_int8_layers(model, x[:50])
    for i, lay in enumerate(model.layers):
        if lay.kind == "batchnorm":
            assert outs[i].min() < -20 and outs[i].max() > 20
    assert float((fw.argmax(1) == y).mean()) > 0.7


def test_tflite_import_round_trip() -> None:
    build = built("inference", preset=PRESET)
    model = Model.load(build / "ir")
    back = import_tflite(build / "model.tflite")
    assert [lay.kind for lay in back.layers] == [lay.kind for lay in model.layers]
    assert back.power_of_two
    for a, b in zip(model.layers, back.layers, strict=True):
        if a.kind == "batchnorm":
            for key in ("bn_gamma", "bn_beta", "bn_mean", "bn_msq"):
                assert np.array_equal(getattr(a, key), getattr(b, key)), key
            assert a.bn_pow_q30 == b.bn_pow_q30


@pytest.fixture(scope="module")
def shift_runs() -> dict[str, dict[str, object]]:
    res = {}
    for scheme in ("inference", "bias", "lrt-maxnorm"):
        r = pipeline.emulate(
            built(scheme, preset=PRESET), samples=1000, stream="shift", progress=False
        )
        res[scheme] = r.to_dict()
    return res


def test_online_training_with_streaming_batch_norm(
    shift_runs: dict[str, dict[str, object]],
) -> None:
    acc = {k: v["online_accuracy"] for k, v in shift_runs.items()}
    print("mcu-bn online accuracy on a 1000-sample shift stream:", acc)
    lrt = shift_runs["lrt-maxnorm"]
    print("mcu-bn lrt-maxnorm: flushes", lrt["flushes"], "max writes/cell",
          lrt["max_writes_per_cell"])  # fmt: skip
    assert int(lrt["flushes"]) > 0  # type: ignore[call-overload]
    assert acc["lrt-maxnorm"] > acc["inference"], acc  # type: ignore[operator]
    assert acc["bias"] > acc["inference"], acc  # type: ignore[operator]


def test_pull_carries_learned_batch_norm_state(tmp_path: Path) -> None:
    """After online training the device's batch-norm state (snapshot in the weight blob)
    differs from the factory state, and a pull brings it back into an IR + .tflite that
    runs bit-exact in TFLite."""
    from lrt import roundtrip

    build = built("lrt-maxnorm", preset=PRESET)
    model = Model.load(build / "ir")
    size = json.loads((build / "report.json").read_text())["blob_size"]
    st = make_stream("shift", load_dataset("mnist5k"), 120, seed=9)
    with open_device(build) as dev:
        dev.train_many(model.quantize_input(st.x), st.y)
        blob = dev.read_all_blob(size)  # the snapshot of the last flush's commit
    learned = roundtrip.model_with_blob(model, blob)
    moved = 0
    for a, b in zip(model.layers, learned.layers, strict=True):
        if a.kind == "batchnorm":
            assert b.bn_pow_q30 == 0  # stays warmed up
            moved += int(np.count_nonzero(a.bn_mean != b.bn_mean))
    assert moved > 0
    from lrt.tflite_import import to_tflite

    tfl = tmp_path / "pulled.tflite"
    tfl.write_bytes(to_tflite(learned))
    x = model.quantize_input(st.x[:40])
    assert np.array_equal(tflite_logits(tfl, x), ref.forward_int8(learned, x))
