"""boards/*.toml: every board loads, and bad files fail with the file, field and expectation."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from lrt.boards import (
    BOARDS_DIR,
    Board,
    list_boards,
    load_board,
    load_build_board,
    scan_boards,
)
from lrt.bsp import board_defines, linker_values
from lrt.errors import UserError
from lrt.templates import render

EXPECTED = {
    "host", "mps2-an386", "mps2-an500", "lm3s6965evb", "mps3-an547", "nucleo-f446re",
    "nrf52840-dk",
}


def raw(name: str) -> dict:
    with (BOARDS_DIR / f"{name}.toml").open("rb") as fh:
        return tomllib.load(fh)


def write_variant(tmp_path: Path, name: str, edit: str, new: str) -> Path:
    """Copy a board file with one text substitution (the edit must apply)."""
    text = (BOARDS_DIR / f"{name}.toml").read_text()
    assert edit in text
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace(edit, new, 1))
    return path


def test_all_boards_load() -> None:
    boards, broken = scan_boards()
    assert broken == []  # a shipped board file that does not load would drop out of every list
    assert {b.name for b in boards} >= EXPECTED
    for b in boards:
        assert b.path == BOARDS_DIR / f"{b.name}.toml"
        assert load_board(b.name) == b
        assert load_board(str(b.path)) == b


def test_unknown_board_lists_known_ones() -> None:
    with pytest.raises(UserError) as exc:
        load_board("nucleo-f999")
    msg = str(exc.value)
    assert "unknown board 'nucleo-f999'" in msg
    for name in EXPECTED:
        assert name in msg


def test_real_board_numbers() -> None:
    b = load_board("nucleo-f446re")
    assert b.memory is not None and b.budget is not None
    assert (b.budget.flash, b.budget.ram) == (512 * 1024, 128 * 1024)
    assert b.platformio is not None and b.platformio.board == "nucleo_f446re"
    assert b.flash is not None and set(b.flash.methods) == {"pio", "openocd", "pyocd"}
    assert b.emulator.renode and b.emulator.qemu is None
    n = load_board("nrf52840-dk")
    assert n.budget is not None and (n.budget.flash, n.budget.ram) == (1 << 20, 256 * 1024)


@pytest.mark.parametrize("name", sorted(EXPECTED - {"host"}))
def test_regions_carve_nvm_out_of_its_memory(name: str) -> None:
    b = load_board(name)
    data = raw(name)
    nvm_lo, nvm_size = data["nvm"]["origin"], data["nvm"]["size"]
    flash, ram = data["memory"]["flash"], data["memory"]["ram"]
    in_flash = flash["origin"] <= nvm_lo < flash["origin"] + flash["size"]
    code, dat = b.code_region, b.data_region
    # No overlap between the NVM region and what the linker may fill.
    for region in (code, dat):
        assert region.end <= nvm_lo or region.origin >= nvm_lo + nvm_size
    if in_flash:
        assert code.size == flash["size"] - nvm_size and dat.size == ram["size"]
        assert b.flash_budget == data["budget"]["flash"] - nvm_size
    else:
        assert dat.size == ram["size"] - nvm_size and code.size == flash["size"]
        assert b.ram_budget == data["budget"]["ram"] - nvm_size


@pytest.mark.parametrize(
    ("edit", "new", "needles"),
    [
        ('clock_hz = 25000000\ncflags', 'clock_hz = "fast"\ncflags',
         ["cpu.clock_hz", "expected an integer", "'fast'"]),
        ('core = "cortex-m4"', 'core = "cortex-m9"', ["cpu.core", "cortex-m55", "'cortex-m9'"]),
        ('technology = "rram"', 'technology = "eeprom"', ["nvm.technology", "fram"]),
        ("page_size = 256", "page_size = 258", ["nvm.page_size", "multiple of prog_size"]),
        ("prog_size = 4", "prog_size = 3", ["nvm.prog_size", "power of two"]),
        ("origin = 0x00380000", "origin = 0x00300000", ["nvm.origin", "top of memory.flash"]),
        ("origin = 0x00380000", "origin = 0x10000000", ["nvm.origin", "inside memory.flash"]),
        ("flash = 0x400000\nram", "flash = 0x800000\nram", ["budget.flash", "at most"]),
        ('channel = "semihosting"', 'channel = "usb"', ["io.channel", "stdio, semihosting, uart"]),
        ('name = "mps2-an386"', 'name = "an386"', ["field 'name'", "mps2-an386"]),
        ("stack_size = 0x4000", "stack_size = 0x4000\nstak = 1", ["unknown field", "'stak'"]),
        ('[emulator]\nqemu = "mps2-an386"', "", ["io.channel", "without a QEMU machine"]),
    ],
)
def test_bad_field_names_file_field_and_expectation(
    tmp_path: Path, edit: str, new: str, needles: list[str]
) -> None:
    path = write_variant(tmp_path, "mps2-an386", edit, new)
    with pytest.raises(UserError) as exc:
        load_board(path)
    msg = str(exc.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, msg


def test_missing_field_is_named(tmp_path: Path) -> None:
    path = write_variant(tmp_path, "nucleo-f446re", 'openocd_config = "board/st_nucleo_f4.cfg"\n',
                         "")
    with pytest.raises(UserError, match=r"missing field 'flash.openocd_config'"):
        load_board(path)
    path = write_variant(tmp_path, "mps2-an386", "endurance = 1000000\n", "")
    with pytest.raises(UserError, match=r"missing field 'nvm.endurance'"):
        load_board(path)


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("name = \n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_board(path)


def test_adding_a_board_is_adding_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for p in BOARDS_DIR.glob("*.toml"):
        shutil.copy(p, tmp_path / p.name)
    write_variant(tmp_path, "mps2-an386", "", "")  # identical copy, then a renamed one:
    text = (tmp_path / "mps2-an386.toml").read_text().replace(
        'name = "mps2-an386"', 'name = "my-an386"'
    )
    (tmp_path / "my-an386.toml").write_text(text)
    monkeypatch.setenv("LRT_BOARDS_DIR", str(tmp_path))
    assert "my-an386" in {b.name for b in list_boards()}
    assert load_board("my-an386").emulator.qemu == "mps2-an386"


def test_user_boards_by_path_and_search_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (BOARDS_DIR / "mps2-an386.toml").read_text().replace(
        'name = "mps2-an386"', 'name = "my-board"'
    )
    (tmp_path / "my-board.toml").write_text(text)
    assert load_board(tmp_path / "my-board.toml").name == "my-board"  # --board path/to/x.toml
    with pytest.raises(UserError, match="unknown board 'my-board'"):
        load_board("my-board")
    # LRT_BOARD_PATH adds directories before the shipped boards; a user file of a shipped
    # name wins, the other shipped boards stay visible
    (tmp_path / "host.toml").write_text((BOARDS_DIR / "host.toml").read_text())
    monkeypatch.setenv("LRT_BOARD_PATH", f"/nonexistent{os.pathsep}{tmp_path}")
    assert load_board("my-board").path == tmp_path / "my-board.toml"
    assert load_board("host").path == tmp_path / "host.toml"
    assert {"my-board", "host", "mps2-an500"} <= {b.name for b in list_boards()}
    report = {"board": "my-board", "board_file": str(tmp_path / "my-board.toml")}
    monkeypatch.delenv("LRT_BOARD_PATH")
    assert load_build_board(report).name == "my-board"  # a build remembers its board file


def test_a_broken_user_board_hides_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One unreadable board file on the search path: the other boards still list, build and
    flash; `lrt-build --list-boards` prints them, names the broken file and exits 1."""
    from lrt import cli

    (tmp_path / "half-written.toml").write_text('name = "half-written"\n[cpu\n')
    good = (BOARDS_DIR / "mps2-an386.toml").read_text().replace(
        'name = "mps2-an386"', 'name = "my-board"'
    )
    (tmp_path / "my-board.toml").write_text(good)
    monkeypatch.setenv("LRT_BOARD_PATH", str(tmp_path))
    names = {b.name for b in list_boards()}
    assert {"my-board", "host", "mps2-an386"} <= names and "half-written" not in names
    assert cli.build_main(["--list-boards"]) == 1
    out, err = capsys.readouterr()
    assert "my-board" in out and "host" in out
    assert "half-written.toml" in err and "not valid TOML" in err
    (tmp_path / "half-written.toml").unlink()
    assert cli.build_main(["--list-boards"]) == 0


def _header(board: Board) -> str:
    return render("bsp/lrt_board.h.j2", board_name=board.name, board_file=board.path.name,
                  defines=board_defines(board, board.io))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_board_header_is_valid_c(tmp_path: Path, name: str) -> None:
    board = load_board(name)
    (tmp_path / "lrt_board.h").write_text(_header(board))
    nvm = raw(name)["nvm"]
    (tmp_path / "t.c").write_text(
        '#include "lrt_board.h"\n'
        f"typedef char size_ok[(LRT_BOARD_NVM_SIZE == {nvm['size']}u) ? 1 : -1];\n"
        f"typedef char page_ok[(LRT_BOARD_NVM_PAGE_SIZE == {nvm['page_size']}u) ? 1 : -1];\n"
        "typedef char tech_ok[(LRT_BOARD_NVM_TECH >= 1 && LRT_BOARD_NVM_TECH <= 4) ? 1 : -1];\n"
        "LRT_BOARD_NVM_SECTION const unsigned char w[4] = {1, 2, 3, 4};\n"
        "const char *board_name(void);\n"
        "const char *board_name(void) { return LRT_BOARD_NAME; }\n"
    )
    proc = subprocess.run(
        ["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "t.c", "-o", "t.o"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", sorted(EXPECTED - {"host"}))
def test_linker_script_uses_the_board_map(name: str) -> None:
    board = load_board(name)
    values = linker_values(board)
    text = render("bsp/cortexm/link.ld.j2", **values)
    data = raw(name)
    assert f"NVM   (rw)  : ORIGIN = {data['nvm']['origin']:#010x}, LENGTH = " \
           f"{data['nvm']['size']:#x}" in text
    assert f"FLASH (rx)  : ORIGIN = {data['memory']['flash']['origin']:#010x}" in text
    assert f"__stack_size__ = {data['memory']['stack_size']:#x};" in text
    assert "{{" not in text and "}}" not in text


def test_simd_kernels_follow_the_core(tmp_path: Path) -> None:
    """DSP cores get the SIMD kernels (and their flag), the others the portable ones; a
    board may turn them off, not on for a core without the DSP extension."""
    from lrt.cflags import arm_cflags

    simd = {b.name: b.simd for b in list_boards()}
    assert simd["mps2-an386"] and simd["mps2-an500"] and simd["mps3-an547"]
    assert simd["nucleo-f446re"] and simd["nrf52840-dk"]
    assert not simd["lm3s6965evb"] and not simd["host"]
    assert "-DLRT_KERNELS_SIMD=1" in arm_cflags(load_board("mps2-an386"))
    assert not any("SIMD" in f for f in arm_cflags(load_board("lm3s6965evb")))
    off = write_variant(tmp_path, "mps2-an386", "fpu = true\n", "fpu = true\nsimd = false\n")
    assert not load_board(off).simd
    assert not any("SIMD" in f for f in arm_cflags(load_board(off)))
    bad = write_variant(tmp_path, "lm3s6965evb", "fpu = false\n", "fpu = false\nsimd = true\n")
    with pytest.raises(UserError, match=r"cpu\.simd"):
        load_board(bad)


def test_a_boards_dir_that_does_not_exist_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not an empty board list: a mistyped LRT_BOARDS_DIR would hide every shipped board."""
    from lrt import boards

    monkeypatch.setenv("LRT_BOARDS_DIR", "/nonexistent/boards")
    with pytest.raises(UserError, match="LRT_BOARDS_DIR"):
        boards.board_names()
