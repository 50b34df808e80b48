"""`import lrt` is light and names the command-line entry points as functions."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_entry_points_resolve_lazily_without_tensorflow() -> None:
    code = (
        "import sys, lrt\n"
        "import lrt.build, lrt.emulate\n"
        "assert 'lrt.pipeline' not in sys.modules\n"
        "from lrt import pipeline\n"
        "assert lrt.make_firmware is pipeline.build and lrt.run_online is pipeline.emulate\n"
        "assert lrt.load_build is pipeline.load_build\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_an_attribute_error() -> None:
    import lrt

    with pytest.raises(AttributeError, match="no_such_thing"):
        lrt.no_such_thing  # noqa: B018
