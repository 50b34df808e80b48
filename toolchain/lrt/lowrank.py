"""Float reference of the LRT streaming low-rank gradient accumulator (numpy only).

Gural et al. 2020, "Low-Rank Training of Deep Neural Networks for Emerging Memory
Technology" (docs/ALGORITHM.md). A weight gradient is a long sum of outer products
u v^T (u = dz, v = layer input / conv patch). The accumulator keeps a rank-r estimate

    G ~= QL[:, :r] diag(cx) QR[:, :r]^T      (QL: n x q, QR: m x q, q = r + 1)

and one step adds u v^T:

1. modified Gram-Schmidt of u against QL[:, :r] (coefficients alpha) and of v against
   QR[:, :r] (beta); the residual norms are alpha_q, beta_q and the normalised residuals
   become the scratch columns QL[:, r], QR[:, r];
2. kappa skip: if cx[0] > kappa_th alpha_q beta_q the whole sample is dropped (as in the
   authors' code; it saves the SVD on most conv pixels and breaks exactness/unbiasedness,
   so tests of those properties set kappa_th = 0);
3. C = alpha beta^T + diag(cx, 0), SVD C = U diag(sigma) V^T;
4. truncation to rank r, T (r x q): biased = drop sigma_q; unbiased = minimum-variance
   mixing of the smallest singular values (Householder basis with random signs), whose
   expectation is exactly C (Benzing et al. 2019);
5. QL[:, :r] <- QL U T^T, QR[:, :r] <- QR V T^T, cx <- new weights.

The flush turns the estimate into a weight update dW = lr B_eff^p L R^T (L, R the factors
scaled by sqrt(cx), optionally max-normed), quantised to the weight LSB, written only if at
least rho_min of the weights change.

This module is the oracle of the integer C code (firmware_templates/lib/lrt_lowrank.c). To
let both follow the same random path it mirrors these conventions of the C code: one 32-bit
xorshift32 word per step call (signs = its top bits), canonical SVD signs (the largest
|U_ik| of every column is positive) and canonical bases of equal singular values, and two
guards against the noise level of the C code's int16 bases, which the unbiased mixing would
amplify to O(sqrt(noise)): a step whose u or v lies in the span of its basis up to a
residual below 2^-8 of its norm truncates biased (in exact arithmetic s1 would be 0, where
the paper's rule is the biased truncation too; the span noise of int16 bases grows like
sqrt(steps) and reaches ~1e-3 after a few thousand steps), and singular values below
2^-14 sigma_1 count as zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MASK32 = 0xFFFFFFFF
SIGMA_FLOOR = 2.0**-14
RESID_FLOOR = 2.0**-8
GROUP_TOL = 2.0**-20

SignSource = Callable[[], int]
"""Returns one 32-bit word per step; bit 31 - a is the sign of the a-th mixed direction."""


def xorshift32_seed(seed: int) -> int:
    """Initial xorshift32 state of a user seed (murmur3 finaliser; twin of the C code)."""
    h = (seed + 0x9E3779B9) & MASK32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK32
    h ^= h >> 16
    return h if h else 0x6D2B79F5


class XorShift32:
    """Marsaglia's xorshift32 (13/17/5), bit-exact with lrt_xorshift32_next()."""

    def __init__(self, seed: int) -> None:
        self.state = xorshift32_seed(seed)

    def __call__(self) -> int:
        x = self.state
        x ^= (x << 13) & MASK32
        x ^= x >> 17
        x ^= (x << 5) & MASK32
        self.state = x
        return x


def signs_from_word(word: int, count: int) -> np.ndarray:
    """+-1 signs of the mixed directions: a set bit (31 - a) means -1."""
    bits = (word >> (31 - np.arange(count))) & 1
    return (1 - 2 * bits).astype(np.float64)


def canonical_svd(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SVD with sorted singular values and the sign convention of the C code."""
    u, s, vt = np.linalg.svd(c)
    v = vt.T.copy()
    for k in range(u.shape[1]):
        p = int(np.argmax(np.abs(u[:, k])))
        if u[p, k] < 0:
            u[:, k] *= -1
            v[:, k] *= -1
    return u, s, v


def canonical_groups(
    sigma: np.ndarray, u: np.ndarray, v: np.ndarray, tol: float = GROUP_TOL
) -> None:
    """Give every group of (nearly) equal non-zero singular values a canonical basis, in place.

    The basis of a degenerate singular subspace is arbitrary (LAPACK and the C code's Jacobi
    pick different ones), but the random-sign mixing depends on it. Values closer than
    tol * sigma_1 (chained) form a group; its basis becomes the pivoted Gram-Schmidt of the
    rows of U_G (largest residual row first), which depends only on the subspace, and its
    values their mean (a change below the C code's int16 noise).
    """
    q = len(sigma)
    a = 0
    while a < q and sigma[a] > 0:
        b = a
        while b + 1 < q and sigma[b + 1] > 0 and sigma[b] - sigma[b + 1] <= tol * sigma[0]:
            b += 1
        if b > a:
            g = b - a + 1
            rows = u[:, a : b + 1]
            basis = np.zeros((g, g))
            free = np.ones(q, dtype=bool)
            for t in range(g):
                res = rows - (rows @ basis[:, :t]) @ basis[:, :t].T
                norms = np.where(free, np.einsum("ij,ij->i", res, res), -1.0)
                p = int(np.argmax(norms))
                free[p] = False
                basis[:, t] = res[p] / np.sqrt(norms[p])
            u[:, a : b + 1] = rows @ basis
            v[:, a : b + 1] = v[:, a : b + 1] @ basis
            sigma[a : b + 1] = sigma[a : b + 1].mean()
        a = b + 1


def truncation(
    sigma: np.ndarray, rank: int, unbiased: bool, word: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-r truncation of sorted singular values (q = rank + 1 of them).

    Returns T (r x q) and the new weights cx (r) such that the new estimate is
    U T^T diag(cx) T V^T. Biased: T = [I 0]. Unbiased: keep sigma_1..sigma_{i-1}, replace the
    k + 1 = q - i + 1 smallest by k equal values s1 / k along k random directions of their
    span; E[T^T diag(cx) T] = diag(sigma), the minimum-variance unbiased choice.
    """
    q = rank + 1
    t = np.eye(rank, q)
    if not unbiased:
        return t, sigma[:rank].copy()
    tail = np.cumsum(sigma[::-1])[::-1]  # tail[i] = sum_{j >= i} sigma_j
    # smallest i with (q - 1 - i) sigma_i <= tail[i]; i = q - 2 always qualifies
    i = next(i for i in range(q - 1) if (q - 1 - i) * sigma[i] <= tail[i])
    s1, k = float(tail[i]), q - 1 - i
    if s1 <= 0.0:  # nothing to mix: the biased truncation is exact
        return t, sigma[:rank].copy()
    x0 = np.sqrt(np.clip(1.0 - sigma[i:] * k / s1, 0.0, 1.0))  # unit vector, k + 1 entries
    w = x0.copy()
    w[0] -= 1.0
    # Householder reflection mapping e_0 to x0 (||w||^2 = 2 (1 - x0[0]), x0[0] <= sqrt(1/2));
    # its columns 1..k are an orthonormal basis of the complement of x0.
    h = np.eye(k + 1) - np.outer(w, w) / (1.0 - x0[0])
    x = signs_from_word(word, k + 1)[:, None] * h[:, 1:]
    t[i:, i:] = x.T
    cx = np.concatenate([sigma[:i], np.full(k, s1 / k)])
    return t, cx


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
    kappa_th: float = 100.0  # 0 disables the skip
    rho_min: float = 0.01
    lr: float = 0.01
    batch_pow: float = 0.5  # lr_eff = lr * B_eff ** batch_pow
    maxnorm: bool = True  # max-norm L and R at the flush ("post")
    discount: float = 1.0  # cx and B_eff factor when a flush is deferred
    seed: int = 1
    sigma_floor: float = SIGMA_FLOOR
    resid_floor: float = RESID_FLOOR


class LowRankAccumulator:
    """Streaming rank-r accumulator of sum_i u_i v_i^T (float64)."""

    def __init__(
        self, n: int, m: int, config: LowRankConfig | None = None, signs: SignSource | None = None
    ) -> None:
        self.n, self.m = n, m
        self.cfg = config or LowRankConfig()
        if not self.cfg.rank >= 1:
            raise ValueError(f"rank must be >= 1, got {self.cfg.rank}")
        self.signs: SignSource = signs or XorShift32(self.cfg.seed)
        self.mn_l, self.mn_r = MaxNorm(), MaxNorm()
        self.reset()

    @property
    def rank(self) -> int:
        return self.cfg.rank

    def reset(self) -> None:
        """Empty the accumulator (after a weight write); the sign source and max-norm go on."""
        q = self.rank + 1
        self.ql = np.zeros((self.n, q))
        self.qr = np.zeros((self.m, q))
        self.cx = np.zeros(self.rank)
        self.b_eff = 0.0
        self.steps = 0
        self.applied = 0

    def step(self, u: np.ndarray, v: np.ndarray) -> bool:
        """Add u v^T. Returns False if the step was skipped (zero vector or kappa skip)."""
        word = self.signs()  # one word per call, like the C code
        self.steps += 1
        u = np.array(u, dtype=np.float64).ravel()
        v = np.array(v, dtype=np.float64).ravel()
        if not u.any() or not v.any():
            return False
        r, ql, qr = self.rank, self.ql, self.qr
        u_norm, v_norm = np.linalg.norm(u), np.linalg.norm(v)
        alpha, beta = np.zeros(r + 1), np.zeros(r + 1)
        for j in range(r):  # modified Gram-Schmidt
            alpha[j] = ql[:, j] @ u
            u -= alpha[j] * ql[:, j]
            beta[j] = qr[:, j] @ v
            v -= beta[j] * qr[:, j]
        alpha[r], beta[r] = np.linalg.norm(u), np.linalg.norm(v)
        # u or v in the span up to noise: truncate biased (see the module docstring)
        in_span = (
            alpha[r] < self.cfg.resid_floor * u_norm or beta[r] < self.cfg.resid_floor * v_norm
        )
        if self.cfg.kappa_th > 0 and self.cx[0] > self.cfg.kappa_th * alpha[r] * beta[r]:
            return False
        ql[:, r] = u / alpha[r] if alpha[r] > 0 else 0.0
        qr[:, r] = v / beta[r] if beta[r] > 0 else 0.0
        c = np.outer(alpha, beta)
        c[np.arange(r), np.arange(r)] += self.cx
        uc, sigma, vc = canonical_svd(c)
        sigma = np.where(sigma < self.cfg.sigma_floor * sigma[0], 0.0, sigma)
        canonical_groups(sigma, uc, vc)
        t, self.cx = truncation(sigma, r, self.cfg.unbiased and not in_span, word)
        ql[:, :r] = ql @ (uc @ t.T)
        qr[:, :r] = qr @ (vc @ t.T)
        ql[:, r] = 0.0
        qr[:, r] = 0.0
        self.applied += 1
        return True

    def end_sample(self) -> None:
        self.b_eff += 1.0

    def estimate(self) -> np.ndarray:
        """The current rank-r estimate of the accumulated sum (n x m)."""
        r = self.rank
        return (self.ql[:, :r] * self.cx) @ self.qr[:, :r].T

    def lr_eff(self) -> float:
        return self.cfg.lr * self.b_eff**self.cfg.batch_pow if self.b_eff > 0 else 0.0

    def flush_delta(self, weight_exp: int) -> np.ndarray:
        """Weight update in LSBs of 2**weight_exp (to subtract), round half up, int16 range.

        Updates the max-norm state (once per flush attempt, as in the reference code).
        """
        r = self.rank
        root = np.sqrt(self.cx)
        left, right = self.ql[:, :r] * root, self.qr[:, :r] * root
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
