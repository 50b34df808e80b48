"""The host tools' side of a build's NVM weight store: which geometry and model id the build's
firmware mounts with, and the checks every command makes before it reads an image file or
lets a host-emulated device open one.

The rules are the firmware's (lrt_nvm_mount, lrt_nvm_may_initialise, main.c): an image that
holds another model's sets (or another format version's, or is not this build's size) is
refused with one clear line and left byte for byte as it was; re-initialising it is the
user's explicit ``--format``. An image of garbage, with no readable header and no blank
slot, is refused too: it was never this build's store.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from lrt import boards, codegen, nvm
from lrt.errors import UserError
from lrt.model import Model


def build_geometry(report: dict[str, Any], model: Model) -> nvm.NvmGeometry | None:
    """The geometry and model id the build's firmware mounts its store with, or None when
    the build keeps its weights in the firmware image (no store)."""
    board = boards.load_build_board(report)
    try:
        geo = codegen.nvm_geometry(board, codegen.blob_layout(model).size)
        geo.layout()
    except ValueError:
        return None
    return dataclasses.replace(geo, model_id=codegen.nvm_model_id(model))


def check_path(path: Path, what: str, must_exist: bool) -> None:
    """A path the user named for a file: not a directory, in an existing folder."""
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory, expected a file")
    if not path.parent.is_dir():
        raise UserError(f"{what} {path}: folder {path.parent} does not exist")
    if must_exist and not path.is_file():
        raise UserError(f"{what} {path} not found")


def read_image(path: Path) -> bytes:
    check_path(path, "NVM image", must_exist=True)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"NVM image {path}: cannot read it ({exc.strerror})") from None


def _check_size(path: Path, geometry: nvm.NvmGeometry, hint: str = "") -> None:
    size = path.stat().st_size
    if size != geometry.region_size:
        raise UserError(
            f"NVM image {path} is the wrong size for this build's store: expected "
            f"{geometry.region_size:,d} bytes, got {size:,d} (truncated, or another "
            f"build's image){hint}"
        )


def inspect(path: Path, geometry: nvm.NvmGeometry | None, **kwargs: Any) -> nvm.NvmReport:
    """The device's verdict on an image file (geometry None: learnt from the image)."""
    check_path(path, "NVM image", must_exist=True)
    if geometry is not None:
        _check_size(path, geometry)
    return nvm.inspect_bytes(read_image(path), geometry, path=str(path), **kwargs)


def refusal(rep: nvm.NvmReport) -> str | None:
    """Why the firmware (or the tools) would not use or initialise this image, or None."""
    if rep.chosen is not None or rep.empty:
        return None
    if rep.version_seen:
        return (f"it holds a format version {rep.other_version} store (this firmware uses "
                f"version {nvm.VERSION})")
    if rep.foreign:
        ids = sorted({s.header.model_id for s in rep.slots if s.state == "foreign" and s.header})
        named = ", ".join(f"{i:08x}" for i in ids)
        return (f"it holds the weights of another model (model id {named}; this build's is "
                f"{rep.model_id:08x})")
    if not any(s.state == "blank" for s in rep.slots):
        return "it is not an lrt weight store (no readable header, no blank slot)"
    return None


def prepare_device_image(path: Path, geometry: nvm.NvmGeometry | None, fmt: bool) -> bool:
    """Check an image a host-emulated device is about to open. Returns True when the firmware
    must format it (--format over an image of the right size); a wrong-sized image is emptied
    (the firmware then creates it afresh) only with fmt."""
    check_path(path, "NVM image", must_exist=False)
    if geometry is None:
        raise UserError("--nvm: this build keeps its weights in the firmware image (no NVM store)")
    if not path.exists():
        return False
    if not os.access(path, os.R_OK | os.W_OK):
        raise UserError(f"NVM image {path} is not readable and writable")
    size = path.stat().st_size
    if size == 0:
        return False
    hint = "; --format re-initialises it (its weight sets are lost)"
    if size != geometry.region_size:
        if not fmt:
            _check_size(path, geometry, hint)
        try:
            path.write_bytes(b"")
        except OSError as exc:
            raise UserError(f"NVM image {path}: cannot write it ({exc.strerror})") from None
        return False
    if fmt:
        return True
    why = refusal(nvm.inspect_bytes(read_image(path), geometry, path=str(path)))
    if why is not None:
        raise UserError(f"NVM image {path} refused: {why}{hint}")
    return False
