"""The fixed-point one-sided Jacobi SVD of lrt_lowrank.c against numpy.linalg.svd.

Property tests run through ctypes on an unsanitised shared library (thousands of cases in a
second); the same kinds of matrices also go through the ASan/UBSan driver.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.lowrank import build_driver, build_shared, run

C_MAX = 2**28


class Svd:
    def __init__(self, so: Path) -> None:
        self.lib = ctypes.CDLL(str(so))
        self.lib.lrt_lowrank_svd.restype = ctypes.c_int
        self.lib.lrt_lowrank_svd.argtypes = [ctypes.c_void_p, ctypes.c_uint8, ctypes.c_void_p,
                                             ctypes.c_void_p]  # fmt: skip

    def __call__(self, a: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        q = a.shape[0]
        buf = np.ascontiguousarray(a, dtype=np.int32).copy()
        sigma = np.zeros(q, dtype=np.uint32)
        v = np.zeros((q, q), dtype=np.int32)
        rc = self.lib.lrt_lowrank_svd(buf.ctypes.data, q, sigma.ctypes.data, v.ctypes.data)
        return rc, sigma.astype(np.float64), buf / 2**30, v / 2**30


@pytest.fixture(scope="module")
def svd(tmp_path_factory: pytest.TempPathFactory) -> Svd:
    return Svd(build_shared(tmp_path_factory.mktemp("svd")))


def make_matrix(kind: int, q: int, rng: np.random.Generator) -> np.ndarray:
    """Random, rank-deficient, LRT-shaped (diag + rank one) and degenerate matrices."""
    if kind == 0:
        a = rng.integers(-C_MAX, C_MAX + 1, size=(q, q)).astype(np.float64)
    elif kind == 1:
        k = int(rng.integers(1, q))
        a = rng.normal(size=(q, k)) @ rng.normal(size=(k, q))
    elif kind == 2:
        d = np.sort(rng.exponential(size=q))[::-1]
        d[-1] = 0.0
        a = np.diag(d) + np.outer(rng.normal(size=q), rng.normal(size=q)) * rng.exponential()
    else:
        basis, _ = np.linalg.qr(rng.normal(size=(q, q)))
        s = np.where(np.arange(q) < q // 2, 1.0, 0.5)
        a = basis @ np.diag(s) @ basis.T
    scale = 2.0 ** rng.uniform(10, 28) / max(np.abs(a).max(), 1e-300)
    return np.clip(np.round(a * scale), -C_MAX, C_MAX).astype(np.int64)


def check(a: np.ndarray, rc: int, sigma: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    q = a.shape[0]
    assert 1 <= rc <= 16  # LRT_LOWRANK_JACOBI_MAX_SWEEPS
    ref = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    smax = max(float(ref[0]), 1.0)
    assert np.all(np.diff(sigma) <= 0)
    # Errors: relative ~1e-7 (Q30 rotations) plus an absolute floor of a few units of the
    # int32 entries, which every rotation rounds (the accumulator scales C to ~2^27, where
    # the floor is negligible; these matrices go down to 2^10). Measured over 3000 matrices
    # at 2^26..2^28: sigma 2.6e-7, reconstruction 4.1e-7, V 4.6e-8, U 3.3e-5 (sigma > 1e-3).
    np.testing.assert_allclose(sigma, ref, atol=1e-6 * smax + 2 * q)
    rec = u @ np.diag(sigma) @ v.T
    assert np.linalg.norm(rec - a) <= 1e-6 * max(float(np.linalg.norm(a)), 1.0) + q * q
    np.testing.assert_allclose(v.T @ v, np.eye(q), atol=1e-7)
    big = sigma > 1e-3 * smax
    ub, inv = u[:, big], 1.0 / sigma[big]
    tol = 2e-6 + 2 * q * (inv[:, None] + inv[None, :])  # a column's noise is ~q units / sigma
    assert np.all(np.abs(ub.T @ ub - np.eye(len(inv))) <= tol)
    assert not u[:, sigma == 0].any()
    for k in np.flatnonzero(sigma > 0):  # canonical sign: the largest |U_ik| is positive
        assert u[np.argmax(np.abs(u[:, k])), k] > 0


@settings(max_examples=400, deadline=None)
@given(q=st.integers(2, 9), kind=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_svd_matches_numpy(svd: Svd, q: int, kind: int, seed: int) -> None:
    a = make_matrix(kind, q, np.random.default_rng(seed))
    check(a, *svd(a))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), q=st.integers(2, 9))
def test_svd_of_arbitrary_integer_matrices(svd: Svd, data: st.DataObject, q: int) -> None:
    entries = data.draw(st.lists(st.integers(-C_MAX, C_MAX), min_size=q * q, max_size=q * q))
    a = np.array(entries, dtype=np.int64).reshape(q, q)
    check(a, *svd(a))


def test_svd_edge_cases(svd: Svd) -> None:
    zero = np.zeros((4, 4), dtype=np.int64)
    rc, sigma, u, v = svd(zero)
    assert rc == 1 and not sigma.any() and not u.any()
    np.testing.assert_array_equal(v, np.eye(4))
    one = np.zeros((5, 5), dtype=np.int64)
    one[4, 4] = 12345  # the LRT state after its first step
    rc, sigma, u, v = svd(one)
    assert sigma.tolist() == [12345, 0, 0, 0, 0] and u[4, 0] == 1.0 and v[4, 0] == 1.0
    check(np.full((9, 9), C_MAX, dtype=np.int64), *svd(np.full((9, 9), C_MAX, dtype=np.int64)))
    check(np.eye(3, dtype=np.int64) * 7, *svd(np.eye(3, dtype=np.int64) * 7))
    bad = np.zeros((3, 3), dtype=np.int64)
    bad[0, 0] = C_MAX + 1
    assert svd(bad)[0] < 0
    assert svd(np.zeros((25, 25), dtype=np.int64))[0] < 0  # above LRT_LOWRANK_MAX_CORE


@pytest.mark.parametrize("q", [10, 17, 24])
def test_svd_of_block_step_cores(svd: Svd, q: int) -> None:
    """The block step's cores: up to 24 x 24, entries <= 2^25 (Frobenius norm < 2^30)."""
    rng = np.random.default_rng(q)
    for kind in range(4):
        a = make_matrix(kind, q, rng) // 8
        check(a, *svd(a))


def test_svd_under_sanitizers(tmp_path: Path) -> None:
    driver = build_driver(tmp_path)
    rng = np.random.default_rng(99)
    mats = [make_matrix(k % 4, int(rng.integers(2, 10)), rng) for k in range(400)]
    text = "".join(f"V {a.shape[0]} " + " ".join(map(str, a.ravel())) + "\n" for a in mats)
    lines = run(driver, text + "Q\n")
    assert len(lines) == 4 * len(mats)
    for k, a in enumerate(mats):
        q = a.shape[0]
        rc = int(lines[4 * k].split()[1])
        sigma = np.array([int(x) for x in lines[4 * k + 1].split()[1:]], dtype=np.float64)
        u = np.array([int(x) for x in lines[4 * k + 2].split()[1:]]).reshape(q, q) / 2**30
        v = np.array([int(x) for x in lines[4 * k + 3].split()[1:]]).reshape(q, q) / 2**30
        check(a, rc, sigma, u, v)
