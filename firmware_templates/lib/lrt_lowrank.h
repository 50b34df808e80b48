/* lrt_lowrank.h - the low-rank training (LRT) gradient accumulator, integer only.
 *
 * Gural et al. 2020 (docs/ALGORITHM.md): the weight gradient of B samples, a long sum
 * of outer products u v^T (u = dz, v = input activations / conv patch), is kept in rank-r
 * factored form
 *
 *     G ~= QL[:, :r] diag(cx) QR[:, :r]^T,   QL: n x q, QR: m x q, q = r + 1,
 *
 * and written to the weights once per pseudo-batch. toolchain/lrt/lowrank.py is the float
 * reference (same steps, same random signs); read it for the algorithm.
 *
 * Number formats
 *   QL, QR   int16 block floating point: real = QL * 2^ql_exp, one exponent per matrix,
 *            renormalised every step so that max|QL| lies in [2^14, 2^15). Row-major
 *            [n][q] / [m][q]; column r is the scratch column of the step.
 *   cx       uint32 block floating point: real = cx[k] * 2^cx_exp, descending.
 *   u        int8, real = u * 2^u_exp (u_exp may change from call to call).
 *   v        int8 with offset, real = (v + v_offset) * 2^v_exp, |v_offset| <= 256
 *            (activations with zero point zp: v_offset = -zp).
 *   small SVD  int32: C <= 2^28, rotations and singular vectors Q30 (1.0 = 2^30).
 * Randomness: one xorshift32 word per lrt_lowrank_step call (skipped or not); the unbiased
 * truncation takes its signs from the top bits of that word (bit 31 - a for the a-th mixed
 * direction, set bit = -1).
 *
 * One step (lrt_lowrank_step): two modified Gram-Schmidt passes of u and v against QL, QR
 * (the second only if the sample is not skipped), the kappa skip (as in the authors' code it
 * drops the whole sample, also its part inside the current span; kappa_th = 0 turns it off,
 * which exactness and unbiasedness need), the (r+1) x (r+1) matrix
 * C = alpha beta^T + diag(cx, 0), its one-sided Jacobi SVD, truncation back to rank r
 * (biased: drop the smallest; unbiased: minimum-variance mixing with a Householder basis
 * and random signs), rotation of QL and QR. Two guards against int16 noise, which the
 * unbiased mixing would otherwise amplify to O(sqrt(noise)): if u or v lies in the span of
 * its basis up to a residual below 2^-8 of its norm, the step truncates biased (it drops
 * at most that noise; exact arithmetic would give s1 = 0, where the paper's rule is biased
 * truncation too), and singular values below sigma_1 * 2^-14 count as zero. Every 16 applied
 * steps QL and QR are re-orthonormalised (first-order Loewdin), which keeps them orthonormal
 * to ~1e-4. Equal singular values get a canonical basis (the unbiased mixing depends on it).
 *
 * Flush (once per pseudo-batch), streaming over the weight rows so that the weights never
 * have to be copied from NVM to RAM:
 *
 *     lrt_lowrank_plan plan;
 *     lrt_lowrank_flush_prepare(acc, weight_exp, &plan);     // O((n + m) r), updates max-norm
 *     if (lrt_lowrank_count_nonzero(acc, &plan, plan.min_nonzero) >= plan.min_nonzero) {
 *         for (i = 0; i < n; i++) {                            // O(n m r) in total
 *             lrt_lowrank_delta_row(acc, &plan, i, delta);     // int16 delta[m]
 *             W[i][j] = clip(W[i][j] - delta[j], -128, 127);   // caller: NVM read/program
 *         }
 *         lrt_lowrank_reset(acc);
 *     } else {
 *         lrt_lowrank_defer(acc);                              // keep accumulating
 *     }
 *
 * (lrt_lowrank_flush_check() does prepare + count + defer in one call.) The update is
 *     dW = lr * B_eff^p * L R^T,  L = QL diag(sqrt(cx)) / d_L,  R = QR diag(sqrt(cx)) / d_R,
 * d_L, d_R the max-norm divisors (1 without max-norm), delta = round(dW / 2^weight_exp)
 * in weight LSBs (round half up, saturated to int16). B_eff counts lrt_lowrank_end_sample()
 * calls since the last reset (times the discount at every deferred flush). Which gradient
 * the caller feeds decides what the update means: for the paper's convention (weights in
 * [-1, 1) times the layer's alpha) fold alpha into u_exp and pass weight_exp = -7.
 *
 * Memory: the lrt_lowrank struct (140 bytes on Cortex-M) + the state buffer (QL, QR:
 * 2 q (n + m) bytes)
 * per layer, and one work buffer (lrt_lowrank_work_size, 4-byte aligned) that every
 * accumulator may share because steps never run concurrently. Declare the state buffer as
 * int16_t[] and the work buffer as int32_t[]. No malloc, no floats, no globals.
 */
#ifndef LRT_LOWRANK_H
#define LRT_LOWRANK_H

#include "lrt_common.h"
#include "lrt_fixmath.h"

#define LRT_LOWRANK_MAX_RANK 8
#define LRT_LOWRANK_MAX_Q (LRT_LOWRANK_MAX_RANK + 1)
#define LRT_LOWRANK_MAX_DIM 16384u   /* n, m <= this: keeps every int32/int64 sum in range */
#define LRT_LOWRANK_MAX_VOFFSET 256
#define LRT_LOWRANK_SIGMA_FLOOR_SHIFT 14
#ifndef LRT_LOWRANK_RESID_FLOOR_SHIFT
#define LRT_LOWRANK_RESID_FLOOR_SHIFT 8 /* residual < 2^-8 |u|: u is in the span */
#endif
#define LRT_LOWRANK_JACOBI_MAX_SWEEPS 12
#define LRT_LOWRANK_REORTH_PERIOD 16  /* re-orthonormalise QL, QR every this many applied steps */

/* Byte sizes for static allocation (same values as the functions below). */
#define LRT_LOWRANK_STATE_SIZE(n, m, rank) ((size_t)2 * ((rank) + 1u) * ((size_t)(n) + (m)))
#define LRT_LOWRANK_WORK_SIZE(n, m, rank)                                                   \
    ((size_t)4 * ((size_t)(n) + (m) + 2u * ((rank) + 1u) * ((rank) + 1u) +                 \
                  2u * ((rank) + 1u) * (rank)))

typedef enum {
    LRT_LOWRANK_UNBIASED = 0, /* minimum-variance unbiased truncation (paper default) */
    LRT_LOWRANK_BIASED = 1,   /* keep the r largest singular values ("zero variance") */
} lrt_lowrank_mode;

typedef struct {
    uint8_t rank;          /* r, 1..LRT_LOWRANK_MAX_RANK */
    uint8_t mode;          /* lrt_lowrank_mode */
    uint8_t maxnorm;       /* 1: max-norm L and R at the flush ("post", paper default) */
    uint8_t batch_pow2;    /* lr_eff = lr * B_eff^(batch_pow2 / 2): 1 = square root (paper) */
    uint32_t kappa_th;     /* skip a step if cx[0] > kappa_th alpha_q beta_q; 0: never skip */
    uint32_t rho_min_q16;  /* minimum write density, Q16 (655 ~ 1 %) */
    uint32_t lr_q24;       /* learning rate, Q24 (0.01 -> 167772) */
    uint32_t discount_q16; /* cx and B_eff factor at a deferred flush, Q16 (65536 = none) */
    uint32_t seed;         /* xorshift32 seed of the random signs */
} lrt_lowrank_config;

typedef struct {
    lrt_lowrank_config cfg;
    uint16_t n, m;
    int16_t *ql;           /* [n][q], real = ql * 2^ql_exp */
    int16_t *qr;           /* [m][q], real = qr * 2^qr_exp */
    int32_t *work;         /* shared scratch */
    uint32_t cx[LRT_LOWRANK_MAX_RANK]; /* real = cx * 2^cx_exp, descending */
    int32_t ql_exp, qr_exp, cx_exp;
    uint32_t rng;          /* xorshift32 state */
    uint32_t b_eff_q16;    /* samples since the last write (discounted), Q16 */
    uint32_t steps;        /* lrt_lowrank_step calls since the last reset */
    uint32_t applied;      /* ... of which were not skipped */
    lrt_mnorm mn_l, mn_r;  /* max-norm state of L and R (kept across resets) */
} lrt_lowrank;

typedef struct {
    int32_t w[LRT_LOWRANK_MAX_RANK]; /* per-direction scale mantissas, 0 <= w <= 2^15 */
    int32_t shift;         /* delta[i][j] = round(sum_k ql[i][k] w[k] qr[j][k] * 2^-shift) */
    uint32_t min_nonzero;  /* write only if at least this many deltas are non-zero */
    lrt_ufx lr_eff;        /* lr * B_eff^p (real) */
    lrt_ufx div_l, div_r;  /* max-norm divisors (1 without max-norm) */
} lrt_lowrank_plan;

/* The paper's hyper-parameters: rank 4, unbiased, max-norm, sqrt batch scaling,
 * kappa_th 100, rho_min 1 %, lr 0.01, no discount, seed 1. */
void lrt_lowrank_config_default(lrt_lowrank_config *cfg);

/* Bytes of the per-layer state buffer (QL, QR) and of the shareable work buffer (the
 * int32 residuals of u and v plus the small SVD). For a shared work buffer use the largest
 * n + m and rank of all layers. */
size_t lrt_lowrank_state_size(uint16_t n, uint16_t m, uint8_t rank);
size_t lrt_lowrank_work_size(uint16_t n, uint16_t m, uint8_t rank);

/* Bind buffers, check the config, reset. state: 2-byte aligned, work: 4-byte aligned.
 * Returns LRT_OK, LRT_ERR_ARG or LRT_ERR_SIZE. */
int lrt_lowrank_init(lrt_lowrank *acc, const lrt_lowrank_config *cfg, uint16_t n, uint16_t m,
                     void *state, size_t state_size, void *work, size_t work_size);

/* Add u v^T (u: n values, v: m values). Returns 1 if applied, 0 if skipped (zero vector or
 * kappa skip), or a negative lrt_err. */
int lrt_lowrank_step(lrt_lowrank *acc, const int8_t *u, int u_exp, const int8_t *v,
                     int32_t v_offset, int v_exp);
/* Same with v read in place from a feature map: v = concatenation over k < rows of
 * base[k * row_stride .. k * row_stride + row_len - 1]; rows * row_len must equal m.
 * For a 'valid' conv patch in NHWC: base = &in[(y * in_w + x) * in_c], rows = kernel_h,
 * row_len = kernel_w * in_c, row_stride = in_w * in_c. */
int lrt_lowrank_step_strided(lrt_lowrank *acc, const int8_t *u, int u_exp, const int8_t *base,
                             uint16_t rows, uint16_t row_len, uint32_t row_stride,
                             int32_t v_offset, int v_exp);
/* One more sample accumulated (B_eff += 1). */
void lrt_lowrank_end_sample(lrt_lowrank *acc);

/* Compute the flush plan for weights with real = w * 2^weight_exp. Updates the max-norm
 * state (once per flush attempt, as in the reference). */
int lrt_lowrank_flush_prepare(lrt_lowrank *acc, int weight_exp, lrt_lowrank_plan *plan);
/* Number of non-zero deltas; stops counting once stop_at is reached (0: count all). */
uint32_t lrt_lowrank_count_nonzero(const lrt_lowrank *acc, const lrt_lowrank_plan *plan,
                                   uint32_t stop_at);
/* delta[0..m-1] of weight row `row` (to be subtracted), in weight LSBs. */
void lrt_lowrank_delta_row(const lrt_lowrank *acc, const lrt_lowrank_plan *plan, uint16_t row,
                           int16_t *delta);
/* prepare + count; returns 1 if the caller should write (then reset after writing), 0 if the
 * density is below rho_min (the accumulator has been deferred), or a negative lrt_err. */
int lrt_lowrank_flush_check(lrt_lowrank *acc, int weight_exp, lrt_lowrank_plan *plan);
/* After the weights were written: empty the accumulator (keeps RNG and max-norm state). */
void lrt_lowrank_reset(lrt_lowrank *acc);
/* Flush rejected (density below rho_min): cx and B_eff times the discount, keep going. */
void lrt_lowrank_defer(lrt_lowrank *acc);

/* Exposed for tests: SVD of the q x q matrix a (row-major, |a_ij| <= 2^28), 2 <= q <= 9.
 * On return a holds U (Q30, column k = k-th left singular vector, zero if sigma_k = 0),
 * v holds V (Q30, row-major q x q), sigma the singular values in the units of a, sorted
 * descending; each (U_k, V_k) pair is signed so that the largest |U_ik| is positive.
 * Returns the number of Jacobi sweeps, or LRT_ERR_ARG. */
int lrt_lowrank_svd(int32_t *a, uint8_t q, uint32_t *sigma, int32_t *v);

#endif /* LRT_LOWRANK_H */
