"""Every user error: one line `error: ...` naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.e2e_support import built, trained_model

BIN = Path(sys.executable).parent


def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=600)


def assert_user_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1, proc.stderr
    for needle in needles:
        assert needle in err[0], err[0]


def test_unknown_board(tmp_path: Path) -> None:
    proc = run("lrt-build", "--board", "esp99", "--out", str(tmp_path))
    assert_user_error(proc, "esp99", "host")  # names the board and lists known ones


def test_bad_config_field(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("rank = 99\n")
    proc = run("lrt-build", "--board", "host", "--config", str(cfg), "--out", str(tmp_path / "o"))
    assert_user_error(proc, "rank", "99", str(cfg))


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--set", "rnak=3"], ["rnak", "known"]),
        (["--set", "rank=9"], ["rank", "1..8"]),
        (["--set", "weight_bits=1"], ["weight_bits", "2..8"]),
        (["--scheme", "sgd", "--set", "scheme=lrt"], ["--scheme", "both"]),
        (["--set", "lr"], ["KEY=VALUE"]),
    ],
)
def test_bad_set_option(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    proc = run("lrt-build", "--board", "host", *args, "--out", str(tmp_path / "o"))
    assert_user_error(proc, *needles)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--sweep", "rank=1,x"], ["rank", "integer"]),
        (["--set", "seed=3"], ["seed", "--seeds"]),
        (["--model-dir", "m", "--set", "epochs=0"], ["--model-dir", "epochs"]),
    ],
)
def test_bad_experiment_option(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    proc = run("lrt-experiment", "--out", str(tmp_path), *args)
    assert_user_error(proc, *needles)


@pytest.mark.tf
def test_unsupported_operator(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from lrt import tfkeras

    keras = tfkeras.keras_api()
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10)(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    blob = tfkeras.convert_keras_int8(model, rng.random((8, 28, 28, 1), dtype=np.float32))
    path = tmp_path / "avg.tflite"
    path.write_bytes(blob)
    proc = run("lrt-build", "--board", "host", "--model", str(path), "--out", str(tmp_path / "o"))
    assert_user_error(proc, "AVERAGE_POOL_2D", "position")


def test_corrupt_model_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.tflite"
    path.write_bytes(b"\x00\x01not a flatbuffer" * 10)
    proc = run("lrt-build", "--board", "host", "--model", str(path), "--out", str(tmp_path / "o"))
    assert_user_error(proc, "junk.tflite")


@pytest.mark.slow  # a trained model: minutes on a fresh clone
def test_model_too_big_for_board(tmp_path: Path) -> None:
    tfl = trained_model("mcu") / "model.tflite"
    proc = run(
        "lrt-build",
        "--board",
        "lm3s6965evb",
        "--model",
        str(tfl),
        "--scheme",
        "inference",
        "--out",
        str(tmp_path / "o"),
    )
    # mcu inference fits the M3 (64 KB RAM) ...
    assert proc.returncode == 0, proc.stderr
    # ... training mcu with per-sample SGD does not fit its 16 KiB NVM region twice
    proc = run(
        "lrt-build",
        "--board",
        "lm3s6965evb",
        "--model",
        str(tfl),
        "--scheme",
        "sgd",
        "--out",
        str(tmp_path / "o2"),
    )
    assert_user_error(proc, "does not fit", "lm3s6965evb", "over by")


@pytest.mark.slow  # a trained model: minutes on a fresh clone
def test_malformed_inputs_file(tmp_path: Path) -> None:
    build = built("inference")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"definitely not numpy")
    out = tmp_path / "y.npy"
    assert_user_error(
        run("lrt-emulate", "--build", str(build), "--inputs", str(bad), "--dump-logits", str(out)),
        "bad.npy",
    )
    np.save(tmp_path / "f.npy", np.zeros((2, 28, 28, 1), np.float32))
    assert_user_error(
        run(
            "lrt-emulate",
            "--build",
            str(build),
            "--inputs",
            str(tmp_path / "f.npy"),
            "--dump-logits",
            str(out),
        ),
        "int8",
    )
    np.save(tmp_path / "s.npy", np.zeros((2, 27, 28, 1), np.int8))
    assert_user_error(
        run(
            "lrt-emulate",
            "--build",
            str(build),
            "--inputs",
            str(tmp_path / "s.npy"),
            "--dump-logits",
            str(out),
        ),
        "shape",
    )


def test_not_a_build_dir(tmp_path: Path) -> None:
    assert_user_error(run("lrt-emulate", "--build", str(tmp_path), "--samples", "5"), "lrt-build")


@pytest.mark.slow  # a trained model: minutes on a fresh clone
def test_unknown_stream() -> None:
    build = built("inference")
    assert_user_error(run("lrt-emulate", "--build", str(build), "--stream", "sideways"), "sideways")


@pytest.mark.slow  # a trained model: minutes on a fresh clone
def test_push_to_a_host_build_needs_its_image() -> None:
    build = built("inference")
    # without --nvm the host device's store would live for this one run: nothing kept
    proc = run("lrt-push", "--build", str(build), "--weights", str(build / "model.tflite"))
    assert_user_error(proc, "--nvm")
    assert "committed" not in proc.stdout


@pytest.mark.slow  # a trained model: minutes on a fresh clone
def test_dump_logits_is_quiet_and_needs_inputs(tmp_path: Path) -> None:
    build = built("inference")
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.zeros((3, 28, 28, 1), np.int8))
    assert_user_error(
        run("lrt-emulate", "--build", str(build), "--dump-logits", str(y)), "--inputs"
    )
    proc = run("lrt-emulate", "--build", str(build), "--inputs", str(x), "--dump-logits",
               str(y), "--quiet")  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert np.load(y).shape == (3, 10)
    bare = tmp_path / "logits"  # the file named, not logits.npy
    proc = run("lrt-emulate", "--build", str(build), "--inputs", str(x), "--dump-logits",
               str(bare))  # fmt: skip
    assert proc.returncode == 0 and f"to {bare}" in proc.stdout
    assert np.load(bare).shape == (3, 10) and not bare.with_suffix(".npy").exists()
    np.save(x, np.zeros((3, 28, 28), np.int8))  # one sample's ndim, not its shape
    assert_user_error(
        run("lrt-emulate", "--build", str(build), "--inputs", str(x), "--dump-logits", str(y)),
        "shape [3, 28, 28], expected [N, 28, 28, 1]",
    )


def test_emulating_a_flash_store_board_on_its_qemu_standin_is_refused_at_once() -> None:
    """QEMU maps the stand-in's flash as ROM: the firmware could never create its store, so
    lrt-emulate says so instead of waiting for a reply that cannot come."""
    from lrt.emulate import open_device
    from lrt.errors import UserError

    build = built("lrt-maxnorm", "nucleo-f446re")
    with pytest.raises(UserError, match=r"netduinoplus2.*ROM"):
        open_device(build, emulator="qemu")


@pytest.mark.slow  # a trained model: minutes on a fresh clone
def test_firmware_that_is_not_the_builds(tmp_path: Path) -> None:
    """A firmware file replaced after the build would open the weight store as another
    firmware and print its figures under the build's layer names: refused before it starts
    (its sha256 against report.json's), and by what it answers (model, scheme) for a report
    without the hash (an older build)."""
    import json
    import shutil

    build = tmp_path / "b"
    shutil.copytree(built("lrt-maxnorm"), build)
    report = json.loads((build / "report.json").read_text())
    firmware = build / report["firmware"]
    image = tmp_path / "dev.img"
    shutil.copyfile(built("sgd") / report["firmware"], firmware)
    proc = run("lrt-emulate", "--build", str(build), "--samples", "5", "--nvm", str(image))
    assert_user_error(proc, "is not the firmware lrt-build made", "rebuild")
    assert not image.exists()  # the foreign firmware never touched the store
    del report["firmware_sha256"]
    (build / "report.json").write_text(json.dumps(report))
    proc = run("lrt-emulate", "--build", str(build), "--samples", "5")
    assert_user_error(proc, "runs scheme 'sgd'", "says 'lrt-maxnorm'", "rebuild")
    shutil.copyfile(built("lrt-maxnorm") / report["firmware"], firmware)
    assert run("lrt-emulate", "--build", str(build), "--samples", "5").returncode == 0
    # the same scheme on other weights (snapped to 6 bits): another model's fingerprint
    shutil.copyfile(built("lrt-maxnorm", weight_bits=6) / report["firmware"], firmware)
    proc = run("lrt-emulate", "--build", str(build), "--samples", "5")
    assert_user_error(proc, "runs another model", report["model"]["fingerprint"][:8])


@pytest.mark.slow  # a trained model: minutes on a fresh clone
def test_max_norm_is_a_setting_not_another_scheme() -> None:
    """lrt with max-norm on and lrt-maxnorm with it off are the builds asked for."""
    for scheme, max_norm in (("lrt", "on"), ("lrt-maxnorm", "off")):
        build = built(scheme, max_norm=max_norm)
        assert run("lrt-emulate", "--build", str(build), "--samples", "5").returncode == 0


@pytest.mark.slow  # a trained model: minutes on a fresh clone
def test_drift_needs_a_weight_store() -> None:
    """The M3 board keeps an inference build's weights in its firmware image: a drift stream
    (which drifts the NVM copy) is refused before the emulator starts, not an ERROR reply."""
    build = built("inference", "lm3s6965evb")
    for stream in ("analog", "digital"):
        proc = run("lrt-emulate", "--build", str(build), "--samples", "5", "--stream", stream)
        assert_user_error(proc, f"stream {stream!r}", "firmware image", "control or shift")


@pytest.mark.slow  # a trained model: minutes on a fresh clone
def test_push_and_pull_need_a_store_that_outlives_the_emulator(tmp_path: Path) -> None:
    """QEMU keeps the NVM in its RAM: a push would be lost, a --wire pull would read the
    built-in weights of a device booted for it."""
    qemu = built("inference", "mps2-an386")
    proc = run("lrt-push", "--build", str(qemu), "--weights", str(qemu / "model.tflite"))
    assert_user_error(proc, "lrt-push", "--nvm IMAGE, a build for --board host",
                      "'mps2-an386'", "--port TTY")  # fmt: skip
    assert "committed" not in proc.stdout
    # --nvm does not help a QEMU build: the message said "needs --nvm", then "needs host"
    proc = run("lrt-push", "--build", str(qemu), "--weights", str(qemu / "model.tflite"),
               "--nvm", str(tmp_path / "n.img"))  # fmt: skip
    assert_user_error(proc, "lrt-push", "--port TTY")
    proc = run("lrt-pull", "--build", str(qemu), "--wire", "--out", str(tmp_path / "p"))
    assert_user_error(proc, "lrt-pull --wire", "--port TTY")
    proc = run("lrt-pull", "--build", str(qemu), "--emulator", "qemu", "--nvm",
               str(tmp_path / "n.img"), "--out", str(tmp_path / "p"))  # fmt: skip
    assert_user_error(proc, "--emulator qemu runs the device of --wire")
    # the pulled model must not replace the one a build's firmware was made from
    host = tmp_path / "host"
    import shutil

    shutil.copytree(built("inference"), host)
    proc = run("lrt-pull", "--build", str(host), "--nvm", str(tmp_path / "n.img"), "--out",
               str(host))  # fmt: skip
    assert_user_error(proc, "is an lrt-build directory")


@pytest.mark.slow  # a trained model: minutes on a fresh clone
def test_outputs_that_would_overwrite_each_other(tmp_path: Path) -> None:
    build, image = built("lrt-maxnorm"), tmp_path / "dev.img"
    proc = run("lrt-emulate", "--build", str(build), "--samples", "5", "--nvm", str(image),
               "--markdown", str(image))  # fmt: skip
    assert_user_error(proc, "--markdown and --nvm name the same file")
    assert not image.exists()
    same = tmp_path / "r.out"
    proc = run("lrt-emulate", "--build", str(build), "--samples", "5", "--json", str(same),
               "--markdown", str(same))  # fmt: skip
    assert_user_error(proc, "--json and --markdown name the same file")


@pytest.mark.slow  # a trained model: minutes on a fresh clone
def test_flags_that_would_be_ignored(tmp_path: Path) -> None:
    """Reproducers: each of these ran and silently ignored a flag (or a whole grid)."""
    build = built("inference")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 28, 28, 1), np.int8))
    emulate = ["lrt-emulate", "--build", str(build)]
    cases: list[tuple[list[str], list[str]]] = [
        ([*emulate, "--inputs", str(x), "--dump-logits", str(tmp_path / "y.npy"), "--json",
          str(tmp_path / "z.json"), "--samples", "5"], ["--inputs runs inference", "--samples",
                                                        "--json"]),
        ([*emulate, "--segment", "50"], ["--segment", "stream control has none"]),
        ([*emulate, "--samples", "5", "--quiet", "--verbose"], ["--quiet", "--verbose"]),
        ([*emulate, "--seed", str(2**32)], ["--seed 4294967296", "0..4294967295"]),
        (["lrt-build", "--model", str(build / "model.tflite"), "--train-layers", "last:1",
          "--out", str(tmp_path / "o")], ["--train-layers", "scheme inference learns none"]),
        (["lrt-build", "--model", str(tmp_path), "--out", str(tmp_path / "o")],
         ["is a directory"]),
        (["lrt-build", "--epochs", "-1", "--out", str(tmp_path / "o")], ["--epochs -1"]),
        ([*emulate[:1], "--build", str(build / "report.json")], ["is a file", "--build"]),
        (["lrt-experiment", "--out", str(tmp_path / "g"), "--scheduler", "tcp://x:1"],
         ["--scheduler", "--executor dask"]),
        (["lrt-experiment", "--out", str(tmp_path / "g"), "--report-only", "--samples", "9"],
         ["--report-only runs nothing", "--samples"]),
        ([*emulate, "--format"], ["--format", "no --nvm"]),
    ]  # fmt: skip
    for args, needles in cases:
        assert_user_error(run(*args), *needles)
    assert not (tmp_path / "z.json").exists() and not (tmp_path / "o").exists()
    assert not (tmp_path / "g").exists()


@pytest.mark.slow  # a trained model: minutes on a fresh clone
def test_host_emulator_on_a_board_build_says_what_runs_it() -> None:
    """Reproducer: a nucleo build with --emulator host was told to use QEMU, whose stand-in
    cannot run it."""
    for board, remedy in (("nucleo-f446re", "--emulator renode"),
                          ("mps2-an386", "--emulator qemu")):  # fmt: skip
        proc = run("lrt-emulate", "--build", str(built("lrt-maxnorm", board)), "--emulator",
                   "host", "--samples", "5")  # fmt: skip
        assert_user_error(proc, f"this build is for board {board!r}", remedy)
