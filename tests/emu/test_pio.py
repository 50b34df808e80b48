"""PlatformIO projects: generated from the echo firmware, built offline with `pio run`
against lrt's stand-in platform (results are "built with a local stand-in platform")."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from harness.cbuild import ROOT
from lrt.boards import load_board
from lrt.build import build_firmware
from lrt.emulate.qemu import QemuRunner
from lrt.errors import UserError
from lrt.pio_project import build_pio_project, write_pio_project

LIB = ROOT / "firmware_templates" / "lib"
FW = ROOT / "tests" / "emu" / "fw_echo" / "main.c"

pytestmark = pytest.mark.pio


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gen = tmp_path_factory.mktemp("pio-echo")
    (gen / "src").mkdir()
    shutil.copy(FW, gen / "src" / "main.c")
    for name in ("lrt_common.c", "lrt_common.h"):
        shutil.copy(LIB / name, gen / "src" / name)
    # a host-only backend file must not reach the target build
    (gen / "src" / "lrt_fake_host.c").write_text("#include <sys/mman.h>\nint lrt_fake;\n")
    return gen


@pytest.fixture(scope="module")
def core_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lrt.pio_standin import ensure_standin

    return ensure_standin(tmp_path_factory.mktemp("pio-core"))


def readelf(path: Path, flag: str = "-A") -> str:
    return subprocess.run(["arm-none-eabi-readelf", flag, str(path)], capture_output=True,
                          text=True, check=True).stdout


def test_project_layout(gen_dir: Path, tmp_path: Path) -> None:
    board = load_board("nucleo-f446re")
    ini = write_pio_project(gen_dir, board, tmp_path / "proj")
    text = ini.read_text()
    assert re.search(r"^platform = ststm32$", text, re.M)
    assert re.search(r"^board = nucleo_f446re$", text, re.M)
    assert re.search(r"^board_build.ldscript = link.ld$", text, re.M)
    assert "-mfpu=fpv4-sp-d16" in text and "{{" not in text
    proj = ini.parent
    assert (proj / "link.ld").is_file() and "ORIGIN = 0x08000000" in (proj / "link.ld").read_text()
    assert (proj / "src" / "main.c").is_file()
    assert not (proj / "src" / "lrt_fake_host.c").exists()
    assert (proj / "src" / "bsp" / "startup.c").is_file()
    assert (proj / "src" / "bsp" / "lrt_platform_stm32f4.c").is_file()
    assert "-nostartfiles" in (proj / "lrt_pio_extra.py").read_text()
    with pytest.raises(UserError, match="no \\[platformio\\] table"):
        write_pio_project(gen_dir, load_board("mps2-an386"), tmp_path / "x")


def test_nucleo_f446re_builds_offline_cortex_m4f(
    gen_dir: Path, core_dir: Path, tmp_path: Path
) -> None:
    board = load_board("nucleo-f446re")
    res = build_pio_project(gen_dir, board, tmp_path / "proj", core_dir=core_dir)
    elf = res.executable
    assert elf.is_file() and elf.with_suffix(".bin").is_file()
    attrs = readelf(elf)
    assert "Tag_CPU_arch: v7E-M" in attrs
    assert "Tag_CPU_arch_profile: Microcontroller" in attrs
    assert "Tag_FP_arch: VFPv4-D16" in attrs
    assert "Tag_ABI_VFP_args: VFP registers" in attrs
    entry = int(re.search(r"Entry point address:\s+(0x[0-9a-f]+)", readelf(elf, "-h")).group(1),
                16)
    assert 0x08000000 <= entry < 0x08000000 + 512 * 1024
    fp = res.footprint
    assert fp is not None
    assert fp.flash <= 512 * 1024 and fp.ram <= 128 * 1024
    # Same flags as the make build (-O2, not the platform's -Os): same code size.
    made = build_firmware(gen_dir, board)
    assert made.footprint is not None and made.footprint.text == fp.text


@pytest.mark.qemu
def test_pio_image_runs_on_qemu_standin(gen_dir: Path, core_dir: Path, tmp_path: Path) -> None:
    """The real-board image (no semihosting, USART2 driver) on QEMU's STM32F405 machine."""
    board = load_board("nucleo-f446re")
    res = build_pio_project(gen_dir, board, tmp_path / "proj", core_dir=core_dir)
    payload = bytes(range(256))
    expected = b"lrt: ready\n" + bytes((b * 7 + 3) & 255 for b in payload) + b"nucleo-f446re\n"
    run = QemuRunner(board, res.executable).exchange(
        b"E" + struct.pack("<I", len(payload)) + payload + b"I", expect=len(expected),
        wait_for=b"lrt: ready\n", timeout=30,
    )
    assert run.stdout == expected


def test_nrf52840_dk_builds_offline(gen_dir: Path, core_dir: Path, tmp_path: Path) -> None:
    board = load_board("nrf52840-dk")
    res = build_pio_project(gen_dir, board, tmp_path / "proj", core_dir=core_dir)
    assert "Tag_FP_arch: VFPv4-D16" in readelf(res.executable)
    assert res.footprint is not None and res.footprint.flash <= board.flash_budget
