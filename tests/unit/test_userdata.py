"""A user's own data: dataset files (any image shape and class count) and labelled stream
files, and the paper's streams grown from such a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.own_data import CLASSES, SHAPE, patterns, write_dataset
from lrt import export, pipeline
from lrt.config import BuildConfig
from lrt.data import load_dataset, make_stream
from lrt.data.datasets import dataset_shape
from lrt.data.userdata import read_stream_file, split_sizes
from lrt.errors import UserError
from lrt.presets import spec_for_data


@pytest.fixture(scope="module")
def own_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("own") / "patterns.npz")


def test_dataset_file_is_split_like_mnist5k(own_file: Path) -> None:
    ds = load_dataset(str(own_file), seed=3)
    assert ds.name == "patterns.npz" and ds.num_classes == CLASSES and ds.input_shape == SHAPE
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_online)) == split_sizes(600) == (360, 60, 180)
    assert len(ds.y_test) == 200
    with np.load(own_file) as raw:
        np.testing.assert_array_equal(ds.x_test * 255.0, raw["x_test"].astype(np.float32))
        # the three pieces are disjoint and together the training images
        pieces = np.concatenate([ds.x_train, ds.x_val, ds.x_online]) * 255.0
        whole = raw["x_train"]
        assert sorted(map(bytes, pieces.round().astype(np.uint8))) == sorted(map(bytes, whole))
    for y in (ds.y_train, ds.y_val, ds.y_online):  # stratified: every class in every piece
        assert set(np.unique(y)) == set(range(CLASSES))
    again, other = load_dataset(str(own_file), seed=3), load_dataset(str(own_file), seed=4)
    np.testing.assert_array_equal(again.y_online, ds.y_online)
    assert not np.array_equal(other.y_online, ds.y_online)
    assert dataset_shape(str(own_file)) == (SHAPE, CLASSES)
    assert dataset_shape("mnist5k") == ((28, 28, 1), 10)


def test_float_and_one_channel_images(tmp_path: Path) -> None:
    x, y = patterns(100, seed=5)
    grey = x[..., 0].astype(np.float32) / 255.0  # [N, H, W] floats in [0, 1]
    np.savez(tmp_path / "grey.npz", x_train=grey, y_train=y, x_test=grey[:10], y_test=y[:10])
    ds = load_dataset(str(tmp_path / "grey.npz"))
    assert ds.input_shape == (16, 20, 1)
    np.testing.assert_array_equal(ds.x_test[..., 0], grey[:10])


@pytest.mark.parametrize("kind", ["control", "shift", "analog"])
def test_paper_streams_grow_from_a_dataset_file(own_file: Path, kind: str) -> None:
    ds = load_dataset(str(own_file))
    st = make_stream(kind, ds, 700, seed=2, segment=300)
    assert st.x.shape == (700, *SHAPE) and st.x.dtype == np.float32
    assert float(st.x.min()) >= 0.0 and float(st.x.max()) <= 1.0
    assert set(np.unique(st.y)) <= set(range(CLASSES))
    np.testing.assert_array_equal(st.x, make_stream(kind, ds, 700, seed=2, segment=300).x)


def test_stream_samples_keep_their_original_and_label(tmp_path: Path) -> None:
    """Flat images of one colour each: a deformed sample's centre keeps its original's colour
    in every channel, so the colour names the original the sample grew from."""
    n = 200
    rng = np.random.default_rng(9)
    colours = rng.permutation(np.stack(np.meshgrid(*[np.arange(8)] * 3), -1).reshape(-1, 3))[:n]
    x = np.broadcast_to((colours * 32 + 16).astype(np.uint8)[:, None, None], (n, *SHAPE))
    y = np.arange(n) % CLASSES
    np.savez(tmp_path / "flat.npz", x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    ds = load_dataset(str(tmp_path / "flat.npz"))
    label_of = {tuple(c): lab for c, lab in zip(
        (ds.x_online[:, 0, 0] * 255).round().astype(int), ds.y_online, strict=True)}  # fmt: skip
    st = make_stream("control", ds, 300, seed=1)
    centre = (st.x[:, 8, 10] * 255).round().astype(int)
    assert [label_of.get(tuple(c)) for c in centre] == list(st.y)
    assert len({tuple(c) for c in centre}) > 40  # drawn from many originals


BAD_FILES = {
    "missing y_test": (lambda x, y: {"x_train": x, "y_train": y, "x_test": x}, "y_test"),
    "shapes differ": (
        lambda x, y: {"x_train": x, "y_train": y, "x_test": x[:, :8], "y_test": y},
        "x_test images are 8x20x3",
    ),
    "floats above 1": (
        lambda x, y: {"x_train": x * 1.0, "y_train": y, "x_test": x * 1.0, "y_test": y},
        r"lie in \[0, 255\]",
    ),
    "NaN": (
        lambda x, y: {"x_train": np.full(x.shape, np.nan), "y_train": y, "x_test": x, "y_test": y},
        "NaN",
    ),
    "int16 images": (
        lambda x, y: {"x_train": x.astype(np.int16), "y_train": y, "x_test": x, "y_test": y},
        "int16",
    ),
    "float labels": (
        lambda x, y: {"x_train": x, "y_train": y * 1.0, "x_test": x, "y_test": y},
        "integers",
    ),
    "label gap": (
        lambda x, y: {"x_train": x, "y_train": np.where(y == 2, 3, y), "x_test": x, "y_test": y},
        r"class\(es\) 2 of 0..3",
    ),
    "negative label": (
        lambda x, y: {"x_train": x, "y_train": y - 1, "x_test": x, "y_test": y},
        "label -1",
    ),
    "one label short": (
        lambda x, y: {"x_train": x, "y_train": y[1:], "x_test": x, "y_test": y},
        "one label per sample",
    ),
    "too few": (
        lambda x, y: {"x_train": x[:10], "y_train": y[:10], "x_test": x, "y_test": y},
        "too few",
    ),
    "one class": (
        lambda x, y: {"x_train": x, "y_train": 0 * y, "x_test": x, "y_test": 0 * y},
        "at least 2 classes",
    ),
    "no test image": (
        lambda x, y: {"x_train": x, "y_train": y, "x_test": x[:0], "y_test": y[:0]},
        "x_test holds no image",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_dataset_files_are_refused_by_name(tmp_path: Path, case: str) -> None:
    x, y = patterns(40, seed=6)
    make, message = BAD_FILES[case]
    np.savez(tmp_path / "bad.npz", **make(x, y))
    with pytest.raises(UserError, match=message):
        load_dataset(str(tmp_path / "bad.npz"))


def test_not_an_archive(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npz").write_bytes((tmp_path / "one.npy").read_bytes())
    with pytest.raises(UserError, match="single array"):
        load_dataset(str(tmp_path / "one.npz"))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(UserError, match=r"not a readable \.npz"):
        load_dataset(str(tmp_path / "junk.npz"))
    with pytest.raises(UserError, match="cannot read"):
        load_dataset(str(tmp_path / "absent.npz"))


def test_config_takes_a_dataset_file_as_an_absolute_path(
    own_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(own_file.parent)
    cfg = BuildConfig(dataset="patterns.npz").validate()
    assert cfg.dataset == str(own_file.resolve())
    with pytest.raises(UserError, match="which is not a file"):
        BuildConfig(dataset="absent.npz").validate()
    with pytest.raises(UserError, match="data_dir"):
        BuildConfig(dataset="patterns.npz", data_dir=str(own_file.parent)).validate()
    with pytest.raises(UserError, match="or a dataset file"):
        BuildConfig(dataset="cifar").validate()


def test_preset_takes_the_dataset_shape_or_says_why_not(own_file: Path, tmp_path: Path) -> None:
    cfg = BuildConfig(dataset=str(own_file), preset="tiny").validate()
    spec = pipeline.preset_spec(cfg)
    assert (spec.input_shape, spec.num_classes) == (SHAPE, CLASSES)
    model = export.architecture(spec)
    assert model.input_shape == SHAPE and model.num_classes == CLASSES
    assert model.weight_layers()[-1].weights.shape == (CLASSES, 32)  # type: ignore[union-attr]
    assert spec_for_data("mcu", (28, 28, 1), 10) is spec_for_data("mcu", (28, 28, 1), 10)
    x, y = patterns(40, seed=7)
    small = x[:, :9, :9]  # conv1 7, conv2 5, pool2 2: conv3's 3x3 kernel cannot run
    np.savez(tmp_path / "small.npz", x_train=small, y_train=y, x_test=small, y_test=y)
    with pytest.raises(UserError, match=r"9x9x3 are too small for preset 'mcu' \(conv3 input "
                       r"2x2 .*\): its convs and pools need at least 16x16$"):  # fmt: skip
        pipeline.preset_spec(BuildConfig(dataset=str(tmp_path / "small.npz")).validate())
    first = np.moveaxis(x, -1, 1)  # PyTorch's layout, [N, C, H, W]
    np.savez(tmp_path / "nchw.npz", x_train=first, y_train=y, x_test=first, y_test=y)
    with pytest.raises(UserError, match=r"3x16x20 are too small.*np\.moveaxis\(x, 1, -1\)"):
        pipeline.preset_spec(BuildConfig(dataset=str(tmp_path / "nchw.npz")).validate())


def test_stream_files(tmp_path: Path) -> None:
    x, y = patterns(30, seed=8)
    np.savez(tmp_path / "s.npz", x=x, y=y)
    got_x, got_y = read_stream_file(tmp_path / "s.npz", SHAPE, CLASSES)
    np.testing.assert_array_equal(got_x, x)
    assert got_y.dtype == np.uint8 and list(got_y) == list(y)
    np.savez(tmp_path / "grey.npz", x=x[..., 0], y=y)  # [N, H, W] for a one-channel model
    assert read_stream_file(tmp_path / "grey.npz", (16, 20, 1), CLASSES)[0].shape == (30, 16, 20, 1)
    refusals = {
        "shape": ({"x": x[..., 0], "y": y}, r"samples of 16x20x3, so x must be \[N, 16, 20, 3\]"),
        "classes": ({"x": x, "y": y + 1}, "label 4 in y; this build's model has 4 classes"),
        "dtype": ({"x": x.astype(np.int32), "y": y}, "int32"),
        "keys": ({"images": x, "y": y}, "missing array"),
        "empty": ({"x": x[:0], "y": y[:0]}, "no sample"),
        "inf": ({"x": np.full(x.shape, np.inf, np.float32), "y": y}, "infinite"),
    }
    for case, (arrays, message) in refusals.items():
        np.savez(tmp_path / f"{case}.npz", **arrays)
        with pytest.raises(UserError, match=message):
            read_stream_file(tmp_path / f"{case}.npz", SHAPE, CLASSES)


def test_inputs_larger_than_a_request_are_refused_before_training() -> None:
    """One request of the wire protocol carries a sample and its label: 128 x 128 x 1 does
    not fit the protocol's 16,384-byte payload; 32 x 32 x 3 does (its firmware's frames
    grow to fit it)."""
    from lrt.boards import load_board

    cfg = BuildConfig(preset="tiny").validate()
    big = export.architecture(spec_for_data("tiny", (128, 128, 1), 3))
    with pytest.raises(UserError, match=r"128x128x1 = 16,384 values .* \(16,383 values and"):
        pipeline.check_fits(big, cfg, load_board("host"))
    budget = pipeline.check_fits(export.architecture(spec_for_data("tiny", (32, 32, 3), 3)),
                                 cfg, load_board("host"))  # fmt: skip
    frames = budget.to_dict()["ram_items"]["protocol server (lrt_app: frame buffers)"]
    assert frames > 2 * (32 * 32 * 3 + 1 + 9)  # the frame buffers and the server's state
