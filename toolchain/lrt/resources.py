"""Where the toolchain's non-Python files are: the C library, board support, templates, boards.

A wheel carries them inside the package (``lrt/_data/``, copied there at build time by
setup.py from the repository's top-level ``firmware_templates/`` and ``boards/``). A source
checkout (editable install, ``PYTHONPATH=toolchain``) has no ``_data``: the folders are found
next to the package's source tree instead. Nothing else in the toolchain looks for files.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from pathlib import Path

DATA_FOLDERS = ("firmware_templates", "boards")


@functools.cache
def data_root() -> Path:
    """The directory that holds ``firmware_templates/`` and ``boards/``."""
    package = Path(str(importlib.resources.files("lrt")))
    packaged = package / "_data"
    if all((packaged / name).is_dir() for name in DATA_FOLDERS):
        return packaged
    # a source checkout: the repository root is the nearest parent holding both folders
    for parent in package.parents:
        if all((parent / name).is_dir() for name in DATA_FOLDERS):
            return parent
    raise RuntimeError(
        f"lrt's firmware templates and boards are missing: neither {packaged} nor a parent of "
        f"{package} holds {' and '.join(DATA_FOLDERS)} (a broken install; reinstall lrt)"
    )


def templates_dir() -> Path:
    """``firmware_templates/``: the C library (``lib/``), board support (``bsp/``), templates."""
    return data_root() / "firmware_templates"


def boards_dir() -> Path:
    """The shipped board files (``boards/*.toml``)."""
    return data_root() / "boards"



def cache_dir() -> Path:
    """Per-user cache of compiled helpers (budget probe, QEMU plugin): ``LRT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/lrt`` or ``~/.cache/lrt``."""
    base = os.environ.get("LRT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lrt"
    )
    return Path(base)
