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
import time
from collections.abc import Iterator
from typing import TextIO

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


@contextlib.contextmanager
def native_quiet() -> Iterator[None]:
    """Mute what native code writes to fds 1 and 2 (see the module docstring)."""
    if verbose():
        yield
        return
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError):
            s.flush()
    try:
        fds = (sys.stdout.fileno(), sys.stderr.fileno())
    except (AttributeError, ValueError, io.UnsupportedOperation):
        yield  # Python streams without descriptors (an embedding app): nothing to mute
        return
    saved = [os.dup(fd) for fd in fds]
    py_streams = sys.stdout, sys.stderr
    with tempfile.TemporaryFile(mode="w+b") as sink:
        failed = False
        try:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            # Python-level output (progress lines, warnings we want) still reaches the user
            sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(saved[0]), "wb"), line_buffering=True)
            sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved[1]), "wb"), line_buffering=True)
            yield
        except UserError:
            raise  # the user's mistake: its one line says it all
        except BaseException:
            failed = True
            raise
        finally:
            for s in (sys.stdout, sys.stderr):
                with contextlib.suppress(ValueError, OSError):
                    s.flush()
                    s.close()
            sys.stdout, sys.stderr = py_streams
            for fd, orig in zip(fds, saved, strict=True):
                os.dup2(orig, fd)
                os.close(orig)
            if failed:
                sink.seek(0)
                tail = sink.read().decode(errors="replace").splitlines()[-20:]
                if tail:
                    print("\n".join(["(native output before the failure)", *tail]),
                          file=sys.stderr)
