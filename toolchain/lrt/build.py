"""Compile generated firmware for a board: host cc or arm-none-eabi-gcc, both through make.

Input is a generated directory (codegen's output)::

    gen_dir/src/*.c *.h      lib files + lrt_model.c/h + main.c

``build_firmware`` adds, per build variant (board + I/O channel + sanitizer), everything
under ``gen_dir/out/<variant>/``: ``bsp/`` (the board support files for the family, the
rendered ``lrt_board.h`` and, on ARM, ``link.ld``), a ``Makefile`` rendered from
``firmware_templates/Makefile.j2``, ``obj/`` and the executable (``fw`` / ``fw.elf``).
``src/*_host.c`` files are host-only (POSIX backends) and skipped on targets.
Rebuilding only recompiles what changed. ARM builds then get a footprint check against
the board's budget; over budget is a UserError naming the overshoot and the biggest symbols.
Flags are ``cflags``, the board support ``bsp``, the footprint check ``footprint``, PlatformIO
projects ``pio_project``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lrt.boards import Board
from lrt.bsp import resolve_io, write_bsp
from lrt.cflags import (
    ARM_PREFIX,
    SANITIZE_FLAGS,
    arm_cflags,
    arm_ldflags,
    host_cflags,
    require_tool,
)
from lrt.errors import UserError
from lrt.footprint import Footprint, biggest_symbols, check_footprint, elf_footprint
from lrt.templates import render, write_if_changed

HOST_ONLY_SUFFIX = "_host.c"


@dataclass(frozen=True)
class FirmwareBuild:
    """One compiled firmware (pipeline.BuildResult is the whole lrt-build job)."""

    board: Board
    variant: str
    io: str
    executable: Path
    build_dir: Path
    footprint: Footprint | None  # None on the host
    commands: tuple[str, ...]  # compiler/linker command lines make ran
    log: str
    seconds: float


def target_sources(src_dir: Path, board: Board) -> list[Path]:
    """The C files of src_dir a build for this board compiles.

    Convention: ``*_host.c`` files (host NVM backends using POSIX files/mmap) are host-only
    and left out of target builds, so codegen can copy the whole library everywhere."""
    files = sorted(src_dir.glob("*.c"))
    if board.is_host:
        return files
    return [f for f in files if not f.name.endswith(HOST_ONLY_SUFFIX)]


def variant_name(board: Board, io: str, sanitize: bool) -> str:
    name = board.name
    if io != board.io:
        name += f"-{io}"
    if sanitize:
        name += "-asan"
    return name


def build_firmware(
    gen_dir: Path,
    board: Board,
    *,
    sanitize: bool = False,
    extra_cflags: Sequence[str] = (),
    io: str | None = None,
    opt: str = "-O2",
    jobs: int | None = None,
    check_budget: bool = True,
) -> FirmwareBuild:
    """Build gen_dir/src/*.c for a board; see the module docstring for the layout.

    ``io`` overrides the board's I/O channel ("uart" on a QEMU board exercises the
    serial path); ``sanitize`` adds ASan/UBSan (host only).
    """
    gen_dir = Path(gen_dir).resolve()
    src_dir = gen_dir / "src"
    if not src_dir.is_dir() or not any(src_dir.glob("*.c")):
        raise UserError(f"{src_dir} has no C sources (run codegen first)")
    if sanitize and not board.is_host:
        raise UserError("sanitizers (-fsanitize) are only available for the host board")
    channel = resolve_io(board, io)
    variant = variant_name(board, channel, sanitize)
    build_dir = gen_dir / "out" / variant
    bsp_dir = build_dir / "bsp"
    bsp_files = write_bsp(bsp_dir, board, channel)
    rel = lambda p: os.path.relpath(p, gen_dir)  # noqa: E731
    sources = sorted(rel(p) for p in target_sources(src_dir, board)) + [rel(p) for p in bsp_files]
    includes = [f"-I{rel(src_dir)}", f"-I{rel(bsp_dir)}"]
    makefile = rel(build_dir / "Makefile")

    if board.is_host:
        cc = require_tool(os.environ.get("CC", "cc"))
        cflags = [*host_cflags(board, sanitize=sanitize, opt=opt, cc=cc), *includes, *extra_cflags]
        ldflags = [*(SANITIZE_FLAGS if sanitize else ())]
        ldlibs = ["-lm"]
        target = build_dir / "fw"
        link_deps: list[str] = []
    else:
        cc = require_tool(ARM_PREFIX + "gcc")
        cflags = [*arm_cflags(board, opt=opt), *includes, *extra_cflags]
        ldscript = rel(bsp_dir / "link.ld")
        ldflags = arm_ldflags(board, ldscript, rel(build_dir / "fw.map"))
        ldlibs = []
        target = build_dir / "fw.elf"
        link_deps = [ldscript]
    write_if_changed(
        build_dir / "Makefile",
        render(
            "Makefile.j2",
            board_name=board.name,
            variant=variant,
            makefile=makefile,
            cc=cc,
            objdir=rel(build_dir / "obj"),
            target=rel(target),
            cflags=" ".join(cflags),
            ldflags=" ".join(ldflags),
            ldlibs=" ".join(ldlibs),
            sources=" ".join(sources),
            link_deps=" ".join(link_deps),
        ),
    )
    make = require_tool("make")
    cmd = [make, "-C", str(gen_dir), "-f", makefile, f"-j{jobs or os.cpu_count() or 1}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    commands = tuple(
        line for line in proc.stdout.splitlines() if line.startswith(cc + " ")
    )
    if proc.returncode != 0:
        raise_build_error(board, build_dir, log)
    footprint = None
    if not board.is_host:
        footprint = elf_footprint(target)
        if check_budget:
            check_footprint(board, footprint, target)
    return FirmwareBuild(
        board=board,
        variant=variant,
        io=channel,
        executable=target,
        build_dir=build_dir,
        footprint=footprint,
        commands=commands,
        log=log,
        seconds=seconds,
    )


_OVERFLOW = re.compile(r"region `(\w+)' overflowed by (\d+) bytes")


def raise_build_error(board: Board, build_dir: Path, log: str) -> None:
    over = _OVERFLOW.findall(log)
    if over:
        what = {"FLASH": "flash (code)", "RAM": "RAM", "NVM": "the NVM region"}
        parts = [f"{what.get(region, region)} by {n} bytes" for region, n in over]
        objs = sorted(build_dir.rglob("*.o"))
        kinds = {r for r, _ in over}
        biggest = biggest_symbols(objs, ram="RAM" in kinds, flash=bool(kinds - {"RAM"}))
        raise UserError(
            f"firmware does not fit board '{board.name}': over {', '.join(parts)}. "
            f"Biggest symbols: {biggest}"
        )
    tail = "\n".join(log.strip().splitlines()[-30:])
    raise UserError(f"build for board '{board.name}' failed:\n{tail}")


def compile_check(
    board: Board,
    sources: Sequence[Path],
    include_dirs: Sequence[Path],
    out_dir: Path,
    extra_cflags: Sequence[str] = (),
) -> list[Path]:
    """Compile (-c only) C files with a board's flags; returns the objects. UserError on failure.

    For checking that library code builds for every board before a firmware exists."""
    cc = require_tool(os.environ.get("CC", "cc") if board.is_host else ARM_PREFIX + "gcc")
    flags = host_cflags(board, cc=cc) if board.is_host else arm_cflags(board)
    out_dir.mkdir(parents=True, exist_ok=True)

    def one(src: Path) -> Path:
        obj = out_dir / (Path(src).stem + ".o")
        cmd = [cc, *flags, *(f"-I{d}" for d in include_dirs), *extra_cflags, "-c", str(src),
               "-o", str(obj)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"{src} does not compile for board '{board.name}':\n{proc.stderr}")
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(one, sources))
