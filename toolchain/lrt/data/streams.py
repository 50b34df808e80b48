"""Online streams: the paper's four environments, as finite, fully materialised sample streams.

Every stream is grown from the dataset's online originals: each sample is an original
drawn at random and elastically deformed (a fresh deformation per sample), as the paper
grew 50k originals into 100k online samples.

* ``control``: just that; same statistics as the offline data.
* ``shift``: the paper's distribution-shift environment. Every ``segment`` samples (paper:
  10,000) a new random mix of augmentations starts, drawn from the seed:
  - class-distribution clustering (always on): the segment draws its labels from a
    Dirichlet-weighted random subset of 2..K classes (K = the dataset's);
  - spatial transform (each segment: on with probability 1/2): rotation, scaling and shift,
    each a segment-wide offset plus per-sample jitter;
  - background gradient with contrast scaling (on with probability 1/2): a linear ramp in a
    random direction added under the digit, whose ink is scaled down;
  - white Gaussian noise (on with probability 1/2).
  Segment 0 is already shifted relative to the offline data (its class mix is skewed and it
  may carry the other augmentations), so on-device training has something to learn from the
  first sample on. ``phase`` holds the segment index of every sample.
* ``analog`` / ``digital``: the input stream is the control stream (identical arrays for the
  same seed); the drift acts on the stored weights, applied by the NVM fault backend.

Streams are generated in blocks whose random state depends only on (seed, segment, block),
so a shorter stream is a prefix of a longer one with the same seed and segment length, and
``stream_blocks`` gives a stream block by block (what a long emulator run consumes).
Values stay in [0, 1]. Images of several channels (a dataset file's) share one warp per
image; backgrounds and noise act on every channel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrt.data.augment import (
    affine_grid,
    background_gradient,
    displacement_fields,
    identity_grid,
    warp_channels,
)
from lrt.data.datasets import Dataset
from lrt.errors import UserError

STREAMS: tuple[str, ...] = ("control", "shift", "analog", "digital")
ELASTIC_ALPHA = 34.0
ELASTIC_SIGMA = 4.0
_BLOCK = 1000
_SALT = {"control": 0xC0, "shift": 0x5F}
_PARAMS = 0xFFFF  # block index reserved for a segment's parameter draw


@dataclass(frozen=True)
class Stream:
    """A finite online stream, deterministic given its seed."""

    kind: str
    x: np.ndarray  # float32 [N, H, W, C] in [0, 1] (the dataset's image shape)
    y: np.ndarray  # uint8 [N]
    phase: np.ndarray  # int [N]: environment segment of each sample
    description: str
    segment_params: tuple[dict[str, Any], ...] = field(default=())

    def __len__(self) -> int:
        return len(self.y)


DEFAULT_SEGMENT = 10_000  # samples per shift segment unless told otherwise


def _check_stream(kind: str, dataset: Dataset, n_samples: int, seed: int, segment: int) -> None:
    if kind not in STREAMS:
        raise UserError(f"unknown stream kind {kind!r}; choose one of {', '.join(STREAMS)}")
    if n_samples < 0:
        raise UserError(f"n_samples must be >= 0, got {n_samples}")
    if segment < 1:
        raise UserError(f"segment must be >= 1 sample, got {segment}")
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    if len(dataset.y_online) == 0:
        raise UserError(f"dataset {dataset.name!r} has no online originals to grow a stream from")


def stream_blocks(
    kind: str, dataset: Dataset, n_samples: int, seed: int = 0, segment: int = DEFAULT_SEGMENT
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The samples of make_stream(...) as consecutive (x, y) blocks of at most 1,000, made
    as they are asked for: a long stream never has to be held in memory at once."""
    _check_stream(kind, dataset, n_samples, seed, segment)
    blocks = (
        _shift_blocks(dataset, n_samples, seed, segment)
        if kind == "shift"
        else _control_blocks(dataset, n_samples, seed)
    )
    for x, y in blocks:
        yield x, y.astype(np.uint8)


def make_stream(
    kind: str, dataset: Dataset, n_samples: int, seed: int = 0, segment: int = DEFAULT_SEGMENT
) -> Stream:
    """The ``kind`` stream (one of STREAMS) of ``n_samples`` samples grown from ``dataset``."""
    _check_stream(kind, dataset, n_samples, seed, segment)
    if kind == "shift":
        return _shift_stream(dataset, n_samples, seed, segment)
    stream = _control_stream(dataset, n_samples, seed)
    if kind == "control":
        return stream
    drift = "Gaussian noise" if kind == "analog" else "random bit flips"
    desc = (
        f"{kind} drift: input = control stream ({stream.description}); {drift} on the "
        "stored weights is applied by the NVM fault backend"
    )
    return Stream(kind, stream.x, stream.y, stream.phase, desc)


# ---- control ------------------------------------------------------------------------------
def _control_blocks(ds: Dataset, n: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for b, lo in enumerate(range(0, n, _BLOCK)):
        rng = np.random.default_rng([seed, _SALT["control"], 0, b])
        idx = rng.integers(0, len(ds.y_online), size=_BLOCK)  # full block: prefix-stable
        keep = min(_BLOCK, n - lo)
        yield _deform(ds.x_online[idx], rng)[:keep], ds.y_online[idx[:keep]]


def _control_stream(ds: Dataset, n: int, seed: int) -> Stream:
    blocks = list(_control_blocks(ds, n, seed))
    x, y = _concat([b[0] for b in blocks], [b[1] for b in blocks], ds)
    desc = (
        f"control: {n} elastically deformed samples (alpha {ELASTIC_ALPHA:g}, sigma "
        f"{ELASTIC_SIGMA:g}) of {len(ds.y_online)} {ds.name} online originals, seed {seed}"
    )
    return Stream("control", x, y, np.zeros(n, dtype=np.int32), desc)


def _deform(
    originals: np.ndarray,
    rng: np.random.Generator,
    grid: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Elastically deformed originals [m, H, W, C] (on ``grid``: the positions of a
    geometric transform), float32 [m, H, W, C]."""
    m, h, w, _ = originals.shape
    ys, xs = grid if grid is not None else identity_grid(m, h, w)
    dy, dx = displacement_fields(rng, m, h, w, ELASTIC_ALPHA, ELASTIC_SIGMA)
    return warp_channels(originals, ys + dy, xs + dx)


def _concat(
    xs: list[np.ndarray], ys: list[np.ndarray], ds: Dataset
) -> tuple[np.ndarray, np.ndarray]:
    if not xs:
        h, w, c = ds.x_online.shape[1:]
        return np.zeros((0, h, w, c), dtype=np.float32), np.zeros(0, dtype=np.uint8)
    return np.concatenate(xs), np.concatenate(ys).astype(np.uint8)


# ---- distribution shift -------------------------------------------------------------------
def segment_params(seed: int, index: int, num_classes: int) -> dict[str, Any]:
    """The augmentation mix of shift segment ``index`` (a pure function of the seed)."""
    rng = np.random.default_rng([seed, _SALT["shift"], index, _PARAMS])
    k = int(rng.integers(2, num_classes + 1))
    classes = np.sort(rng.choice(num_classes, size=k, replace=False))
    weights = rng.dirichlet(np.ones(k))
    class_p = np.zeros(num_classes)
    class_p[classes] = weights
    on = rng.random(3) < 0.5
    params: dict[str, Any] = {"segment": index, "class_p": [round(float(p), 4) for p in class_p]}
    # Parameters are drawn whether or not the transform is on, so switching one transform
    # on does not reshuffle the others.
    spatial = {
        "angle": float(rng.uniform(-25.0, 25.0)),
        "angle_jitter": float(rng.uniform(5.0, 20.0)),
        "scale": float(np.exp(rng.uniform(-0.25, 0.15))),
        "scale_jitter": float(rng.uniform(0.0, 0.1)),
        "shift": [float(v) for v in rng.uniform(-2.0, 2.0, size=2)],
        "shift_jitter": float(rng.uniform(0.0, 2.5)),
    }
    background = {
        "strength": float(rng.uniform(0.2, 0.6)),
        "contrast": float(rng.uniform(0.4, 0.9)),
    }
    noise = {"sigma": float(rng.uniform(0.05, 0.25))}
    if on[0]:
        params["spatial"] = spatial
    if on[1]:
        params["background"] = background
    if on[2]:
        params["noise"] = noise
    return params


def _shift_blocks(
    ds: Dataset, n: int, seed: int, segment: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    by_class = [np.flatnonzero(ds.y_online == c) for c in range(ds.num_classes)]
    present = np.array([len(members) > 0 for members in by_class])
    for s, seg_lo in enumerate(range(0, n, segment)):
        p = segment_params(seed, s, ds.num_classes)
        seg_n = min(segment, n - seg_lo)
        for b, lo in enumerate(range(0, seg_n, _BLOCK)):
            rng = np.random.default_rng([seed, _SALT["shift"], s, b])
            m = min(_BLOCK, segment - lo)  # block size fixed by the segment, not by n
            x, y = _shift_block(ds, rng, p, m, by_class, present)
            keep = min(m, seg_n - lo)
            yield x[:keep], y[:keep]


def _shift_stream(ds: Dataset, n: int, seed: int, segment: int) -> Stream:
    blocks = list(_shift_blocks(ds, n, seed, segment))
    x, y = _concat([b[0] for b in blocks], [b[1] for b in blocks], ds)
    params = [segment_params(seed, s, ds.num_classes) for s in range(-(-n // segment))]
    phase = (np.arange(n) // segment).astype(np.int32)
    desc = (
        f"shift: {n} samples of {ds.name} online originals, elastically deformed, in "
        f"{len(params)} segment(s) of {segment} with a new augmentation mix each "
        f"(seed {seed}): " + "; ".join(_describe(p) for p in params)
    )
    return Stream("shift", x, y, phase, desc, tuple(params))


def _shift_block(
    ds: Dataset,
    rng: np.random.Generator,
    p: dict[str, Any],
    m: int,
    by_class: list[np.ndarray],
    present: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    class_p = np.asarray(p["class_p"]) * present
    if class_p.sum() == 0:
        class_p = present.astype(np.float64)
    labels = rng.choice(ds.num_classes, size=m, p=class_p / class_p.sum())
    idx = np.empty(m, dtype=np.int64)
    for c in np.unique(labels):
        slots = np.flatnonzero(labels == c)
        idx[slots] = by_class[c][rng.integers(0, len(by_class[c]), size=len(slots))]
    _, h, w, _ = ds.x_online.shape
    grid = None
    if "spatial" in p:
        sp = p["spatial"]
        angle = sp["angle"] + rng.uniform(-1.0, 1.0, size=m) * sp["angle_jitter"]
        scale = sp["scale"] * np.exp(rng.uniform(-1.0, 1.0, size=m) * sp["scale_jitter"])
        shift = np.asarray(sp["shift"]) + rng.uniform(-1.0, 1.0, size=(m, 2)) * sp["shift_jitter"]
        grid = affine_grid(m, h, w, angle, scale, shift)
    img = _deform(ds.x_online[idx], rng, grid)
    if "background" in p:
        bg = p["background"]
        ramp = background_gradient(rng, m, h, w, bg["strength"])
        contrast = bg["contrast"] * rng.uniform(0.9, 1.1, size=m).astype(np.float32)
        img = ramp[..., None] + contrast[:, None, None, None] * img
    if "noise" in p:
        img = img + rng.normal(0.0, p["noise"]["sigma"], size=img.shape).astype(np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    return img.astype(np.float32, copy=False), ds.y_online[idx]


def _describe(p: dict[str, Any]) -> str:
    top = np.argsort(p["class_p"])[::-1]
    mix = ",".join(f"{c}:{p['class_p'][c]:.2f}" for c in top if p["class_p"][c] >= 0.005)
    parts = [f"seg {p['segment']} classes {{{mix}}}"]
    if "spatial" in p:
        sp = p["spatial"]
        parts.append(
            f"rot {sp['angle']:+.0f}+-{sp['angle_jitter']:.0f}deg scale {sp['scale']:.2f} "
            f"shift ({sp['shift'][0]:+.1f},{sp['shift'][1]:+.1f})+-{sp['shift_jitter']:.1f}px"
        )
    if "background" in p:
        bg = p["background"]
        parts.append(f"bg gradient <= {bg['strength']:.2f} contrast {bg['contrast']:.2f}")
    if "noise" in p:
        parts.append(f"noise sigma {p['noise']['sigma']:.2f}")
    return " ".join(parts)
