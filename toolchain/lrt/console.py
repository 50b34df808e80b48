"""What the commands print while they work: one line per stage, native library noise muted.

* :class:`Progress`: one line per stage. On a terminal it is redrawn in place (at most every
  0.2 s) and ends with its final text; elsewhere (logs, CI, pipes) only the final line is
  printed, once.
* :func:`native_quiet`: TensorFlow's C++ runtime (absl logging) and the TFLite converter
  write straight to file descriptors 1 and 2, past Python's ``sys.stdout``/``sys.stderr``.
  Inside the context those descriptors go to a temporary file, while Python's own streams
  keep writing to the terminal; the captured text is shown only if the block fails with an
  internal error (not a UserError, whose one line says it all).
  ``LRT_VERBOSE=1`` (the commands' ``--verbose``) leaves everything visible.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TextIO

from lrt.errors import UserError


def verbose() -> bool:
    return os.environ.get("LRT_VERBOSE", "") not in ("", "0")


class Progress:
    """One progress line: ``label`` then a status text that :meth:`update` replaces."""

    REDRAW_SECONDS = 0.2

    def __init__(self, label: str, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.live = enabled and self.stream.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0
        self._width = 0
        self._closed = False

    def _line(self, text: str) -> str:
        return f"{self.label:<9} {text}"

    def update(self, text: str) -> None:
        now = time.monotonic()
        if not self.live or now - self._last < self.REDRAW_SECONDS:
            return
        self._last = now
        line = self._line(text)
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def seconds(self) -> float:
        return time.monotonic() - self.t0

    def done(self, text: str) -> None:
        """The stage's final line, printed exactly once."""
        if self._closed or not self.enabled:
            self._closed = True
            return
        self._closed = True
        line = self._line(text)
        prefix = "\r" if self._width else ""
        self.stream.write(prefix + line.ljust(self._width) + "\n")
        self.stream.flush()


def counter(done: int, total: int, unit: str, seconds: float) -> str:
    rate = done / seconds if seconds > 0 else 0.0
    return f"{done:,d}/{total:,d} {unit} ({rate:,.0f} {unit}/s)"


@dataclass
class _Muted:
    """The process-wide state of native_quiet while any thread is inside it."""

    saved: list[int]  # duplicates of the original fds 1 and 2
    py_streams: tuple[TextIO, TextIO]  # sys.stdout, sys.stderr before
    # what replaces sys.stdout / sys.stderr meanwhile (None: that stream does not write
    # through fd 1 / 2 and stays as it is)
    wrappers: tuple[TextIO | None, TextIO | None]
    sink: IO[bytes]
    users: int = 1


_muted_lock = threading.Lock()
_muted: _Muted | None = None
NATIVE_FDS = (1, 2)  # where native code writes, whatever Python's streams are
TAIL_LINES = 20


def _writes_through(stream: TextIO, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False


def _mute() -> _Muted | None:
    streams = (sys.stdout, sys.stderr)
    for s in streams:
        with contextlib.suppress(ValueError, OSError):
            s.flush()
    saved: list[int] = []
    sink: IO[bytes] | None = None
    redirected: list[int] = []
    try:
        for fd in NATIVE_FDS:
            saved.append(os.dup(fd))
        sink = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 (closed by _unmute)
        for fd in NATIVE_FDS:
            os.dup2(sink.fileno(), fd)
            redirected.append(fd)
        # Python-level output (progress lines, warnings we want) still reaches the user
        wrappers = tuple(
            io.TextIOWrapper(os.fdopen(os.dup(orig), "wb"), line_buffering=True)
            if _writes_through(s, fd)
            else None
            for s, fd, orig in zip(streams, NATIVE_FDS, saved, strict=True)
        )
    except OSError:
        # no fds 1 and 2 (an embedding app) or none left: put back what was moved, mute nothing
        for fd, orig in zip(redirected, saved, strict=False):
            os.dup2(orig, fd)
        for orig in saved:
            os.close(orig)
        if sink is not None:
            sink.close()
        return None
    state = _Muted(saved, streams, (wrappers[0], wrappers[1]), sink)
    sys.stdout = wrappers[0] or sys.stdout
    sys.stderr = wrappers[1] or sys.stderr
    return state


def _unmute(state: _Muted) -> None:
    """Restore fds 1 and 2 and the Python streams."""
    for s in state.wrappers:
        if s is not None:
            with contextlib.suppress(ValueError, OSError):
                s.flush()
    # only the streams this context set are put back (a caller may have replaced them since)
    if state.wrappers[0] is not None and sys.stdout is state.wrappers[0]:
        sys.stdout = state.py_streams[0]
    if state.wrappers[1] is not None and sys.stderr is state.wrappers[1]:
        sys.stderr = state.py_streams[1]
    for s in state.wrappers:
        if s is not None:
            with contextlib.suppress(ValueError, OSError):
                s.close()
    for fd, orig in zip(NATIVE_FDS, state.saved, strict=True):
        os.dup2(orig, fd)
        os.close(orig)
    state.sink.close()


def _sink_end(state: _Muted) -> int:
    return os.lseek(state.sink.fileno(), 0, os.SEEK_END)


@contextlib.contextmanager
def native_quiet() -> Iterator[None]:
    """Mute what native code writes to fds 1 and 2 (see the module docstring). The
    descriptors belong to the process: threads inside the context at the same time share
    one muting, undone when the last of them leaves; a user that fails shows the native
    output written since it entered (other threads' lines may be among it)."""
    global _muted
    if verbose():
        yield
        return
    with _muted_lock:
        if _muted is None:
            _muted = _mute()
        else:
            _muted.users += 1
        state = _muted
        start = _sink_end(state) if state is not None else 0
    if state is None:
        yield
        return
    tail: list[str] = []
    try:
        yield
    except UserError:
        raise  # the user's mistake: its one line says it all
    except BaseException:
        with _muted_lock:  # read without moving the offset the native writers share
            text = os.pread(state.sink.fileno(), _sink_end(state) - start, start)
        tail = text.decode(errors="replace").splitlines()[-TAIL_LINES:]
        raise
    finally:
        with _muted_lock:
            state.users -= 1
            if state.users == 0:
                _muted = None
                _unmute(state)
        if tail:
            print("\n".join(["(native output before the failure)", *tail]), file=sys.stderr)
