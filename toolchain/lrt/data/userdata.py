"""A user's own data: a dataset file to train a preset on, a labelled stream file to replay.

Both are NumPy ``.npz`` archives (``np.savez``), so any pipeline that can write an array can
feed them; nothing is pickled.

* **Dataset file** (``lrt-build --dataset FILE.npz``): ``x_train``, ``y_train``, ``x_test``,
  ``y_test``. Images ``[N, H, W]`` (one channel) or ``[N, H, W, C]``, either ``uint8`` pixels
  (0..255, scaled to [0, 1]) or floats in [0, 1]; labels integers ``0 .. K-1`` with every
  class present in ``y_train`` (2 <= K <= 255). The training images are split by the build's
  seed, stratified by class: 60 % offline training, 10 % validation, 30 % online originals
  (what the paper's streams grow their samples from); ``x_test`` is the test set.
* **Stream file** (``lrt-emulate --stream FILE.npz``): ``x`` and ``y``, streamed in file
  order, one sample after another: the firmware predicts ``x[i]``, then learns ``y[i]``.
  ``x`` in the model's input shape: ``uint8`` pixels, floats (the model's real input values,
  quantized by its input scale) or ``int8`` (already quantized, sent as they are).
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from lrt.errors import UserError, load_failure

SUFFIX = ".npz"
MAX_CLASSES = 255  # the wire protocol's label byte and INFO's class count
# the training images' split into offline train / validation / online originals
FILE_SPLIT_SHARES = (6, 1, 3)
MIN_TRAIN_IMAGES = 20


def is_data_file(name: str | Path) -> bool:
    """True where a dataset or stream name is a file name (``*.npz``) rather than a built-in."""
    return str(name).lower().endswith(SUFFIX)


@dataclass(frozen=True)
class DatasetFile:
    """A dataset file's arrays: images float32 [N, H, W, C] in [0, 1], labels uint8."""

    path: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)


def read_dataset_file(path: str | Path) -> DatasetFile:
    """The dataset file at ``path``, checked (UserError naming what is wrong)."""
    return _read_dataset_cached(*_stamp(path))


def file_digest(path: str | Path) -> str:
    """sha256 (hex) of the file's bytes: what a build records of its dataset file."""
    return _digest_cached(*_stamp(path))


def pixels(x: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 as float32 in [0, 1]: every image lrt reads as uint8."""
    return x.astype(np.float32) / np.float32(255.0)


@lru_cache(maxsize=4)
def _digest_cached(path: str, _size: int, _mtime: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_sizes(n_train: int) -> tuple[int, int, int]:
    """(offline train, validation, online) sizes of a dataset file's training images."""
    total = sum(FILE_SPLIT_SHARES)
    n_val = n_train * FILE_SPLIT_SHARES[1] // total
    n_online = n_train * FILE_SPLIT_SHARES[2] // total
    return n_train - n_val - n_online, n_val, n_online


@lru_cache(maxsize=2)
def _read_dataset_cached(path: str, _size: int, _mtime: int) -> DatasetFile:
    arrays = npz_arrays(path, ("x_train", "y_train", "x_test", "y_test"))
    x_tr = _images(path, "x_train", arrays["x_train"])
    x_te = _images(path, "x_test", arrays["x_test"])
    if x_te.shape[1:] != x_tr.shape[1:]:
        raise UserError(
            f"{path}: x_test images are {_hwc(x_te)}, x_train images {_hwc(x_tr)}; "
            "both sets need one shape"
        )
    y_tr = _labels(path, "y_train", arrays["y_train"], len(x_tr))
    y_te = _labels(path, "y_test", arrays["y_test"], len(x_te))
    if len(y_tr) < MIN_TRAIN_IMAGES:
        raise UserError(
            f"{path}: {len(y_tr)} training images, too few to split into offline training, "
            f"validation and online originals (need >= {MIN_TRAIN_IMAGES})"
        )
    if len(y_te) == 0:
        raise UserError(f"{path}: x_test holds no image; the build measures its accuracy on it")
    k = int(max(y_tr.max(), y_te.max())) + 1
    if k < 2:
        raise UserError(f"{path}: every label is 0; a classifier needs at least 2 classes")
    absent = sorted(set(range(k)) - set(np.unique(y_tr).tolist()))
    if absent:
        shown = ", ".join(map(str, absent[:8])) + (", ..." if len(absent) > 8 else "")
        raise UserError(
            f"{path}: class(es) {shown} of 0..{k - 1} have no image in y_train; "
            "labels must be 0..K-1 with every class in the training set"
        )
    for a in (x_tr, y_tr, x_te, y_te):
        a.flags.writeable = False  # shared by the cache
    return DatasetFile(path, x_tr, y_tr, x_te, y_te, k)


def read_stream_file(
    path: str | Path, input_shape: tuple[int, ...], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a labelled stream file for a model of ``input_shape`` and ``num_classes``:
    x as stored (uint8, int8 or float, [N, *input_shape]), y uint8 [N]."""
    resolved = _stamp(path)[0]
    arrays = npz_arrays(resolved, ("x", "y"))
    x, y = arrays["x"], arrays["y"]
    shape = tuple(int(d) for d in input_shape)
    if x.ndim == len(shape) and shape[-1] == 1 and x.shape[1:] == shape[:-1]:
        x = x[..., None]  # [N, H, W] for a one-channel model
    if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
        want = "x".join(map(str, shape))
        raise UserError(
            f"{resolved}: x has shape {list(x.shape)}; this build's model takes samples of "
            f"{want}, so x must be [N, {', '.join(map(str, shape))}]"
        )
    if not (x.dtype in (np.uint8, np.int8) or np.issubdtype(x.dtype, np.floating)):
        raise UserError(
            f"{resolved}: x is {x.dtype}; expected uint8 pixels, int8 (quantized inputs) or floats"
        )
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise UserError(f"{resolved}: x holds NaN or infinite values")
    y = _labels(str(resolved), "y", y, len(x))
    if len(y) == 0:
        raise UserError(f"{resolved}: the stream holds no sample")
    if int(y.max()) >= num_classes:
        raise UserError(
            f"{resolved}: label {int(y.max())} in y; this build's model has {num_classes} "
            f"classes (0..{num_classes - 1})"
        )
    return x, y


# ---- checks ---------------------------------------------------------------------------------
def file_stamp(path: Path) -> tuple[int, int]:
    """(size, modification time in ns) of a file, the key of the readers' caches (UserError
    when it cannot be read)."""
    try:
        st = Path(path).stat()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from exc
    return st.st_size, st.st_mtime_ns


def _stamp(path: str | Path) -> tuple[str, int, int]:
    """(absolute path, size, modification time) of a user's file (UserError if it is none)."""
    resolved = Path(path).expanduser().resolve()
    size, mtime = file_stamp(resolved)
    if not resolved.is_file():
        raise UserError(f"{resolved}: not a file")
    return str(resolved), size, mtime


def npz_arrays(path: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the .npz archive at ``path`` (UserError naming what is wrong)."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({load_failure(exc)})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise UserError(f"{path}: holds a single array; expected an .npz archive (np.savez)")
    with npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise UserError(
                f"{path}: missing array(s) {', '.join(missing)} (has "
                f"{', '.join(npz.files) or 'none'}; expected {', '.join(keys)})"
            )
        try:
            return {k: npz[k] for k in keys}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise UserError(
                f"{path}: corrupt array in .npz file ({load_failure(exc)})"
            ) from exc


def _hwc(x: np.ndarray) -> str:
    return "x".join(str(d) for d in x.shape[1:])


def _images(path: str, key: str, x: np.ndarray) -> np.ndarray:
    """Images as float32 [N, H, W, C] in [0, 1]."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or min(x.shape[1:]) < 1:
        raise UserError(
            f"{path}: {key} has shape {list(x.shape)}; expected [N, H, W] or [N, H, W, C]"
        )
    if x.dtype == np.uint8:
        return pixels(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise UserError(f"{path}: {key} is {x.dtype}; expected uint8 pixels or floats in [0, 1]")
    out = x.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise UserError(f"{path}: {key} holds NaN or infinite values")
    lo, hi = (float(out.min()), float(out.max())) if out.size else (0.0, 0.0)
    if lo < 0.0 or hi > 1.0:
        raise UserError(
            f"{path}: {key} values lie in [{lo:g}, {hi:g}]; float images must lie in [0, 1] "
            "(scale them, or store uint8 pixels)"
        )
    return out


def _labels(path: str, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise UserError(
            f"{path}: {key} has shape {list(y.shape)}; expected [{n}] (one label per sample)"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: {key} is {y.dtype}; labels must be integers 0..K-1")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= MAX_CLASSES):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise UserError(f"{path}: label {bad} in {key}; labels must lie in 0..{MAX_CLASSES - 1}")
    return y.astype(np.uint8)
