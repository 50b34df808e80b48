"""The host side of a board on a serial port, against a scripted board on a pseudo-terminal:
one request in flight, HELLO repeated until a busy board answers, and each session opened by
ending the one the board was in. (The real firmware over QEMU's UART: emu/test_serial_port.py.)
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from lrt.emulate import Device, DeviceTimeout, Transport
from lrt.emulate import protocol as P
from lrt.emulate.serial_link import open_serial
from lrt.errors import UserError

N_CLASSES = 10
INFO = P._INFO.pack(P.VERSION, 3, 6, N_CLASSES, 2, 2, 1, b"\0\0\0\0", 0, 2048, 1, 1, 1)


class ScriptedBoard:
    """A board on the master side of a pty: answers HELLO, INFER, TRAIN and BYE (then prints
    its ready line, as a real board does), ignores the first `drop_hellos` HELLOs (a busy
    polled UART loses them) and records what it served."""

    def __init__(self, master: int, drop_hellos: int = 0) -> None:
        self.master = master
        self.drop_hellos = drop_hellos
        self.served: list[str] = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _reply(self, msg_type: int, payload: bytes = b"") -> None:
        os.write(self.master, P.encode_frame(msg_type | P.REPLY, payload))

    def _run(self) -> None:
        buf = bytearray()
        while not self.stop:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            buf += chunk
            while True:
                start = buf.find(P.SYNC)
                if start < 0:
                    del buf[: max(len(buf) - 1, 0)]
                    break
                del buf[:start]
                try:
                    got = P.split_frame(buf)
                except P.FrameError:
                    del buf[:1]
                    continue
                if got is None:
                    break
                msg_type, _, used = got
                del buf[:used]
                try:
                    self._serve(msg_type)
                except OSError:  # the test closed the pty
                    return

    def _serve(self, msg_type: int) -> None:
        if msg_type == P.MsgType.HELLO and self.drop_hellos > 0:
            self.drop_hellos -= 1
            self.served.append("HELLO lost")
            return
        self.served.append(P.MsgType(msg_type).name)
        if msg_type == P.MsgType.HELLO:
            self._reply(msg_type, INFO)
        elif msg_type in (P.MsgType.INFER, P.MsgType.TRAIN):
            time.sleep(0.01)  # a sample's work
            self._reply(msg_type, bytes(N_CLASSES) + b"\x03")
        elif msg_type == P.MsgType.BYE:
            self._reply(msg_type)
            os.write(self.master, b"lrt: ready\n")


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo of the host's bytes before pyserial configures the line
    # held open: a pty whose slave side is closed fails the master's reads (EIO)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_a_session_ends_the_boards_previous_one_and_outlasts_lost_hellos(
    pty_pair: tuple[int, str],
) -> None:
    master, name = pty_pair
    board = ScriptedBoard(master, drop_hellos=2)
    dev = open_serial(name, 115200, "scripted board", timeout=10.0)
    try:
        assert dev.info is not None and dev.info.n_classes == N_CLASSES and dev.window == 1
        # two HELLOs lost, one answered; the board's session ended; ours begun
        assert board.served[:5] == ["HELLO lost", "HELLO lost", "HELLO", "BYE", "HELLO"]
        assert dev.banner == b"lrt: ready\n" and dev.stale_session is None
        x = bytes(4)
        replies = dev.stream([P.train_request(x, 1) for _ in range(5)])
        assert [t for t, _ in replies] == [P.MsgType.TRAIN | P.REPLY] * 5
    finally:
        dev.close()
        board.stop = True
    assert board.served[-6:] == ["TRAIN"] * 5 + ["BYE"]


class InFlight(Transport):
    """A device that answers every frame at once, counting the requests sent before the
    host read the earlier replies."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.in_flight = 0
        self.most_in_flight = 0

    def write(self, data: bytes) -> None:
        n = data.count(P.SYNC)
        self.in_flight += n
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        for _ in range(n):
            self.pending += P.encode_frame(P.MsgType.INFER | P.REPLY, bytes(N_CLASSES) + b"\x01")

    def read_some(self, max_bytes: int, timeout: float) -> bytes:
        if not self.pending:
            raise DeviceTimeout("no request to answer")
        frame_len = len(P.encode_frame(0, bytes(N_CLASSES + 1)))
        out = bytes(self.pending[:frame_len])
        del self.pending[:frame_len]
        self.in_flight -= 1
        return out

    def close(self, timeout: float = 10.0) -> int | None:
        return None


@pytest.mark.parametrize(("window", "most"), [(1, 1), (32, 20)])
def test_a_paced_device_gets_one_request_at_a_time(window: int, most: int) -> None:
    transport = InFlight()
    dev = Device(transport, timeout=2.0, window=window)
    replies = dev.stream([P.infer_request(bytes(4)) for _ in range(20)])
    assert len(replies) == 20
    assert transport.most_in_flight == most


def test_an_absent_port_is_one_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot open it as a serial port"):
        open_serial(f"{tmp_path}/ttyNONE", 115200, "board", timeout=1.0)


def test_a_port_another_program_holds_is_named_so(pty_pair: tuple[int, str]) -> None:
    """pyserial locks the port (flock) as a serial monitor does; a second opener is told."""
    _, name = pty_pair
    monitor = os.open(name, os.O_RDWR | os.O_NOCTTY)
    try:
        fcntl.flock(monitor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match=r"another program .* has it open"):
            open_serial(name, 115200, "board", timeout=1.0)
    finally:
        os.close(monitor)
