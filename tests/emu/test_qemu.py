"""The echo test firmware built through lrt.build and run in QEMU through lrt.emulate.qemu:
bytes round-trip over semihosting stdin/stdout (and the CMSDK UART), exit status
propagates, SysTick under -icount and the instruction-count plugin measure a known loop."""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

import pytest

from harness.cbuild import ROOT
from lrt.boards import Board, load_board
from lrt.build import FirmwareBuild, build_firmware
from lrt.emulate.qemu import QemuRunner, count_instructions, insns_per_tick, qemu_argv

FW = ROOT / "tests" / "emu" / "fw_echo" / "main.c"
LIB = ROOT / "firmware_templates" / "lib"
QEMU_BOARDS = ["mps2-an386", "mps2-an500", "lm3s6965evb", "mps3-an547"]
UART_BOARDS = ["mps2-an386", "mps3-an547"]
READY = b"lrt: ready\n"

pytestmark = pytest.mark.qemu


def transform(data: bytes) -> bytes:
    return bytes((b * 7 + 3) & 0xFF for b in data)


def echo_request(data: bytes) -> bytes:
    return b"E" + struct.pack("<I", len(data)) + data


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gen = tmp_path_factory.mktemp("echo")
    (gen / "src").mkdir()
    shutil.copy(FW, gen / "src" / "main.c")
    for name in ("lrt_common.c", "lrt_common.h"):
        shutil.copy(LIB / name, gen / "src" / name)
    return gen


_builds: dict[tuple[str, str | None], FirmwareBuild] = {}


def build(gen_dir: Path, name: str, io: str | None = None) -> FirmwareBuild:
    key = (name, io)
    if key not in _builds:
        _builds[key] = build_firmware(gen_dir, load_board(name), io=io)
    return _builds[key]


@pytest.mark.parametrize("name", QEMU_BOARDS)
def test_semihosting_round_trip_and_exit_status(gen_dir: Path, name: str) -> None:
    res = build(gen_dir, name)
    assert res.executable.is_file() and res.footprint is not None
    payload = random.Random(name).randbytes(64 * 1024)
    run = QemuRunner(res.board, res.executable).run(
        echo_request(payload) + b"I" + echo_request(b"") + b"X\x2a", timeout=30
    )
    assert run.returncode == 42, run.stderr
    assert run.stdout == READY + transform(payload) + f"{name}\n".encode()


@pytest.mark.parametrize("name", QEMU_BOARDS)
def test_end_of_stream_exits_zero(gen_dir: Path, name: str) -> None:
    res = build(gen_dir, name)
    run = QemuRunner(res.board, res.executable).run(b"I", timeout=30)
    assert run.returncode == 0
    assert run.stdout == READY + f"{name}\n".encode()


def test_interactive_transport_request_reply(gen_dir: Path) -> None:
    """The Runner interface: a PipeTransport to QEMU; each reply arrives before the next
    request is sent (no EOF needed), and closing the link ends the run with status 0."""
    res = build(gen_dir, "mps2-an386")
    link = QemuRunner(res.board, res.executable).open()
    try:
        assert link.read_exact(len(READY), 30) == READY
        rng = random.Random(1)
        for size in (1, 7, 300, 5000):
            chunk = rng.randbytes(size)
            link.write(echo_request(chunk))
            assert link.read_exact(size, 30) == transform(chunk)
    finally:
        status = link.close()
    assert status == 0


@pytest.mark.parametrize("name", UART_BOARDS)
def test_cmsdk_uart_round_trip(gen_dir: Path, name: str) -> None:
    res = build(gen_dir, name, io="uart")
    assert res.io == "uart" and res.variant == f"{name}-uart"
    payload = bytes(range(256)) + b"\x00\xff\x0a\x0d"
    run = QemuRunner(res.board, res.executable, io="uart").run(
        echo_request(payload) + b"I" + b"X\x09", timeout=30
    )
    assert run.returncode == 9, run.stderr
    assert run.stdout == READY + transform(payload) + f"{name}\n".encode()


def test_hardfault_ends_the_run(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.c").write_text(
        "#include <stdint.h>\nint main(void)\n{\n"
        "    /* a load from an unmapped, unaligned address faults */\n"
        "    return (int)*(volatile uint32_t *)0xF0000001u;\n}\n"
    )
    res = build_firmware(tmp_path, load_board("mps2-an386"))
    run = QemuRunner(res.board, res.executable).run(timeout=30)
    assert run.returncode == 131


def test_qemu_command_line(gen_dir: Path) -> None:
    board = load_board("mps2-an386")
    argv = qemu_argv(board, Path("fw.elf"), icount=True)
    assert argv[argv.index("-M") + 1] == "mps2-an386"
    assert "-nographic" not in argv
    assert argv[argv.index("-serial") + 1] == "null"
    assert argv[argv.index("-icount") + 1] == "shift=0"
    assert argv[-2:] == ["-kernel", "fw.elf"]
    uart = qemu_argv(board, Path("fw.elf"), io="uart")
    assert uart[uart.index("-serial") + 1] == "stdio"


def spin_ticks(board: Board, elf: Path, n: int) -> int:
    run = QemuRunner(board, elf, icount=True).run(b"S" + struct.pack("<I", n), timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(READY) and len(run.stdout) == len(READY) + 4
    return int(struct.unpack("<I", run.stdout[len(READY):])[0])


@pytest.mark.parametrize("name", ["mps2-an386", "mps3-an547"])
def test_icount_systick_measures_known_loop(gen_dir: Path, name: str) -> None:
    """lrt_test_spin(n) executes 2n+1 instructions; SysTick under -icount shift=0 ticks
    every 1e9/clock_hz instructions, so ticks * insns_per_tick ~ 2n, and repeatably."""
    res = build(gen_dir, name)
    n = 300_000  # > 2^24 / 40 would wrap SysTick's 24 bits: exercises the wrap extension
    ticks = spin_ticks(res.board, res.executable, n)
    assert spin_ticks(res.board, res.executable, n) == ticks
    per_tick = insns_per_tick(res.board)
    assert abs(ticks * per_tick - 2 * n) <= 2 * per_tick + 50


def test_plugin_counts_exact_instructions(gen_dir: Path) -> None:
    res = build(gen_dir, "mps2-an386")
    counts = {}
    for n in (1000, 6000):
        c = count_instructions(
            res.board, res.executable, b"S" + struct.pack("<I", n), symbol="lrt_test_spin"
        )
        assert c.run.returncode == 0
        assert c.pc_range is not None and c.pc_range[1] - c.pc_range[0] >= 6
        assert c.in_range == 2 * n + 1  # subs + bne per iteration, then bx lr
        counts[n] = c.total
    # Everything outside the loop is the same in both runs.
    assert counts[6000] - counts[1000] == 2 * 5000


def test_plugin_agrees_with_icount_systick(gen_dir: Path) -> None:
    res = build(gen_dir, "mps2-an386")
    n = 50_000
    data = b"S" + struct.pack("<I", n)
    c = count_instructions(res.board, res.executable, data, symbol="lrt_test_spin", icount=True)
    ticks = int(struct.unpack("<I", c.run.stdout[len(READY):])[0])
    per_tick = insns_per_tick(res.board)
    assert c.in_range is not None
    # The ticks also cover the two lrt_platform_cycles() calls around the loop.
    assert c.in_range - per_tick <= ticks * per_tick <= c.in_range + 60 + per_tick
