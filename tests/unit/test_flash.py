"""lrt.flash: command lines per method, and clear errors (exit status 2) when the tool or
the probe is missing, the board cannot be flashed, or the build is for another board."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from lrt.boards import load_board
from lrt.cli import flash_main
from lrt.errors import UserError
from lrt.flash import (
    ELF32_HEADER,
    ELF32_PHDR,
    PT_LOAD,
    check_probe,
    find_firmware,
    flash,
    flash_command,
)


def arm_elf(load_address: int, size: int) -> bytes:
    """A 32-bit little-endian ARM executable with one loadable segment (what find_firmware
    checks: the header, and that the segment lies in the board's code region)."""
    ident = b"\x7fELF\x01\x01\x01" + bytes(9)
    header = ELF32_HEADER.pack(ident, 2, 40, 1, load_address, 52, 0, 0, 52,
                               ELF32_PHDR.size, 1, 40, 0, 0)  # fmt: skip
    phdr = ELF32_PHDR.pack(PT_LOAD, 84, load_address, load_address, size, size, 5, 4)
    return header + phdr + bytes(size)


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    """An lrt-build-like directory: report.json naming the firmware, and the sources."""
    (tmp_path / "out" / "nucleo-f446re").mkdir(parents=True)
    (tmp_path / "out" / "nucleo-f446re" / "fw.elf").write_bytes(arm_elf(0x0800_0000, 4096))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (tmp_path / "report.json").write_text(
        json.dumps({"board": "nucleo-f446re", "firmware": "out/nucleo-f446re/fw.elf"})
    )
    return tmp_path


def test_openocd_command(build_dir: Path) -> None:
    board = load_board("nucleo-f446re")
    cmd = flash_command(board, build_dir, "openocd")
    elf = build_dir / "out" / "nucleo-f446re" / "fw.elf"
    assert cmd == ["openocd", "-f", "board/st_nucleo_f4.cfg",
                   "-c", f"program {elf} verify reset exit"]
    assert flash_command(board, build_dir) == cmd  # the board's default method


def test_pyocd_command(build_dir: Path) -> None:
    cmd = flash_command(load_board("nucleo-f446re"), build_dir, "pyocd")
    assert cmd == ["pyocd", "flash", "-t", "stm32f446retx",
                   str(build_dir / "out" / "nucleo-f446re" / "fw.elf")]


def test_pio_command_writes_the_project(build_dir: Path) -> None:
    cmd = flash_command(load_board("nucleo-f446re"), build_dir, "pio")
    assert Path(cmd[0]).name == "pio"  # the venv's (the pio extra), else PATH's
    assert cmd[1:] == ["run", "-d", str(build_dir / "pio"), "-e", "nucleo-f446re",
                       "-t", "upload"]
    ini = (build_dir / "pio" / "platformio.ini").read_text()
    assert "upload_protocol = stlink" in ini and "board = nucleo_f446re" in ini


def test_pio_dry_run_writes_nothing(
    build_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    printed = dry_run("pio", build_dir, tmp_path, monkeypatch, capsys)
    assert "run -d" in printed and not (build_dir / "pio").exists()


def test_pio_refuses_what_is_not_this_boards_build(build_dir: Path) -> None:
    """pio uploads a build's PlatformIO project: another board's build would be written with
    that board's NVM layout, an ELF has no project."""
    with pytest.raises(UserError, match="built for board 'nucleo-f446re', not 'nrf52840-dk'"):
        flash_command(load_board("nrf52840-dk"), build_dir, "pio")
    assert not (build_dir / "pio").exists()
    elf = build_dir / "out" / "nucleo-f446re" / "fw.elf"
    with pytest.raises(UserError, match="--method pio uploads an lrt-build directory"):
        flash_command(load_board("nucleo-f446re"), elf, "pio")
    with pytest.raises(UserError, match="no firmware for board"):
        flash_command(load_board("nucleo-f446re"), build_dir / "missing", "pio")
    assert not (build_dir / "missing").exists()


def test_emulated_board_cannot_be_flashed(build_dir: Path) -> None:
    with pytest.raises(UserError, match=r"cannot be flashed.*nucleo-f446re"):
        flash_command(load_board("mps2-an386"), build_dir)


def test_unknown_method(build_dir: Path) -> None:
    with pytest.raises(UserError, match="flashes with openocd, pyocd, pio, not 'jlink'"):
        flash_command(load_board("nucleo-f446re"), build_dir, "jlink")


def test_build_for_another_board(build_dir: Path) -> None:
    with pytest.raises(UserError, match="built for board 'nucleo-f446re', not 'nrf52840-dk'"):
        find_firmware(load_board("nrf52840-dk"), build_dir)


def test_an_elf_for_another_memory_map_is_refused(tmp_path: Path) -> None:
    """A bare ELF says nothing of its board but where it loads: an mps2 image (code at 0)
    is not flashed into the nucleo's flash at 0x08000000, nor a garbage file anywhere."""
    nucleo = load_board("nucleo-f446re")
    (tmp_path / "ok.elf").write_bytes(arm_elf(0x0800_0000, 64))
    assert find_firmware(nucleo, tmp_path / "ok.elf") == tmp_path / "ok.elf"
    (tmp_path / "mps2.elf").write_bytes(arm_elf(0x0, 64))
    with pytest.raises(UserError, match=r"loads 64 B at 0x00000000, outside nucleo-f446re"):
        find_firmware(nucleo, tmp_path / "mps2.elf")
    code = nucleo.code_region
    (tmp_path / "big.elf").write_bytes(arm_elf(code.origin, code.size + 4))
    with pytest.raises(UserError, match="outside nucleo-f446re's code region"):
        find_firmware(nucleo, tmp_path / "big.elf")
    (tmp_path / "bare.elf").write_bytes(arm_elf(0x0800_0000, 0))
    with pytest.raises(UserError, match="no loadable segment"):
        find_firmware(nucleo, tmp_path / "bare.elf")


def test_missing_firmware(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no firmware for board 'nucleo-f446re'"):
        flash_command(load_board("nucleo-f446re"), tmp_path, "openocd")


@pytest.mark.parametrize("method", ["openocd", "pyocd"])
def test_missing_tool_is_exit_2(
    build_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(UserError) as exc:
        flash(load_board("nucleo-f446re"), build_dir, method=method)
    assert f"'{method}' is not on PATH" in str(exc.value)
    assert exc.value.exit_code == 2


def dry_run(
    method: str, build_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    """What `lrt-flash --dry-run` prints for the nucleo board with no tool on PATH."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert flash_main(["--board", "nucleo-f446re", "--build", str(build_dir),
                       "--method", method, "--dry-run"]) == 0
    return capsys.readouterr().out


def test_dry_run_needs_no_tool(
    build_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    printed = dry_run("pyocd", build_dir, tmp_path, monkeypatch, capsys)
    assert printed.startswith("pyocd flash -t stm32f446retx ")


@pytest.mark.skipif(shutil.which("openocd") is None, reason="openocd not installed")
@pytest.mark.parametrize("name", ["nucleo-f446re", "nrf52840-dk"])
def test_openocd_without_probe_is_a_clear_error(name: str) -> None:
    """Real OpenOCD with the board's config and no adapter attached (never flashes)."""
    try:
        check_probe(load_board(name), "openocd")
    except UserError as exc:
        assert f"openocd found no debug probe for {name}" in str(exc)
        assert exc.exit_code == 2
    else:
        pytest.skip("a debug probe is attached to this machine")


def test_dry_run_prints_a_command_the_shell_runs_as_is(
    build_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    printed = dry_run("openocd", build_dir, tmp_path, monkeypatch, capsys).strip()
    # openocd's -c takes one argument with spaces in it: it must come back as one
    assert shlex.split(printed) == flash_command(load_board("nucleo-f446re"), build_dir,
                                                 "openocd")
