/* lrt_lowrank.h - the low-rank training (LRT) gradient accumulator, integer only.
 *
 * The weight gradient of B samples, a sum of low-rank blocks L R^T (a dense layer's
 * per-sample gradient dz a^T has rank 1, a conv layer's sum over pixels of dz_p patch_p^T has
 * rank <= min(n, m, pixels)), is kept in rank-r factored form
 *
 *     G ~= QL diag(cx) QR^T,   QL: n x r, QR: m x r (orthonormal columns), cx descending,
 *
 * and written to the weights once per pseudo-batch. docs/ESTIMATOR.md derives the algorithm;
 * toolchain/lrt/lowrank.py is the float reference (same steps, same thresholds, same signs).
 *
 * One block step (lrt_lowrank_step_block) adds left right^T (left n x k, right m x k,
 * k <= max_block): Gram-Schmidt (twice) of the new columns against QL / QR and each other
 * gives [QL | left] = [QL | PL] A~, [QR | right] = [QR | PR] B~ (columns whose residual is
 * below 2^-10 of their norm add no direction); the core C = diag(cx, 0) + A B^T, at most
 * (r + k) x (r + k), gets a one-sided Jacobi SVD; the truncation back to rank r is biased
 * (keep the r largest) or the minimum-variance unbiased one (keep the largest, spread the
 * tail over equal weights along a random projector: a Givens chain with the prescribed
 * diagonal and random signs); QL <- [QL | PL] U T, QR <- [QR | PR] V T. Singular values
 * below sigma_1 * 2^-14 count as zero (the int16 noise level). Every 16 applied steps QL and
 * QR are re-orthonormalised (first-order Loewdin).
 *
 * Number formats
 *   QL, QR   int16 block floating point: real = QL * 2^ql_exp, one exponent per matrix,
 *            renormalised every step so that max|QL| lies in [2^14, 2^15). Row-major
 *            [n][r] / [m][r].
 *   cx       uint32 block floating point: real = cx[k] * 2^cx_exp, descending.
 *   blocks   int32, column-major (column c at left + c * n), one exponent per block; the
 *            step rescales and overwrites them (they become the new basis columns).
 *   small SVD  int32 core, rotations and singular vectors Q30 (1.0 = 2^30).
 * Randomness: one xorshift32 word per step call (applied or not); the unbiased truncation
 * takes the sign of tail row a from bit 31 - a of that word (set bit = -1).
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
 * calls since the last reset (times the discount at every deferred flush); the step uses
 * min(B_eff, cfg.b_cap) when b_cap is set. Which gradient
 * the caller feeds decides what the update means: for the paper's convention (weights in
 * [-1, 1) times the layer's alpha) fold alpha into the left exponent and pass weight_exp = -7.
 *
 * Memory: the lrt_lowrank struct + the state buffer (QL, QR: 2 r (n + m) bytes) per layer,
 * and one work buffer (lrt_lowrank_work_size, 4-byte aligned) that every accumulator may
 * share because steps never run concurrently. Declare the state buffer as int16_t[] and the
 * work buffer as int32_t[]. No malloc, no floats, no globals.
 */
#ifndef LRT_LOWRANK_H
#define LRT_LOWRANK_H

#include "lrt_common.h"
#include "lrt_fixmath.h"

#define LRT_LOWRANK_MAX_RANK 8
#define LRT_LOWRANK_MAX_BLOCK 16 /* columns k of one block step */
#define LRT_LOWRANK_MAX_CORE (LRT_LOWRANK_MAX_RANK + LRT_LOWRANK_MAX_BLOCK)
#define LRT_LOWRANK_MAX_DIM 16384u /* n, m <= this: keeps every int32/int64 sum in range */
#define LRT_LOWRANK_SIGMA_FLOOR_SHIFT 14
#ifndef LRT_LOWRANK_RESID_FLOOR_SHIFT
#define LRT_LOWRANK_RESID_FLOOR_SHIFT 10 /* residual < 2^-10 of a column: no new direction */
#endif
#define LRT_LOWRANK_JACOBI_MAX_SWEEPS 16
#define LRT_LOWRANK_REORTH_PERIOD 16 /* re-orthonormalise QL, QR every this many applied steps */

/* Byte sizes for static allocation (same values as the functions below); kb = max_block. */
#define LRT_LOWRANK_STATE_SIZE(n, m, rank) ((size_t)2 * (rank) * ((size_t)(n) + (m)))
#define LRT_LOWRANK_WORK_SIZE(rank, kb)                                                            \
    ((size_t)8 * ((size_t)(rank) + (kb)) *                                                         \
     ((size_t)(rank) + (kb) + ((rank) > (kb) ? (rank) : (kb))))

typedef enum {
    LRT_LOWRANK_UNBIASED = 0, /* minimum-variance unbiased truncation (paper default) */
    LRT_LOWRANK_BIASED = 1,   /* keep the r largest singular values ("zero variance") */
} lrt_lowrank_mode;

typedef struct {
    uint8_t rank;              /* r, 1..LRT_LOWRANK_MAX_RANK */
    uint8_t mode;              /* lrt_lowrank_mode */
    uint8_t maxnorm;           /* 1: max-norm L and R at the flush ("post", paper default) */
    uint8_t batch_pow2;        /* lr_eff = lr * B_eff^(batch_pow2 / 2): 1 = square root (paper) */
    uint8_t max_block;         /* largest k of a block step, 1..LRT_LOWRANK_MAX_BLOCK */
    uint16_t b_cap;            /* B_eff of the write step at most this many samples (0: no
                                * cap): a layer whose writes were deferred keeps its whole sum
                                * as the direction but steps no further than b_cap samples
                                * would (lrt_step_cap, lrt_policy_step_samples) */
    uint32_t rho_min_q16;      /* minimum write density, Q16 (655 ~ 1 %) */
    uint32_t lr_q24;           /* learning rate, Q24 (0.01 -> 167772) */
    uint32_t discount_q16;     /* cx and B_eff factor at a deferred flush, Q16 (65536 = none) */
    uint32_t maxnorm_beta_q30; /* beta of the max-norm averages, Q30 (0: 0.999) */
    uint32_t seed;             /* xorshift32 seed of the random signs */
} lrt_lowrank_config;

typedef struct {
    lrt_lowrank_config cfg;
    uint16_t n, m;
    int16_t *ql;                       /* [n][r], real = ql * 2^ql_exp */
    int16_t *qr;                       /* [m][r], real = qr * 2^qr_exp */
    int32_t *work;                     /* shared scratch */
    uint32_t cx[LRT_LOWRANK_MAX_RANK]; /* real = cx * 2^cx_exp, descending */
    int32_t ql_exp, qr_exp, cx_exp;
    uint32_t rng;         /* xorshift32 state */
    uint32_t b_eff_q16;   /* samples since the last write (discounted), Q16 */
    uint32_t steps;       /* step calls since the last reset */
    uint32_t applied;     /* ... of which changed the state */
    lrt_mnorm mn_l, mn_r; /* max-norm state of L and R (kept across resets) */
} lrt_lowrank;

typedef struct {
    int32_t w[LRT_LOWRANK_MAX_RANK]; /* per-direction scale mantissas, 0 <= w <= 2^15 */
    int32_t shift;        /* delta[i][j] = round(sum_k ql[i][k] w[k] qr[j][k] * 2^-shift) */
    uint32_t min_nonzero; /* write only if at least this many deltas are non-zero */
    lrt_ufx lr_eff;       /* lr * B_eff^p (real) */
    lrt_ufx div_l, div_r; /* max-norm divisors (1 without max-norm) */
} lrt_lowrank_plan;

/* The paper's hyper-parameters: rank 4, unbiased, max-norm, sqrt batch scaling, rho_min 1 %,
 * lr 0.01, no discount, seed 1; blocks of up to LRT_LOWRANK_MAX_BLOCK columns. */
void lrt_lowrank_config_default(lrt_lowrank_config *cfg);

/* Bytes of the per-layer state buffer (QL, QR) and of the shareable work buffer (the core,
 * its SVD, the coefficients and the truncation weights: 8 P (P + max(rank, max_block)),
 * P = rank + max_block; independent of n and m). */
size_t lrt_lowrank_state_size(uint16_t n, uint16_t m, uint8_t rank);
size_t lrt_lowrank_work_size(uint8_t rank, uint8_t max_block);

/* Bind buffers, check the config, reset. state: 2-byte aligned, work: 4-byte aligned.
 * Returns LRT_OK, LRT_ERR_ARG or LRT_ERR_SIZE. */
int lrt_lowrank_init(lrt_lowrank *acc, const lrt_lowrank_config *cfg, uint16_t n, uint16_t m,
                     void *state, size_t state_size, void *work, size_t work_size);

/* Add left right^T, real = left * 2^left_exp (n x k) and right * 2^right_exp (m x k), both
 * int32 column-major, 1 <= k <= cfg.max_block. Both blocks are overwritten. Returns 1 if
 * applied, 0 if a block is all zero, or a negative lrt_err. */
int lrt_lowrank_step_block(lrt_lowrank *acc, int32_t *left, int left_exp, int32_t *right,
                           int right_exp, uint16_t k);
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

/* Exact sum of whole-sample blocks with left = I_n (a conv layer with n <= max_block
 * output channels: right = its per-sample gradient G_s^T, m x n column-major), handed to
 * the accumulator as one block when the pseudo-batch ends: one block step per pseudo-batch
 * instead of one per sample, and the truncation to rank r sees the pseudo-batch's gradient
 * itself. int16 block floating point, real = sum * 2^exp: each add rounds the sample once to
 * the sum's scale (at most 2^-15 of the sum's largest entry). Memory: 2 n m bytes per layer
 * (LRT_LOWRANK_SUM_SIZE), declared as int16_t[]. */
typedef struct {
    int16_t *sum; /* n m entries, in the layout of the block's right factor */
    uint32_t len;
    int32_t exp;
    uint16_t n;
    uint16_t max_abs; /* max |sum|; 0: empty */
} lrt_lowrank_sum;

#define LRT_LOWRANK_SUM_SIZE(n, m) ((size_t)2 * (n) * (m))
size_t lrt_lowrank_sum_size(uint16_t n, uint16_t m);
/* Bind a buffer (2-byte aligned) of lrt_lowrank_sum_size(n, m) bytes; starts empty (an
 * empty sum holds zeros: init and sum_step clear it). */
int lrt_lowrank_sum_init(lrt_lowrank_sum *s, uint16_t n, uint16_t m, void *buf, size_t size);
/* sum += right * 2^right_exp (n m int32 entries, not modified). */
void lrt_lowrank_sum_add(lrt_lowrank_sum *s, const int32_t *right, int right_exp);
/* Add the sum to acc as the block I_n sum^T (left exponent left_exp) and empty it. block:
 * int32 scratch of at least n n + n m words (the trainer's block buffer). Returns what
 * lrt_lowrank_step_block returns; 0 when the sum is empty. */
int lrt_lowrank_sum_step(lrt_lowrank_sum *s, lrt_lowrank *acc, int left_exp, int32_t *block,
                         size_t block_words);

/* Exposed for tests: SVD of the q x q matrix a (row-major), 2 <= q <= LRT_LOWRANK_MAX_CORE,
 * |a_ij| <= 2^28 and, for q > 9, Frobenius norm <= 2^30 (the block step keeps it there).
 * On return a holds U (Q30, column k = k-th left singular vector, zero if sigma_k = 0),
 * v holds V (Q30, row-major q x q), sigma the singular values in the units of a, sorted
 * descending; each (U_k, V_k) pair is signed so that the largest |U_ik| is positive.
 * Returns the number of Jacobi sweeps, or LRT_ERR_ARG. */
int lrt_lowrank_svd(int32_t *a, uint8_t q, uint32_t *sigma, int32_t *v);

#endif /* LRT_LOWRANK_H */
