"""User-facing errors: the CLI prints ``error: <message>`` on one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (board, config, model, data file), not a bug.

    The message must name the problem and, where it applies, the fix or the numbers
    (e.g. budget and overshoot in bytes).
    """

    exit_code = 2


class DeviceError(Exception):
    """The device or its emulator failed (a link that broke, an ERROR reply, bytes that are
    not a frame): not the user's input. The CLI prints it as one line and exits with 1
    (``LRT_VERBOSE=1``: the traceback too)."""

    exit_code = 1


def load_failure(exc: BaseException) -> str:
    """Why numpy could not load a file, for an error line: numpy's own advice to load a
    pickled file "unsafely" is not passed on."""
    text = str(exc)
    if "allow_pickle" in text:
        return "it holds Python objects (a pickle), which lrt never loads"
    return text
