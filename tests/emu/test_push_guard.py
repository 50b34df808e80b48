"""A push (WRITE... COMMIT) against the real host firmware and its NVM store: what a host that
misbehaves, or gives up half way, can and cannot do to the device.

* a push's WRITEs must increase, so it programs each NVM unit at most once; a refused WRITE
  ends the push (the store drops it), a fresh push from the start then lands;
* while a push is open the device refuses TRAIN and DRIFT (the pushed set replaces what they
  would change) and still answers INFER;
* BYE abandons an open push and still commits the biases learned in the session;
* what a dropped push programmed is counted: the WEAR reply shows it at once and the next
  commit into that slot writes it into the wear table;
* commits never take a slot holding another model's set, and a BYE the device refuses (its
  closing commit failed) reaches the caller.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from helpers.e2e_support import built
from lrt import codegen, nvm, store
from lrt.data import load_dataset
from lrt.emulate import Device, open_device
from lrt.emulate import protocol as P
from lrt.pipeline import load_build

pytestmark = pytest.mark.slow
ERR_ARG, ERR_STATE = -1, -11


@pytest.fixture(scope="module")
def build() -> Path:
    return built("lrt-maxnorm")


def factory_blob(build: Path) -> bytes:
    _, model = load_build(build)
    return codegen.blob_bytes(model, codegen.blob_layout(model))


def write(dev: Device, offset: int, data: bytes) -> None:
    dev.request(P.MsgType.WRITE, P.write_payload(offset, data))


def refused(code: int, fn: object, *args: object) -> None:
    with pytest.raises(P.ProtocolError) as exc:
        fn(*args)  # type: ignore[operator]
    assert exc.value.code == code, exc.value


def geometry(build: Path) -> nvm.NvmGeometry:
    geo = store.build_geometry(*load_build(build))
    assert geo is not None
    return geo


def shared_store(build: Path) -> bytes:
    """This model's set in slot 0, another model's sets (same geometry) in every other slot."""
    geo = geometry(build)
    lay = geo.layout()
    assert lay.n_slots >= 3
    blob = factory_blob(build)
    other = dataclasses.replace(geo, model_id=geo.model_id ^ 1)
    img = bytearray(nvm.build_image(other, [blob] * lay.n_slots))
    img[: lay.slot_size] = nvm.build_image(geo, [blob])[: lay.slot_size]
    return bytes(img)


def samples(n: int) -> tuple[np.ndarray, np.ndarray]:
    _, model = load_build(built("lrt-maxnorm"))
    data = load_dataset("mnist5k")
    return model.quantize_input(data.x_test[:n]), data.y_test[:n]


def test_push_writes_must_increase_and_a_refused_write_ends_the_push(build: Path,
                                                                     tmp_path: Path) -> None:
    blob = factory_blob(build)
    x, y = samples(1)
    with open_device(build, nvm_path=tmp_path / "nvm.img") as dev:
        gen = dev.hello().generation
        write(dev, 0, blob[:200])
        write(dev, 200, blob[200:400])
        refused(ERR_ARG, write, dev, 100, blob[100:300])  # overlaps the last WRITE
        refused(ERR_STATE, dev.request, P.MsgType.COMMIT)  # the push is over
        assert dev.hello().generation == gen
        assert dev.push_blob(blob) == gen + 1  # a push from the start lands
        # an open push: learning and drift are refused, inference is served
        write(dev, 0, blob[:16])
        refused(ERR_STATE, dev.train, x[0], int(y[0]))
        refused(ERR_STATE, dev.drift, 1, 7, 1 << 16)
        dev.infer(x[0])
        assert int.from_bytes(dev.request(P.MsgType.COMMIT)[:4], "little") == gen + 2
        assert dev.stats().samples == 0  # the refused TRAIN taught nothing


def test_bye_abandons_an_open_push_and_keeps_the_learned_biases(build: Path,
                                                                tmp_path: Path) -> None:
    image = tmp_path / "nvm.img"
    x, y = samples(30)
    with open_device(build, nvm_path=image) as dev:
        for xi, yi in zip(x, y, strict=True):
            dev.train(xi, int(yi))
        gen = dev.hello().generation
        before = dev.read_all_blob(len(factory_blob(build)))
        write(dev, 0, bytes(64))  # a push the host never commits
    # leaving said BYE: it was answered (a refusal would have raised), the push was dropped
    # and the session's biases were committed as one more generation
    geo = store.build_geometry(*load_build(build))
    assert geo is not None
    rep = nvm.inspect_bytes(image.read_bytes(), geo)
    assert rep.chosen is not None and rep.blob is not None and rep.generation == gen + 1
    _, model = load_build(build)
    lay = codegen.blob_layout(model)
    w_end = max(lay.w_offset[i] + layer.n_weights for i, layer in enumerate(model.layers)
                if layer.has_weights)
    assert rep.blob[:w_end] == before[:w_end]  # the weights: not the pushed zeros
    assert rep.blob[:64] != bytes(64)


def test_programs_of_dropped_pushes_are_counted(build: Path, tmp_path: Path) -> None:
    image = tmp_path / "nvm.img"
    geo = store.build_geometry(*load_build(build))
    assert geo is not None and geo.tech == nvm.TECH_RRAM
    lay = geo.layout()
    far = 4 * geo.page_size  # another window: moving there programs the first one
    rounds = 20
    blob = bytearray(factory_blob(build))
    with open_device(build, nvm_path=image) as dev:
        assert dev.hello().generation == 1  # the built-in set, committed at boot into slot 0
        assert dev.wear().max_blob == 1
        for i in range(rounds):
            write(dev, 0, bytes([i + 1]))  # a new value for blob byte 0 each round
            write(dev, far, blob[far : far + 1])
            refused(ERR_ARG, write, dev, 0, b"\x00")  # backwards: the push is dropped
        # slot 1's first unit was programmed once per round, and the device says so
        assert dev.wear().max_blob == rounds
        blob[0] = 0x7E
        assert dev.push_blob(bytes(blob)) == 2  # lands in slot 1: one more program
        wear = dev.wear()
        assert wear.max_blob == rounds + 1 and wear.layers[0] == rounds + 1
    rep = nvm.inspect_bytes(image.read_bytes(), geo)
    assert rep.chosen == 1 and rep.wear is not None
    assert int(rep.wear[1, 1 + 0 // lay.unit_size]) == rounds + 1  # in the table for good


def test_a_refused_bye_is_reported_and_other_models_sets_survive(build: Path,
                                                                  tmp_path: Path) -> None:
    """A store with this model's set in slot 0 and another model's sets in every other slot:
    the device runs on its own set, its closing commit of the session's biases finds no slot
    it may take (it used to take slot 1, overwriting the other model's set), BYE answers
    LRT_ERR_NOSPACE, and leaving the session raises it instead of hiding it."""
    image = tmp_path / "nvm.img"
    image.write_bytes(shared_store(build))
    lay = geometry(build).layout()
    theirs = image.read_bytes()
    x, y = samples(5)
    dev = open_device(build, nvm_path=image)
    assert dev.hello().generation == 1 and dev.info is not None and dev.info.store & 0x10
    for xi, yi in zip(x, y, strict=True):
        dev.train(xi, int(yi))
    refused(-8, dev.close)  # LRT_ERR_NOSPACE
    after = image.read_bytes()
    assert after[lay.slot_size :] == theirs[lay.slot_size :]  # their sets, byte for byte


def test_lrt_emulate_writes_its_figures_when_the_closing_commit_fails(
        build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same shared store under lrt-emulate: the run completes, its JSON is written, and
    the refused BYE is one error line naming what was lost and where the figures are, exit 1
    (the refusal was silent before; raising it without the figures would throw the run away)."""
    from lrt import cli

    image = tmp_path / "nvm.img"
    image.write_bytes(shared_store(build))
    out = tmp_path / "run.json"
    capsys.readouterr()
    rc = cli.emulate_main(["--build", str(build), "--nvm", str(image), "--samples", "5",
                           "--stream", "control", "--json", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert rc == 1 and len(err) == 1, err
    assert "LRT_ERR_NOSPACE" in err[0] and "BYE" in err[0] and "not saved" in err[0], err
    assert str(out) in err[0] and json.loads(out.read_text())["samples"] == 5


def test_a_push_replaces_what_the_classifier_residual_learned(build: Path,
                                                             tmp_path: Path) -> None:
    """The residual learns in RAM against the weights in use; a push replaces those, so after
    it the device predicts exactly what the pushed set does."""
    x, y = samples(40)
    blob = factory_blob(build)
    with open_device(build, nvm_path=tmp_path / "nvm.img") as dev:
        factory, _ = dev.infer_many(x)
        dev.train_many(x, y)
        learned, _ = dev.infer_many(x)
        assert not np.array_equal(learned, factory)
        dev.push_blob(blob)  # the factory set again: biases reload from its snapshot
        again, _ = dev.infer_many(x)
    np.testing.assert_array_equal(again, factory)
