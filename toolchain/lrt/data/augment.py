"""Image augmentations, vectorised over a batch (numpy + scipy.ndimage).

Elastic deformation follows Simard, Steinkraus and Platt (ICDAR 2003), the augmentation
the paper used to grow its datasets: every pixel gets a random displacement drawn uniformly
from [-1, 1] per axis, the two displacement fields are smoothed with a Gaussian of width
``sigma`` and scaled by ``alpha`` (sigma ~ 4-6, alpha ~ 34-36 for 28x28 digits give
displacements of about one pixel that vary smoothly across the digit), and the image is
resampled at the displaced positions with bilinear interpolation (zero outside). The
smoothing pads the random field with zeros (as the widely used reference implementation
does), so displacements fade towards the border: RMS ~1.3 px, at most ~6 px, for the
defaults alpha 34, sigma 4.

Geometric transforms (rotate / scale / shift) are folded into the same sampling grid, so a
sample is interpolated once however many warps it gets. Photometric transforms
(background gradient, contrast, white noise) act on the warped image.

Images are float32 [N, H, W] or [N, H, W, C] in [0, 1] (the channels of an image share its
warp); every function keeps that range.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

_CHUNK = 2000  # bounds the float coordinate arrays (3 x chunk x H x W floats) in memory


def displacement_fields(
    rng: np.random.Generator, n: int, h: int, w: int, alpha: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Simard's smoothed random displacement fields (dy, dx), float32 [n, h, w]."""
    raw = rng.random((2, n, h, w), dtype=np.float32) * 2.0 - 1.0
    smooth = gaussian_filter(raw, sigma=(0.0, 0.0, sigma, sigma), mode="constant")
    smooth *= np.float32(alpha)
    return smooth[0], smooth[1]


def warp(images: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """Sample images [N, H, W] at (src_y, src_x) [N, H, W]: bilinear, zero outside."""
    n, h, w = images.shape
    idx = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, h, w))
    coords = np.stack([idx, src_y.astype(np.float32), src_x.astype(np.float32)])
    out = map_coordinates(images.astype(np.float32, copy=False), coords, order=1, mode="constant")
    return np.clip(out, 0.0, 1.0, out=out)


def warp_channels(images: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """``warp`` of every channel of images [N, H, W, C] at the same positions [N, H, W]."""
    channels = [warp(images[..., c], src_y, src_x) for c in range(images.shape[-1])]
    return np.stack(channels, axis=-1)


def identity_grid(n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys = np.broadcast_to(np.arange(h, dtype=np.float32)[None, :, None], (n, h, w))
    xs = np.broadcast_to(np.arange(w, dtype=np.float32)[None, None, :], (n, h, w))
    return ys, xs


def affine_grid(
    n: int,
    h: int,
    w: int,
    angle_deg: np.ndarray,
    scale: np.ndarray,
    shift_yx: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Source positions for rotating by angle, scaling by scale (about the centre), then shifting.

    Output pixel p shows source c + R(-angle) (p - c - t) / scale, i.e. the inverse map.
    ``angle_deg``, ``scale`` are [n]; ``shift_yx`` is [n, 2] in pixels.
    """
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    ys, xs = identity_grid(1, h, w)
    theta = np.deg2rad(angle_deg).astype(np.float32)[:, None, None]
    inv_s = (1.0 / scale).astype(np.float32)[:, None, None]
    dy = ys - cy - shift_yx[:, 0, None, None].astype(np.float32)
    dx = xs - cx - shift_yx[:, 1, None, None].astype(np.float32)
    cos, sin = np.cos(theta), np.sin(theta)
    src_y = cy + inv_s * (cos * dy - sin * dx)
    src_x = cx + inv_s * (sin * dy + cos * dx)
    return src_y, src_x


def elastic_deform(
    images: np.ndarray, rng: np.random.Generator, alpha: float = 34.0, sigma: float = 4.0
) -> np.ndarray:
    """Elastically deformed copies of ``images`` ([N, H, W] or [N, H, W, C], float in [0, 1];
    the channels of an image share its displacement field).

    Returns float32 of the input's shape. Deterministic given the state of ``rng``.
    """
    arr = np.asarray(images, dtype=np.float32)
    flat = arr.ndim == 3
    if flat:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"expected images [N, H, W(, C)], got shape {np.shape(images)}")
    n, h, w, _ = arr.shape
    out = np.empty_like(arr)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        dy, dx = displacement_fields(rng, hi - lo, h, w, alpha, sigma)
        ys, xs = identity_grid(hi - lo, h, w)
        out[lo:hi] = warp_channels(arr[lo:hi], ys + dy, xs + dx)
    return out[..., 0] if flat else out


def expand_elastic(
    x: np.ndarray, y: np.ndarray, copies: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The originals, then ``copies`` elastically deformed versions of each (paper's growth)."""
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    xs = [np.asarray(x, dtype=np.float32)]
    xs += [elastic_deform(x, rng) for _ in range(copies)]
    return np.concatenate(xs), np.tile(y, copies + 1)


def background_gradient(
    rng: np.random.Generator, n: int, h: int, w: int, strength: float
) -> np.ndarray:
    """Linear intensity ramps in random directions, float32 [n, h, w] in [0, strength].

    Each ramp runs between two random levels in [0, strength] along a random direction.
    """
    direction = rng.uniform(0.0, 2.0 * np.pi, size=n).astype(np.float32)[:, None, None]
    a = rng.uniform(0.0, strength, size=n).astype(np.float32)[:, None, None]
    b = rng.uniform(0.0, strength, size=n).astype(np.float32)[:, None, None]
    ys, xs = identity_grid(1, h, w)
    u = (ys / (h - 1) - 0.5) * np.sin(direction) + (xs / (w - 1) - 0.5) * np.cos(direction)
    ramp = u / np.float32(np.sqrt(0.5)) * 0.5 + 0.5  # diagonal extent -> [0, 1]
    return a + (b - a) * ramp
