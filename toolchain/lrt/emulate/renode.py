"""Renode: generate a .resc (machine + firmware + UART) and a .robot suite per board, and run
them where Renode is installed (it is not installable here: not in Debian, PyPI or npm).

* ``write_renode_files`` renders firmware_templates/renode/*.j2 for a board that has
  ``emulator.renode`` (a platform .repl shipped with Renode) and a built ELF.
* The .robot suite (Renode's Robot Framework keywords, run with ``renode-test``) waits
  for the firmware's ready line (LRT_PLATFORM_READY in bsp/lrt_platform.h) on the board's
  UART, then runs optional request/expected-line checks.
* ``RenodeRunner`` starts Renode headless with the UART on a TCP server socket and gives
  a byte transport to it: the same wire protocol the host and QEMU runners speak.

Renode's flash models are plain RAM (no NOR 1->0 rule): NVM semantics are tested against
the host flash model, Renode only shows the firmware runs on the board's peripherals.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lrt.boards import Board
from lrt.bsp import platform_line
from lrt.emulate.base import LinkError, Runner, Transport, wait_readable
from lrt.errors import UserError
from lrt.templates import render

INSTALL_HINT = (
    "install Renode from https://github.com/renode/renode/releases (Linux package or "
    "portable archive) and put `renode` / `renode-test` on PATH"
)


@dataclass(frozen=True)
class RobotCheck:
    """One robot test case: type ``send`` (ASCII, char by char), wait for line ``expect``."""

    name: str
    send: str
    expect: str


@dataclass(frozen=True)
class RenodeFiles:
    resc: Path
    robot: Path
    sentinel: str
    uart: str


def firmware_sentinel() -> str:
    """The ready line the firmware prints (LRT_PLATFORM_READY of bsp/lrt_platform.h)."""
    return platform_line("LRT_PLATFORM_READY")


def renode_platform(board: Board) -> tuple[str, str]:
    """(.repl path, UART peripheral) of a board, or UserError if it has none."""
    if not board.emulator.renode or not board.emulator.renode_uart:
        raise UserError(
            f"board '{board.name}' has no Renode platform (emulators: {board.emulator_name})"
        )
    return board.emulator.renode, board.emulator.renode_uart


def write_renode_files(
    board: Board,
    elf: Path,
    out_dir: Path,
    *,
    checks: Sequence[RobotCheck] = (),
    port: int | None = None,
    timeout: float = 30,
) -> RenodeFiles:
    """Render <board>.resc and <board>.robot into out_dir for a built ELF."""
    repl, uart = renode_platform(board)
    elf = Path(elf).resolve()
    if not elf.is_file():
        raise UserError(f"firmware {elf} does not exist (build it first)")
    for check in checks:
        if not check.send.isascii() or not check.send.isprintable() or not check.send:
            raise UserError(f"robot check {check.name!r}: send must be printable ASCII")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    assert board.memory is not None
    resc = out_dir / f"{board.name}.resc"
    robot = out_dir / f"{board.name}.robot"
    sentinel = firmware_sentinel()
    resc.write_text(render(
        "renode/board.resc.j2",
        board_name=board.name,
        description=board.description,
        resc_name=resc.name,
        machine_name=board.name,
        elf=str(elf),
        repl=repl,
        vtor=f"{board.code_region.origin:#010x}",
        uart=uart,
        port=port or 0,
    ))
    robot.write_text(render(
        "renode/test.robot.j2",
        board_name=board.name,
        elf_name=elf.name,
        robot_name=robot.name,
        resc=str(resc),
        uart=uart,
        sentinel=sentinel,
        timeout=f"{timeout:g}",
        checks=list(checks),
    ))
    return RenodeFiles(resc=resc, robot=robot, sentinel=sentinel, uart=uart)


def _which(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise UserError(f"'{tool}' is not on PATH: {INSTALL_HINT}")
    return path


def require_renode() -> str:
    """The path of `renode` (UserError with the way to install it if it is not on PATH)."""
    return _which("renode")


def run_robot(
    robot: Path, results_dir: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a .robot suite with Renode's test runner; UserError if it fails or is missing."""
    cmd = [_which("renode-test"), str(robot), "-r", str(results_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise UserError(f"renode-test {robot.name} failed:\n{proc.stdout[-3000:]}{proc.stderr}")
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SocketTransport(Transport):
    """A TCP byte stream (Renode's server socket terminal on the board's UART); closing it
    stops the Renode process."""

    def __init__(
        self,
        sock: socket.socket,
        proc: subprocess.Popen[bytes],
        log: Path,
        work_dir: Path | None = None,
    ) -> None:
        self.sock = sock
        self.proc = proc
        self.log = log
        self.work_dir = work_dir  # the session's files: removed after a clean session

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise LinkError(f"cannot write to Renode's UART socket ({exc})") from None

    def read_some(self, max_bytes: int, timeout: float) -> bytes:
        wait_readable(self.sock, timeout, "bytes from Renode's UART")
        return self.sock.recv(max_bytes)

    def read_line(self, timeout: float) -> bytes:
        line = b""
        while not line.endswith(b"\n"):
            line += self.read_exact(1, timeout)
        return line

    def diagnostics(self) -> str:
        status = self.proc.poll()
        return f"Renode {'running' if status is None else f'exited with {status}'} (log {self.log})"

    def close(self, timeout: float = 10.0) -> int | None:
        self.sock.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return None  # a UART firmware never exits; Renode's status says nothing about it

    def discard_files(self) -> None:
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)


class RenodeRunner(Runner):
    """The firmware in headless Renode; its UART is a TCP byte stream.

    ``open()`` starts Renode, connects to the UART socket and, if ``ready_line`` is set,
    consumes the firmware's boot line (so a protocol Device sees only frames). Renode
    takes seconds to start: keep one session per run. Serial links drop bytes while the
    firmware is busy, so ``start(window=1)``."""

    name = "renode"

    def __init__(
        self,
        board: Board,
        elf: Path,
        work_dir: Path,
        *,
        timeout: float = 60,
        ready_line: str | None = None,
    ) -> None:
        self.board = board
        self.name = f"renode:{board.name}"
        self.elf = Path(elf)
        self.work_dir = Path(work_dir)
        self.timeout = timeout
        self.ready_line = firmware_sentinel() if ready_line is None else ready_line
        self.port = _free_port()

    def argv(self) -> list[str]:
        renode = _which("renode")
        session = self.work_dir / "session"
        files = write_renode_files(self.board, self.elf, session, port=self.port)
        run = session / f"{self.board.name}-run.resc"
        run.write_text(render("renode/run.resc.j2", board_name=self.board.name,
                              resc_name=files.resc.name, resc=str(files.resc)))
        return [renode, "--disable-xwt", "--console", "--plain", str(run)]

    def open(self) -> SocketTransport:
        argv = self.argv()
        log_path = self.work_dir / "session" / "renode.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise UserError(
                        f"Renode did not open the UART socket on port {self.port} "
                        f"(see {log_path})"
                    ) from None
                time.sleep(0.2)
        transport = SocketTransport(sock, proc, log_path, self.work_dir)
        if self.ready_line:
            line = transport.read_line(self.timeout)
            if line.rstrip(b"\r\n") != self.ready_line.encode():
                transport.close()
                raise UserError(f"Renode ({self.board.name}): expected the ready line "
                                f"{self.ready_line!r}, got {line!r}")
        return transport
