"""A board on a serial port (a real board's USB-UART bridge, or any tty that carries the
board's UART, such as QEMU's ``-serial pty``): the byte transport of a Device that no
runner started.

A real board outlives the host's sessions: its firmware (built for a UART without
semihosting) answers BYE by committing the session's biases and then waits for the next
HELLO (main.c.j2's LRT_SERIAL_SESSIONS). The host may open the port at any moment: mid-way
through an old session's frame, after a board reset's ready line, or after another host
died, maybe with a push left open. So a session starts with ``Device.resync`` (filler bytes
that complete any frame the board is still assembling, then HELLO, repeated until the board
answers), ends the board's current session (BYE), and starts its own; then it sends one
request at a time: a polled UART drops bytes that arrive while the firmware is busy.
"""

from __future__ import annotations

import errno
import os
import select
import time

from lrt.emulate import protocol as P
from lrt.emulate.base import Device, DeviceTimeout, LinkError, Transport, wait_readable
from lrt.errors import UserError

RESYNC_TIMEOUT = 5.0  # a board busy with a flash erase answers late
RESEND_EVERY = 1.0  # a polled UART loses a HELLO that arrives while the firmware is busy
QUIET = 0.3  # replies to earlier rounds come within this once the board answers
RESYNC_ROUNDS = 5  # rounds the deadline allows for the filler itself


def _hint(exc: BaseException) -> str:
    """What to do about the usual reasons a port does not open."""
    if getattr(exc, "errno", None) == errno.EACCES:
        return "; on Linux the user needs the port's group (usually dialout)"
    if "exclusively lock" in str(exc):
        return "; another program (a serial monitor, another lrt command) has it open"
    return ""


class SerialTransport(Transport):
    """The tty at ``port``, raw, at ``baud`` (pyserial opens and configures it)."""

    def __init__(self, port: str, baud: int) -> None:
        import serial  # pyserial: the one place that needs it

        self.port = port
        self.baud = baud
        try:
            self.tty = serial.Serial(port, baudrate=baud, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise UserError(
                f"--port {port}: cannot open it as a serial port ({exc}){_hint(exc)}"
            ) from None
        fd = self.tty.fileno()
        assert isinstance(fd, int)
        self._fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                _, ready, _ = select.select([], [self._fd], [], 10.0)
                if not ready:
                    raise LinkError(f"{self.diagnostics()}: a write did not drain within 10 s")
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise LinkError(f"cannot write to {self.diagnostics()} ({exc})") from None

    def read_some(self, max_bytes: int, timeout: float) -> bytes:
        wait_readable(self._fd, timeout, "reply")
        try:
            return os.read(self._fd, max_bytes)
        except OSError as exc:  # the board was unplugged (EIO on a hung-up tty)
            raise LinkError(f"cannot read from {self.diagnostics()} ({exc})") from None

    def diagnostics(self) -> str:
        return f"serial port {self.port} at {self.baud} baud"

    def close(self, timeout: float = 10.0) -> int | None:
        self.tty.close()
        return None  # a board never exits


def _hello(dev: Device, timeout: float, resend_every: float = RESEND_EVERY) -> P.Info:
    """Resynchronise and HELLO until the board answers, then drop the replies to the rounds
    it answered late (its replies come in order, so they all precede any later one)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = dev.resync(timeout=min(resend_every, max(0.0, deadline - time.monotonic())))
            break
        except DeviceTimeout:
            if time.monotonic() >= deadline:
                raise
    dev.drain(QUIET)
    return info


def open_serial(
    port: str, baud: int, name: str, timeout: float, payload: int = P.APP_MIN_PAYLOAD
) -> Device:
    """A Device on the board at ``port``, in a session of its own, HELLO answered
    (``dev.info``). The session the board was in ends first: a host that died leaves one open,
    maybe with a push that would refuse training (``dev.stale_session``: that session's
    refused closing commit, if any)."""
    dev = Device(SerialTransport(port, baud), timeout=timeout, window=1, name=name)
    dev.expected_payload = payload  # the filler of the session-opening resync
    # a round's filler takes its time on the line (10 bits a byte): long frames at a low rate
    filler = (payload + P.OVERHEAD) * 10 / baud
    wait = min(timeout, RESYNC_TIMEOUT + RESYNC_ROUNDS * filler)
    try:
        _hello(dev, wait, RESEND_EVERY + filler)
        dev.stale_session = dev.end_board_session()
        _hello(dev, wait, RESEND_EVERY + filler)
    except DeviceTimeout:
        dev.close(bye=False)
        raise UserError(
            f"{name}: no reply to HELLO within {wait:.0f} s: is the board running this "
            f"build's firmware (flashed with lrt-flash) on this port, at {baud} baud?"
        ) from None
    except LinkError as exc:  # e.g. a line at another rate: every byte garbled
        dev.close(bye=False)
        raise LinkError(f"{exc} (is the line at {baud} baud?)") from None
    except BaseException:  # e.g. FrameError: INFO of another protocol version
        dev.close(bye=False)
        raise
    return dev
