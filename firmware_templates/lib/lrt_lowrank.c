/* lrt_lowrank.c - integer LRT accumulator (see lrt_lowrank.h and toolchain/lrt/lowrank.py).
 *
 * Range bookkeeping (n, m <= 16384, |v + v_offset| <= 383):
 *   residual buffers  x = value * 2^15 < 2^23.6, ||x|| < 2^30.6 (int32), ||x||^2 < 2^61.2
 *   Gram-Schmidt dot  |Q| < 2^15 times x, summed: < 2^52.6 (int64)
 *   small matrix C    |C_ij| <= 2^28, so column norms^2 <= (9 * 2^28)^2 < 2^63 (int64)
 *   rotations         Q30 (2^30 = 1.0); products Q30 x Q30 in int64 then >> 30
 */
#include "lrt_lowrank.h"

#include <string.h>

#define WORK_SHIFT 15       /* fraction bits of u and v in the residual buffers */
#define QMAX 32767          /* int16 basis entries stay symmetric (never -32768) */
#define QNORM_LO 16384      /* renormalise max|Q| into [2^14, 2^15) */
#define Q_EXP_EMPTY (-15)   /* exponent of an all-zero basis */
#define ONE_Q30 ((int64_t)1 << 30)
#define C_TOP_BITS 27       /* each of alpha beta^T and diag(cx) scaled below 2^27 */
#define C_MAX ((int32_t)1 << 28)
#define JACOBI_TOL_SHIFT 24 /* rotate while |a_i.a_j| > ||a_i|| ||a_j|| 2^-24 */
#define GROUP_SHIFT 20      /* singular values closer than sigma_1 2^-20 form a group */
#define GRAM_ERR_MAX ((int32_t)1 << 24) /* clamp |Q^T Q - I| entries to 2^-6 (first order) */

/* round(x * 2^-sh), halves up, for 1 <= sh <= 62 and |x| < 2^62: the inlined hot-loop form of
 * lrt_shr_round64 (same results), for shifts that are constant over a loop */
static inline int64_t rsh(int64_t x, int sh)
{
    return (x + ((int64_t)1 << (sh - 1))) >> sh;
}

static uint64_t abs64(int64_t x)
{
    return x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
}

static int bits64(uint64_t x)
{
    return 64 - lrt_clz64(x);
}

/* ---- configuration, sizes, init ------------------------------------------------------ */

void lrt_lowrank_config_default(lrt_lowrank_config *cfg)
{
    cfg->rank = 4;
    cfg->mode = LRT_LOWRANK_UNBIASED;
    cfg->maxnorm = 1;
    cfg->batch_pow2 = 1;
    cfg->kappa_th = 100;
    cfg->rho_min_q16 = 655;
    cfg->lr_q24 = 167772;
    cfg->discount_q16 = 65536;
    cfg->seed = 1;
}

size_t lrt_lowrank_state_size(uint16_t n, uint16_t m, uint8_t rank)
{
    return LRT_LOWRANK_STATE_SIZE(n, m, rank);
}

size_t lrt_lowrank_work_size(uint16_t n, uint16_t m, uint8_t rank)
{
    return LRT_LOWRANK_WORK_SIZE(n, m, rank);
}

/* work buffer layout (int32): u residual [n], v residual [m], C -> U [q*q], V [q*q],
 * W_L [q*r], W_R [q*r] */
static int32_t *work_mat(const lrt_lowrank *acc, unsigned idx)
{
    const size_t q = acc->cfg.rank + 1u;
    int32_t *base = acc->work + acc->n + acc->m;
    switch (idx) {
    case 0: return base;
    case 1: return base + q * q;
    case 2: return base + 2 * q * q;
    default: return base + 2 * q * q + q * acc->cfg.rank;
    }
}

void lrt_lowrank_reset(lrt_lowrank *acc)
{
    const size_t q = acc->cfg.rank + 1u;
    memset(acc->ql, 0, sizeof(int16_t) * q * acc->n);
    memset(acc->qr, 0, sizeof(int16_t) * q * acc->m);
    memset(acc->cx, 0, sizeof(acc->cx));
    acc->ql_exp = Q_EXP_EMPTY;
    acc->qr_exp = Q_EXP_EMPTY;
    acc->cx_exp = 0;
    acc->b_eff_q16 = 0;
    acc->steps = 0;
    acc->applied = 0;
}

int lrt_lowrank_init(lrt_lowrank *acc, const lrt_lowrank_config *cfg, uint16_t n, uint16_t m,
                     void *state, size_t state_size, void *work, size_t work_size)
{
    if (!acc || !cfg || !state || !work) return LRT_ERR_ARG;
    if (cfg->rank < 1 || cfg->rank > LRT_LOWRANK_MAX_RANK) return LRT_ERR_ARG;
    if (cfg->mode > LRT_LOWRANK_BIASED || cfg->batch_pow2 > 2) return LRT_ERR_ARG;
    if (cfg->discount_q16 > 65536u || cfg->rho_min_q16 > 65536u) return LRT_ERR_ARG;
    if (n < 1 || m < 1 || n > LRT_LOWRANK_MAX_DIM || m > LRT_LOWRANK_MAX_DIM) return LRT_ERR_ARG;
    if (((uintptr_t)state & 1u) || ((uintptr_t)work & 3u)) return LRT_ERR_ARG;
    if (state_size < lrt_lowrank_state_size(n, m, cfg->rank)) return LRT_ERR_SIZE;
    if (work_size < lrt_lowrank_work_size(n, m, cfg->rank)) return LRT_ERR_SIZE;
    acc->cfg = *cfg;
    acc->n = n;
    acc->m = m;
    acc->ql = (int16_t *)state;
    acc->qr = acc->ql + (size_t)(cfg->rank + 1u) * n;
    acc->work = (int32_t *)work;
    acc->rng = lrt_xorshift32_seed(cfg->seed);
    lrt_mnorm_init(&acc->mn_l);
    lrt_mnorm_init(&acc->mn_r);
    lrt_lowrank_reset(acc);
    return LRT_OK;
}

void lrt_lowrank_end_sample(lrt_lowrank *acc)
{
    acc->b_eff_q16 = acc->b_eff_q16 > UINT32_MAX - 65536u ? UINT32_MAX : acc->b_eff_q16 + 65536u;
}

void lrt_lowrank_defer(lrt_lowrank *acc)
{
    unsigned k;
    const uint64_t d = acc->cfg.discount_q16;
    for (k = 0; k < acc->cfg.rank; k++) acc->cx[k] = (uint32_t)(((uint64_t)acc->cx[k] * d) >> 16);
    acc->b_eff_q16 = (uint32_t)(((uint64_t)acc->b_eff_q16 * d) >> 16);
}

/* ---- the small SVD ----------------------------------------------------------------------- */

/* Rotation (c, s) in Q30 with |theta| <= pi/4 that makes columns with squared norms al, be
 * and inner product ga orthogonal: tan(2 theta) = 2 ga / (be - al). */
static void jacobi_cs(int64_t al, int64_t be, int64_t ga, int32_t *c, int32_t *s)
{
    int64_t d = be - al, g2 = 2 * ga, dn, gn, cos2, sin2;
    uint64_t mag = abs64(d) > abs64(g2) ? abs64(d) : abs64(g2);
    int sh = bits64(mag) - 30; /* also scale small values up: c^2 + s^2 = 1 needs 30 bits */
    uint32_t rho, cc;
    dn = lrt_shr_round64(d, sh);
    gn = lrt_shr_round64(g2, sh);
    rho = lrt_isqrt64((uint64_t)(dn * dn) + (uint64_t)(gn * gn));
    cos2 = (int64_t)(abs64(dn) << 30) / rho;
    if (cos2 > ONE_Q30) cos2 = ONE_Q30;
    sin2 = gn * ONE_Q30 / rho;
    if (d < 0) sin2 = -sin2;
    cc = lrt_isqrt64((uint64_t)(ONE_Q30 + cos2) << 29); /* cos(theta) = sqrt((1 + cos 2t) / 2) */
    *c = (int32_t)cc;
    *s = (int32_t)(sin2 * ((int64_t)1 << 29) / (int64_t)cc); /* sin 2t / (2 cos t) */
}

static void rotate_cols(int32_t *x, uint8_t q, unsigned i, unsigned j, int32_t c, int32_t s)
{
    unsigned row;
    for (row = 0; row < q; row++) {
        int64_t a = x[row * q + i], b = x[row * q + j];
        x[row * q + i] = (int32_t)rsh((int64_t)c * a - (int64_t)s * b, 30);
        x[row * q + j] = (int32_t)rsh((int64_t)s * a + (int64_t)c * b, 30);
    }
}

static void swap_cols(int32_t *x, uint8_t q, unsigned i, unsigned j)
{
    unsigned row;
    for (row = 0; row < q; row++) {
        int32_t t = x[row * q + i];
        x[row * q + i] = x[row * q + j];
        x[row * q + j] = t;
    }
}

static void negate_col(int32_t *x, uint8_t q, unsigned k)
{
    unsigned row;
    for (row = 0; row < q; row++) x[row * q + k] = -x[row * q + k];
}

int lrt_lowrank_svd(int32_t *a, uint8_t q, uint32_t *sigma, int32_t *v)
{
    unsigned i, j, k, row, sweep, sweeps = 0;
    if (!a || !sigma || !v || q < 2 || q > LRT_LOWRANK_MAX_Q) return LRT_ERR_ARG;
    for (i = 0; i < (unsigned)q * q; i++) {
        if (a[i] > C_MAX || a[i] < -C_MAX) return LRT_ERR_ARG;
        v[i] = (i % (q + 1u)) == 0 ? (int32_t)ONE_Q30 : 0;
    }
    /* One-sided (Hestenes) Jacobi: rotate column pairs of a until all are orthogonal; then
     * a = U diag(sigma), and v accumulates the rotations, so A = U diag(sigma) V^T. */
    for (sweep = 0; sweep < LRT_LOWRANK_JACOBI_MAX_SWEEPS; sweep++) {
        int rotated = 0;
        for (i = 0; i + 1 < q; i++) {
            for (j = i + 1; j < q; j++) {
                int64_t al = 0, be = 0, ga = 0;
                lrt_ufx g2;
                int32_t c, s;
                for (row = 0; row < q; row++) {
                    int64_t x = a[row * q + i], y = a[row * q + j];
                    al += x * x;
                    be += y * y;
                    ga += x * y;
                }
                if (ga == 0) continue;
                /* converged (ga^2 <= al be 2^-48), or below the rounding noise of the int32
                 * entries (ga^2 <= q^2 (al + be)); compared as squares, no square roots */
                g2 = lrt_ufx_make(abs64(ga), 0);
                g2 = lrt_ufx_mul(g2, g2);
                if (lrt_ufx_cmp(g2, lrt_ufx_ldexp(lrt_ufx_mul(lrt_ufx_make((uint64_t)al, 0),
                                                              lrt_ufx_make((uint64_t)be, 0)),
                                                  -2 * JACOBI_TOL_SHIFT)) <= 0 ||
                    lrt_ufx_cmp(g2, lrt_ufx_mul(lrt_ufx_make((uint64_t)al + (uint64_t)be, 0),
                                                lrt_ufx_make((uint32_t)q * q, 0))) <= 0)
                    continue;
                jacobi_cs(al, be, ga, &c, &s);
                rotate_cols(a, q, i, j, c, s);
                rotate_cols(v, q, i, j, c, s);
                rotated = 1;
            }
        }
        sweeps++;
        if (!rotated) break;
    }
    for (k = 0; k < q; k++) {
        uint64_t ss = 0;
        for (row = 0; row < q; row++) ss += (uint64_t)((int64_t)a[row * q + k] * a[row * q + k]);
        if (ss == 0) {
            sigma[k] = 0;
            for (row = 0; row < q; row++) a[row * q + k] = 0;
        } else {
            /* U = a / ||a|| in Q30 through one reciprocal of the 32-bit-exact norm: an integer
             * (floored) square root would make every U slightly too long, always in the same
             * direction, and the bases would drift away from orthonormal step after step.
             * |a| <= ||a|| keeps a * inv < 2^62. */
            lrt_ufx nrm = lrt_ufx_sqrt(lrt_ufx_make(ss, 0));
            int64_t inv = (int64_t)lrt_ufx_to_u64(lrt_ufx_div(lrt_ufx_make(1, 62), nrm), 0);
            sigma[k] = (uint32_t)lrt_ufx_to_u64(nrm, 0);
            for (row = 0; row < q; row++)
                a[row * q + k] = (int32_t)lrt_shr_round64(a[row * q + k] * inv, 32);
        }
    }
    for (k = 0; k + 1 < q; k++) { /* selection sort, descending; ties keep their order */
        unsigned best = k;
        for (j = k + 1; j < q; j++)
            if (sigma[j] > sigma[best]) best = j;
        if (best != k) {
            uint32_t t = sigma[k];
            sigma[k] = sigma[best];
            sigma[best] = t;
            swap_cols(a, q, k, best);
            swap_cols(v, q, k, best);
        }
    }
    for (k = 0; k < q; k++) { /* canonical signs, shared with the Python reference */
        unsigned p = 0;
        int32_t best = 0;
        for (row = 0; row < q; row++) {
            int32_t x = a[row * q + k] < 0 ? -a[row * q + k] : a[row * q + k];
            if (x > best) {
                best = x;
                p = row;
            }
        }
        if (a[p * q + k] < 0) {
            negate_col(a, q, k);
            negate_col(v, q, k);
        }
    }
    return (int)sweeps;
}

/* ---- one step ---------------------------------------------------------------------------- */

/* x -= (Q_j . x) Q_j for the first r columns of Q (real Q * 2^eq), in order (modified
 * Gram-Schmidt); coef[j] += Q_j . x in units 2^(eq + exponent of x). */
static void mgs_pass(const int16_t *qm, uint8_t q, uint8_t r, int32_t eq, int32_t *x, uint16_t len,
                     int64_t *coef)
{
    unsigned i, j;
    for (j = 0; j < r; j++) {
        const int16_t *col = qm + j;
        int64_t dot = 0;
        int32_t d;
        int pre, sh;
        for (i = 0; i < len; i++) dot += (int64_t)col[(size_t)i * q] * x[i];
        if (dot == 0) continue;
        coef[j] += dot;
        /* the projection is dot * Q_j * 2^(2 eq) in units of x; cut dot to 30 bits first so
         * that dot * Q fits in int64 whatever the exponents */
        pre = bits64(abs64(dot)) - 30;
        if (pre < 0) pre = 0;
        d = (int32_t)lrt_shr_round64(dot, pre);
        sh = -2 * (int)eq - pre; /* >= 13 for any basis with max|Q| in [2^14, 2^15) */
        if (sh >= 1 && sh <= 62) {
            for (i = 0; i < len; i++) x[i] -= (int32_t)rsh((int64_t)d * col[(size_t)i * q], sh);
        } else {
            for (i = 0; i < len; i++)
                x[i] -= (int32_t)lrt_shr_round64((int64_t)d * col[(size_t)i * q], sh);
        }
    }
}

/* ||x||, 32 significant bits (see the U normalisation in lrt_lowrank_svd for why not isqrt) */
static lrt_ufx vec_norm(const int32_t *x, uint16_t len)
{
    uint64_t ss = 0;
    unsigned i;
    for (i = 0; i < len; i++) ss += (uint64_t)((int64_t)x[i] * x[i]);
    return lrt_ufx_sqrt(lrt_ufx_make(ss, 0));
}

/* 1 if the residual norm nr is below 2^-RESID_FLOOR_SHIFT of the full vector's norm */
static int in_span(lrt_ufx nr, lrt_ufx full)
{
    return lrt_ufx_cmp(lrt_ufx_ldexp(nr, LRT_LOWRANK_RESID_FLOOR_SHIFT), full) < 0;
}

/* Column r of Q <- x / norm as int16 with max in [2^14, 2^15); returns its exponent. */
static int32_t new_column(int16_t *qm, uint8_t q, uint8_t r, const int32_t *x, uint16_t len,
                          lrt_ufx norm, int32_t e_default)
{
    unsigned i;
    uint32_t xmax = 0;
    int32_t eq;
    lrt_ufx f;
    if (norm.m == 0) {
        for (i = 0; i < len; i++) qm[(size_t)i * q + r] = 0;
        return e_default;
    }
    for (i = 0; i < len; i++) {
        uint32_t a = x[i] < 0 ? 0u - (uint32_t)x[i] : (uint32_t)x[i];
        if (a > xmax) xmax = a;
    }
    /* real column max = xmax / norm = ratio.m * 2^ratio.e with ratio.m in [2^31, 2^32) */
    eq = lrt_ufx_div(lrt_ufx_make(xmax, 0), norm).e + 17;
    f = lrt_ufx_div(lrt_ufx_make(1, -eq), norm);
    for (i = 0; i < len; i++) { /* -f.e >= 17 (see above) */
        int64_t val = -f.e <= 62 ? rsh((int64_t)x[i] * f.m, -f.e) : 0;
        qm[(size_t)i * q + r] = (int16_t)LRT_CLAMP(val, -QMAX, QMAX);
    }
    return eq;
}

/* Q[:, :r] <- Q[:, :q] W (W: q x r, Q30), column r of Q having exponent ec, the others eo.
 * Renormalises to max|Q| in [2^14, 2^15) and returns the new exponent. The output exponent
 * is guessed (eo, the max of a rotated orthonormal basis moves little); on an int16
 * overflow the rows already written are halved and the exponent bumped. */
static int32_t rotate_basis(int16_t *qm, uint16_t len, uint8_t q, uint8_t r, const int32_t *w,
                            int32_t eo, int32_t ec, int empty)
{
    int32_t d = ec - eo, en = empty ? ec : eo;
    int sh = (int)(en + 30 - eo);
    uint32_t maxabs = 0;
    int halved = 0;
    unsigned i, j, k;
    int64_t wc[LRT_LOWRANK_MAX_RANK]; /* weights of the new column, in the old columns' units */
    if (d > 16) d = 16; /* cannot happen for n, m <= 16384 (|d| <= 7); keeps int64 safe */
    for (k = 0; k < r; k++) wc[k] = lrt_shr_round64(w[r * r + k], -(int)d);
    for (i = 0; i < len; i++) {
        int16_t *row = qm + (size_t)i * q;
        int64_t s[LRT_LOWRANK_MAX_RANK];
        int16_t out[LRT_LOWRANK_MAX_RANK];
        for (k = 0; k < r; k++) s[k] = row[r] * wc[k];
        for (j = 0; j < r; j++) { /* row of W contiguous: one load of Q per output row */
            const int32_t *wj = w + j * r;
            const int64_t x = row[j];
            for (k = 0; k < r; k++) s[k] += x * wj[k];
        }
        for (;;) {
            uint32_t rowmax = 0;
            for (k = 0; k < r; k++) {
                int64_t val = sh >= 1 && sh <= 62 ? rsh(s[k], sh) : lrt_shr_round64(s[k], sh);
                int64_t cl = LRT_CLAMP(val, -QMAX - 1, QMAX + 1); /* QMAX + 1: overflow */
                uint32_t a = (uint32_t)(cl < 0 ? -cl : cl);
                out[k] = (int16_t)LRT_CLAMP(cl, -QMAX, QMAX);
                if (a > rowmax) rowmax = a;
            }
            if (rowmax <= QMAX) {
                if (rowmax > maxabs) maxabs = rowmax;
                break;
            }
            for (j = 0; j < i; j++)
                for (k = 0; k < r; k++)
                    qm[(size_t)j * q + k] = (int16_t)lrt_shr_round64(qm[(size_t)j * q + k], 1);
            en++;
            sh++;
            halved = 1;
        }
        for (k = 0; k < r; k++) row[k] = out[k];
        row[r] = 0;
    }
    if (halved) {
        maxabs = 0;
        for (i = 0; i < len; i++)
            for (k = 0; k < r; k++) {
                int32_t x = qm[(size_t)i * q + k];
                uint32_t a = (uint32_t)(x < 0 ? -x : x);
                if (a > maxabs) maxabs = a;
            }
    }
    if (maxabs == 0) return Q_EXP_EMPTY;
    if (maxabs < QNORM_LO) {
        int up = 0;
        while ((maxabs << up) < QNORM_LO) up++;
        for (i = 0; i < len; i++)
            for (k = 0; k < r; k++)
                qm[(size_t)i * q + k] = (int16_t)(qm[(size_t)i * q + k] * (1 << up));
        en -= up;
    }
    return en;
}

/* Canonical basis of the group a..b of equal singular values: pivoted Gram-Schmidt of the
 * rows of U_G (largest residual first), which depends only on the subspace; the values
 * become their mean. Twin of lowrank.canonical_groups(). */
static void canonical_group(uint32_t *sigma, int32_t *u, int32_t *vm, uint8_t q, unsigned a,
                            unsigned b)
{
    const unsigned g = b - a + 1u;
    int32_t basis[LRT_LOWRANK_MAX_Q][LRT_LOWRANK_MAX_Q]; /* [s][t], Q30, unit vectors */
    int64_t res[LRT_LOWRANK_MAX_Q];
    uint8_t used[LRT_LOWRANK_MAX_Q];
    uint64_t sum = 0;
    unsigned t, p, s2, t2, row;
    memset(used, 0, sizeof(used));
    for (t = 0; t < g; t++) {
        uint64_t best = 0;
        unsigned bp = q;
        for (p = 0; p < q; p++) {
            uint64_t nn = 0;
            if (used[p]) continue;
            for (s2 = 0; s2 < g; s2++) res[s2] = u[p * q + a + s2];
            for (t2 = 0; t2 < t; t2++) { /* minus projections on the chosen directions */
                int64_t dot = 0;
                for (s2 = 0; s2 < g; s2++) dot += res[s2] * basis[s2][t2];
                dot = lrt_shr_round64(dot, 30);
                for (s2 = 0; s2 < g; s2++) res[s2] -= lrt_shr_round64(dot * basis[s2][t2], 30);
            }
            for (s2 = 0; s2 < g; s2++) nn += (uint64_t)(res[s2] * res[s2]);
            if (bp == q || nn > best) {
                best = nn;
                bp = p;
            }
        }
        used[bp] = 1;
        for (s2 = 0; s2 < g; s2++) res[s2] = u[bp * q + a + s2];
        for (t2 = 0; t2 < t; t2++) {
            int64_t dot = 0;
            for (s2 = 0; s2 < g; s2++) dot += res[s2] * basis[s2][t2];
            dot = lrt_shr_round64(dot, 30);
            for (s2 = 0; s2 < g; s2++) res[s2] -= lrt_shr_round64(dot * basis[s2][t2], 30);
        }
        {
            uint32_t nrm = lrt_isqrt64(best); /* Q30 */
            for (s2 = 0; s2 < g; s2++)
                basis[s2][t] = nrm ? (int32_t)(res[s2] * ONE_Q30 / (int64_t)nrm) : 0;
        }
    }
    for (row = 0; row < q; row++) { /* U_G <- U_G basis, V_G <- V_G basis */
        int64_t nu[LRT_LOWRANK_MAX_Q], nv[LRT_LOWRANK_MAX_Q];
        for (t = 0; t < g; t++) {
            int64_t su = 0, sv = 0;
            for (s2 = 0; s2 < g; s2++) {
                su += (int64_t)u[row * q + a + s2] * basis[s2][t];
                sv += (int64_t)vm[row * q + a + s2] * basis[s2][t];
            }
            nu[t] = lrt_shr_round64(su, 30);
            nv[t] = lrt_shr_round64(sv, 30);
        }
        for (t = 0; t < g; t++) {
            u[row * q + a + t] = (int32_t)nu[t];
            vm[row * q + a + t] = (int32_t)nv[t];
        }
    }
    for (t = a; t <= b; t++) sum += sigma[t];
    for (t = a; t <= b; t++) sigma[t] = (uint32_t)((sum + g / 2u) / g);
}

static void canonical_groups(uint32_t *sigma, int32_t *u, int32_t *vm, uint8_t q)
{
    unsigned a = 0, b;
    while (a < q && sigma[a] != 0) {
        b = a;
        while (b + 1u < q && sigma[b + 1] != 0 &&
               ((uint64_t)(sigma[b] - sigma[b + 1]) << GROUP_SHIFT) <= sigma[0])
            b++;
        if (b > a) canonical_group(sigma, u, vm, q, a, b);
        a = b + 1u;
    }
}

/* Rank-r truncation of the sorted SVD: fills W_L = U T^T, W_R = V T^T (q x r, Q30) and the
 * new cx (units of sigma). */
static void truncate_rank(const lrt_lowrank *acc, int biased, const uint32_t *sigma,
                          const int32_t *u, const int32_t *vm, uint32_t word, int32_t *wl,
                          int32_t *wr, uint32_t *cx)
{
    const uint8_t r = acc->cfg.rank, q = (uint8_t)(r + 1u);
    unsigned i, row, c, a, i0 = r;
    uint64_t s1 = 0;
    if (!biased) {
        uint64_t tail[LRT_LOWRANK_MAX_Q + 1];
        tail[q] = 0;
        for (i = q; i-- > 0;) tail[i] = tail[i + 1] + sigma[i];
        /* smallest i with (q - 1 - i) sigma_i <= sum_{j >= i} sigma_j; i = q - 2 always holds */
        for (i = 0; i + 2 < q; i++)
            if ((uint64_t)(q - 1u - i) * sigma[i] <= tail[i]) break;
        if (tail[i] > 0) { /* s1 == 0: nothing to mix, the biased truncation is exact */
            i0 = i;
            s1 = tail[i];
        }
    }
    for (c = 0; c < i0; c++) {
        for (row = 0; row < q; row++) {
            wl[row * r + c] = u[row * q + c];
            wr[row * r + c] = vm[row * q + c];
        }
        cx[c] = sigma[c];
    }
    if (i0 < r) {
        const unsigned k = q - 1u - i0;
        int64_t x0[LRT_LOWRANK_MAX_Q], wd[LRT_LOWRANK_MAX_Q], xs[LRT_LOWRANK_MAX_Q], denom;
        int sh = bits64(s1) - 32;
        uint64_t s1n;
        if (sh < 0) sh = 0;
        s1n = s1 >> sh;
        /* x0_a = sqrt(1 - sigma_a k / s1): a unit vector (k + 1 entries), Q30 */
        for (a = 0; a <= k; a++) {
            uint64_t ks = (uint64_t)k * sigma[i0 + a];
            uint64_t num = ks < s1 ? (s1 - ks) >> sh : 0;
            uint64_t frac = (num << 30) / s1n;
            if (frac > (uint64_t)ONE_Q30) frac = (uint64_t)ONE_Q30;
            x0[a] = lrt_isqrt64(frac << 30);
        }
        /* Householder H = I - w w^T / (1 - x0_0), w = x0 - e_0, maps e_0 to x0; its columns
         * 1..k are an orthonormal basis X of the complement of x0. x0_0 <= sqrt(1/2). */
        denom = ONE_Q30 - x0[0];
        for (a = 0; a <= k; a++) wd[a] = (x0[a] - (a == 0 ? ONE_Q30 : 0)) * ONE_Q30 / denom;
        for (c = 1; c <= k; c++) {
            const unsigned col = i0 + c - 1u;
            for (a = 0; a <= k; a++) {
                int64_t x = (a == c ? ONE_Q30 : 0) - lrt_shr_round64(wd[a] * x0[c], 30);
                xs[a] = ((word >> (31u - a)) & 1u) ? -x : x; /* random sign per row of X */
            }
            for (row = 0; row < q; row++) {
                int64_t sl = 0, sr = 0;
                for (a = 0; a <= k; a++) {
                    sl += (int64_t)u[row * q + i0 + a] * xs[a];
                    sr += (int64_t)vm[row * q + i0 + a] * xs[a];
                }
                wl[row * r + col] = (int32_t)lrt_shr_round64(sl, 30);
                wr[row * r + col] = (int32_t)lrt_shr_round64(sr, 30);
            }
            cx[col] = (uint32_t)((s1 + k / 2u) / k);
        }
    }
}

static int kappa_skip(const lrt_lowrank *acc, lrt_ufx aq, int32_t eu, lrt_ufx bq, int32_t ev)
{
    lrt_ufx lhs, rhs;
    if (acc->cfg.kappa_th == 0 || acc->cx[0] == 0) return 0;
    lhs = lrt_ufx_make(acc->cx[0], acc->cx_exp);
    rhs = lrt_ufx_mul(lrt_ufx_ldexp(lrt_ufx_mul(aq, bq), eu + ev),
                      lrt_ufx_make(acc->cfg.kappa_th, 0));
    return lrt_ufx_cmp(lhs, rhs) > 0;
}

/* alpha (q entries, units 2^ea) -> int32 with |.| <= 2^30; returns the added exponent */
static int32_t narrow(const int64_t *x, int32_t *out, uint8_t q)
{
    uint64_t mx = 0;
    unsigned i;
    int sh;
    for (i = 0; i < q; i++)
        if (abs64(x[i]) > mx) mx = abs64(x[i]);
    sh = bits64(mx) - 30;
    if (sh < 0) sh = 0;
    for (i = 0; i < q; i++) out[i] = (int32_t)lrt_shr_round64(x[i], sh);
    return sh;
}

/* e = Q[:, :r]^T Q[:, :r] - I in Q30 (r x r). Absent (all-zero) columns get no correction. */
static void gram_error(const int16_t *qm, uint16_t len, uint8_t q, uint8_t r, int32_t eq,
                       int32_t *e)
{
    const int sh = -(2 * (int)eq + 30); /* Gram in units 2^(2 eq) -> Q30 */
    unsigned i, k, l;
    uint8_t dead[LRT_LOWRANK_MAX_RANK];
    for (k = 0; k < r; k++) {
        for (l = k; l < r; l++) {
            int64_t sum = 0, val;
            for (i = 0; i < len; i++) sum += (int32_t)qm[(size_t)i * q + k] * qm[(size_t)i * q + l];
            val = lrt_shr_round64(sum, sh) - (k == l ? ONE_Q30 : 0);
            if (k == l) dead[k] = val < -ONE_Q30 / 2;
            val = LRT_CLAMP(val, -GRAM_ERR_MAX, GRAM_ERR_MAX);
            e[k * r + l] = (int32_t)val;
            e[l * r + k] = (int32_t)val;
        }
    }
    for (k = 0; k < r; k++)
        if (dead[k])
            for (l = 0; l < r; l++) e[k * r + l] = e[l * r + k] = 0;
}

/* Q <- Q (I - e/2): first-order symmetric (Loewdin) orthonormalisation, the smallest change
 * of basis that restores orthonormality, so no arbitrary choice enters. Returns the new
 * exponent; w is q x r scratch. */
static int32_t reorth_basis(int16_t *qm, uint16_t len, uint8_t q, uint8_t r, int32_t eq,
                            const int32_t *e, int32_t *w)
{
    unsigned j, k;
    for (j = 0; j < r; j++)
        for (k = 0; k < r; k++)
            w[j * r + k] =
                (j == k ? (int32_t)ONE_Q30 : 0) - (int32_t)lrt_shr_round64(e[j * r + k], 1);
    for (k = 0; k < r; k++) w[r * r + k] = 0;
    return rotate_basis(qm, len, q, r, w, eq, eq, 0);
}

/* coef <- (I + e/2) coef (the coefficients of u in the old basis Q = Q_new (I + e/2) + O(e^2)),
 * then from units 2^e_old to 2^e_new. */
static void reorth_coef(int64_t *coef, uint8_t r, const int32_t *e, int32_t e_old, int32_t e_new)
{
    int32_t c32[LRT_LOWRANK_MAX_RANK];
    int sh = 0;
    unsigned j, k;
    uint64_t mx = 0;
    for (k = 0; k < r; k++)
        if (abs64(coef[k]) > mx) mx = abs64(coef[k]);
    sh = bits64(mx) - 30;
    if (sh < 0) sh = 0;
    for (k = 0; k < r; k++) c32[k] = (int32_t)lrt_shr_round64(coef[k], sh);
    for (j = 0; j < r; j++) {
        int64_t corr = 0; /* |e| <= 2^24, |c32| <= 2^30: the sum stays below 2^58 */
        for (k = 0; k < r; k++) corr += (int64_t)e[j * r + k] * c32[k];
        coef[j] += lrt_shr_round64(corr, 31 - sh);
    }
    for (k = 0; k < r; k++) coef[k] = lrt_shr_round64(coef[k], (int)(e_new - e_old));
}

static int step_core(lrt_lowrank *acc, uint32_t word, int u_exp, int v_exp)
{
    const uint8_t r = acc->cfg.rank, q = (uint8_t)(r + 1u);
    const uint16_t n = acc->n, m = acc->m;
    int32_t *xu = acc->work, *xv = acc->work + n;
    int32_t *cm = work_mat(acc, 0), *vm = work_mat(acc, 1);
    int32_t *wl = work_mat(acc, 2), *wr = work_mat(acc, 3);
    const int32_t eu = u_exp - WORK_SHIFT, ev = v_exp - WORK_SHIFT;
    int64_t alpha[LRT_LOWRANK_MAX_Q], beta[LRT_LOWRANK_MAX_Q];
    int32_t a32[LRT_LOWRANK_MAX_Q], b32[LRT_LOWRANK_MAX_Q];
    uint32_t sigma[LRT_LOWRANK_MAX_Q], cx[LRT_LOWRANK_MAX_RANK];
    lrt_ufx aq, bq, un, vn;
    int biased;
    int32_t eql, eqr, ep, ec, top;
    uint64_t pmax;
    const int empty = acc->cx[0] == 0;
    unsigned i, j;

    memset(alpha, 0, sizeof(alpha));
    memset(beta, 0, sizeof(beta));
    un = vec_norm(xu, n);
    vn = vec_norm(xv, m);
    mgs_pass(acc->ql, q, r, acc->ql_exp, xu, n, alpha);
    mgs_pass(acc->qr, q, r, acc->qr_exp, xv, m, beta);
    aq = vec_norm(xu, n);
    bq = vec_norm(xv, m);
    if (kappa_skip(acc, aq, eu, bq, ev)) return 0;
    /* int16 rounding makes the bases drift from orthonormal (~1e-5 per step, both signs, a
     * few 1e-3 after 10^4 steps); every REORTH_PERIOD applied steps pull them back. The
     * represented sum moves by O(drift), like one step's rounding; compensating it in the
     * core would split the exactly equal cx left by the unbiased mixing and desynchronise
     * the C code from the reference, which never drifts. */
    if (acc->cx[0] != 0 &&
        acc->applied % LRT_LOWRANK_REORTH_PERIOD == LRT_LOWRANK_REORTH_PERIOD - 1) {
        int32_t eo = acc->ql_exp;
        gram_error(acc->ql, n, q, r, acc->ql_exp, wl);
        gram_error(acc->qr, m, q, r, acc->qr_exp, wr);
        acc->ql_exp = reorth_basis(acc->ql, n, q, r, acc->ql_exp, wl, cm);
        reorth_coef(alpha, r, wl, eo, acc->ql_exp);
        eo = acc->qr_exp;
        acc->qr_exp = reorth_basis(acc->qr, m, q, r, acc->qr_exp, wr, cm);
        reorth_coef(beta, r, wr, eo, acc->qr_exp);
    }
    /* second pass ("twice is enough"): the int16 basis is orthonormal only to ~2^-15, so one
     * pass leaves a residual that still leans on the basis when u is nearly in its span */
    mgs_pass(acc->ql, q, r, acc->ql_exp, xu, n, alpha);
    mgs_pass(acc->qr, q, r, acc->qr_exp, xv, m, beta);
    aq = vec_norm(xu, n);
    bq = vec_norm(xv, m);
    /* u or v in the span of its basis up to the int16 noise: the unbiased mixing would turn
     * that noise into O(sqrt(noise)) errors and, step after step, let the bases wander off
     * the data; the biased truncation drops at most this noise (exact in exact arithmetic,
     * like the s1 == 0 guard) and keeps pulling the bases onto the data. */
    biased = acc->cfg.mode == LRT_LOWRANK_BIASED || in_span(aq, un) || in_span(bq, vn);
    eql = new_column(acc->ql, q, r, xu, n, aq, acc->ql_exp);
    eqr = new_column(acc->qr, q, r, xv, m, bq, acc->qr_exp);

    /* C = alpha beta^T + diag(cx, 0) with one exponent ec, entries <= 2^28 */
    alpha[r] = (int64_t)lrt_ufx_to_u64(aq, acc->ql_exp); /* to units 2^(ql_exp + eu) */
    beta[r] = (int64_t)lrt_ufx_to_u64(bq, acc->qr_exp);
    ep = acc->ql_exp + eu + narrow(alpha, a32, q) + acc->qr_exp + ev + narrow(beta, b32, q);
    pmax = 0;
    {
        uint64_t am = 0, bm = 0;
        for (i = 0; i < q; i++) {
            if (abs64(a32[i]) > am) am = abs64(a32[i]);
            if (abs64(b32[i]) > bm) bm = abs64(b32[i]);
        }
        pmax = am * bm;
    }
    if (pmax == 0 && acc->cx[0] == 0) return 0;
    top = pmax ? bits64(pmax) + ep : INT32_MIN / 2;
    if (acc->cx[0]) {
        int32_t tc = bits64(acc->cx[0]) + acc->cx_exp;
        if (tc > top) top = tc;
    }
    ec = top - C_TOP_BITS;
    for (i = 0; i < q; i++) {
        for (j = 0; j < q; j++) {
            int64_t val = lrt_shr_round64((int64_t)a32[i] * b32[j], (int)(ec - ep));
            if (i == j && i < r && acc->cx[i]) /* (cx_exp is stale while cx is 0) */
                val += lrt_shr_round64(acc->cx[i], (int)(ec - acc->cx_exp));
            cm[i * q + j] = (int32_t)val;
        }
    }

    if (lrt_lowrank_svd(cm, q, sigma, vm) < 0) return LRT_ERR_STATE; /* cannot happen */
    for (i = 1; i < q; i++) { /* sigma floor: below the int16 noise level counts as zero */
        if (((uint64_t)sigma[i] << LRT_LOWRANK_SIGMA_FLOOR_SHIFT) < sigma[0]) {
            sigma[i] = 0;
            for (j = 0; j < q; j++) {
                cm[j * q + i] = 0;
                vm[j * q + i] = 0;
            }
        }
    }
    canonical_groups(sigma, cm, vm, q);
    truncate_rank(acc, biased, sigma, cm, vm, word, wl, wr, cx);

    acc->ql_exp = rotate_basis(acc->ql, n, q, r, wl, acc->ql_exp, eql, empty);
    acc->qr_exp = rotate_basis(acc->qr, m, q, r, wr, acc->qr_exp, eqr, empty);
    memcpy(acc->cx, cx, sizeof(uint32_t) * r);
    acc->cx_exp = ec;
    acc->applied++;
    return 1;
}

static int check_step_args(const lrt_lowrank *acc, const int8_t *u, int u_exp, int32_t v_offset,
                           int v_exp)
{
    if (!acc || !u) return LRT_ERR_ARG;
    if (v_offset > LRT_LOWRANK_MAX_VOFFSET || v_offset < -LRT_LOWRANK_MAX_VOFFSET)
        return LRT_ERR_ARG;
    if (u_exp > 64 || u_exp < -64 || v_exp > 64 || v_exp < -64) return LRT_ERR_ARG;
    return LRT_OK;
}

static int load_u(int32_t *xu, const int8_t *u, uint16_t n)
{
    unsigned i;
    int nz = 0;
    for (i = 0; i < n; i++) {
        xu[i] = (int32_t)u[i] * (1 << WORK_SHIFT);
        nz |= u[i];
    }
    return nz != 0;
}

int lrt_lowrank_step(lrt_lowrank *acc, const int8_t *u, int u_exp, const int8_t *v,
                     int32_t v_offset, int v_exp)
{
    return lrt_lowrank_step_strided(acc, u, u_exp, v, 1, acc ? acc->m : 0, 0, v_offset, v_exp);
}

int lrt_lowrank_step_strided(lrt_lowrank *acc, const int8_t *u, int u_exp, const int8_t *base,
                             uint16_t rows, uint16_t row_len, uint32_t row_stride,
                             int32_t v_offset, int v_exp)
{
    int err = check_step_args(acc, u, u_exp, v_offset, v_exp);
    uint32_t word;
    int32_t *xv, nz = 0;
    unsigned k, i;
    if (err) return err;
    if (!base || (uint32_t)rows * row_len != acc->m) return LRT_ERR_ARG;
    /* one RNG word per call, skipped or not, so that the C code and the reference stay in
     * step even if they disagree about a skip */
    word = lrt_xorshift32_next(&acc->rng);
    acc->steps++;
    xv = acc->work + acc->n;
    for (k = 0; k < rows; k++) {
        const int8_t *src = base + (size_t)k * row_stride;
        for (i = 0; i < row_len; i++) {
            int32_t t = (int32_t)src[i] + v_offset;
            *xv++ = t * (1 << WORK_SHIFT);
            nz |= t;
        }
    }
    if (!load_u(acc->work, u, acc->n) || !nz) return 0;
    return step_core(acc, word, u_exp, v_exp);
}

/* ---- flush ------------------------------------------------------------------------------- */

static const lrt_ufx UFX_ONE = {0x80000000u, -31};

static lrt_ufx factor_max(const int16_t *qm, uint16_t len, uint8_t q, uint8_t r, int32_t eq,
                          const uint32_t *cx, int32_t ecx)
{
    lrt_ufx best = {0u, 0};
    unsigned i, k;
    for (k = 0; k < r; k++) {
        uint32_t mx = 0;
        lrt_ufx val;
        for (i = 0; i < len; i++) {
            int32_t x = qm[(size_t)i * q + k];
            uint32_t a = (uint32_t)(x < 0 ? -x : x);
            if (a > mx) mx = a;
        }
        val = lrt_ufx_mul(lrt_ufx_make(mx, eq), lrt_ufx_sqrt(lrt_ufx_make(cx[k], ecx)));
        if (lrt_ufx_cmp(val, best) > 0) best = val;
    }
    return best;
}

int lrt_lowrank_flush_prepare(lrt_lowrank *acc, int weight_exp, lrt_lowrank_plan *plan)
{
    const uint8_t r = acc ? acc->cfg.rank : 0, q = (uint8_t)(r + 1u);
    lrt_ufx lr, b, den = UFX_ONE, wk[LRT_LOWRANK_MAX_RANK];
    int32_t top = INT32_MIN;
    unsigned k;
    uint64_t need;
    if (!acc || !plan || weight_exp > 64 || weight_exp < -64) return LRT_ERR_ARG;
    memset(plan, 0, sizeof(*plan));
    lr = lrt_ufx_make(acc->cfg.lr_q24, -24);
    b = lrt_ufx_make(acc->b_eff_q16, -16);
    if (acc->cfg.batch_pow2 == 1) lr = lrt_ufx_mul(lr, lrt_ufx_sqrt(b));
    else if (acc->cfg.batch_pow2 == 2) lr = lrt_ufx_mul(lr, b);
    if (acc->b_eff_q16 == 0) lr.m = 0;
    plan->lr_eff = lr;
    plan->div_l = UFX_ONE;
    plan->div_r = UFX_ONE;
    if (acc->cfg.maxnorm) {
        plan->div_l = lrt_mnorm_update(
            &acc->mn_l, factor_max(acc->ql, acc->n, q, r, acc->ql_exp, acc->cx, acc->cx_exp));
        plan->div_r = lrt_mnorm_update(
            &acc->mn_r, factor_max(acc->qr, acc->m, q, r, acc->qr_exp, acc->cx, acc->cx_exp));
        den = lrt_ufx_mul(plan->div_l, plan->div_r);
    }
    for (k = 0; k < r; k++) {
        /* delta_ij = sum_k QL_ik QR_jk * lr_eff cx_k / (d_L d_R) * 2^(ql_exp + qr_exp - wexp) */
        wk[k] = lrt_ufx_div(lrt_ufx_mul(lr, lrt_ufx_make(acc->cx[k], acc->cx_exp)), den);
        wk[k] = lrt_ufx_ldexp(wk[k], acc->ql_exp + acc->qr_exp - weight_exp);
        if (wk[k].m && wk[k].e + 32 > top) top = wk[k].e + 32;
    }
    if (top != INT32_MIN) { /* common exponent: the largest mantissa gets 15 bits */
        for (k = 0; k < r; k++) plan->w[k] = (int32_t)lrt_ufx_to_u64(wk[k], top - 15);
        plan->shift = 15 - top;
    }
    need = ((uint64_t)acc->cfg.rho_min_q16 * ((uint32_t)acc->n * acc->m) + 65535u) >> 16;
    plan->min_nonzero = need < 1 ? 1u : (uint32_t)need;
    return LRT_OK;
}

static inline int16_t delta_value(int64_t s, int32_t shift)
{
    if (shift >= 1 && shift <= 62) {
        s = rsh(s, shift);
    } else if (shift >= 0) {
        s = lrt_shr_round64(s, shift);
    } else if (s != 0) {
        if (shift < -20) return s > 0 ? INT16_MAX : -INT16_MAX;
        s *= (int64_t)1 << -shift; /* |s| < 2^49 before the shift */
    }
    return (int16_t)LRT_CLAMP(s, -INT16_MAX, INT16_MAX);
}

static void row_scale(const lrt_lowrank *acc, const lrt_lowrank_plan *plan, uint16_t row,
                      int32_t *t)
{
    const uint8_t r = acc->cfg.rank, q = (uint8_t)(r + 1u);
    const int16_t *ql = acc->ql + (size_t)row * q;
    unsigned k;
    for (k = 0; k < r; k++) t[k] = ql[k] * plan->w[k]; /* <= 2^15 * 2^15 */
}

void lrt_lowrank_delta_row(const lrt_lowrank *acc, const lrt_lowrank_plan *plan, uint16_t row,
                           int16_t *delta)
{
    const uint8_t r = acc->cfg.rank, q = (uint8_t)(r + 1u);
    int32_t t[LRT_LOWRANK_MAX_RANK];
    unsigned j, k;
    row_scale(acc, plan, row, t);
    for (j = 0; j < acc->m; j++) {
        const int16_t *qr = acc->qr + (size_t)j * q;
        int64_t s = 0;
        for (k = 0; k < r; k++) s += (int64_t)t[k] * qr[k];
        delta[j] = delta_value(s, plan->shift);
    }
}

uint32_t lrt_lowrank_count_nonzero(const lrt_lowrank *acc, const lrt_lowrank_plan *plan,
                                   uint32_t stop_at)
{
    const uint8_t r = acc->cfg.rank, q = (uint8_t)(r + 1u);
    int32_t t[LRT_LOWRANK_MAX_RANK];
    uint32_t count = 0;
    unsigned i, j, k;
    for (i = 0; i < acc->n; i++) {
        row_scale(acc, plan, (uint16_t)i, t);
        for (j = 0; j < acc->m; j++) {
            const int16_t *qr = acc->qr + (size_t)j * q;
            int64_t s = 0;
            for (k = 0; k < r; k++) s += (int64_t)t[k] * qr[k];
            if (delta_value(s, plan->shift) != 0) count++;
        }
        if (stop_at && count >= stop_at) break;
    }
    return count;
}

int lrt_lowrank_flush_check(lrt_lowrank *acc, int weight_exp, lrt_lowrank_plan *plan)
{
    int err = lrt_lowrank_flush_prepare(acc, weight_exp, plan);
    if (err) return err;
    if (lrt_lowrank_count_nonzero(acc, plan, plan->min_nonzero) >= plan->min_nonzero) return 1;
    lrt_lowrank_defer(acc);
    return 0;
}
