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
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import jinja2

from lrt import resources
from lrt.boards import Board
from lrt.errors import UserError

TEMPLATES = resources.templates_dir()
BSP = TEMPLATES / "bsp"

ARM_PREFIX = "arm-none-eabi-"
WARN_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
SANITIZE_FLAGS = (
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
)
NVM_TECH_CODES = {"flash": 1, "rram": 2, "mram": 3, "fram": 4}
UART_SOURCES = {
    "cmsdk": "cmsdk/lrt_platform_cmsdk.c",
    "stm32-usart": "stm32/lrt_platform_stm32f4.c",
    "nrf-uart": "nrf52/lrt_platform_nrf52.c",
}
HOST_ONLY_SUFFIX = "_host.c"
NVM_SECTION = '__attribute__((section(".lrt_nvm"), aligned(4)))'


@dataclass(frozen=True)
class Footprint:
    """Bytes per kind of memory, from the ELF's section headers (``size -A``)."""

    text: int  # vectors, code, constants (flash)
    data: int  # initialised data: a copy in flash and the live one in RAM
    bss: int
    heap: int
    stack: int
    nvm: int  # the initial weight set in the NVM region

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss + self.heap + self.stack

    def to_dict(self) -> dict[str, int]:
        """JSON-ready numbers, totals included."""
        return {**asdict(self), "flash": self.flash, "ram": self.ram}


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


@dataclass(frozen=True)
class Define:
    name: str
    value: str
    comment: str = ""


# ----------------------------------------------------------------------------- flags


@functools.lru_cache(maxsize=8)
def _is_gcc(cc: str) -> bool:
    """True for gcc (clang also defines __GNUC__, and refuses gcc's -fvect-cost-model)."""
    proc = subprocess.run([cc, "-dM", "-E", "-x", "c", os.devnull], capture_output=True,
                          text=True)  # fmt: skip
    return proc.returncode == 0 and "__clang__" not in proc.stdout and "__GNUC__" in proc.stdout


def host_cflags(*, sanitize: bool = False, opt: str = "-O2", cc: str = "cc") -> list[str]:
    flags = [*WARN_FLAGS, opt]
    if _is_gcc(cc):
        # gcc's -O2 vectorizes only loops whose trip count is a known multiple of the vector
        # width; the dynamic cost model lets it vectorize the kernels' dot products and
        # scatters (the host emulator's hot path) for the baseline ISA: same integers
        flags.append("-fvect-cost-model=dynamic")
    if sanitize:
        flags += ["-g", *SANITIZE_FLAGS]
    return flags


def arm_cflags(board: Board, *, opt: str = "-O2") -> list[str]:
    """Compiler flags for a Cortex-M board (without include paths)."""
    _require_arm(board)
    return [
        *WARN_FLAGS,
        opt,
        "-g",
        "-ffunction-sections",
        "-fdata-sections",
        *board.cpu.cflags,
        *simd_flags(board),
    ]


def simd_flags(board: Board) -> list[str]:
    """The SIMD kernels (lrt_kernels.h) on cores with the DSP extension."""
    return ["-DLRT_KERNELS_SIMD=1"] if board.cpu.simd else []


def semihosted(board: Board) -> bool:
    """QEMU boards link newlib's rdimon: semihosting I/O and exit status reach the host."""
    return not board.is_host and board.emulator.qemu is not None


def arm_ldflags(board: Board, ldscript: str, mapfile: str) -> list[str]:
    specs = ["--specs=rdimon.specs"] if semihosted(board) else [
        "--specs=nano.specs", "--specs=nosys.specs"
    ]
    return [
        *board.cpu.cflags,
        *board.cpu.ldflags,
        "-nostartfiles",
        *specs,
        f"-T{ldscript}",
        "-Wl,--gc-sections",
        f"-Wl,-Map={mapfile}",
    ]


def _require_arm(board: Board) -> None:
    if board.is_host:
        raise UserError(f"board '{board.name}' is the host, not an ARM target")


# ----------------------------------------------------------------------------- BSP


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(template: str, **values: object) -> str:
    """Render a template under firmware_templates/ (StrictUndefined, no logic in the .j2)."""
    return _env().get_template(template).render(**values)


def resolve_io(board: Board, io: str | None) -> str:
    channel = io or board.io
    if channel == board.io:
        return channel
    if channel == "uart" and board.uart is not None:
        return channel
    if channel == "semihosting" and semihosted(board):
        return channel
    raise UserError(
        f"board '{board.name}' cannot use I/O channel '{channel}' (its channel: '{board.io}'"
        + (", or 'uart'" if board.uart is not None and board.io != "uart" else "")
        + ")"
    )


def bsp_sources(board: Board, io: str) -> list[str]:
    """BSP files (relative to firmware_templates/bsp) a build for this board compiles."""
    if board.is_host:
        return ["host/lrt_platform_host.c"]
    files = ["cortexm/startup.c", "cortexm/lrt_cycles.c"]
    if io == "semihosting":
        files.append("semihost/lrt_platform_semihost.c")
    else:
        assert board.uart is not None
        files.append(UART_SOURCES[board.uart.driver])
    return files


def board_defines(board: Board, io: str) -> list[Define]:
    """The macros of the generated lrt_board.h (documented in boards/README.md)."""
    nvm = board.nvm
    d = [
        Define("LRT_BOARD_NAME", f'"{board.name}"'),
        Define("LRT_BOARD_CPU_HZ", f"{board.cpu.clock_hz}u"),
        Define(
            "LRT_PLATFORM_CYCLES_HZ",
            f"{board.cpu.clock_hz}u",
            "lrt_platform_cycles() ticks per second",
        ),
        Define("LRT_SEMIHOSTING", "1" if semihosted(board) else "0",
               "linked with newlib rdimon (QEMU boards)"),
        Define(f"LRT_BOARD_IO_{io.upper()}", "1", f"I/O channel: {io}"),
        Define("LRT_BOARD_NVM_TECH_FLASH", "1", "NVM technologies"),
        Define("LRT_BOARD_NVM_TECH_RRAM", "2"),
        Define("LRT_BOARD_NVM_TECH_MRAM", "3"),
        Define("LRT_BOARD_NVM_TECH_FRAM", "4"),
        Define("LRT_BOARD_NVM_TECH", str(NVM_TECH_CODES[nvm.technology]), nvm.technology),
        Define("LRT_BOARD_NVM_ERASE_BEFORE_WRITE", "1" if nvm.erase_before_write else "0"),
        Define("LRT_BOARD_NVM_SIZE", f"{nvm.size:#x}u"),
        Define("LRT_BOARD_NVM_PAGE_SIZE", f"{nvm.page_size}u", "erase unit / row"),
        Define("LRT_BOARD_NVM_PROG_SIZE", f"{nvm.prog_size}u", "smallest program unit"),
        Define("LRT_BOARD_NVM_ERASE_VALUE", f"{nvm.erase_value:#04x}u"),
        Define("LRT_BOARD_NVM_ENDURANCE", f"{nvm.endurance}ul",
               "write/erase cycles per cell (flash: per page)"),
        Define(f"LRT_BOARD_NVM_DRIVER_{nvm.driver.upper().replace('-', '_')}", "1",
               f"NVM driver: {nvm.driver}"),
    ]
    if nvm.origin is None:
        d += [
            Define("LRT_BOARD_NVM_BASE", "0u", "host: the NVM is a host backend"),
            Define("LRT_BOARD_NVM_SECTION", "", "host: initial weights are ordinary data"),
        ]
    else:
        d += [
            Define("LRT_BOARD_NVM_BASE", f"{nvm.origin:#010x}u",
                   f"NVM region in {board.nvm_memory} (linker symbols __lrt_nvm_start__/end__)"),
            Define("LRT_BOARD_NVM_SECTION", NVM_SECTION,
                   "put the initial weight set into the NVM region"),
        ]
    if board.uart is not None:
        u = board.uart
        d += [
            Define("LRT_BOARD_UART_BASE", f"{u.base:#010x}u", f"UART ({u.driver})"),
            Define("LRT_BOARD_UART_BAUD", f"{u.baud}u"),
            Define("LRT_BOARD_UART_CLOCK_HZ", f"{u.clock_hz}u"),
        ]
        if u.tx_pin is not None:
            d.append(Define("LRT_BOARD_UART_TX_PIN", str(u.tx_pin)))
        if u.rx_pin is not None:
            d.append(Define("LRT_BOARD_UART_RX_PIN", str(u.rx_pin)))
    return d


def linker_values(board: Board) -> dict[str, object]:
    """Numbers for cortexm/link.ld.j2 (all layout arithmetic is here, not in the template)."""
    assert board.memory is not None and board.nvm.origin is not None
    code, data = board.code_region, board.data_region
    return {
        "board_name": board.name,
        "board_file": board.path.name,
        "code_origin": f"{code.origin:#010x}",
        "code_size": f"{code.size:#x}",
        "ram_origin": f"{data.origin:#010x}",
        "ram_size": f"{data.size:#x}",
        "nvm_origin": f"{board.nvm.origin:#010x}",
        "nvm_size": f"{board.nvm.size:#x}",
        "stack_size": f"{board.memory.stack_size:#x}",
        "heap_size": f"{board.memory.heap_size:#x}",
        **_nvm_fill(board),
    }


def _nvm_fill(board: Board) -> dict[str, str]:
    # An emulator's NVM region is RAM that starts as zeros; a fresh part reads as its erase
    # value. Emulated boards therefore carry the whole region, padded with that value, in
    # the image. Real flash is erased by the programmer, so their images stay small.
    if board.nvm.driver != "ram":
        return {"nvm_pad": "", "nvm_fill": "",
                "nvm_fill_comment": "Real NVM: the rest of the region is left to the part."}
    value = f"{board.nvm.erase_value:#04x}"
    return {
        "nvm_pad": ". = ORIGIN(NVM) + LENGTH(NVM);",
        "nvm_fill": f" ={value}",
        "nvm_fill_comment": f"Emulated NVM (RAM): the image fills the whole region with {value}.",
    }


def write_if_changed(path: Path, text: str) -> None:
    # Unchanged files keep their mtime, so make does not rebuild everything every time.
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _copy_if_changed(src: Path, dst: Path) -> None:
    if dst.is_file() and dst.read_bytes() == src.read_bytes():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def write_bsp(bsp_dir: Path, board: Board, io: str) -> list[Path]:
    """Copy the BSP for a board into bsp_dir, render lrt_board.h (+ link.ld on ARM).

    Returns the C files to compile."""
    sources = bsp_sources(board, io)
    for rel in ["lrt_platform.h", *sources]:
        _copy_if_changed(BSP / rel, bsp_dir / Path(rel).name)
    # The platform code returns lrt_err codes; -Isrc comes first, so the copy codegen put
    # into src/ wins, and this one only serves firmware built without the library.
    _copy_if_changed(TEMPLATES / "lib" / "lrt_common.h", bsp_dir / "lrt_common.h")
    header = render(
        "bsp/lrt_board.h.j2",
        board_name=board.name,
        board_file=board.path.name,
        defines=board_defines(board, io),
    )
    write_if_changed(bsp_dir / "lrt_board.h", header)
    if not board.is_host:
        write_if_changed(bsp_dir / "link.ld", render("bsp/cortexm/link.ld.j2",
                                                      **linker_values(board)))
    return [bsp_dir / Path(rel).name for rel in sources]


# ----------------------------------------------------------------------------- build


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


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"'{name}' not found on PATH (install it: scripts/setup.sh)")
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
        cc = _tool(os.environ.get("CC", "cc"))
        cflags = [*host_cflags(sanitize=sanitize, opt=opt, cc=cc), *includes, *extra_cflags]
        ldflags = [*(SANITIZE_FLAGS if sanitize else ())]
        ldlibs = ["-lm"]
        target = build_dir / "fw"
        link_deps: list[str] = []
    else:
        cc = _tool(ARM_PREFIX + "gcc")
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
    make = _tool("make")
    cmd = [make, "-C", str(gen_dir), "-f", makefile, f"-j{jobs or os.cpu_count() or 1}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    commands = tuple(
        line for line in proc.stdout.splitlines() if line.startswith(cc + " ")
    )
    if proc.returncode != 0:
        _raise_build_error(board, build_dir, log)
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


def _raise_build_error(board: Board, build_dir: Path, log: str) -> None:
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


# ----------------------------------------------------------------------------- footprint

_FLASH_SECTIONS = (".isr_vector", ".text", ".ARM.extab", ".ARM.exidx", ".rodata")


def section_sizes(elf: Path) -> dict[str, tuple[int, int]]:
    """{section: (size, address)} of an ELF's allocated sections (``size -A``)."""
    out = subprocess.run(
        [_tool(ARM_PREFIX + "size"), "-A", "-d", str(elf)],
        capture_output=True, text=True, check=True,
    ).stdout
    sections: dict[str, tuple[int, int]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            size, addr = int(parts[1]), int(parts[2])
            # Non-allocated sections (.comment, .debug_*) sit at address 0, and so does the
            # vector table on boards whose code starts at 0.
            if addr or parts[0] in _FLASH_SECTIONS:
                sections[parts[0]] = (size, addr)
    return sections


def elf_footprint(elf: Path) -> Footprint:
    sec = section_sizes(elf)
    get = lambda name: sec.get(name, (0, 0))[0]  # noqa: E731
    text = sum(get(s) for s in _FLASH_SECTIONS)
    return Footprint(
        text=text,
        data=get(".data"),
        bss=get(".bss"),
        heap=get(".heap"),
        stack=get(".stack"),
        nvm=get(".lrt_nvm"),
    )


def biggest_symbols(files: Sequence[Path], *, ram: bool, flash: bool, count: int = 8) -> str:
    """'name (N B), ...' of the biggest symbols in ELF/object files (``nm --size-sort``)."""
    if not files:
        return "(no object files)"
    types = set()
    if flash:
        types |= set("TtRr")
    if ram:
        types |= set("BbCc")
    types |= set("Dd")
    out = subprocess.run(
        [_tool(ARM_PREFIX + "nm"), "--size-sort", "-S", "-r", *map(str, files)],
        capture_output=True, text=True,
    ).stdout
    syms: list[tuple[int, str]] = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in types:
            syms.append((int(parts[1], 16), parts[3]))
    syms.sort(reverse=True)
    return ", ".join(f"{name} ({size} B)" for size, name in syms[:count]) or "(none)"


def check_footprint(board: Board, fp: Footprint, elf: Path) -> None:
    """UserError if the image needs more flash or RAM than the board's budget allows."""
    problems = []
    if fp.flash > board.flash_budget:
        problems.append(
            f"flash: needs {fp.flash} B (text {fp.text} + data {fp.data}), budget "
            f"{board.flash_budget} B, over by {fp.flash - board.flash_budget} B"
        )
    if fp.ram > board.ram_budget:
        problems.append(
            f"RAM: needs {fp.ram} B (data {fp.data} + bss {fp.bss} + heap {fp.heap} + stack "
            f"{fp.stack}), budget {board.ram_budget} B, over by {fp.ram - board.ram_budget} B"
        )
    if fp.nvm > board.nvm.size:
        problems.append(f"NVM: needs {fp.nvm} B, region {board.nvm.size} B")
    if problems:
        biggest = biggest_symbols(
            [elf], ram=fp.ram > board.ram_budget, flash=fp.flash > board.flash_budget
        )
        raise UserError(
            f"firmware does not fit board '{board.name}': {'; '.join(problems)}. "
            f"Biggest symbols: {biggest}"
        )


def compile_check(
    board: Board,
    sources: Sequence[Path],
    include_dirs: Sequence[Path],
    out_dir: Path,
    extra_cflags: Sequence[str] = (),
) -> list[Path]:
    """Compile (-c only) C files with a board's flags; returns the objects. UserError on failure.

    For checking that library code builds for every board before a firmware exists."""
    cc = _tool(os.environ.get("CC", "cc")) if board.is_host else _tool(ARM_PREFIX + "gcc")
    flags = host_cflags(cc=cc) if board.is_host else arm_cflags(board)
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


# ----------------------------------------------------------------------------- PlatformIO


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
            _copy_if_changed(f, src / f.name)
    write_bsp(src / "bsp", board, channel)
    _copy_if_changed(src / "bsp" / "link.ld", out / "link.ld")
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
    from lrt.boards import list_boards

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
    from lrt import pio_standin

    write_pio_project(gen_dir, board, out, io=io)
    core = core_dir or pio_standin.ensure_standin()
    t0 = time.perf_counter()
    proc = pio_standin.pio_run(Path(out), core_dir=core, environment=board.name)
    seconds = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        _raise_build_error(board, Path(out) / ".pio" / "build" / board.name, log)
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
