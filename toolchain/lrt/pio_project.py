"""PlatformIO projects of generated firmware (boards with a [platformio] table), and their
offline build against lrt.pio_standin's local platform."""

from __future__ import annotations

import time
from pathlib import Path

from lrt import pio_standin
from lrt.boards import Board, list_boards
from lrt.bsp import resolve_io, write_bsp
from lrt.build import HOST_ONLY_SUFFIX, FirmwareBuild, raise_build_error
from lrt.cflags import WARN_FLAGS, simd_flags
from lrt.errors import UserError
from lrt.footprint import check_footprint, elf_footprint
from lrt.templates import copy_if_changed, render, write_if_changed


def pio_build_flags(board: Board) -> list[str]:
    """Compile flags of a PlatformIO project (include paths relative to the project)."""
    return [*WARN_FLAGS, "-O2", *board.cpu.cflags, *simd_flags(board), "-Isrc", "-Isrc/bsp"]


def pio_link_flags(board: Board) -> list[str]:
    return [*board.cpu.cflags, *board.cpu.ldflags, "-nostartfiles"]


def write_pio_project(gen_dir: Path, board: Board, out: Path, *, io: str | None = None) -> Path:
    """Write a PlatformIO project for a board from codegen output; returns platformio.ini.

    Layout: platformio.ini, link.ld, lrt_pio_extra.py (link flags), src/ (gen_dir/src
    without host-only files), src/bsp/ (startup, platform I/O, lrt_board.h)."""
    if board.platformio is None or board.is_host:
        raise UserError(
            f"board '{board.name}' has no [platformio] table (boards with one: "
            + ", ".join(b.name for b in _pio_boards()) + ")"
        )
    channel = resolve_io(board, io)
    gen_dir, out = Path(gen_dir).resolve(), Path(out).resolve()
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    for f in sorted((gen_dir / "src").iterdir()):
        if f.suffix in (".c", ".h") and not f.name.endswith(HOST_ONLY_SUFFIX):
            copy_if_changed(f, src / f.name)
    write_bsp(src / "bsp", board, channel)
    copy_if_changed(src / "bsp" / "link.ld", out / "link.ld")
    (src / "bsp" / "link.ld").unlink()
    write_if_changed(out / "lrt_pio_extra.py", render(
        "bsp/pio_extra.py.j2", board_name=board.name, linkflags=repr(pio_link_flags(board))))
    ini = out / "platformio.ini"
    write_if_changed(ini, render(
        "platformio.ini.j2",
        board_name=board.name,
        board_file=board.path.name,
        env_name=board.name,
        platform=board.platformio.platform,
        pio_board=board.platformio.board,
        ldscript="link.ld",
        build_flags=pio_build_flags(board),
        host_only_suffix=HOST_ONLY_SUFFIX,
        extra_script="lrt_pio_extra.py",
        upload_protocol=board.platformio.upload_protocol or "",
        monitor_speed=board.uart.baud if board.uart else 115200,
    ))
    return ini


def _pio_boards() -> list[Board]:
    return [b for b in list_boards() if b.platformio is not None]


def build_pio_project(
    gen_dir: Path,
    board: Board,
    out: Path,
    *,
    io: str | None = None,
    core_dir: Path | None = None,
    check_budget: bool = True,
) -> FirmwareBuild:
    """write_pio_project + `pio run` (offline: against lrt.pio_standin's local platform).

    ``core_dir``: a PLATFORMIO_CORE_DIR with the real platform installed, to build online;
    default: the stand-in's private core dir."""
    write_pio_project(gen_dir, board, out, io=io)
    core = core_dir or pio_standin.ensure_standin()
    t0 = time.perf_counter()
    proc = pio_standin.pio_run(Path(out), core_dir=core, environment=board.name)
    seconds = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise_build_error(board, Path(out) / ".pio" / "build" / board.name, log)
    elves = sorted((Path(out) / ".pio" / "build" / board.name).glob("*.elf"))
    if len(elves) != 1:
        raise UserError(f"pio run produced {len(elves)} ELF files in {out}/.pio/build:\n{log}")
    elf = elves[0]
    footprint = elf_footprint(elf)
    if check_budget:
        check_footprint(board, footprint, elf)
    return FirmwareBuild(
        board=board,
        variant=f"pio-{board.name}",
        io=resolve_io(board, io),
        executable=elf,
        build_dir=elf.parent,
        footprint=footprint,
        commands=(f"pio run -d {out} -e {board.name}",),
        log=log,
        seconds=seconds,
    )
