"""A user's own data end to end: `lrt-build --dataset FILE.npz` trains a preset on images that
are not MNIST (16 x 20 RGB, 4 classes), the firmware equals TFLite on them, the paper's
streams grow from them, `lrt-emulate --stream FILE.npz` replays labelled samples, and a
Cortex-M4 build trains exactly like the host's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.e2e_support import tflite_logits
from helpers.own_data import CLASSES, SHAPE, patterns, write_dataset
from lrt.data import load_dataset, make_stream
from lrt.model import Model

pytestmark = [pytest.mark.slow, pytest.mark.tf]
BIN = Path(sys.executable).parent
# what a run's figures do not share with the same samples streamed another way
RUN_FIELDS = {"stream", "stream_seed", "segment", "seconds", "samples_per_second"}


def run(tool: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True,
                          timeout=900)  # fmt: skip


def ok(tool: str, *args: object) -> str:
    proc = run(tool, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def user_error(tool: str, *args: object) -> str:
    proc = run(tool, *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset file, host build of the `tiny` preset trained on it)."""
    tmp = tmp_path_factory.mktemp("own")
    data = write_dataset(tmp / "patterns.npz")
    ok("lrt-build", "--dataset", data, "--preset", "tiny", "--epochs", 2, "--out", tmp / "fw",
       "--quiet")  # fmt: skip
    return data, tmp / "fw"


def run_json(build: Path, out: Path, *args: object) -> dict[str, object]:
    ok("lrt-emulate", "--build", build, "--json", out, "--quiet", *args)
    return {k: v for k, v in json.loads(out.read_text()).items() if k not in RUN_FIELDS}


def test_preset_trains_on_own_images(own: tuple[Path, Path]) -> None:
    _, build = own
    report = json.loads((build / "report.json").read_text())
    model = Model.load(build / "ir")
    assert model.input_shape == SHAPE and model.num_classes == CLASSES
    assert report["accuracy"]["int8_acc"] >= 0.9  # chance: 0.25
    assert 0.5 <= report["accuracy"]["field_acc"] <= 1.0  # the gate's reference exists


def test_firmware_equals_tflite_on_own_images(own: tuple[Path, Path], tmp_path: Path) -> None:
    _, build = own
    model = Model.load(build / "ir")
    x = model.quantize_input(patterns(150, seed=11)[0].astype(np.float32) / 255.0)
    np.save(tmp_path / "x.npy", x)
    ok("lrt-emulate", "--build", build, "--inputs", tmp_path / "x.npy", "--dump-logits",
       tmp_path / "logits.npy", "--quiet")  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"),
                                  tflite_logits(build / "model.tflite", x))  # fmt: skip


def test_stream_file_replays_what_the_paper_stream_sends(
    own: tuple[Path, Path], tmp_path: Path
) -> None:
    """The shift stream grown from the dataset, saved as a stream file (floats, and int8
    inputs), gives the run `--stream shift` gives: same predictions, writes and wear."""
    data, build = own
    model = Model.load(build / "ir")
    st = make_stream("shift", load_dataset(str(data)), 600, seed=4, segment=200)
    np.savez(tmp_path / "float.npz", x=st.x, y=st.y)
    np.savez(tmp_path / "int8.npz", x=model.quantize_input(st.x), y=st.y)
    paper = run_json(build, tmp_path / "a.json", "--stream", "shift", "--samples", 600,
                     "--segment", 200, "--seed", 4)  # fmt: skip
    assert paper == run_json(build, tmp_path / "b.json", "--stream", tmp_path / "float.npz")
    assert paper == run_json(build, tmp_path / "c.json", "--stream", tmp_path / "int8.npz")
    assert json.loads((tmp_path / "b.json").read_text())["stream"] == str(tmp_path / "float.npz")
    assert paper["samples"] == 600 and paper["online_accuracy"] > 0.5  # type: ignore[operator]
    first = run_json(build, tmp_path / "d.json", "--stream", tmp_path / "float.npz",
                     "--samples", 100)  # fmt: skip
    assert first["samples"] == 100


def test_stream_file_refusals(own: tuple[Path, Path], tmp_path: Path) -> None:
    _, build = own
    x, y = patterns(50, seed=12)
    np.savez(tmp_path / "s.npz", x=x, y=y)
    err = user_error("lrt-emulate", "--build", build, "--stream", tmp_path / "s.npz", "--seed", 3)
    assert "replayed as it is" in err
    err = user_error("lrt-emulate", "--build", build, "--stream", tmp_path / "s.npz",
                     "--samples", 51)  # fmt: skip
    assert "51 samples asked for" in err and "holds 50" in err
    np.savez(tmp_path / "digits.npz", x=np.zeros((5, 28, 28), np.uint8), y=np.zeros(5, np.uint8))
    err = user_error("lrt-emulate", "--build", build, "--stream", tmp_path / "digits.npz")
    assert "samples of 16x20x3" in err
    err = user_error("lrt-emulate", "--build", build, "--stream", tmp_path / "absent.npz")
    assert "absent.npz" in err and "cannot read" in err


def test_imported_model_of_another_shape_says_what_to_stream(
    own: tuple[Path, Path], tmp_path: Path
) -> None:
    """Imported without --dataset, the build's dataset is the shipped digits, which the model
    cannot take: the paper's streams are refused by name, a stream file runs."""
    _, build = own
    ok("lrt-build", "--model", build / "model.tflite", "--scheme", "lrt-maxnorm", "--out",
       tmp_path / "fw", "--quiet")  # fmt: skip
    err = user_error("lrt-emulate", "--build", tmp_path / "fw", "--samples", 10)
    assert "takes 16x20x3 samples in 4 classes" in err and "mnist5k has 28x28x1" in err
    x, y = patterns(20, seed=15)
    np.savez(tmp_path / "s.npz", x=x, y=y)
    ok("lrt-emulate", "--build", tmp_path / "fw", "--stream", tmp_path / "s.npz", "--quiet")
    np.savez(tmp_path / "digits.npz", x_train=np.zeros((40, 28, 28), np.uint8),
             y_train=np.arange(40) % 10, x_test=np.zeros((4, 28, 28), np.uint8),
             y_test=np.arange(4))  # fmt: skip
    err = user_error("lrt-build", "--model", build / "model.tflite", "--dataset",
                     tmp_path / "digits.npz", "--out", tmp_path / "fw2")  # fmt: skip
    assert "dataset digits.npz has 28x28x1 images in 10" in err


def test_a_dataset_file_changed_after_the_build_is_refused(
    own: tuple[Path, Path], tmp_path: Path
) -> None:
    """Reproducer: the build read the file again by path only, and streamed whatever it held
    now (accuracy 0.85 -> 0.53 after the images were inverted)."""
    data, build = own
    copy = tmp_path / "copy.npz"
    copy.write_bytes(data.read_bytes())
    ok("lrt-build", "--model", build / "model.tflite", "--scheme", "lrt-maxnorm", "--dataset",
       copy, "--out", tmp_path / "fw", "--quiet")  # fmt: skip
    ok("lrt-emulate", "--build", tmp_path / "fw", "--samples", 20, "--nvm", tmp_path / "dev.img",
       "--quiet")  # fmt: skip
    with np.load(copy) as arrays:
        changed = {k: arrays[k] for k in arrays.files}
    changed["x_train"] = 255 - changed["x_train"]
    np.savez(copy, **changed)
    err = user_error("lrt-emulate", "--build", tmp_path / "fw", "--samples", 20)
    assert "copy.npz changed since the build" in err and "rebuild" in err
    err = user_error("lrt-pull", "--build", tmp_path / "fw", "--nvm", tmp_path / "dev.img",
                     "--out", tmp_path / "pulled")  # fmt: skip
    assert "copy.npz changed since the build" in err
    ok("lrt-pull", "--build", tmp_path / "fw", "--nvm", tmp_path / "dev.img", "--no-eval",
       "--out", tmp_path / "pulled")  # fmt: skip


def test_images_too_small_are_refused_before_training(tmp_path: Path) -> None:
    x, y = patterns(40, seed=13)
    np.savez(tmp_path / "small.npz", x_train=x[:, :9, :9], y_train=y, x_test=x[:, :9, :9],
             y_test=y)  # fmt: skip
    err = user_error("lrt-build", "--dataset", tmp_path / "small.npz", "--out", tmp_path / "o")
    assert "9x9x3 are too small for preset 'mcu'" in err
    assert not (tmp_path / "o" / "model.tflite").exists()


@pytest.mark.qemu
def test_cortex_m4_trains_like_the_host_on_own_images(
    own: tuple[Path, Path], tmp_path: Path
) -> None:
    """In-channels of 3 and a 16 x 20 input through the M4's SIMD convs and the whole
    training step: the QEMU run equals the host's, figure for figure (the error gate counts
    every misprediction, so a short stream writes)."""
    data, build = own
    runs = []
    for board in ("host", "mps2-an386"):
        ok("lrt-build", "--board", board, "--model", build / "model.tflite", "--scheme",
           "lrt-maxnorm", "--dataset", data, "--set", "gate_rate=0", "--out", tmp_path / board,
           "--quiet")  # fmt: skip
        runs.append(run_json(tmp_path / board, tmp_path / f"{board}.json", "--stream",
                             "shift", "--samples", 300, "--segment", 100))  # fmt: skip
    host, m4 = ({k: v for k, v in r.items() if k not in ("board", "instructions_per_sample")}
                for r in runs)  # fmt: skip
    assert m4 == host
    assert host["max_programs_per_cell"] > 1  # type: ignore[operator]


@pytest.mark.qemu
def test_images_longer_than_the_default_frames(tmp_path: Path) -> None:
    """32 x 32 x 3 = 3,072 inputs: more than the 2,048-byte frames of the earlier firmware
    (which refused to boot). The frames grow to the input (INFO says so), the host and the
    Cortex-M4 in QEMU train alike, and the firmware's logits equal TFLite's."""
    from lrt.emulate import open_device

    data = write_dataset(tmp_path / "big.npz", n_train=300, n_test=60, shape=(32, 32, 3))
    ok("lrt-build", "--dataset", data, "--preset", "tiny", "--epochs", 1, "--set", "gate_rate=0",
       "--out", tmp_path / "host", "--quiet")  # fmt: skip
    # the same model on the M4 (its trained layer names come along: the reports compare)
    ok("lrt-build", "--board", "mps2-an386", "--model", tmp_path / "host" / "model.tflite",
       "--scheme", "lrt-maxnorm", "--dataset", data, "--set", "gate_rate=0", "--out",
       tmp_path / "mps2-an386", "--quiet")  # fmt: skip
    runs = []
    for board in ("host", "mps2-an386"):
        with open_device(tmp_path / board) as dev:
            assert dev.hello().max_payload == 32 * 32 * 3 + 1
        runs.append(run_json(tmp_path / board, tmp_path / f"{board}.json", "--stream", "shift",
                             "--samples", 120, "--segment", 60))  # fmt: skip
    host, m4 = ({k: v for k, v in r.items() if k not in ("board", "instructions_per_sample")}
                for r in runs)  # fmt: skip
    assert m4 == host and host["samples"] == 120
    model = Model.load(tmp_path / "host" / "ir")
    x = model.quantize_input(patterns(40, seed=16, shape=(32, 32, 3))[0].astype(np.float32) / 255)
    np.save(tmp_path / "x.npy", x)
    ok("lrt-emulate", "--build", tmp_path / "mps2-an386", "--inputs", tmp_path / "x.npy",
       "--dump-logits", tmp_path / "l.npy", "--quiet")  # fmt: skip
    reference = tflite_logits(tmp_path / "mps2-an386" / "model.tflite", x)
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), reference)
