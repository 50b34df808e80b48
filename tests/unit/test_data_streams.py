"""Elastic deformation and the online streams (control, shift, analog, digital)."""

from __future__ import annotations

import numpy as np
import pytest

from lrt.data import STREAMS, Dataset, elastic_deform, load_dataset, make_stream, segment_params
from lrt.errors import UserError


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return load_dataset("mnist5k", seed=0)


def _centroid_accuracy(ds: Dataset, x: np.ndarray, y: np.ndarray) -> float:
    """Nearest class-mean classifier fitted on the offline training originals."""
    cent = np.stack([ds.x_train[ds.y_train == c].reshape(-1, 784).mean(0) for c in range(10)])
    flat = x.reshape(len(x), -1)
    dist = (flat**2).sum(1)[:, None] - 2 * flat @ cent.T + (cent**2).sum(1)[None]
    return float((dist.argmin(1) == y).mean())


def _tv(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p / p.sum() - q / q.sum()).sum())


# ---- elastic deformation --------------------------------------------------------------------
def test_elastic_changes_pixels_but_keeps_the_digit(ds: Dataset) -> None:
    x = ds.x_test
    d = elastic_deform(x, np.random.default_rng(0))
    assert d.shape == x.shape and d.dtype == np.float32
    assert d.min() >= 0.0 and d.max() <= 1.0
    a, b = x.reshape(len(x), -1), d.reshape(len(d), -1)
    changed = np.abs(a - b).max(1)
    assert np.all(changed > 0.05)  # every image is actually deformed
    corr = np.array([np.corrcoef(u, v)[0, 1] for u, v in zip(a, b, strict=True)])
    assert corr.mean() > 0.5 and np.median(corr) > 0.5
    # a smooth warp moves ink around but neither creates nor destroys much of it
    mass = b.sum(1) / a.sum(1)
    assert 0.9 < np.median(mass) < 1.1
    # the label survives: a classifier fitted on originals still reads most deformed digits
    acc_orig = _centroid_accuracy(ds, x, ds.y_test)
    acc_def = _centroid_accuracy(ds, d, ds.y_test)
    assert acc_def > 0.5 > 0.1  # chance is 0.1
    assert acc_def > acc_orig - 0.3


def test_elastic_zero_alpha_is_identity_and_shapes(ds: Dataset) -> None:
    x = ds.x_val[:37]
    np.testing.assert_allclose(elastic_deform(x, np.random.default_rng(1), alpha=0.0), x, atol=1e-6)
    squeezed = x[..., 0]
    out = elastic_deform(squeezed, np.random.default_rng(1))
    assert out.shape == squeezed.shape
    np.testing.assert_array_equal(out, elastic_deform(x, np.random.default_rng(1))[..., 0])
    with pytest.raises(ValueError, match="N, H, W"):
        elastic_deform(np.zeros((2, 28), np.float32), np.random.default_rng(0))


def test_elastic_channels_share_one_warp(ds: Dataset) -> None:
    """An image's channels move together, and a one-channel image deforms as it always did
    (the same draws of the generator)."""
    x = ds.x_val[:9]
    one = elastic_deform(x, np.random.default_rng(2))
    rgb = elastic_deform(np.concatenate([x, 1.0 - x, 0.5 * x], axis=-1), np.random.default_rng(2))
    np.testing.assert_array_equal(rgb[..., :1], one)
    np.testing.assert_allclose(rgb[..., 2:], 0.5 * one, atol=1e-6)
    # not square: the field covers H x W
    tall = elastic_deform(x[:, :, :20], np.random.default_rng(2))
    assert tall.shape == (9, 28, 20, 1) and float(np.abs(tall - x[:, :, :20]).max()) > 0.05


def test_elastic_deterministic_given_rng(ds: Dataset) -> None:
    x = ds.x_val[:50]
    a = elastic_deform(x, np.random.default_rng(7))
    b = elastic_deform(x, np.random.default_rng(7))
    c = elastic_deform(x, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_elastic_larger_alpha_deforms_more(ds: Dataset) -> None:
    x = ds.x_val[:200]
    err = [
        float(np.abs(elastic_deform(x, np.random.default_rng(3), alpha=a) - x).mean())
        for a in (5.0, 34.0, 80.0)
    ]
    assert err[0] < err[1] < err[2]


# ---- streams: shapes, determinism, errors ---------------------------------------------------
@pytest.mark.parametrize("kind", STREAMS)
def test_stream_shapes_and_range(ds: Dataset, kind: str) -> None:
    s = make_stream(kind, ds, 1200, seed=0, segment=500)
    assert s.kind == kind and len(s) == 1200
    assert s.x.shape == (1200, 28, 28, 1) and s.x.dtype == np.float32
    assert s.y.shape == (1200,) and s.y.dtype == np.uint8
    assert s.phase.shape == (1200,) and np.issubdtype(s.phase.dtype, np.integer)
    assert s.x.min() >= 0.0 and s.x.max() <= 1.0
    assert s.y.max() < 10 and s.description


@pytest.mark.parametrize("kind", ["control", "shift"])
def test_stream_deterministic_and_seeded(ds: Dataset, kind: str) -> None:
    a = make_stream(kind, ds, 800, seed=5, segment=300)
    b = make_stream(kind, ds, 800, seed=5, segment=300)
    c = make_stream(kind, ds, 800, seed=6, segment=300)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.phase, b.phase)
    assert a.description == b.description
    assert not np.array_equal(a.y, c.y)
    assert not np.array_equal(a.x, c.x)


@pytest.mark.parametrize("kind", ["control", "shift"])
def test_shorter_stream_is_a_prefix(ds: Dataset, kind: str) -> None:
    long = make_stream(kind, ds, 2300, seed=2, segment=700)
    short = make_stream(kind, ds, 1234, seed=2, segment=700)
    np.testing.assert_array_equal(short.x, long.x[:1234])
    np.testing.assert_array_equal(short.y, long.y[:1234])
    np.testing.assert_array_equal(short.phase, long.phase[:1234])


def test_control_samples_are_deformed_online_originals(ds: Dataset) -> None:
    s = make_stream("control", ds, 2000, seed=0)
    assert np.all(s.phase == 0)
    # labels follow the (balanced) online originals: no class clustering
    counts = np.bincount(s.y, minlength=10)
    assert counts.min() > 150 and counts.max() < 250
    # no sample is a verbatim original, yet a classifier of originals reads them as often as
    # it reads deformed test digits
    orig = {img.tobytes() for img in ds.x_online}
    assert not any(img.tobytes() in orig for img in s.x)
    acc_stream = _centroid_accuracy(ds, s.x, s.y)
    acc_test = _centroid_accuracy(
        ds, elastic_deform(ds.x_test, np.random.default_rng(0)), ds.y_test
    )
    assert abs(acc_stream - acc_test) < 0.08


@pytest.mark.parametrize("kind", ["analog", "digital"])
def test_drift_streams_feed_the_control_input(ds: Dataset, kind: str) -> None:
    ctrl = make_stream("control", ds, 700, seed=4)
    drift = make_stream(kind, ds, 700, seed=4)
    assert drift.kind == kind and kind in drift.description
    np.testing.assert_array_equal(drift.x, ctrl.x)
    np.testing.assert_array_equal(drift.y, ctrl.y)


def test_bad_arguments_are_user_errors(ds: Dataset) -> None:
    with pytest.raises(UserError) as err:
        make_stream("drift", ds, 10)
    for kind in STREAMS:
        assert kind in str(err.value)
    with pytest.raises(UserError, match="n_samples"):
        make_stream("control", ds, -1)
    with pytest.raises(UserError, match="segment"):
        make_stream("shift", ds, 10, segment=0)
    empty = make_stream("shift", ds, 0)
    assert empty.x.shape == (0, 28, 28, 1) and empty.y.shape == (0,)


# ---- the distribution-shift environment -----------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shift_segments_differ(ds: Dataset, seed: int) -> None:
    seg = 500
    s = make_stream("shift", ds, 6 * seg, seed=seed, segment=seg)
    np.testing.assert_array_equal(s.phase, np.arange(6 * seg) // seg)
    assert len(s.segment_params) == 6
    hists = [np.bincount(s.y[s.phase == k], minlength=10).astype(float) for k in range(6)]
    means = [float(s.x[s.phase == k].mean()) for k in range(6)]
    for k in range(5):
        # consecutive segments: different class mix or different intensity statistics
        assert _tv(hists[k], hists[k + 1]) > 0.15 or abs(means[k] - means[k + 1]) > 0.02, k
    # segment 0 is already shifted from the balanced offline class mix
    assert _tv(hists[0], np.ones(10)) > 0.15
    # the empirical class mix follows the segment's parameters
    for k in range(6):
        p = np.asarray(s.segment_params[k]["class_p"])
        assert _tv(hists[k], p) < 0.08


def test_shift_augmentations_show_in_the_pixels(ds: Dataset) -> None:
    """Segments with a background gradient are brighter; with noise, rougher."""
    seg = 400
    s = make_stream("shift", ds, 30 * seg, seed=11, segment=seg)
    ctrl = make_stream("control", ds, seg, seed=11)
    base_mean = float(ctrl.x.mean())
    base_dark = float((ctrl.x == 0).mean())
    seen = {"background": 0, "noise": 0}
    for k, p in enumerate(s.segment_params):
        x = s.x[s.phase == k]
        if "background" in p:
            seen["background"] += 1
            assert float(x.mean()) > base_mean + 0.03, (k, p)
        if "noise" in p:
            seen["noise"] += 1
            assert float((x == 0).mean()) < base_dark - 0.1, (k, p)
    assert seen["background"] > 3 and seen["noise"] > 3


def test_shift_is_harder_than_control(ds: Dataset) -> None:
    for seed in (0, 1):
        ctrl = make_stream("control", ds, 3000, seed=seed)
        shift = make_stream("shift", ds, 3000, seed=seed, segment=500)
        assert _centroid_accuracy(ds, shift.x, shift.y) < _centroid_accuracy(ds, ctrl.x, ctrl.y)


def test_segment_params_are_a_pure_function_of_seed() -> None:
    a = [segment_params(3, k, 10) for k in range(8)]
    assert a == [segment_params(3, k, 10) for k in range(8)]
    assert a != [segment_params(4, k, 10) for k in range(8)]
    for p in a:
        assert abs(sum(p["class_p"]) - 1.0) < 1e-3
        assert sum(v > 0 for v in p["class_p"]) >= 2


def test_shift_with_full_segment_length(ds: Dataset) -> None:
    s = make_stream("shift", ds, 2500, seed=0)  # default segment: 10k, so one segment
    assert np.all(s.phase == 0) and len(s.segment_params) == 1


@pytest.mark.parametrize(("kind", "n", "segment"), [("shift", 2345, 700), ("control", 2001, 10_000),
                                                     ("analog", 999, 10_000), ("shift", 0, 5)])
def test_stream_blocks_are_the_stream(kind: str, n: int, segment: int) -> None:
    """The block iterator a long run consumes gives make_stream's samples, in order."""
    from lrt.data import stream_blocks

    ds = load_dataset("mnist5k")
    whole = make_stream(kind, ds, n, seed=7, segment=segment)
    blocks = list(stream_blocks(kind, ds, n, seed=7, segment=segment))
    assert all(len(x) == len(y) <= 1000 for x, y in blocks)
    x = np.concatenate([b[0] for b in blocks]) if blocks else whole.x[:0]
    y = np.concatenate([b[1] for b in blocks]) if blocks else whole.y[:0]
    assert x.dtype == whole.x.dtype and y.dtype == whole.y.dtype
    np.testing.assert_array_equal(x, whole.x)
    np.testing.assert_array_equal(y, whole.y)
