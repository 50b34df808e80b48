"""The commands print one clean line per stage: no TensorFlow/absl log lines, no converter
dump, each progress line once; --quiet prints nothing on success.

The build trains (`--preset tiny --epochs 1`: the same TensorFlow import, Keras fit and
TFLite converter as the default build, in a fraction of the time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
NOISE = (
    "E0000", "W0000", "I0000", "absl", "node_def_util", "fully_quantize", "inference_type",
    "oneDNN", "tensorflow", "WARNING", "Epoch 1/1", "cuda",
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_clean(text: str) -> None:
    for needle in NOISE:
        assert needle.lower() not in text.lower(), (needle, text[:3000])


def test_default_output_is_one_line_per_stage(tmp_path: Path) -> None:
    out = tmp_path / "b"
    build = run("lrt-build", "--board", "host", "--preset", "tiny", "--epochs", "1",
                "--out", str(out))
    assert_clean(build.stdout + build.stderr)
    stages = [line.split()[0] for line in build.stderr.splitlines()]
    assert stages == ["check", "train", "compile"], build.stderr
    assert "RAM budget" in build.stdout  # the summary
    emu = run("lrt-emulate", "--build", str(out), "--samples", "200")
    assert_clean(emu.stdout + emu.stderr)
    # the progress line is printed once, finished (on a non-terminal: only its final text)
    assert emu.stderr.splitlines() == [
        line for line in emu.stderr.splitlines() if line.startswith("stream ")
    ]
    assert len(emu.stderr.splitlines()) == 1 and "200/200 samples" in emu.stderr
    quiet = run("lrt-emulate", "--build", str(out), "--samples", "50", "--quiet",
                "--json", str(tmp_path / "e.json"))
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert (tmp_path / "e.json").is_file()


def test_quiet_build_prints_nothing(tmp_path: Path) -> None:
    proc = run("lrt-build", "--board", "host", "--preset", "tiny", "--epochs", "0", "--quiet",
               "--out", str(tmp_path / "q"))
    assert (proc.stdout, proc.stderr) == ("", "")
    assert (tmp_path / "q" / "report.json").is_file()
