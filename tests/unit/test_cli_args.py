"""Console scripts refuse bad arguments with one `error:` line before any work starts, report
what they were asked to check through their exit status, and survive a closed stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from lrt import cli, nvm, store
from lrt.errors import UserError
from lrt.experiment import Cell, _is_done

BIN = Path(sys.executable).parent
GEOMETRY = nvm.NvmGeometry(tech=nvm.TECH_FLASH, prog_size=4, page_size=64, page_count=24,
                           blob_size=300)


def one_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def fake_build(path: Path, preset: str) -> Path:
    """What --model-dir checks of a trained build: report.json (its preset) and ir/."""
    (path / "ir").mkdir(parents=True)
    (path / "ir" / "model.json").write_text("{}")
    config = {"dataset": "mnist5k", "data_dir": None, "seed": 0, "scheme": "inference",
              "preset": preset}
    report = {"board": "host", "firmware": "out/host/lrt_fw", "config": config}
    (path / "report.json").write_text(json.dumps(report))
    return path


def image(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "nvm.img"
    path.write_bytes(data)
    return path


def good_image() -> bytes:
    rng = np.random.default_rng(0)
    return nvm.build_image(GEOMETRY, [rng.integers(0, 256, 300, np.uint8).tobytes()])


# ---- lrt-experiment ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--jobs", "0"], ["--jobs 0", ">= 1"]),
        (["--jobs", "-2"], ["--jobs -2", ">= 1"]),
        (["--last-n", "0"], ["--last-n 0", ">= 1"]),
        (["--last-n", "-5"], ["--last-n -5", ">= 1"]),
        (["--segment", "0"], ["--segment 0", ">= 1"]),
        (["--knob", "sgd:lr=abc"], ["--knob", "sgd:lr=abc", "number"]),
        (["--board", "nosuch"], ["nosuch"]),
        (["--seeds", "0,0"], ["--seeds '0,0'", "distinct"]),  # one stream counted twice
        (["--seeds=-1"], ["--seeds '-1'", ">= 0"]),
        (["--set", "lr=-1"], ["'lr'", "0 < lr <= 1"]),
        (["--schemes", "sgd", "--knob", "sgd:lr=2"], ["'lr'", "0 < lr <= 1"]),
    ],
)
def test_experiment_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needles: list[str]
) -> None:
    out = tmp_path / "grid"
    assert cli.experiment_main(["--out", str(out), "--samples", "5", *args]) == 2
    one_error(capsys, *needles)
    assert not out.exists()  # nothing left behind by a refused run


def test_experiment_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grid"
    out.write_text("x")
    assert cli.experiment_main(["--out", str(out), "--samples", "5"]) == 2
    one_error(capsys, str(out), "is a file")


def test_experiment_model_dir_must_be_a_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "nonexist"
    assert cli.experiment_main(["--out", str(tmp_path / "g"), "--model-dir", str(typo)]) == 2
    one_error(capsys, "--model-dir", str(typo), "not an lrt build")
    assert not typo.exists() and not (tmp_path / "g").exists()  # nothing trained into it


def test_experiment_preset_must_be_the_model_dirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = fake_build(tmp_path / "m", "mcu")
    argv = ["--out", str(tmp_path / "g"), "--model-dir", str(model), "--preset", "tiny"]
    assert cli.experiment_main(argv) == 2
    one_error(capsys, "--preset tiny", "mcu", str(model))


def test_cell_reruns_unless_its_file_has_the_same_settings(tmp_path: Path) -> None:
    cell = Cell("control", "lrt", 0, 10, 2, "mcu", "host", (("rank", 2),), 10)
    path = tmp_path / "cells" / f"{cell.key}.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"cell": asdict(cell), "samples": 10}))
    assert _is_done(tmp_path, cell)
    for other in (
        replace(cell, samples=300),
        replace(cell, segment=75),
        replace(cell, board="lm3s6965evb"),
        replace(cell, last_n=300),
        replace(cell, model="/elsewhere/trained"),
        replace(cell, options=(("lr", 0.01), ("rank", 2))),
    ):
        assert other.key == cell.key or other.options != cell.options
        assert not _is_done(tmp_path, other), other
    path.write_text("{trunc")
    assert not _is_done(tmp_path, cell)


# ---- lrt-emulate ---------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--json", "--markdown"])
def test_emulate_output_must_be_a_writable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    # refused before the build is even read: no stream runs for a result it cannot write
    argv = ["--build", str(tmp_path / "b"), "--samples", "10", flag, str(tmp_path)]
    assert cli.emulate_main(argv) == 2
    one_error(capsys, flag, str(tmp_path), "directory")
    assert cli.emulate_main([*argv[:-1], str(tmp_path / "no" / "r.out")]) == 2
    one_error(capsys, flag, "does not exist")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--segment", "0"], ["--segment 0", ">= 1"]),
        (["--segment", "-3"], ["--segment -3", ">= 1"]),
        (["--samples", "0"], ["--samples 0", ">= 1"]),
        (["--dump-logits", "y.npy"], ["--dump-logits", "--inputs"]),
    ],
)
def test_emulate_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needles: list[str]
) -> None:
    assert cli.emulate_main(["--build", str(tmp_path), "--samples", "10", *args]) == 2
    one_error(capsys, *needles)


def test_nvm_report_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = good_image()
    assert cli.emulate_main(["--nvm-report", str(image(tmp_path, good))]) == 0
    assert "Boot: slot 0" in capsys.readouterr().out
    lay = GEOMETRY.layout()
    bad = bytearray(good)
    bad[lay.blob_addr(0)] ^= 0xFF  # the only set fails its CRC: the device runs degraded
    for data, needle in (
        (bytes(bad), "bad-data"),
        (b"", "No lrt_nvm header"),
        (good[:1000], "No lrt_nvm header"),
        (bytes(GEOMETRY.region_size), "No lrt_nvm header"),
    ):
        assert cli.emulate_main(["--nvm-report", str(image(tmp_path, data))]) == 1, needle
        assert needle in capsys.readouterr().out  # the report is still printed


def test_nvm_report_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    path = image(tmp_path, good_image())
    proc = subprocess.Popen([str(BIN / "lrt-emulate"), "--nvm-report", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the report is written (`| head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""


def test_wrong_sized_image_says_so(tmp_path: Path) -> None:
    path = image(tmp_path, good_image()[:1000])
    with pytest.raises(UserError) as exc:
        store.prepare_device_image(path, GEOMETRY, fmt=False)
    msg = str(exc.value)
    assert "wrong size" in msg and f"expected {GEOMETRY.region_size:,d} bytes, got 1,000" in msg
    assert "another build;" not in msg


# ---- lrt-build -----------------------------------------------------------------------------


def test_build_help_reads_well() -> None:
    text = " ".join(cli.build_parser().format_help().split())
    assert "no progress, no summary" in text and "no the " not in text


@pytest.mark.parametrize("flags", [["--preset", "paper"], ["--epochs", "3"]])
def test_model_refuses_training_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    """--preset and --epochs choose what to train: with --model (a trained .tflite) they
    would be ignored, or recorded in the report as if they had applied."""
    argv = ["--model", str(tmp_path / "m.tflite"), "--out", str(tmp_path / "o"), *flags]
    assert cli.build_main(argv) == 2
    one_error(capsys, flags[0], "--model imports a trained model")
    assert not (tmp_path / "o").exists()


def test_an_imported_model_infers_unless_a_scheme_is_named(tmp_path: Path) -> None:
    """--model defaults the scheme to inference; a config file's scheme beats that default,
    as --scheme / --set beat the file."""
    from lrt.config import load_config

    assert load_config(None, default_scheme="inference").scheme == "inference"
    toml = tmp_path / "c.toml"
    toml.write_text('scheme = "sgd"\n')
    assert load_config(toml, default_scheme="inference").scheme == "sgd"
    assert load_config(toml, default_scheme="inference", scheme="bias").scheme == "bias"
    assert load_config(None).scheme == "lrt-maxnorm"


def test_a_device_failure_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken link or an ERROR reply is not the user's mistake (exit 1, not 2) but no
    traceback either, unless LRT_VERBOSE asks for it."""
    import argparse

    from lrt.emulate.base import LinkError
    from lrt.emulate.protocol import ProtocolError

    def fails(exc: Exception) -> Callable[[argparse.Namespace], int]:
        def run(_: argparse.Namespace) -> int:
            raise exc

        return run

    monkeypatch.delenv("LRT_VERBOSE", raising=False)
    assert cli._run(fails(LinkError("QEMU exited with 1")), argparse.Namespace()) == 1
    one_error(capsys, "the device failed", "QEMU exited with 1", "LRT_VERBOSE=1")
    assert cli._run(fails(ProtocolError(-5, 7)), argparse.Namespace()) == 1
    one_error(capsys, "the device failed")
    monkeypatch.setenv("LRT_VERBOSE", "1")
    with pytest.raises(LinkError):
        cli._run(fails(LinkError("x")), argparse.Namespace())


def test_build_notes_name_what_an_imported_model_leaves_unused(tmp_path: Path) -> None:
    """A config file shared with trained builds may set preset and epochs: with --model they
    do nothing (the .tflite is the network), which the build's notes say, as they say when
    the error gate has no reference error; a model lrt trained itself needs neither note."""
    from lrt import export
    from lrt.config import load_config
    from lrt.pipeline import _notes

    toml = tmp_path / "shared.toml"
    toml.write_text('preset = "paper"\nepochs = 3\n')
    cfg = load_config(toml, default_scheme="inference", scheme="lrt-maxnorm")
    imported = export.architecture("tiny")
    imported.meta = {"source": "tflite"}
    notes = _notes(cfg, imported)
    assert len(notes) == 2 and "gate_rate=R" in notes[0], notes
    assert "preset = 'paper' and epochs = 3 of the config file not used" in notes[1]
    imported.meta["int8_accuracy"] = 0.9  # lrt's own .tflite carries its held-out accuracy
    assert _notes(load_config(None, scheme="lrt-maxnorm"), imported) == []
    trained = export.architecture("tiny")
    assert _notes(cfg, trained) == []  # trained here: preset and epochs were used
