"""Pull learned weights back, push them to another device, train only chosen layers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.e2e_support import built, tflite_logits
from lrt import pipeline, roundtrip
from lrt.data import load_dataset
from lrt.emulate import open_device
from lrt.errors import UserError
from lrt.model import Model
from lrt.tflite_import import import_tflite

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def trained_device(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A host device that learned 2000 shift samples; its NVM image survives the process."""
    build = built("lrt-maxnorm")
    image = tmp_path_factory.mktemp("dev") / "nvm.img"
    pipeline.emulate(build, samples=2000, stream="shift", nvm_path=image, progress=False)
    return build, image


def test_pull_tflite_matches_firmware(trained_device: tuple[Path, Path], tmp_path: Path) -> None:
    build, image = trained_device
    out = tmp_path / "pulled"
    proc = subprocess.run(
        [str(BIN / "lrt-pull"), "--build", str(build), "--nvm", str(image), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    pulled = json.loads((out / "pull.json").read_text())
    assert pulled["generation"] > 1  # training committed new generations
    assert sum(d["changed"] for d in pulled["layers"]) > 0
    model = Model.load(out / "ir")
    x = model.quantize_input(load_dataset("mnist5k").x_test[:500])
    with open_device(build, nvm_path=image) as dev:  # the device boots its newest set
        fw, _ = dev.infer_many(x)
    ref = tflite_logits(out / "model.tflite", x)
    assert len(x) == 500
    assert np.array_equal(fw, ref), f"{int((fw != ref).any(1).sum())} of 500 differ"
    # the factory model gives other outputs: the pull really carries what was learned
    factory = tflite_logits(build / "model.tflite", x)
    assert not np.array_equal(factory, ref)
    # held-out figures: the built weights' are their training's and the pulled ones differ,
    # while the pulled model keeps the training's as the write policy's reference
    built_meta = Model.load(build / "ir").meta
    imported = import_tflite((out / "model.tflite").read_bytes()).meta
    for key in ("int8_accuracy", "int8_field_accuracy"):
        assert pulled["held_out_before"][key] == built_meta[key]
        assert pulled["held_out_after"][key] != built_meta[key]
        assert model.meta[key] == imported[key] == built_meta[key]
    # over the wire from the running target: the same weights
    wire = roundtrip.pull(build, tmp_path / "wire", nvm_image=image, wire=True, evaluate=False)
    assert (tmp_path / "wire" / "model.tflite").read_bytes() == (out / "model.tflite").read_bytes()
    assert wire.generation == pulled["generation"]  # HELLO reports the set in use


def test_push_to_fresh_device(trained_device: tuple[Path, Path], tmp_path: Path) -> None:
    build, image = trained_device
    pulled = tmp_path / "pulled"
    roundtrip.pull(build, pulled, nvm_image=image, evaluate=False)
    fresh = tmp_path / "fresh.img"
    proc = subprocess.run(
        [
            str(BIN / "lrt-push"),
            "--build",
            str(build),
            "--weights",
            str(pulled / "model.tflite"),
            "--nvm",
            str(fresh),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "generation 2" in proc.stdout  # factory set = 1, pushed set = 2
    model = Model.load(pulled / "ir")
    x = model.quantize_input(load_dataset("mnist5k").x_test[:200])
    with open_device(build, nvm_path=fresh) as dev:
        got, _ = dev.infer_many(x)
    assert np.array_equal(got, tflite_logits(pulled / "model.tflite", x))


def test_push_refuses_incompatible_model(tmp_path: Path) -> None:
    build = built("lrt-maxnorm")
    other = built("inference", preset="tiny")
    proc = subprocess.run(
        [
            str(BIN / "lrt-push"),
            "--build",
            str(build),
            "--weights",
            str(other / "model.tflite"),
            "--nvm",
            str(tmp_path / "x.img"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "incompatible model" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(UserError, match="another model"):
        roundtrip.model_with_blob(Model.load(build / "ir"), b"\x00" * 100)


def test_train_only_last_layer(tmp_path: Path) -> None:
    full = built("lrt-maxnorm")
    last = built("lrt-maxnorm", train_layers="last:1")
    budget_full = json.loads((full / "report.json").read_text())["budget"]
    budget_last = json.loads((last / "report.json").read_text())["budget"]
    ram_full, ram_last = budget_full["training_ram_bytes"], budget_last["training_ram_bytes"]
    assert ram_last < ram_full, (ram_last, ram_full)
    # the accumulators' shared work is sized for the widest block of the layers that train
    # (one column for a dense layer), not for the configured block width
    work = "train: LRT shared work buffer"
    assert budget_last["ram_items"][work] < budget_full["ram_items"][work]
    res = pipeline.emulate(last, samples=2000, stream="shift", progress=False)
    inf = pipeline.emulate(built("inference"), samples=2000, stream="shift", progress=False)
    frozen = [lay for lay in res.layers[:-1]]
    assert all(
        lay["max_writes_per_cell"] == 0 and lay["mean_writes_per_cell"] == 0 for lay in frozen
    )
    assert res.layers[-1]["max_writes_per_cell"] > 0
    assert res.online_accuracy > inf.online_accuracy, (res.online_accuracy, inf.online_accuracy)
    print(
        "training RAM all layers",
        ram_full,
        "last layer",
        ram_last,
        "acc",
        res.online_accuracy,
        "inference",
        inf.online_accuracy,
    )
