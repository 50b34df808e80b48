"""The SIMD kernels (lrt_kernels.c with LRT_KERNELS_SIMD) against the portable ones, run in
QEMU on every board with a DSP core: random shapes and data, byte-identical outputs
(tests/c/simd_kernels_main.c)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.cbuild import LIB_DIR
from lrt.boards import load_board
from lrt.build import build_firmware
from lrt.emulate.qemu import QemuRunner

pytestmark = pytest.mark.qemu
HERE = Path(__file__).parent


@pytest.mark.parametrize("board", ["mps2-an386", "mps2-an500", "mps3-an547"])
def test_simd_kernels_match_portable(tmp_path: Path, board: str) -> None:
    brd = load_board(board)
    assert brd.simd, f"{board} has a DSP core: the SIMD kernels must be on"
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(HERE / "simd_kernels_main.c", src / "main.c")
    for name in ("lrt_kernels", "lrt_common"):
        for ext in (".c", ".h"):
            shutil.copy(LIB_DIR / (name + ext), src / (name + ext))
    res = build_firmware(tmp_path, brd)
    run = QemuRunner(brd, res.executable, timeout=300).run(b"")
    out = run.stdout.decode()
    assert "simd 1 cases 800 mismatches 0" in out, out[-2000:]
    assert run.returncode == 0


def test_m3_builds_the_portable_kernels_only() -> None:
    brd = load_board("lm3s6965evb")
    assert not brd.simd
    assert not load_board("host").simd
