"""A board on a serial port (a real board's USB-UART bridge, or any tty that carries the
board's UART, such as QEMU's ``-serial pty``): the byte transport of a Device that no
runner started.

A real board outlives the host's sessions: its firmware (built for a UART without
semihosting) answers BYE by committing the session's biases and then waits for the next
HELLO (main.c.j2's LRT_SERIAL_SESSIONS). The host may open the port at any moment: mid-way
through an old session's frame, after a board reset's ready line, or after another host
died. So a session starts with ``Device.resync`` (filler bytes that complete any frame the
board is still assembling, then HELLO) and reads one request's reply at a time: a polled
UART drops bytes that arrive while the firmware is busy with a sample.
"""

from __future__ import annotations

import os
import select

from lrt.emulate.base import Device, DeviceTimeout, LinkError, Transport
from lrt.errors import UserError

RESYNC_TIMEOUT = 5.0  # the board may be finishing a training step when the host arrives


class SerialTransport(Transport):
    """The tty at ``port``, raw, at ``baud`` (pyserial opens and configures it)."""

    def __init__(self, port: str, baud: int) -> None:
        import serial  # pyserial: the one place that needs it

        self.port = port
        self.baud = baud
        try:
            self.tty = serial.Serial(port, baudrate=baud, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise UserError(f"--port {port}: cannot open it as a serial port ({exc})") from None
        # what the port held before this session (an earlier session's ready line) is no
        # reply to it
        self.tty.reset_input_buffer()
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
        ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        if not ready:
            raise DeviceTimeout(f"no reply on {self.diagnostics()} within {timeout:.1f} s")
        try:
            return os.read(self._fd, max_bytes)
        except OSError as exc:  # the board was unplugged (EIO on a hung-up tty)
            raise LinkError(f"cannot read from {self.diagnostics()} ({exc})") from None

    def diagnostics(self) -> str:
        return f"serial port {self.port} at {self.baud} baud"

    def close(self, timeout: float = 10.0) -> int | None:
        self.tty.close()
        return None  # a board never exits


def open_serial(port: str, baud: int, name: str, timeout: float) -> Device:
    """A Device on the board at ``port``, resynchronised and HELLO answered (``dev.info``)."""
    dev = Device(SerialTransport(port, baud), timeout=timeout, window=1, name=name)
    try:
        dev.resync(timeout=min(timeout, RESYNC_TIMEOUT))
    except DeviceTimeout:
        dev.close(bye=False)
        raise UserError(
            f"{name}: no reply to HELLO within {min(timeout, RESYNC_TIMEOUT):.0f} s: is the "
            f"board running an lrt firmware on this port, at {baud} baud?"
        ) from None
    except BaseException:
        dev.close(bye=False)
        raise
    return dev
