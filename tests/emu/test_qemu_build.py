"""lrt.build on every board: the library compiles with each board's flags, images carry the
right CPU attributes, the NVM section lands in the NVM region, incremental rebuilds do
nothing, and an image over budget fails with the overshoot and the biggest symbols."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from harness.cbuild import ROOT
from lrt.boards import list_boards, load_board
from lrt.build import build_firmware, compile_check, target_sources
from lrt.emulate.qemu import QemuRunner
from lrt.errors import UserError

LIB = ROOT / "firmware_templates" / "lib"
FW = ROOT / "tests" / "emu" / "fw_echo" / "main.c"
# (Tag_CPU_arch, Tag_FP_arch or None) per core; Tag_CPU_name holds the architecture name
# ("7E-M") for -mcpu=cortex-m4/m7 with an explicit -mfpu, so it is not checked.
ARCH = {
    "cortex-m3": ("v7", None),
    "cortex-m4": ("v7E-M", "VFPv4-D16"),
    "cortex-m7": ("v7E-M", "FPv5/FP-D16 for ARMv8"),
    "cortex-m55": ("v8.1-M.mainline", "FPv5/FP-D16 for ARMv8"),
}

pytestmark = pytest.mark.qemu


def make_gen(tmp: Path, main_c: str | None = None) -> Path:
    (tmp / "src").mkdir(parents=True, exist_ok=True)
    if main_c is None:
        shutil.copy(FW, tmp / "src" / "main.c")
    else:
        (tmp / "src" / "main.c").write_text(main_c)
    for name in ("lrt_common.c", "lrt_common.h"):
        shutil.copy(LIB / name, tmp / "src" / name)
    return tmp


@pytest.mark.parametrize("name", [b.name for b in list_boards()])
def test_library_compiles_for_board(tmp_path: Path, name: str) -> None:
    """Every lib/*.c builds with the board's flags (-Werror), except the *_host.c files
    (POSIX NVM backends), which lrt.build leaves out of target builds."""
    board = load_board(name)
    sources = target_sources(LIB, board)
    assert sources and len(sources) >= len(list(LIB.glob("*.c"))) - 2
    objs = compile_check(board, sources, [LIB], tmp_path)
    assert all(o.stat().st_size > 0 for o in objs)


@pytest.mark.parametrize("name", [b.name for b in list_boards() if not b.is_host])
def test_elf_attributes_match_board(tmp_path: Path, name: str) -> None:
    board = load_board(name)
    res = build_firmware(make_gen(tmp_path), board)
    readelf = lambda p: subprocess.run(  # noqa: E731
        ["arm-none-eabi-readelf", "-A", str(p)], capture_output=True, text=True, check=True
    ).stdout
    attrs = readelf(res.executable)
    arch, fp = ARCH[board.cpu.core]
    assert re.search(rf"Tag_CPU_arch: {re.escape(arch)}\n", attrs), attrs
    assert "Tag_CPU_arch_profile: Microcontroller" in attrs
    if fp is None:
        assert "Tag_FP_arch" not in attrs
    else:
        assert f"Tag_FP_arch: {fp}" in attrs
    hard = "-mfloat-abi=hard" in board.cpu.cflags
    assert ("Tag_ABI_VFP_args: VFP registers" in attrs) == hard
    header = subprocess.run(["arm-none-eabi-readelf", "-h", str(res.executable)],
                            capture_output=True, text=True, check=True).stdout
    entry = int(re.search(r"Entry point address:\s+(0x[0-9a-f]+)", header).group(1), 16)
    assert board.code_region.origin <= entry < board.code_region.end
    fp = res.footprint
    assert fp is not None and fp.text > 0
    assert board.memory is not None and fp.stack == board.memory.stack_size
    assert fp.flash <= board.flash_budget and fp.ram <= board.ram_budget
    # Emulated NVM (RAM) is carried whole, erased, in the image; real flash is not.
    assert fp.nvm == (board.nvm.size if board.nvm.driver == "ram" else 0)


def test_incremental_rebuild_compiles_nothing(tmp_path: Path) -> None:
    gen = make_gen(tmp_path)
    board = load_board("mps2-an386")
    first = build_firmware(gen, board)
    assert len(first.commands) >= 5  # 3 BSP + 2 sources + link
    again = build_firmware(gen, board)
    assert again.commands == ()
    (gen / "src" / "main.c").write_text((gen / "src" / "main.c").read_text() + "\n")
    third = build_firmware(gen, board)
    assert [c for c in third.commands if " -c " in c] and all(
        "main.c" in c for c in third.commands if " -c " in c
    )


def test_host_build_and_asan_variant_run(tmp_path: Path) -> None:
    gen = make_gen(tmp_path)
    board = load_board("host")
    for sanitize in (False, True):
        res = build_firmware(gen, board, sanitize=sanitize)
        assert res.footprint is None
        assert res.variant == ("host-asan" if sanitize else "host")
        data = bytes(range(256)) * 3
        proc = subprocess.run([str(res.executable)],
                              input=b"E" + struct.pack("<I", len(data)) + data + b"X\x03",
                              capture_output=True, timeout=30)
        assert proc.returncode == 3, proc.stderr
        assert proc.stdout == b"lrt: ready\n" + bytes((b * 7 + 3) & 255 for b in data)
    with pytest.raises(UserError, match="only available for the host"):
        build_firmware(gen, load_board("mps2-an386"), sanitize=True)


NVM_MAIN = """
#include "lrt_platform.h"
LRT_BOARD_NVM_SECTION const uint8_t lrt_test_weights[8] = {9, 8, 7, 6, 5, 4, 3, 2};
int main(void)
{
    const volatile uint8_t *nvm = (const volatile uint8_t *)LRT_BOARD_NVM_BASE;
    uint8_t rest[2];
    lrt_platform_init();
    lrt_platform_write((const uint8_t *)&lrt_test_weights[0], sizeof lrt_test_weights);
    rest[0] = nvm[8];
    rest[1] = nvm[LRT_BOARD_NVM_SIZE - 1u];
    lrt_platform_write(rest, 2);
    return (int)((uintptr_t)&lrt_test_weights[0] == (uintptr_t)LRT_BOARD_NVM_BASE);
}
"""


@pytest.mark.parametrize("name", ["mps2-an386", "lm3s6965evb", "mps3-an547"])
def test_nvm_section_is_loaded_into_the_nvm_region(tmp_path: Path, name: str) -> None:
    board = load_board(name)
    res = build_firmware(make_gen(tmp_path, NVM_MAIN), board)
    # the whole region is in the image: the 8 bytes, then the erase value up to its end
    assert res.footprint is not None and res.footprint.nvm == board.nvm.size
    run = QemuRunner(board, res.executable).run(timeout=30)
    erased = bytes([board.nvm.erase_value] * 2)
    assert run.stdout == bytes([9, 8, 7, 6, 5, 4, 3, 2]) + erased
    assert run.returncode == 1  # the array sits at the board's NVM base address


def test_link_overflow_names_region_and_symbols(tmp_path: Path) -> None:
    board = load_board("nucleo-f446re")  # code: 128 KiB (sectors 0-4), RAM 128 KiB
    ram_main = (
        '#include "lrt_platform.h"\nuint8_t lrt_big_buffer[200u * 1024u];\n'
        "int main(void) { lrt_big_buffer[5] = 1; return lrt_big_buffer[5]; }\n"
    )
    with pytest.raises(UserError) as exc:
        build_firmware(make_gen(tmp_path / "a", ram_main), board)
    msg = str(exc.value)
    assert "RAM by" in msg and "lrt_big_buffer (204800 B)" in msg
    flash_main = (
        '#include "lrt_platform.h"\nconst uint8_t lrt_big_table[150u * 1024u] = {1};\n'
        "int main(void) { return lrt_big_table[*(volatile int *)0x20000000]; }\n"
    )
    with pytest.raises(UserError) as exc:
        build_firmware(make_gen(tmp_path / "b", flash_main), board)
    msg = str(exc.value)
    assert "flash (code) by" in msg and "lrt_big_table (153600 B)" in msg


def test_budget_check_reports_exact_overshoot(tmp_path: Path) -> None:
    """Budget smaller than the linker's map (an emulated board standing in for a smaller
    part): the link succeeds, the footprint check refuses with the byte overshoot."""
    text = (ROOT / "boards" / "mps2-an386.toml").read_text()
    text = text.replace("ram = 0x400000\n\n[nvm]", "ram = 0x10000\n\n[nvm]")
    assert "ram = 0x10000" in text
    path = tmp_path / "mps2-an386.toml"
    path.write_text(text)
    board = load_board(path)
    main = (
        '#include "lrt_platform.h"\nuint8_t lrt_test_arena[60000];\n'
        "int main(void) { lrt_test_arena[7] = 3; return lrt_test_arena[7]; }\n"
    )
    gen = make_gen(tmp_path / "g", main)
    ok = build_firmware(gen, board, check_budget=False)
    assert ok.footprint is not None
    over = ok.footprint.ram - 0x10000
    assert over > 0
    with pytest.raises(UserError) as exc:
        build_firmware(gen, board)
    msg = str(exc.value)
    assert f"over by {over} B" in msg and "lrt_test_arena (60000 B)" in msg
