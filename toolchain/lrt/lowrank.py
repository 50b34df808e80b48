"""Float reference of the LRT streaming low-rank gradient accumulator (numpy only).

The algorithm and its derivation are in docs/ESTIMATOR.md. A weight gradient is a sum of
low-rank blocks L R^T (a dense layer's per-sample gradient is dz a^T, rank 1; a conv
layer's is sum_p dz_p patch_p^T, rank <= min(n, m, pixels)). The accumulator keeps a rank-r
estimate

    G ~= QL diag(cx) QR^T      (QL: n x r, QR: m x r, orthonormal columns, cx descending)

and one block step adds left @ right.T (left: n x k, right: m x k):

1. QR of [QL | left] and [QR | right] by classical Gram-Schmidt, column by column, with a
   second pass where the first shrank the column more than 4 times ("twice is enough",
   kappa = 4); a column whose residual is below 2^-10 of its norm is numerically
   dependent and adds no direction. [QL | left] = [QL | PL] A~, A~ = [[I, A1], [0, A2]];
2. the core C = A~ blockdiag(diag(cx), I_k) B~^T = diag(cx, 0) + A B^T,
   (r + kl) x (r + kr), and its SVD U diag(sigma) V^T; singular values below 2^-14 sigma_0
   count as zero (the noise level of the C code's int16 bases);
3. truncation from rank <= r + k back to r: biased = keep the r largest; unbiased = the
   minimum-variance unbiased truncation (keep the largest i, spread the tail over
   k' = r - i equal weights along a random projector built by a chain of Givens rotations,
   random signs per tail row);
4. QL <- [QL | PL] U T, QR <- [QR | PR] V T, cx <- the new weights.

The flush turns the estimate into a weight update dW = lr B_eff^p L R^T (L, R the factors
scaled by sqrt(cx), optionally max-normed), quantised to the weight LSB, written only if at
least rho_min of the weights change.

This module is the oracle of the integer C code (firmware_templates/lib/lrt_lowrank.c):
same steps, same thresholds, same sign convention (one xorshift32 word per block step, bit
31 - a is the sign of tail row a). The unbiased estimator is compared with the C code in
distribution, not path by path (a random path is discontinuous where the SVD basis of equal
singular values jumps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lrt.rng import XorShift32

MASK32 = 0xFFFFFFFF
SIGMA_FLOOR = 2.0**-14
RESID_FLOOR = 2.0**-10
KAPPA = 4.0  # Gram-Schmidt: a second pass where the first shrank a column more than this
PROJ_TOL = 1e-9  # ties between the carry and p_j within float rounding
MAX_BLOCK = 16  # columns k of one block step (twin of LRT_LOWRANK_MAX_BLOCK)

SignSource = Callable[[], int]
"""Returns one 32-bit word per block step; bit 31 - a is the sign of the a-th tail row."""


def signs_from_word(word: int, count: int) -> np.ndarray:
    """+-1 signs of the tail rows: a set bit (31 - a) means -1."""
    bits = (word >> (31 - np.arange(count))) & 1
    return (1 - 2 * bits).astype(np.float64)


def givens_projector(p: np.ndarray) -> np.ndarray:
    """Orthonormal X (N x k, k = sum p) whose projector X X^T has diagonal p (0 <= p_j <= 1).

    Entries with p_j = 1 get a unit column of their own and entries with p_j = 0 a zero row.
    The others (N' of them, each strictly inside (0, 1)) go through a chain of N' - 1 Givens
    rotations (docs/ESTIMATOR.md): the first starts selected with diagonal value c = 1; at
    position j the next basis vector is selected (f = 1) iff p_j > c, and a rotation in the
    plane (j, j + 1) with sin^2 = (p_j - c) / (f - c) sets diagonal entry j to p_j; the
    carry c + f - p_j (in [0, 1]) moves on to j + 1. The selected count is the sum of these
    p because the trace is preserved and the last carry, in [0, 1], differs from the last
    p (in (0, 1)) by an integer.
    """
    p = np.asarray(p, dtype=np.float64)
    n = len(p)
    ones = np.flatnonzero(p >= 1.0)
    mid = np.flatnonzero((p > 0.0) & (p < 1.0))
    cols = [np.eye(n)[:, j] for j in ones]
    # rounding can leave a near-tie that selects one vector too many; the count is known
    wanted = round(float(p.sum())) - len(ones)
    if len(mid) and wanted > 0:
        pm = p[mid]
        g = np.eye(len(mid))
        selected = [0]
        c = 1.0
        for j in range(len(mid) - 1):
            f = 1.0 if pm[j] > c + PROJ_TOL else 0.0  # a tie (rounding) needs no new vector
            if f:
                selected.append(j + 1)
            den = f - c
            s2 = 0.0 if den == 0.0 else min(max((pm[j] - c) / den, 0.0), 1.0)
            cs, sn = math.sqrt(1.0 - s2), math.sqrt(s2)
            g[[j, j + 1]] = np.array([[cs, -sn], [sn, cs]]) @ g[[j, j + 1]]
            c = min(max(c + f - pm[j], 0.0), 1.0)
        for s in selected[:wanted]:
            col = np.zeros(n)
            col[mid] = g[:, s]
            cols.append(col)
    return np.stack(cols, axis=1) if cols else np.zeros((n, 0))


def unbiased_split(sigma: np.ndarray, rank: int) -> tuple[int, float]:
    """(i, s1): keep sigma_0..sigma_{i-1}, spread s1 = sum_{j >= i} sigma_j over r - i slots.

    The smallest i with (r - i) sigma_i <= s1 (i = r - 1 always qualifies); sigma sorted
    descending with more than r non-zero entries.
    """
    tail = np.cumsum(sigma[::-1])[::-1]
    i = next(i for i in range(rank) if (rank - i) * sigma[i] <= tail[i])
    return i, float(tail[i])


def truncation(
    sigma: np.ndarray, rank: int, unbiased: bool, word: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-r truncation of sorted singular values (any number N of them).

    Returns T (N x r) and the new weights cx (r) such that the new estimate is
    U T diag(cx) T^T V^T (U, V the singular vectors). Unbiased: E[T diag(cx) T^T] =
    diag(sigma) over the random signs, with the smallest variance an unbiased rank-r
    estimate can have.
    """
    big = len(sigma)
    t = np.zeros((big, rank))
    cx = np.zeros(rank)
    live = int(np.count_nonzero(sigma > 0))
    if live <= rank or not unbiased:
        keep = min(live, rank)
        t[np.arange(keep), np.arange(keep)] = 1.0
        cx[:keep] = sigma[:keep]
        return t, cx
    i, s1 = unbiased_split(sigma[:live], rank)
    kp = rank - i
    t[np.arange(i), np.arange(i)] = 1.0
    cx[:i] = sigma[:i]
    p = np.clip(sigma[i:live] * kp / s1, 0.0, 1.0)
    x = givens_projector(p)
    t[i:live, i:] = signs_from_word(word, live - i)[:, None] * x
    cx[i:] = s1 / kp
    return t, cx


def extend_basis(q: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[q | cols] = [q | P] [[I, A1], [0, A2]]: returns P (d x kk) and A = [A1; A2].

    Classical Gram-Schmidt, column by column against q and the new columns so far: all the
    coefficients from the same x, then one update, repeated where the pass shrank the norm more
    than KAPPA times (the C code's steps); a column whose residual is below RESID_FLOOR of
    its norm adds no new direction.
    """
    d, k = cols.shape
    r = q.shape[1]
    a = np.zeros((r + k, k))
    basis = np.zeros((d, r + k))
    basis[:, :r] = q
    kk = 0
    for c in range(k):
        x = cols[:, c].astype(np.float64).copy()
        norm0 = float(np.linalg.norm(x))
        if norm0 == 0.0:
            continue
        used = basis[:, : r + kk]
        nr = norm0
        for _ in range(2):
            before = nr
            dots = used.T @ x
            a[: r + kk, c] += dots
            x -= used @ dots
            nr = float(np.linalg.norm(x))
            if KAPPA * nr >= before:
                break
        if nr <= RESID_FLOOR * norm0:
            continue
        a[r + kk, c] = nr
        basis[:, r + kk] = x / nr
        kk += 1
    return basis[:, r : r + kk].copy(), a[: r + kk]


def canonical_svd(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD, singular values descending, each (U_k, V_k) pair signed so that the largest
    |U_ik| is positive (the C code's convention: the random signs of the unbiased truncation
    then act on the same vectors)."""
    u, s, vt = np.linalg.svd(c, full_matrices=False)
    v = vt.T.copy()
    for k in range(u.shape[1]):
        p = int(np.argmax(np.abs(u[:, k])))
        if u[p, k] < 0:
            u[:, k] *= -1
            v[:, k] *= -1
    return u, s, v


class MaxNorm:
    """Per-tensor gradient max-norm (paper, "Supporting techniques"; twin of lrt_mnorm)."""

    def __init__(self, beta: float = 0.999, eps: float = 1e-4) -> None:
        self.beta, self.eps = beta, eps
        self.steps = 0
        self.mv = eps

    def divisor(self, xmax: float) -> float:
        """Update with max|x| and return max(max|x| + eps, x_hat)."""
        self.steps += 1
        xm = xmax + self.eps
        self.mv = self.beta * self.mv + (1.0 - self.beta) * xm
        xhat = self.mv / (1.0 - self.beta**self.steps)
        return max(xm, xhat)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x / self.divisor(float(np.max(np.abs(x))) if x.size else 0.0)


@dataclass(frozen=True)
class LowRankConfig:
    """Hyper-parameters; defaults are the paper's (rank 4, B = 10 conv / 100 dense)."""

    rank: int = 4
    unbiased: bool = True
    rho_min: float = 0.01
    lr: float = 0.01
    batch_pow: float = 0.5  # lr_eff = lr * B_eff ** batch_pow
    maxnorm: bool = True  # max-norm L and R at the flush ("post")
    discount: float = 1.0  # cx and B_eff factor when a flush is deferred
    b_cap: float = 0.0  # B_eff of the write step at most this (0: no cap)
    maxnorm_beta: float = 0.999  # beta of the flush's max-norm running averages
    seed: int = 1
    sigma_floor: float = SIGMA_FLOOR


class LowRankAccumulator:
    """Streaming rank-r accumulator of a sum of low-rank blocks (float64)."""

    def __init__(
        self, n: int, m: int, config: LowRankConfig | None = None, signs: SignSource | None = None
    ) -> None:
        self.n, self.m = n, m
        self.cfg = config or LowRankConfig()
        if not self.cfg.rank >= 1:
            raise ValueError(f"rank must be >= 1, got {self.cfg.rank}")
        self.signs: SignSource = signs or XorShift32(self.cfg.seed)
        self.mn_l, self.mn_r = MaxNorm(self.cfg.maxnorm_beta), MaxNorm(self.cfg.maxnorm_beta)
        self.reset()

    @property
    def rank(self) -> int:
        return self.cfg.rank

    def reset(self) -> None:
        """Empty the accumulator (after a weight write); the sign source and max-norm go on."""
        self.ql = np.zeros((self.n, self.rank))
        self.qr = np.zeros((self.m, self.rank))
        self.cx = np.zeros(self.rank)
        self.b_eff = 0.0
        self.steps = 0
        self.applied = 0

    def step_block(self, left: np.ndarray, right: np.ndarray) -> bool:
        """Add left @ right.T (left n x k, right m x k). False if the block is zero."""
        word = self.signs()  # one word per call, like the C code
        self.steps += 1
        left = np.asarray(left, dtype=np.float64).reshape(self.n, -1)
        right = np.asarray(right, dtype=np.float64).reshape(self.m, -1)
        if not left.any() or not right.any():
            return False
        r = self.rank
        pl, a = extend_basis(self.ql, left)
        pr, b = extend_basis(self.qr, right)
        core = a @ b.T
        core[np.arange(r), np.arange(r)] += self.cx
        u, sigma, v = canonical_svd(core)
        if sigma[0] == 0.0:
            return False
        sigma = np.where(sigma < self.cfg.sigma_floor * sigma[0], 0.0, sigma)
        t, self.cx = truncation(sigma, r, self.cfg.unbiased, word)
        self.ql = np.hstack([self.ql, pl]) @ (u @ t)
        self.qr = np.hstack([self.qr, pr]) @ (v @ t)
        self.applied += 1
        return True

    def step(self, u: np.ndarray, v: np.ndarray) -> bool:
        """Add the outer product u v^T (a block of one column)."""
        return self.step_block(np.ravel(u)[:, None], np.ravel(v)[:, None])

    def add_sample(
        self, dz: np.ndarray, patches: np.ndarray, block_pixels: int | None = None
    ) -> None:
        """Add one sample's weight gradient sum_p dz[p] patches[p]^T (dz: P x n, patches:
        P x m) the way the firmware does: as one block (left = I_n, right = G^T) if
        block_pixels is None, else in blocks of block_pixels non-zero pixels."""
        if block_pixels is None:
            self.step_block(np.eye(self.n), patches.T @ dz)
            return
        live = np.flatnonzero(np.any(dz != 0, axis=1))
        for s in range(0, len(live), block_pixels):
            idx = live[s : s + block_pixels]
            self.step_block(dz[idx].T, patches[idx].T)

    def end_sample(self) -> None:
        self.b_eff += 1.0

    def estimate(self) -> np.ndarray:
        """The current rank-r estimate of the accumulated sum (n x m)."""
        return (self.ql * self.cx) @ self.qr.T

    def lr_eff(self) -> float:
        b = min(self.b_eff, self.cfg.b_cap) if self.cfg.b_cap > 0 else self.b_eff
        return self.cfg.lr * b**self.cfg.batch_pow if self.b_eff > 0 else 0.0

    def flush_delta(self, weight_exp: int) -> np.ndarray:
        """Weight update in LSBs of 2**weight_exp (to subtract), round half up, int16 range.

        Updates the max-norm state (once per flush attempt, as in the reference code).
        """
        root = np.sqrt(self.cx)
        left, right = self.ql * root, self.qr * root
        if self.cfg.maxnorm:
            left = self.mn_l(left)
            right = self.mn_r(right)
        dw = self.lr_eff() * (left @ right.T)
        return np.clip(np.floor(dw / 2.0**weight_exp + 0.5), -32767, 32767).astype(np.int64)

    def min_nonzero(self) -> int:
        # round first: 0.01 * 7700 is 77.00000000000001 in binary floating point
        return max(1, math.ceil(round(self.cfg.rho_min * self.n * self.m, 9)))

    def defer(self) -> None:
        """Flush rejected: keep accumulating with cx and B_eff times the discount."""
        self.cx = self.cx * self.cfg.discount
        self.b_eff *= self.cfg.discount

    def flush(self, weights: np.ndarray, weight_exp: int) -> tuple[np.ndarray, bool]:
        """W <- clip(W - delta) if at least rho_min of the deltas are non-zero, then reset."""
        delta = self.flush_delta(weight_exp)
        if np.count_nonzero(delta) >= self.min_nonzero():
            new = np.clip(weights.astype(np.int64) - delta, -128, 127).astype(weights.dtype)
            self.reset()
            return new, True
        self.defer()
        return weights, False
