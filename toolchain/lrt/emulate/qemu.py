"""Run Cortex-M firmware in QEMU (qemu-system-arm), and count its instructions exactly.

Transport: with the board's "semihosting" channel the firmware's read(0)/write(1) are
QEMU's own stdin/stdout (binary, with end of file); with "uart" the CMSDK UART is routed
to QEMU's stdio (``-serial stdio``). Either way the runner talks to the firmware through
the QEMU process's pipes, exactly like the host runner talks to the native executable;
only the command line differs. Never ``-nographic`` alone: its stdio mux eats stdin.

Cost: ``-icount shift=0`` makes one instruction one virtual nanosecond, so SysTick (the
firmware's lrt_platform_cycles) advances once every 1e9 / clock_hz instructions,
repeatably. For exact counts, ``count_instructions`` runs a tiny TCG plugin
(insncount.c, built on first use into a cache directory) that counts every executed
instruction, optionally only inside one function's address range.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lrt import cflags, resources
from lrt.boards import Board
from lrt.emulate.base import PipeTransport, Runner
from lrt.errors import UserError

QEMU = "qemu-system-arm"
PLUGIN_SOURCE = Path(__file__).with_name("insncount.c")
HARDFAULT_EXIT = 131  # cortexm/startup.c's HardFault_Handler under semihosting


@dataclass(frozen=True)
class QemuRun:
    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float


@dataclass(frozen=True)
class InsnCount:
    total: int  # every guest instruction executed, boot to exit
    in_range: int | None  # instructions with address in [lo, hi), if a range was given
    pc_range: tuple[int, int] | None
    run: QemuRun
    # instructions per function symbol ("?" outside every symbol), if a profile was asked for
    profile: dict[str, int] | None = None


def qemu_binary() -> str:
    path = shutil.which(cflags.require_tool(QEMU))
    assert path is not None
    return path


def qemu_machine(board: Board) -> str:
    """The board's QEMU machine, or the stand-in machine that runs its real-board image."""
    machine = board.emulator.qemu or board.emulator.qemu_standin
    if machine is None:
        raise UserError(
            f"board '{board.name}' has no QEMU machine (emulators: {board.emulator_name})"
        )
    return machine


def insns_per_tick(board: Board) -> float:
    """Instructions per SysTick tick under ``-icount shift=0`` (1 ns per instruction)."""
    return 1e9 / board.cpu.clock_hz


def qemu_argv(
    board: Board,
    elf: Path,
    *,
    io: str | None = None,
    icount: bool = False,
    plugin: Path | None = None,
    plugin_args: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    """The qemu-system-arm command line for running ``elf`` on ``board``."""
    channel = io or board.io
    argv = [qemu_binary(), "-M", qemu_machine(board), "-display", "none", "-monitor", "none"]
    if board.emulator.qemu:
        # QEMU boards' images always use semihosting: it carries the exit status (and the
        # data on the semihosting channel). Real-board images on a stand-in machine do not.
        argv += ["-semihosting-config", "enable=on,target=native"]
    for _ in range(board.emulator.qemu_serial):
        argv += ["-serial", "null"]
    argv += ["-serial", "stdio" if channel == "uart" else "null"]
    if icount:
        argv += ["-icount", "shift=0"]
    if plugin is not None:
        argv += ["-plugin", ",".join([str(plugin), *plugin_args])]
    argv += [*extra, "-kernel", str(elf)]
    return argv


class QemuRunner(Runner):
    """One firmware image on one QEMU machine; byte transport over the process's pipes.

    ``start()`` (from Runner) gives a connected protocol Device, ``open()`` the bare
    PipeTransport; ``run(data)`` feeds all of ``data`` and collects the output until the
    firmware exits; ``spawn()`` starts the process with stdin/stdout pipes (unbuffered).
    The exit status of the firmware is QEMU's exit status.
    """

    name = "qemu"

    def __init__(
        self,
        board: Board,
        elf: Path,
        *,
        io: str | None = None,
        icount: bool = False,
        plugin: Path | None = None,
        plugin_args: Sequence[str] = (),
        extra: Sequence[str] = (),
        timeout: float = 120.0,
    ) -> None:
        if not Path(elf).is_file():
            raise UserError(f"firmware {elf} does not exist (build it first)")
        self.board = board
        self.name = f"qemu:{board.name}"
        self.elf = Path(elf)
        self.io = io or board.io
        self.timeout = timeout
        self.argv = qemu_argv(
            board, self.elf, io=self.io, icount=icount, plugin=plugin,
            plugin_args=plugin_args, extra=extra,
        )

    def __repr__(self) -> str:
        return f"QemuRunner({' '.join(self.argv)})"

    def open(self) -> PipeTransport:
        return PipeTransport(self.spawn(), name=f"QEMU {qemu_machine(self.board)}")

    def spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )

    def run(self, data: bytes = b"", timeout: float | None = None) -> QemuRun:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                self.argv, input=data, capture_output=True, timeout=timeout or self.timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise UserError(
                f"QEMU ({self.board.name}) did not exit within {exc.timeout} s; output so far: "
                f"{(exc.stdout or b'')[-200:]!r}"
            ) from None
        return QemuRun(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)


    def exchange(
        self, data: bytes, expect: int, *, wait_for: bytes = b"", timeout: float | None = None
    ) -> QemuRun:
        """Read until the output starts with ``wait_for`` (e.g. the ready line: a UART
        drops what arrives before the firmware enabled it), send ``data``, read until
        ``expect`` output bytes in total arrived (or the firmware exits), stop QEMU.
        For images that never exit (real-board builds on a stand-in machine)."""
        t0 = time.perf_counter()
        limit = timeout or self.timeout
        deadline = t0 + limit
        proc = self.spawn()
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        fd = proc.stdout.fileno()
        out = b""

        def read_until(n: int) -> None:
            nonlocal out
            while len(out) < n:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise UserError(f"QEMU ({self.board.name}): {len(out)} of {n} bytes "
                                    f"after {limit} s: {out[-200:]!r}")
                ready, _, _ = select.select([fd], [], [], min(left, 0.5))
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        return
                    out += chunk

        try:
            read_until(len(wait_for))
            if not out.startswith(wait_for):
                raise UserError(f"QEMU ({self.board.name}): expected {wait_for!r} first, got "
                                f"{out[:200]!r}")
            proc.stdin.write(data)
            proc.stdin.flush()
            read_until(expect)
        finally:
            proc.kill()
            rc = proc.wait()
            err = proc.stderr.read()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                stream.close()
        return QemuRun(rc, out, err, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- counting


def build_insncount_plugin(cache: Path | None = None) -> Path:
    """Compile insncount.c into a shared object (cached by source hash); returns its path."""
    src = PLUGIN_SOURCE.read_bytes()
    digest = hashlib.sha256(src).hexdigest()[:16]
    out_dir = (cache or resources.cache_dir()) / "qemu-plugins"
    so = out_dir / f"libinsncount-{digest}.so"
    if so.is_file():
        return so
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise UserError("no host C compiler (cc) to build the QEMU instruction-count plugin")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Build to a private name and rename: concurrent test workers may race here.
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".so")
    os.close(fd)
    proc = subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", tmp,
         str(PLUGIN_SOURCE)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        os.unlink(tmp)
        raise UserError(f"building the QEMU plugin failed:\n{proc.stderr}")
    os.replace(tmp, so)
    return so


def _symbols(elf: Path) -> list[tuple[int, int, str]]:
    """(lo, hi, name) of the ELF's sized text symbols (Thumb bit cleared), from ``nm -S``."""
    nm = shutil.which("arm-none-eabi-nm")
    if nm is None:
        raise UserError("arm-none-eabi-nm not found on PATH")
    out = subprocess.run([nm, "-S", str(elf)], capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTwW":
            lo = int(parts[0], 16) & ~1
            syms.append((lo, lo + int(parts[1], 16), parts[3]))
    return sorted(syms)


def symbol_range(elf: Path, symbol: str) -> tuple[int, int]:
    """[lo, hi) address range of a function symbol (Thumb bit cleared), from ``nm -S``."""
    for lo, hi, name in _symbols(elf):
        if name == symbol:
            return lo, hi
    raise UserError(f"symbol '{symbol}' not found (or has no size) in {elf}")


def _profile_by_symbol(elf: Path, lines: list[str]) -> dict[str, int]:
    syms = _symbols(elf)
    starts = [lo for lo, _, _ in syms]
    prof: dict[str, int] = {}
    for line in lines:
        pc_hex, count = line.split()
        pc = int(pc_hex, 16)
        i = bisect.bisect_right(starts, pc) - 1
        name = syms[i][2] if i >= 0 and pc < syms[i][1] else "?"
        prof[name] = prof.get(name, 0) + int(count)
    return dict(sorted(prof.items(), key=lambda kv: -kv[1]))


def count_instructions(
    board: Board,
    elf: Path,
    data: bytes = b"",
    *,
    symbol: str | None = None,
    pc_range: tuple[int, int] | None = None,
    io: str | None = None,
    icount: bool = False,
    timeout: float = 300.0,
    profile: bool = False,
) -> InsnCount:
    """Run the firmware on ``data`` and count executed instructions with the TCG plugin.

    ``symbol`` (a function name) or ``pc_range`` selects instructions counted separately
    in ``in_range``; ``total`` counts everything from reset to exit. ``profile`` also counts
    them per function symbol (``InsnCount.profile``; inlined code counts in its caller)."""
    if symbol is not None:
        pc_range = symbol_range(elf, symbol)
    plugin = build_insncount_plugin()
    with tempfile.TemporaryDirectory(prefix="lrt-insn-") as tmp:
        out = Path(tmp) / "count.txt"
        prof = Path(tmp) / "profile.txt"
        args = [f"out={out}"]
        if profile:
            args.append(f"prof={prof}")
        if pc_range is not None:
            args += [f"lo={pc_range[0]:#x}", f"hi={pc_range[1]:#x}"]
        runner = QemuRunner(board, elf, io=io, icount=icount, plugin=plugin, plugin_args=args,
                            timeout=timeout)
        run = runner.run(data)
        if not out.is_file():
            raise UserError(
                f"QEMU wrote no instruction count (exit {run.returncode}): "
                f"{run.stderr.decode(errors='replace')[-500:]}"
            )
        values = dict(line.split() for line in out.read_text().splitlines())
        by_symbol = (
            _profile_by_symbol(elf, prof.read_text().splitlines())
            if profile and prof.is_file()
            else None
        )
    return InsnCount(
        total=int(values["total"]),
        in_range=int(values["range"]) if pc_range is not None else None,
        pc_range=pc_range,
        run=run,
        profile=by_symbol,
    )
