"""Board descriptions: load and validate ``boards/*.toml`` (schema: boards/README.md).

A board file says what the build and the runners need to know about one target: the
CPU and its gcc flags, the memory map the linker uses, the footprint budget, where the
NVM weight region lives and its geometry, how to emulate it (QEMU machine, Renode
platform), how to talk to it (stdio, semihosting, UART) and how to flash it. Adding a
board is adding a file; every field is checked here so a typo fails with the file, the
field and the expected value named, not later inside gcc or QEMU.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrt import resources
from lrt.errors import UserError

BOARDS_DIR = resources.boards_dir()

CORES = (
    "host",
    "cortex-m0",
    "cortex-m0plus",
    "cortex-m3",
    "cortex-m4",
    "cortex-m7",
    "cortex-m33",
    "cortex-m55",
)
# Cores with the DSP extension (SXTB16, SMLAD): their firmware gets the SIMD kernels
# (-DLRT_KERNELS_SIMD=1, docs/KERNELS.md); the others and the host run the portable ones.
DSP_CORES = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55")
NVM_TECHNOLOGIES = ("flash", "rram", "mram", "fram")
# host: the host backends; ram: plain stores into emulator RAM (the firmware enforces the
# technology's rules in software); the others are on-chip flash controllers.
NVM_DRIVERS = ("host", "ram", "stm32f4-flash", "nrf52-nvmc")
IO_CHANNELS = ("stdio", "semihosting", "uart")
UART_DRIVERS = ("cmsdk", "stm32-usart", "nrf-uart")
FLASH_METHODS = ("openocd", "pyocd", "pio")
UNLIMITED = 2**31 - 1  # budget of boards without a [budget] table (the host)


@dataclass(frozen=True)
class Region:
    origin: int
    size: int

    @property
    def end(self) -> int:
        return self.origin + self.size

    def contains(self, other: Region) -> bool:
        return self.origin <= other.origin and other.end <= self.end


@dataclass(frozen=True)
class Cpu:
    core: str
    fpu: bool
    clock_hz: int
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    simd: bool = False  # build the SIMD kernels (default: the core has the DSP extension)

    def __str__(self) -> str:
        return self.core

    def __format__(self, spec: str) -> str:
        return format(self.core, spec)


@dataclass(frozen=True)
class Memory:
    flash: Region
    ram: Region
    stack_size: int
    heap_size: int


@dataclass(frozen=True)
class MemoryLimits:
    """The board file's [budget] table: bytes the firmware may use (below the memory map)."""

    flash: int
    ram: int


@dataclass(frozen=True)
class Nvm:
    technology: str
    size: int
    page_size: int
    prog_size: int
    erase_value: int
    endurance: int
    driver: str
    origin: int | None

    @property
    def region(self) -> Region | None:
        return None if self.origin is None else Region(self.origin, self.size)

    @property
    def erase_before_write(self) -> bool:
        return self.technology == "flash"


# Where a build's firmware can run (lrt-emulate --emulator): auto = the board decides.
EMULATORS = ("auto", "host", "qemu", "renode")


@dataclass(frozen=True)
class Emulator:
    qemu: str | None = None  # QEMU machine emulating this board (firmware uses semihosting)
    renode: str | None = None  # Renode platform description (.repl)
    renode_uart: str | None = None  # Renode peripheral of the board's UART
    # A QEMU machine close enough to run the unmodified real-board image (same core, same
    # UART at the same address), and the index of that UART among QEMU's -serial ports.
    qemu_standin: str | None = None
    qemu_serial: int = 0


@dataclass(frozen=True)
class Uart:
    driver: str
    base: int
    baud: int
    clock_hz: int
    tx_pin: int | None = None
    rx_pin: int | None = None


@dataclass(frozen=True)
class PlatformIO:
    board: str
    platform: str
    upload_protocol: str | None = None


@dataclass(frozen=True)
class FlashConfig:
    method: str
    methods: tuple[str, ...]
    openocd_config: str | None = None
    pyocd_target: str | None = None


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    path: Path
    cpu: Cpu
    memory: Memory | None
    budget: MemoryLimits | None
    nvm: Nvm
    emulator: Emulator
    io: str
    uart: Uart | None
    platformio: PlatformIO | None
    flash: FlashConfig | None

    @property
    def simd(self) -> bool:
        """The firmware gets the SIMD kernels (docs/KERNELS.md)."""
        return self.cpu.simd

    @property
    def is_host(self) -> bool:
        return self.cpu.core == "host"

    @property
    def emulator_name(self) -> str:
        """'host', 'qemu:<machine>', 'renode:<platform>' or 'none' (for listings)."""
        if self.is_host:
            return "host"
        names = []
        if self.emulator.qemu:
            names.append(f"qemu:{self.emulator.qemu}")
        if self.emulator.qemu_standin:
            names.append(f"qemu~{self.emulator.qemu_standin}")
        if self.emulator.renode:
            names.append(f"renode:{Path(self.emulator.renode).stem}")
        return ", ".join(names) or "none"

    @property
    def nvm_memory(self) -> str | None:
        """'flash' or 'ram': which memory of the map holds the NVM region (None on host)."""
        region = self.nvm.region
        if region is None or self.memory is None:
            return None
        return "flash" if self.memory.flash.contains(region) else "ram"

    @property
    def code_region(self) -> Region:
        """Where code and constants go: the flash memory minus an NVM region at its top."""
        mem = self._memory()
        if self.nvm_memory == "flash":
            return Region(mem.flash.origin, mem.flash.size - self.nvm.size)
        return mem.flash

    @property
    def data_region(self) -> Region:
        """Where .data/.bss/heap/stack go: the RAM minus an NVM region at its top."""
        mem = self._memory()
        if self.nvm_memory == "ram":
            return Region(mem.ram.origin, mem.ram.size - self.nvm.size)
        return mem.ram

    @property
    def flash_budget(self) -> int:
        """Bytes of the part's flash the firmware image may use (NVM region excluded).

        Boards without a [budget] table (the host) are unlimited: UNLIMITED."""
        if self.budget is None:
            return UNLIMITED
        return self.budget.flash - (self.nvm.size if self.nvm_memory == "flash" else 0)

    @property
    def ram_budget(self) -> int:
        """Bytes of the part's RAM the firmware may use (NVM region excluded)."""
        if self.budget is None:
            return UNLIMITED
        return self.budget.ram - (self.nvm.size if self.nvm_memory == "ram" else 0)

    def _memory(self) -> Memory:
        if self.memory is None:
            raise UserError(f"board '{self.name}' has no memory map (host build)")
        return self.memory



# ----------------------------------------------------------------------------- parsing


class _Table:
    """One TOML table with the file and dotted path, for error messages."""

    def __init__(self, file: Path, prefix: str, data: Any) -> None:
        self.file = file
        self.prefix = prefix
        if not isinstance(data, dict):
            raise self.error("", "a table", data)
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def field(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def error(self, key: str, expected: str, got: Any) -> UserError:
        name = self.prefix + key if key else self.prefix.rstrip(".") or "<top level>"
        return UserError(f"{self.file}: field '{name}': expected {expected}, got {got!r}")

    def missing(self, key: str, expected: str) -> UserError:
        return UserError(f"{self.file}: missing field '{self.field(key)}' ({expected})")

    def _take(self, key: str, expected: str, required: bool) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.missing(key, expected)
            return None
        return self.data[key]

    def get_str(
        self, key: str, *, required: bool = True, choices: tuple[str, ...] = ()
    ) -> str | None:
        expected = f"one of {', '.join(choices)}" if choices else "a non-empty string"
        val = self._take(key, expected, required)
        if val is None:
            return None
        if not isinstance(val, str) or not val or (choices and val not in choices):
            raise self.error(key, expected, val)
        return val

    def req_str(self, key: str, choices: tuple[str, ...] = ()) -> str:
        val = self.get_str(key, choices=choices)
        assert val is not None
        return val

    def get_int(
        self, key: str, *, required: bool = True, lo: int = 0, hi: int = 2**32, default: int = 0
    ) -> int:
        expected = f"an integer in [{lo}, {hi}]"
        val = self._take(key, expected, required)
        if val is None:
            return default
        if isinstance(val, bool) or not isinstance(val, int) or not lo <= val <= hi:
            raise self.error(key, expected, val)
        return val

    def opt_int(self, key: str, *, lo: int = 0, hi: int = 2**32) -> int | None:
        if key not in self.data:
            self.used.add(key)
            return None
        return self.get_int(key, lo=lo, hi=hi)

    def get_bool(self, key: str, default: bool) -> bool:
        val = self._take(key, "true or false", False)
        if val is None:
            return default
        if not isinstance(val, bool):
            raise self.error(key, "true or false", val)
        return val

    def get_strs(self, key: str, *, choices: tuple[str, ...] = ()) -> tuple[str, ...]:
        expected = "a list of strings" + (f" from {', '.join(choices)}" if choices else "")
        val = self._take(key, expected, False)
        if val is None:
            return ()
        if not isinstance(val, list) or not all(isinstance(v, str) and v for v in val):
            raise self.error(key, expected, val)
        if choices and any(v not in choices for v in val):
            raise self.error(key, expected, val)
        return tuple(val)

    def sub(self, key: str, *, required: bool = True) -> _Table | None:
        val = self._take(key, "a table", required)
        if val is None:
            return None
        return _Table(self.file, f"{self.prefix}{key}.", val)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            where = self.prefix.rstrip(".") or "the top level"
            raise UserError(
                f"{self.file}: unknown field(s) {', '.join(repr(k) for k in unknown)} in {where}"
                f" (known: {', '.join(sorted(self.used))})"
            )


def _region(t: _Table, key: str) -> Region:
    sub = t.sub(key)
    assert sub is not None
    region = Region(sub.get_int("origin", hi=2**32 - 1), sub.get_int("size", lo=1))
    sub.done()
    if region.end > 2**32:
        raise t.error(key, "a region inside the 32-bit address space", region)
    return region


def _parse(path: Path, data: dict[str, Any]) -> Board:
    top = _Table(path, "", data)
    name = top.req_str("name")
    if name != path.stem:
        raise top.error("name", f"the file name without .toml ('{path.stem}')", name)
    description = top.req_str("description")

    c = top.sub("cpu")
    assert c is not None
    core = c.req_str("core", CORES)
    host = core == "host"
    cpu = Cpu(
        core=core,
        fpu=c.get_bool("fpu", False),
        clock_hz=c.get_int("clock_hz", lo=1),
        cflags=c.get_strs("cflags"),
        ldflags=c.get_strs("ldflags"),
        simd=c.get_bool("simd", core in DSP_CORES),
    )
    c.done()
    if cpu.simd and core not in DSP_CORES:
        raise c.error("simd", f"false: core {core} has no DSP extension", True)
    if not host and not cpu.cflags:
        raise c.missing("cflags", "gcc flags selecting the core, e.g. -mcpu=cortex-m4 -mthumb")

    memory = budget = None
    m = top.sub("memory", required=not host)
    if m is not None:
        memory = Memory(
            flash=_region(m, "flash"),
            ram=_region(m, "ram"),
            stack_size=m.get_int("stack_size", lo=256, hi=2**24),
            heap_size=m.get_int("heap_size", required=False, hi=2**24),
        )
        if memory.stack_size % 8:
            raise m.error("stack_size", "a multiple of 8 bytes", memory.stack_size)
        m.done()
    b = top.sub("budget", required=not host)
    if b is not None:
        budget = MemoryLimits(flash=b.get_int("flash", lo=1), ram=b.get_int("ram", lo=1))
        if memory is not None:
            if budget.flash > memory.flash.size:
                raise b.error("flash", f"at most memory.flash.size ({memory.flash.size})",
                              budget.flash)
            if budget.ram > memory.ram.size:
                raise b.error("ram", f"at most memory.ram.size ({memory.ram.size})", budget.ram)
        b.done()

    nvm = _parse_nvm(top, host, memory)

    e = top.sub("emulator", required=False)
    emulator = Emulator()
    if e is not None:
        emulator = Emulator(
            qemu=e.get_str("qemu", required=False),
            renode=e.get_str("renode", required=False),
            renode_uart=e.get_str("renode_uart", required=False),
            qemu_standin=e.get_str("qemu_standin", required=False),
            qemu_serial=e.get_int("qemu_serial", required=False, hi=3),
        )
        e.done()
        if emulator.qemu and emulator.qemu_standin:
            raise e.error("qemu_standin", "no stand-in when the board has its own qemu machine",
                          emulator.qemu_standin)
        if emulator.renode and not emulator.renode_uart:
            raise e.missing("renode_uart", "the UART peripheral to watch, e.g. sysbus.usart2")

    i = top.sub("io")
    assert i is not None
    io = i.req_str("channel", IO_CHANNELS)
    i.done()
    if (io == "stdio") != host:
        raise i.error("channel", "'stdio' exactly for the host board", io)
    if io == "semihosting" and not emulator.qemu:
        raise i.error("channel", "'uart' on a board without a QEMU machine", io)

    uart = None
    u = top.sub("uart", required=io == "uart")
    if u is not None:
        uart = Uart(
            driver=u.req_str("driver", UART_DRIVERS),
            base=u.get_int("base", hi=2**32 - 1),
            baud=u.get_int("baud", lo=300, hi=10_000_000),
            clock_hz=u.get_int("clock_hz", lo=1),
            tx_pin=u.opt_int("tx_pin", hi=63),
            rx_pin=u.opt_int("rx_pin", hi=63),
        )
        u.done()

    pio = None
    p = top.sub("platformio", required=False)
    if p is not None:
        pio = PlatformIO(
            board=p.req_str("board"),
            platform=p.req_str("platform"),
            upload_protocol=p.get_str("upload_protocol", required=False),
        )
        p.done()

    flash = None
    f = top.sub("flash", required=False)
    if f is not None:
        methods = f.get_strs("methods", choices=FLASH_METHODS)
        method = f.req_str("method", methods or FLASH_METHODS)
        flash = FlashConfig(
            method=method,
            methods=methods or (method,),
            openocd_config=f.get_str("openocd_config", required=False),
            pyocd_target=f.get_str("pyocd_target", required=False),
        )
        f.done()
        if "openocd" in flash.methods and not flash.openocd_config:
            raise f.missing("openocd_config", "an OpenOCD config, e.g. board/st_nucleo_f4.cfg")
        if "pyocd" in flash.methods and not flash.pyocd_target:
            raise f.missing("pyocd_target", "a pyOCD target name, e.g. stm32f446retx")
        if "pio" in flash.methods and pio is None:
            raise UserError(f"{path}: flash method 'pio' needs a [platformio] table")
    top.done()
    return Board(
        name=name,
        description=description,
        path=path,
        cpu=cpu,
        memory=memory,
        budget=budget,
        nvm=nvm,
        emulator=emulator,
        io=io,
        uart=uart,
        platformio=pio,
        flash=flash,
    )


def _parse_nvm(top: _Table, host: bool, memory: Memory | None) -> Nvm:
    n = top.sub("nvm")
    assert n is not None
    tech = n.req_str("technology", NVM_TECHNOLOGIES)
    nvm = Nvm(
        technology=tech,
        size=n.get_int("size", lo=1),
        page_size=n.get_int("page_size", lo=1),
        prog_size=n.get_int("prog_size", lo=1, hi=64),  # LRT_NVM_MAX_PROG
        erase_value=n.get_int("erase_value", required=tech == "flash", hi=255, default=0xFF),
        endurance=n.get_int("endurance", lo=1, hi=10**18),
        driver=n.req_str("driver", NVM_DRIVERS),
        origin=n.opt_int("origin", hi=2**32 - 1),
    )
    n.done()
    if nvm.prog_size & (nvm.prog_size - 1):
        raise n.error("prog_size", "a power of two", nvm.prog_size)
    if nvm.page_size % nvm.prog_size:
        raise n.error("page_size", f"a multiple of prog_size ({nvm.prog_size})", nvm.page_size)
    if nvm.size % nvm.page_size:
        raise n.error("size", f"a multiple of page_size ({nvm.page_size})", nvm.size)
    if (nvm.driver == "host") != host:
        raise n.error("driver", "'host' exactly for the host board", nvm.driver)
    if host:
        if nvm.origin is not None:
            raise n.error("origin", "no origin on the host (the NVM is a host backend)",
                          nvm.origin)
        return nvm
    if nvm.origin is None:
        raise n.missing("origin", "the NVM region's start address")
    assert memory is not None and nvm.region is not None
    region = nvm.region
    if nvm.origin % nvm.page_size:
        raise n.error("origin", f"a multiple of page_size ({nvm.page_size})", nvm.origin)
    for mem_name, mem in (("flash", memory.flash), ("ram", memory.ram)):
        if mem.contains(region):
            if region.end != mem.end:
                raise n.error(
                    "origin",
                    f"the NVM region at the top of memory.{mem_name} "
                    f"(origin + size = {mem.end:#x})",
                    f"{nvm.origin:#x} (ends at {region.end:#x})",
                )
            if region.origin == mem.origin:
                raise n.error("size", f"less than memory.{mem_name}.size", nvm.size)
            return nvm
    raise n.error("origin", "a region inside memory.flash or memory.ram", f"{nvm.origin:#x}")


# ----------------------------------------------------------------------------- public API


def boards_dir() -> Path:
    """The shipped board files (``LRT_BOARDS_DIR`` replaces them with another directory)."""
    path = Path(os.environ.get("LRT_BOARDS_DIR", str(BOARDS_DIR)))
    if not path.is_dir():
        raise UserError(f"LRT_BOARDS_DIR={path} is not a directory of board files")
    return path


def board_search_path() -> list[Path]:
    """Directories searched for ``<name>.toml``, first match wins: the entries of
    ``LRT_BOARD_PATH`` (``os.pathsep``-separated, for a user's own boards), then the
    shipped boards."""
    extra = [Path(p) for p in os.environ.get("LRT_BOARD_PATH", "").split(os.pathsep) if p]
    return [*extra, boards_dir()]


def board_names() -> list[str]:
    return sorted({p.stem for d in board_search_path() for p in d.glob("*.toml")})


def find_board_file(name: str) -> Path | None:
    for d in board_search_path():
        if (d / f"{name}.toml").is_file():
            return d / f"{name}.toml"
    return None


def load_board(name_or_path: str | Path) -> Board:
    """Load and validate a board by name (searched on :func:`board_search_path`) or by the
    path of a .toml file (``--board path/to/my_board.toml``)."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or os.sep in text or "/" in text):
        found = find_board_file(text)
        if found is None:
            known = ", ".join(board_names()) or "(none)"
            raise UserError(f"unknown board '{text}' (known boards: {known})")
        path = found
    if not path.is_file():
        raise UserError(f"board file {path} does not exist")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise UserError(f"board file {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (TOML files are UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from exc
    return _parse(path, data)


def load_build_board(report: dict[str, Any]) -> Board:
    """The board a build (its report.json) was made for: the board file it recorded (a
    user's own board file too), else the board of that name on the search path."""
    recorded = report.get("board_file")
    if recorded and Path(recorded).is_file():
        return load_board(Path(recorded))
    return load_board(report["board"])


def scan_boards() -> tuple[list[Board], list[str]]:
    """Every board on the search path, validated, sorted by name, and one message per board
    file that does not load (so that one broken user file hides no other board)."""
    found: list[Board] = []
    broken: list[str] = []
    for name in board_names():
        try:
            found.append(load_board(name))
        except UserError as exc:
            broken.append(str(exc))
    return found, broken


def list_boards() -> list[Board]:
    """Every board on the search path that loads, sorted by name (scan_boards: the others)."""
    return scan_boards()[0]
