"""One client for every target: a byte transport, the request/reply ``Device`` over it, and
the ``Runner`` interface that starts a target and hands back a ``Device``.

Pipelining: a request/reply round trip through pipes (or QEMU) costs far more than the
firmware's work on one small sample, so ``infer_many``/``train_many``/``read_all_blob`` keep
up to ``window`` requests in flight and read the replies in order. The window is also
bounded in bytes so that neither direction's pipe buffer (64 KiB on Linux) can fill while
the other side waits, which would deadlock host and device. Pipes and QEMU apply
back-pressure; a real board's polled UART drops bytes it receives while busy, so runners for
serial links should use ``window=1``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

import numpy as np

from lrt import console
from lrt.emulate import protocol as P
from lrt.errors import DeviceError

DEFAULT_TIMEOUT = 60.0
DEFAULT_WINDOW = 32
WINDOW_BYTES = 32 * 1024
BANNER_MAX = 4096

ProgressArg = bool | Callable[[int, int], None] | None

# Exit statuses of a firmware that stops at boot (main.c.j2's boot_failed); on a serial
# channel it prints LRT_PLATFORM_BOOT_FAILED and the status first
EXIT_FOREIGN = 6
BOOT_FAILURES = {
    2: "(host build) an unknown command-line argument: the firmware takes [--nvm PATH] "
    "[--format]",
    3: "the platform, the weight store or the model's RAM state could not be set up, or the "
    "firmware's buffers disagree with its layer table",
    4: "an LRT accumulator or conv gradient sum does not match its buffer",
    5: "the training device or the protocol server refused its setup (buffers or settings "
    "that disagree with the model)",
    EXIT_FOREIGN: "the weight store holds another model's weights (`--format` re-initialises "
    "a host image; lrt-flash writes a new one to a board)",
}


def boot_failure_text(status: int) -> str:
    if status < 0:
        return "stopped at boot (its status line is cut)"
    meaning = BOOT_FAILURES.get(status, "an unknown status (a firmware of another version?)")
    return f"stopped at boot with status {status}: {meaning}"


def boot_failure(banner: bytes) -> str | None:
    """What a firmware's boot-failure line in `banner` means, or None if there is none."""
    from lrt.bsp import platform_line

    marker = platform_line("LRT_PLATFORM_BOOT_FAILED").encode()
    at = banner.rfind(marker)
    # a ready line after it: the failure is an earlier boot's (a serial port keeps old text)
    if at < 0 or platform_line("LRT_PLATFORM_READY").encode() in banner[at:]:
        return None
    digits = banner[at + len(marker) :].split(b"\n", 1)[0].strip()
    return boot_failure_text(int(digits) if digits.isdigit() else -1)


class LinkError(DeviceError):
    """The transport failed: timeout, device exited, or bytes that are not a valid reply."""


class DeviceTimeout(LinkError):
    pass


# ---- transports ----------------------------------------------------------------------------


def wait_readable(fd: Any, timeout: float, what: str) -> None:
    """Block until `fd` (a descriptor or an object with fileno()) has bytes to read, at most
    `timeout` s; DeviceTimeout "no {what} within ..." otherwise."""
    ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
    if not ready:
        raise DeviceTimeout(f"no {what} within {timeout:.1f} s")


class Transport(ABC):
    """A byte stream to the device."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send all of data (may block while the device is busy reading)."""

    @abstractmethod
    def read_some(self, max_bytes: int, timeout: float) -> bytes:
        """At least one byte, at most max_bytes; b"" at end of stream; DeviceTimeout if
        nothing arrives within timeout seconds."""

    @abstractmethod
    def close(self, timeout: float = 10.0) -> int | None:
        """End the session (end of input for the device); returns its exit status if any."""

    def diagnostics(self) -> str:
        """Extra text for error messages (e.g. the device's stderr tail)."""
        return ""

    def discard_files(self) -> None:
        """After a clean session: remove the emulator's work files (kept after a failure,
        for the log its error names)."""
        return None  # a process or pipe leaves no files behind

    def exit_status(self) -> int | None:
        """The device's exit status if it has ended and reports one (a process), else None."""
        return None

    def read_exact(self, n: int, timeout: float) -> bytes:
        out = bytearray()
        deadline = time.monotonic() + timeout
        while len(out) < n:
            chunk = self.read_some(n - len(out), max(0.0, deadline - time.monotonic()))
            if not chunk:
                raise LinkError(f"end of stream after {len(out)} of {n} bytes")
            out += chunk
        return bytes(out)


class PipeTransport(Transport):
    """The stdin/stdout pipes of a child process (host executable, QEMU, ...).

    stderr, if it is a pipe, is drained by a thread into a bounded tail so a chatty child
    cannot block on it; the tail goes into error messages.
    """

    STDERR_TAIL = 16 * 1024

    def __init__(self, proc: subprocess.Popen[bytes], name: str = "device") -> None:
        if proc.stdin is None or proc.stdout is None:
            raise ValueError("the process needs stdin=PIPE and stdout=PIPE")
        self.proc = proc
        self.name = name
        self._in = proc.stdin.fileno()
        self._out = proc.stdout.fileno()
        self._err_tail: collections.deque[bytes] = collections.deque()
        self._err_len = 0
        self._err_thread: threading.Thread | None = None
        if proc.stderr is not None:
            self._err_thread = threading.Thread(target=self._drain_stderr, daemon=True)
            self._err_thread.start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            self._err_tail.append(chunk)
            self._err_len += len(chunk)
            while self._err_len - len(self._err_tail[0]) >= self.STDERR_TAIL:
                self._err_len -= len(self._err_tail.popleft())

    def stderr_text(self) -> str:
        return b"".join(list(self._err_tail)).decode(errors="replace")

    def exit_status(self) -> int | None:
        return self.proc.poll()

    def diagnostics(self) -> str:
        status = self.proc.poll()
        parts = [f"{self.name} {'running' if status is None else f'exited with {status}'}"]
        err = self.stderr_text().strip()
        if err:
            parts.append("stderr:\n" + err[-2000:])
        return "; ".join(parts)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._in, view)
                view = view[n:]
        except (BrokenPipeError, OSError) as exc:
            # the child is exiting: let it finish so its exit status can explain the failure
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2.0)
            raise LinkError(f"cannot write to {self.name} ({exc}); {self.diagnostics()}") from None

    def read_some(self, max_bytes: int, timeout: float) -> bytes:
        wait_readable(self._out, timeout, f"reply from {self.name}")
        data = os.read(self._out, max_bytes)
        if not data:
            # stdout closed: the process is exiting; wait briefly so diagnostics() can show
            # its exit status (e.g. a sanitizer's or a HardFault's) rather than "running".
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2.0)
            if self._err_thread is not None:
                self._err_thread.join(1.0)
        return data

    def close(self, timeout: float = 10.0) -> int | None:
        proc = self.proc
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if self._err_thread is not None:
            self._err_thread.join(1.0)
        if proc.stderr is not None:
            proc.stderr.close()
        return proc.returncode


# ---- device --------------------------------------------------------------------------------


class Device:
    """Client of the firmware's request server over any Transport.

    Sizes come from HELLO, which is sent on first need. Inputs are int8 arrays of the
    model's input size (any shape with that many elements per sample).
    """

    def __init__(
        self,
        transport: Transport,
        timeout: float = DEFAULT_TIMEOUT,
        window: int = DEFAULT_WINDOW,
        name: str = "device",
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.transport = transport
        self.timeout = timeout
        self.window = window
        self.name = name
        self.info: P.Info | None = None
        # the frames the device is expected to take before its HELLO says (open_device: the
        # build's), which bounds the filler of a resynchronisation
        self.expected_payload = P.APP_MIN_PAYLOAD
        self.exit_status: int | None = None
        self._rx = bytearray()
        self._in_step = False
        self.banner = b""  # text the firmware printed before its first frame
        self._closed = False
        self._said_bye = False
        # serial boards: the refused closing commit of the session the board was in when this
        # one began (lrt.emulate.serial_link.open_serial)
        self.stale_session: P.ProtocolError | None = None

    # -- context manager --
    def __enter__(self) -> Device:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(bye=exc_type is None)

    def close(self, bye: bool = True) -> int | None:
        """Say BYE (unless already said, or bye=False), end the transport, return the exit
        status. A BYE the device refuses (its closing commit of the session's biases failed)
        raises ProtocolError once the transport is closed: what was learned is not saved."""
        if self._closed:
            return self.exit_status
        self._closed = True
        refused: P.ProtocolError | None = None
        try:
            if bye and not self._said_bye:
                self.bye()
        except P.ProtocolError as exc:
            refused = exc
        except (LinkError, P.FrameError):
            pass  # a device that already stopped: its exit status tells
        finally:
            self.exit_status = self.transport.close()
        if refused is not None:
            raise refused
        if bye:
            self.transport.discard_files()
        return self.exit_status

    # -- raw frames --
    def send(self, frame: bytes) -> None:
        """Write raw bytes (frames, or anything: tests use it to corrupt the stream)."""
        try:
            self.transport.write(frame)
        except LinkError:
            self._raise_boot_failure()
            raise

    def read_reply(self, timeout: float | None = None) -> tuple[int, bytes]:
        """Next frame from the device as (type, payload)."""
        limit = self.timeout if timeout is None else timeout
        while True:
            if not self._in_step:
                self._skip_banner()
            try:
                got = P.split_frame(self._rx)
            except P.FrameError as exc:
                raise LinkError(f"{self.name}: {exc}; {self.transport.diagnostics()}") from None
            if got is not None:
                msg_type, payload, used = got
                del self._rx[:used]
                self._in_step = True
                return msg_type, payload
            try:
                chunk = self.transport.read_some(1 << 16, limit)
            except DeviceTimeout as exc:
                self._raise_boot_failure()
                raise DeviceTimeout(f"{exc}; {self.transport.diagnostics()}") from None
            if not chunk:
                self._raise_boot_failure()
                raise LinkError(
                    f"{self.name} closed the stream"
                    + (f" inside a frame ({len(self._rx)} bytes)" if self._rx else "")
                    + f"; {self.transport.diagnostics()}"
                )
            self._rx += chunk

    def _raise_boot_failure(self) -> None:
        if self._in_step:
            return
        # no frame yet: the line before it (a serial channel) or the exit status (a process)
        # may say why
        self._skip_banner()
        why = boot_failure(self.banner)
        status = self.transport.exit_status()
        if why is None and status in BOOT_FAILURES:
            why = boot_failure_text(status)
        if why is not None:
            raise LinkError(f"{self.name} {why}; {self.transport.diagnostics()}")

    def _skip_banner(self) -> None:
        # Before its first frame a firmware may print a text line (LRT_PLATFORM_READY, for
        # serial monitors and Renode); keep it as `banner` instead of calling it a bad frame.
        start = self._rx.find(P.SYNC)
        if start < 0:
            start = len(self._rx) - 1 if self._rx.endswith(P.SYNC[:1]) else len(self._rx)
        if start > 0:
            self.banner += bytes(self._rx[:start])
            del self._rx[:start]
            if len(self.banner) > BANNER_MAX:
                raise LinkError(
                    f"{self.name} sent {len(self.banner)} bytes that are no frame: "
                    f"{self.banner[:80]!r}...; {self.transport.diagnostics()}"
                )

    def request(self, msg_type: int, payload: bytes = b"", context: str = "") -> bytes:
        """Send one request, return its reply payload (ProtocolError on an ERROR reply)."""
        self.send(P.encode_frame(msg_type, payload))
        return self._expect(msg_type, context)

    def _expect(self, request_type: int, context: str = "") -> bytes:
        msg_type, payload = self.read_reply()
        try:
            return P.check_reply(request_type, msg_type, payload, context)
        except P.FrameError as exc:
            raise LinkError(f"{self.name}: {exc}") from None

    def resync(self, timeout: float = 2.0) -> P.Info:
        """Recover after a timeout or a corrupted request: complete any frame the device is
        still assembling with filler bytes, drop what is pending, and HELLO again."""
        longest = self.info.max_payload if self.info is not None else self.expected_payload
        self.send(bytes(longest + P.OVERHEAD))
        self.send(P.hello_request())
        while True:
            msg_type, payload = self.read_reply(timeout)
            if msg_type == P.MsgType.HELLO | P.REPLY:
                self.info = P.Info.parse(payload)
                return self.info

    def drain(self, quiet: float) -> None:
        """Discard the frames the device still sends until it has been quiet for `quiet` s
        (the replies to earlier resynchronisation rounds of a board that lost some)."""
        while True:
            try:
                self.read_reply(quiet)
            except DeviceTimeout:
                return

    def end_board_session(self) -> P.ProtocolError | None:
        """BYE to a board that serves session after session: the session it is in ends (an
        open push is dropped, what it learned since the last session's end is committed) and
        it prints its ready line before the next session's first frame, which the reader then
        keeps as a banner. Returns a refused BYE's error (the biases were not saved)."""
        try:
            self.request(P.MsgType.BYE)
            refused = None
        except P.ProtocolError as exc:
            refused = exc
        self._in_step = False
        self.banner = b""
        return refused

    # -- requests --
    def hello(self) -> P.Info:
        # Info.parse refuses a device of another protocol version (FrameError)
        self.info = P.Info.parse(self.request(P.MsgType.HELLO))
        return self.info

    def _sizes(self) -> P.Info:
        return self.info if self.info is not None else self.hello()

    def _sample_bytes(self, x: np.ndarray | bytes) -> bytes:
        info = self._sizes()
        data = x if isinstance(x, bytes) else np.ascontiguousarray(x, dtype=np.int8).tobytes()
        if len(data) != info.input_size:
            raise ValueError(
                f"input of {len(data)} values; the device takes {info.input_size} "
                f"({info.in_h}x{info.in_w}x{info.in_c})"
            )
        return data

    def infer(self, x: np.ndarray | bytes) -> tuple[np.ndarray, int]:
        """int8 logits and predicted class for one sample."""
        payload = self.request(P.MsgType.INFER, self._sample_bytes(x))
        return P.parse_prediction(payload, self._sizes().n_classes)

    def train(self, x: np.ndarray | bytes, label: int) -> tuple[np.ndarray, int]:
        """Logits/prediction before the update, then the device learns label."""
        payload = self.request(P.MsgType.TRAIN, self._sample_bytes(x) + bytes((int(label),)))
        return P.parse_prediction(payload, self._sizes().n_classes)

    def stats(self) -> P.Stats:
        return P.Stats.parse(self.request(P.MsgType.STATS))

    def wear(self) -> P.Wear:
        return P.Wear.parse(self.request(P.MsgType.WEAR))

    def read_blob(self, offset: int, length: int) -> bytes:
        """Up to length bytes of the weight blob at offset (fewer at its end)."""
        return self.request(P.MsgType.READ, P.read_payload(offset, length))

    def read_all_blob(self, size: int) -> bytes:
        """The first size bytes of the weight blob, in pipelined max-payload chunks."""
        chunk = self._sizes().max_payload
        offsets = list(range(0, size, chunk))
        frames = (P.read_request(off, min(chunk, size - off)) for off in offsets)
        parts = list(self._pipeline(P.MsgType.READ, frames, len(offsets), chunk, None))
        data = b"".join(parts)
        if len(data) != size:
            raise LinkError(f"{self.name}: blob has {len(data)} bytes, expected {size}")
        return data

    def drift(self, kind: int, seed: int, param: int) -> None:
        self.request(P.MsgType.DRIFT, P.drift_payload(kind, seed, param))

    def push_blob(self, blob: bytes) -> int:
        """Stage a complete weight set in max-payload chunks and commit it atomically on the
        device (a new NVM generation). Returns the generation the device reports."""
        chunk = self._sizes().max_payload - 4
        for off in range(0, len(blob), chunk):
            self.request(P.MsgType.WRITE, P.write_payload(off, blob[off : off + chunk]))
        reply = self.request(P.MsgType.COMMIT)
        return int.from_bytes(reply[:4], "little")

    def bye(self) -> None:
        """End the session (an emulator then exits, a serial board waits for the next one; also
        when it refuses the closing commit: ProtocolError)."""
        self._said_bye = True
        self.request(P.MsgType.BYE, context="ending the session: the device commits the biases "
                     "it learned since its last commit, and those are not saved")

    # -- whole sessions --
    def stream(
        self, frames: list[bytes], progress: ProgressArg = None, desc: str = ""
    ) -> list[tuple[int, bytes]]:
        """Send every request frame without waiting for replies and read the replies in bulk,
        in order, as (type, payload). A writer thread feeds the device while this thread
        reads, so the device never waits for the host (only a full output pipe would stop
        it, and this thread keeps draining it): no round trip per request. For pipes and
        emulators: a device with a window of 1 (a board on a serial line, whose polled UART
        drops bytes while the firmware is busy) gets one request at a time instead. ERROR
        replies are returned like any other; check them with protocol.check_reply."""
        if self.window == 1:
            return self._one_at_a_time(frames, progress, desc)
        data = b"".join(frames)
        failed: list[BaseException] = []

        def feed() -> None:
            try:
                self.transport.write(data)
            except BaseException as exc:  # reported after the reads
                failed.append(exc)

        writer = threading.Thread(target=feed, name=f"{self.name} writer", daemon=True)
        writer.start()
        report = _progress(progress, len(frames), desc or f"{self.name} stream")
        replies: list[tuple[int, bytes]] = []
        try:
            for done in range(1, len(frames) + 1):
                try:
                    replies.append(self.read_reply())
                except LinkError:
                    if failed:
                        raise LinkError(f"{self.name}: {failed[0]}") from None
                    raise
                if report is not None:
                    report(done)
        finally:
            if report is not None:
                report(-1)
            writer.join(self.timeout)
        if failed:
            raise LinkError(f"{self.name}: {failed[0]}")
        return replies

    def _one_at_a_time(
        self, frames: list[bytes], progress: ProgressArg, desc: str
    ) -> list[tuple[int, bytes]]:
        report = _progress(progress, len(frames), desc or f"{self.name} stream")
        replies: list[tuple[int, bytes]] = []
        try:
            for done, frame in enumerate(frames, 1):
                self.send(frame)
                replies.append(self.read_reply())
                if report is not None:
                    report(done)
        finally:
            if report is not None:
                report(-1)
        return replies

    # -- pipelined batches --
    def _batch(self, xs: np.ndarray) -> np.ndarray:
        info = self._sizes()
        arr = np.ascontiguousarray(xs, dtype=np.int8)
        if arr.size == 0:
            return arr.reshape(0, info.input_size)
        if arr.size % info.input_size or arr.shape[0] * info.input_size != arr.size:
            raise ValueError(
                f"inputs of shape {list(arr.shape)}: expected [N, ...] with "
                f"{info.input_size} values per sample"
            )
        return arr.reshape(arr.shape[0], info.input_size)

    def infer_many(
        self, xs: np.ndarray, progress: ProgressArg = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(int8 logits [N, n_classes], int64 predictions [N]) for N samples."""
        batch = self._batch(xs)
        frames = (P.infer_request(row.tobytes()) for row in batch)
        return self._predictions(P.MsgType.INFER, frames, len(batch), progress)

    def train_many(
        self, xs: np.ndarray, labels: np.ndarray | Iterable[int], progress: ProgressArg = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The online protocol over N samples: per sample, logits and prediction before the
        update, then the device learns the label. Same return as infer_many."""
        batch = self._batch(xs)
        ys = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels)
        if ys.shape != (len(batch),):
            raise ValueError(f"{len(batch)} samples but labels of shape {list(ys.shape)}")
        if len(ys) and (ys.min() < 0 or ys.max() > 0xFF):
            raise ValueError("labels must be in 0..255")
        frames = (P.train_request(row.tobytes(), int(y)) for row, y in zip(batch, ys, strict=True))
        return self._predictions(P.MsgType.TRAIN, frames, len(batch), progress)

    def _predictions(
        self, msg_type: int, frames: Iterator[bytes], n: int, progress: ProgressArg
    ) -> tuple[np.ndarray, np.ndarray]:
        n_classes = self._sizes().n_classes
        logits = np.empty((n, n_classes), dtype=np.int8)
        preds = np.empty(n, dtype=np.int64)
        replies = self._pipeline(msg_type, frames, n, n_classes + 1, progress)
        for i, payload in enumerate(replies):
            logits[i], preds[i] = P.parse_prediction(payload, n_classes)
        return logits, preds

    def _pipeline(
        self,
        msg_type: int,
        frames: Iterator[bytes],
        n: int,
        reply_payload: int,
        progress: ProgressArg,
    ) -> Iterator[bytes]:
        """Send n request frames with a bounded number in flight; yield reply payloads in
        order. On an ERROR reply, the replies still in flight are drained (the link stays
        usable) and ProtocolError names the failing item."""
        report = _progress(progress, n, f"{self.name} {P.type_name(msg_type).lower()}")
        sent = done = 0
        in_flight_cap = self.window
        refill_at = 0
        failure: P.ProtocolError | None = None
        try:
            while done < n:
                # Refill in batches (half a window at a time): one write per frame would
                # cost a system call and a context switch per sample.
                if failure is None and sent < n and (sent == 0 or sent - done <= refill_at):
                    batch = []
                    while sent < n and sent - done < in_flight_cap:
                        frame = next(frames)
                        if sent == 0:
                            size = max(len(frame), reply_payload + P.OVERHEAD)
                            in_flight_cap = max(1, min(self.window, WINDOW_BYTES // size))
                            refill_at = in_flight_cap // 2
                        batch.append(frame)
                        sent += 1
                    if batch:
                        self.send(b"".join(batch))
                if done >= sent:
                    break
                reply_type, payload = self.read_reply()
                index = done
                done += 1
                try:
                    body = P.check_reply(msg_type, reply_type, payload, f"item {index} of {n}")
                except P.ProtocolError as exc:
                    failure = failure or exc
                    continue
                except P.FrameError as exc:
                    raise LinkError(f"{self.name}: {exc}") from None
                if failure is None:
                    yield body
                    if report is not None:
                        report(done)
        finally:
            if report is not None:
                report(-1)
        if failure is not None:
            raise failure


def _progress(progress: ProgressArg, total: int, desc: str) -> Callable[[int], None] | None:
    """A callback taking items done (-1 = finished), from a bool (a progress line) or a callable."""
    if progress is None or progress is False or total == 0:
        return None
    if callable(progress):
        fn = progress
        return lambda done: fn(done, total) if done >= 0 else None
    line = console.Progress(desc)

    def update(done: int) -> None:
        if done < 0:
            line.done(console.counter(total, total, "samples", line.seconds()))
        else:
            line.update(console.counter(done, total, "samples", line.seconds()))

    return update


# ---- runners -------------------------------------------------------------------------------


class Runner(ABC):
    """Starts one firmware image on one target and connects a Device to it.

    with HostRunner(exe).start() as dev:
        logits, preds = dev.train_many(xs, ys)
    """

    name = "runner"

    @abstractmethod
    def open(self) -> Transport:
        """Start the target; a transport connected to the firmware's request server."""

    def start(self, timeout: float = DEFAULT_TIMEOUT, window: int = DEFAULT_WINDOW) -> Device:
        return Device(self.open(), timeout=timeout, window=window, name=self.name)
