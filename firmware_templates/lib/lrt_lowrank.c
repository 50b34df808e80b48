/* lrt_lowrank.c - integer LRT accumulator (see lrt_lowrank.h, docs/ESTIMATOR.md and the float
 * reference toolchain/lrt/lowrank.py).
 *
 * Range bookkeeping (n, m <= 16384, block columns k <= 16, core P = r + k <= 24):
 *   block buffers     normalised to max|x| in [2^22, 2^23), so ||x|| < 2^30 (int32) and
 *                     ||x||^2 < 2^60
 *   Gram-Schmidt dot  |Q| < 2^15 times x, summed: < 2^52 (int64)
 *   coefficients      A, B: <= 2^27 per entry, so (A B^T)_ij < 16 * 2^54 = 2^58 (int64)
 *   core C            |C_ij| <= 2^28, so column norms^2 <= 24 * 2^56 < 2^61 (int64)
 *   rotations         Q30 (2^30 = 1.0); products Q30 x Q30 in int64 then >> 30
 */
#include "lrt_lowrank.h"

#include <string.h>

#define QMAX 32767        /* int16 basis entries stay symmetric (never -32768) */
#define QNORM_LO 16384    /* renormalise max|Q| into [2^14, 2^15) */
#define Q_EXP_EMPTY (-15) /* exponent of an all-zero basis */
#define ONE_Q30 ((int64_t)1 << 30)
#define X_TOP ((int32_t)1 << 22) /* block buffers: max|x| in [2^22, 2^23) */
#define COEF_BITS 27             /* coefficient mantissas: |a| <= 2^27 */
#define C_TOP_BITS 24            /* each term of the core below 2^24 (see step_block) */
#define C_MAX ((int32_t)1 << 28)
#define JACOBI_TOL_SHIFT 24             /* rotate while |a_i.a_j| > ||a_i|| ||a_j|| 2^-24 */
#define GRAM_ERR_MAX ((int32_t)1 << 24) /* clamp |Q^T Q - I| entries to 2^-6 (first order) */

/* On the host (x86-64, no SIMD kernels) the basis updates run over chunks of entries, one
 * column at a time, which the compiler vectorizes; on a Cortex-M the entry-at-a-time loops
 * keep their sums in registers, which is what its single-issue core wants. Same bits. */
#if !defined(__arm__)
#define LRT_LOWRANK_HOST_CHUNKS 1
#else
#define LRT_LOWRANK_HOST_CHUNKS 0
#endif
#define HOST_CHUNK 64u /* entries per chunk: 512 bytes of int64 sums on the stack */

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

static uint32_t max_abs32(const int32_t *x, size_t len)
{
    uint32_t mx = 0;
    size_t i;
    for (i = 0; i < len; i++) {
        uint32_t a = x[i] < 0 ? 0u - (uint32_t)x[i] : (uint32_t)x[i];
        if (a > mx)
            mx = a;
    }
    return mx;
}

/* ---- configuration, sizes, init ------------------------------------------------------ */

void lrt_lowrank_config_default(lrt_lowrank_config *cfg)
{
    cfg->rank = 4;
    cfg->mode = LRT_LOWRANK_UNBIASED;
    cfg->maxnorm = 1;
    cfg->batch_pow2 = 1;
    cfg->max_block = LRT_LOWRANK_MAX_BLOCK;
    cfg->rho_min_q16 = 655;
    cfg->lr_q24 = 167772;
    cfg->discount_q16 = 65536;
    cfg->b_cap = 0;
    cfg->maxnorm_beta_q30 = 0;
    cfg->seed = 1;
}

size_t lrt_lowrank_state_size(uint16_t n, uint16_t m, uint8_t rank)
{
    return LRT_LOWRANK_STATE_SIZE(n, m, rank);
}

size_t lrt_lowrank_work_size(uint8_t rank, uint8_t max_block)
{
    return LRT_LOWRANK_WORK_SIZE(rank, max_block);
}

/* work buffer layout (int32), P = r + kmax, w = max(r, kmax): C -> U [P*P], V [P*P],
 * A [P*w], B [P*w]; A B^T's int64 entries span C and V before the core is built, and once it
 * is, W_L and W_R reuse A and B */
static int32_t *work_mat(const lrt_lowrank *acc, unsigned idx)
{
    const size_t r = acc->cfg.rank, kb = acc->cfg.max_block, p = r + kb;
    const size_t w = r > kb ? r : kb;
    const size_t off[4] = {0, p * p, 2 * p * p, 2 * p * p + p * w};
    return acc->work + off[idx];
}

void lrt_lowrank_reset(lrt_lowrank *acc)
{
    const size_t r = acc->cfg.rank;
    memset(acc->ql, 0, sizeof(int16_t) * r * acc->n);
    memset(acc->qr, 0, sizeof(int16_t) * r * acc->m);
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
    if (!acc || !cfg || !state || !work)
        return LRT_ERR_ARG;
    if (cfg->rank < 1 || cfg->rank > LRT_LOWRANK_MAX_RANK)
        return LRT_ERR_ARG;
    if (cfg->max_block < 1 || cfg->max_block > LRT_LOWRANK_MAX_BLOCK)
        return LRT_ERR_ARG;
    if (cfg->mode > LRT_LOWRANK_BIASED || cfg->batch_pow2 > 2)
        return LRT_ERR_ARG;
    if (cfg->discount_q16 > 65536u || cfg->rho_min_q16 > 65536u)
        return LRT_ERR_ARG;
    if (n < 1 || m < 1 || n > LRT_LOWRANK_MAX_DIM || m > LRT_LOWRANK_MAX_DIM)
        return LRT_ERR_ARG;
    if (((uintptr_t)state & 1u) || ((uintptr_t)work & 3u))
        return LRT_ERR_ARG;
    if (state_size < lrt_lowrank_state_size(n, m, cfg->rank))
        return LRT_ERR_SIZE;
    if (work_size < lrt_lowrank_work_size(cfg->rank, cfg->max_block))
        return LRT_ERR_SIZE;
    acc->cfg = *cfg;
    acc->n = n;
    acc->m = m;
    acc->ql = (int16_t *)state;
    acc->qr = acc->ql + (size_t)cfg->rank * n;
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
    for (k = 0; k < acc->cfg.rank; k++)
        acc->cx[k] = (uint32_t)(((uint64_t)acc->cx[k] * d) >> 16);
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
    /* the quotients below truncate toward zero, as C's signed division */
    cos2 = (int64_t)lrt_udiv64_32(abs64(dn) << 30, rho);
    if (cos2 > ONE_Q30)
        cos2 = ONE_Q30;
    sin2 = (int64_t)lrt_udiv64_32(abs64(gn) << 30, rho);
    if ((gn < 0) != (d < 0))
        sin2 = -sin2;
    cc = lrt_isqrt64((uint64_t)(ONE_Q30 + cos2) << 29); /* cos(theta) = sqrt((1 + cos 2t) / 2) */
    *c = (int32_t)cc;
    *s = (int32_t)lrt_udiv64_32(abs64(sin2) << 29, cc); /* sin 2t / (2 cos t) */
    if (sin2 < 0)
        *s = -*s;
}

/* round((c a + s b) 2^-30): with s negated for the first output of a rotation, both are a
 * multiply and a multiply-accumulate into one 64-bit register pair */
static inline int32_t rot(int32_t c, int32_t a, int32_t s, int32_t b)
{
    return (int32_t)rsh((int64_t)c * a + (int64_t)s * b, 30);
}

/* The rotations run out of line: inlined into the sweep loop they would share its registers
 * and spill (the M4 has 14 to spare). */
#if defined(__GNUC__)
#define OUT_OF_LINE __attribute__((noinline))
#else
#define OUT_OF_LINE
#endif

/* columns i and j of the q x q matrix x, rows 0 .. rows - 1: (a, b) <- (c a - s b, s a + c b) */
static OUT_OF_LINE void rotate_cols(int32_t *x, uint8_t q, unsigned rows, unsigned i, unsigned j,
                                    int32_t c, int32_t s)
{
    int32_t *xi = x + i, *xj = x + j;
    const int32_t *const end = xi + (size_t)rows * q, ns = -s;
    for (; xi != end; xi += q, xj += q) {
        const int32_t a = *xi, b = *xj;
        *xi = rot(c, a, ns, b);
        *xj = rot(s, a, c, b);
    }
}

/* rotate_cols over all q rows, also returning the new columns' squared norms (the values
 * are in registers anyway; the next checks of these columns need them) */
static OUT_OF_LINE void rotate_cols_norms(int32_t *x, uint8_t q, unsigned i, unsigned j, int32_t c,
                                          int32_t s, uint64_t *ni, uint64_t *nj)
{
    int32_t *xi = x + i, *xj = x + j;
    const int32_t *const end = xi + (size_t)q * q, ns = -s;
    int64_t si = 0, sj = 0;
    for (; xi != end; xi += q, xj += q) {
        const int32_t a = *xi, b = *xj, u = rot(c, a, ns, b), w = rot(s, a, c, b);
        *xi = u;
        *xj = w;
        si += (int64_t)u * u;
        sj += (int64_t)w * w;
    }
    *ni = (uint64_t)si;
    *nj = (uint64_t)sj;
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
    for (row = 0; row < q; row++)
        x[row * q + k] = -x[row * q + k];
}

int lrt_lowrank_svd(int32_t *a, uint8_t q, uint32_t *sigma, int32_t *v)
{
    unsigned i, j, k, row, sweep, sweeps = 0, qc = 0;
    /* Two exact shortcuts (the same numbers give the same decisions): a column's squared
     * norm is computed once (bit k of have) and then by the rotations that change it, and a
     * pair found converged in the last sweep is skipped while neither of its columns has been
     * rotated since.
     * pos counts the pairs visited; a pair's previous visit was one sweep (npairs) ago,
     * changed[k] is the pos of column k's last rotation plus one, and bit p of conv the
     * verdict of pair p's last visit. */
    uint64_t nrm[LRT_LOWRANK_MAX_CORE];
    uint16_t changed[LRT_LOWRANK_MAX_CORE];
    uint32_t conv[(LRT_LOWRANK_MAX_CORE * (LRT_LOWRANK_MAX_CORE - 1) / 2 + 31) / 32];
    uint32_t have = 0, pos = 0, npairs;
    if (!a || !sigma || !v || q < 2 || q > LRT_LOWRANK_MAX_CORE)
        return LRT_ERR_ARG;
    for (i = 0; i < (unsigned)q * q; i++) {
        if (a[i] > C_MAX || a[i] < -C_MAX)
            return LRT_ERR_ARG;
        v[i] = (i % (q + 1u)) == 0 ? (int32_t)ONE_Q30 : 0;
        if (a[i] != 0 && i % q >= qc)
            qc = i % q + 1u;
    }
    npairs = qc > 1 ? qc * (qc - 1u) / 2u : 0u;
    memset(changed, 0, sizeof(changed));
    memset(conv, 0, sizeof(conv));
    /* One-sided (Hestenes) Jacobi: rotate column pairs of a until all are orthogonal; then
     * a = U diag(sigma), and v accumulates the rotations, so A = U diag(sigma) V^T. Trailing
     * all-zero columns (from qc on; the block step's core has them when it is wider than
     * tall, see step_block) are orthogonal to everything and never rotated, and rows qc..
     * of v's first qc columns stay zero: both are left out of the loops. */
    for (sweep = 0; sweep < LRT_LOWRANK_JACOBI_MAX_SWEEPS; sweep++) {
        int rotated = 0;
        unsigned p = 0;
        for (i = 0; i + 1 < qc; i++) {
            for (j = i + 1; j < qc; j++, p++, pos++) {
                int64_t al, be, ga = 0;
                const uint32_t bit = 1u << (p & 31u);
                uint32_t *cw = &conv[p >> 5];
                lrt_ufx g2;
                int32_t c, s;
                if ((*cw & bit) && changed[i] + npairs <= pos && changed[j] + npairs <= pos)
                    continue; /* converged at its last visit, and neither column moved since */
                *cw |= bit;
                for (k = i; k <= j; k += j - i) {
                    if (!((have >> k) & 1u)) {
                        const int32_t *x = a + k;
                        int64_t ss = 0;
                        for (row = 0; row < q; row++, x += q)
                            ss += (int64_t)*x * *x;
                        nrm[k] = (uint64_t)ss;
                        have |= 1u << k;
                    }
                }
                {
                    const int32_t *x = a + i, *y = a + j;
                    for (row = q; row >= 2; row -= 2, x += 2u * q, y += 2u * q) {
                        ga += (int64_t)x[0] * y[0];
                        ga += (int64_t)x[q] * y[q];
                    }
                    if (row)
                        ga += (int64_t)x[0] * y[0];
                }
                al = (int64_t)nrm[i];
                be = (int64_t)nrm[j];
                if (ga == 0)
                    continue;
                /* converged (ga^2 <= al be 2^-48), or below the rounding noise of the int32
                 * entries (ga^2 <= q^2 (al + be)); compared as squares, no square roots. The
                 * bit lengths decide most pairs (2^(2 bg - 2) <= ga^2 < 2^(2 bg), the same for
                 * the products); only close calls need the exact comparison. */
                {
                    const int bg = bits64(abs64(ga)),
                              bab = bits64((uint64_t)al) + bits64((uint64_t)be);
                    const int bn = bits64((uint64_t)al + (uint64_t)be) + bits64((uint64_t)q * q);
                    int done;
                    if (2 * bg <= bab - 2 - 2 * JACOBI_TOL_SHIFT || 2 * bg <= bn - 2) {
                        done = 1;
                    } else if (2 * bg - 2 >= bab - 2 * JACOBI_TOL_SHIFT && 2 * bg - 2 >= bn) {
                        done = 0;
                    } else {
                        g2 = lrt_ufx_make(abs64(ga), 0);
                        g2 = lrt_ufx_mul(g2, g2);
                        done = lrt_ufx_cmp(g2,
                                           lrt_ufx_ldexp(lrt_ufx_mul(lrt_ufx_make((uint64_t)al, 0),
                                                                     lrt_ufx_make((uint64_t)be, 0)),
                                                         -2 * JACOBI_TOL_SHIFT)) <= 0 ||
                               lrt_ufx_cmp(g2,
                                           lrt_ufx_mul(lrt_ufx_make((uint64_t)al + (uint64_t)be, 0),
                                                       lrt_ufx_make((uint32_t)q * q, 0))) <= 0;
                    }
                    if (done)
                        continue;
                }
                *cw &= ~bit;
                jacobi_cs(al, be, ga, &c, &s);
                rotate_cols_norms(a, q, i, j, c, s, &nrm[i], &nrm[j]);
                rotate_cols(v, q, qc, i, j, c, s);
                changed[i] = changed[j] = (uint16_t)(pos + 1u);
                rotated = 1;
            }
        }
        sweeps++;
        if (!rotated)
            break;
    }
    for (k = 0; k < q; k++) {
        uint64_t ss = 0;
        if ((have >> k) & 1u)
            ss = nrm[k];
        else
            for (row = 0; row < q; row++)
                ss += (uint64_t)((int64_t)a[row * q + k] * a[row * q + k]);
        if (ss == 0) {
            sigma[k] = 0;
            for (row = 0; row < q; row++)
                a[row * q + k] = 0;
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
            if (sigma[j] > sigma[best])
                best = j;
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

/* ---- one block step ---------------------------------------------------------------------- */

/* x -= round(acc 2^-sh); returns the new x squared */
static inline uint64_t update_entry(int32_t *x, int64_t acc, int sh)
{
    const int64_t t = sh >= 1 && sh <= 62 ? rsh(acc, sh) : lrt_shr_round64(acc, sh);
    const int32_t v = *x - (int32_t)t;
    *x = v;
    return (uint64_t)((int64_t)v * v);
}

/* One classical Gram-Schmidt pass of x (len entries) against the columns of Q (int16 state,
 * stride r, exponent eq) and the accepted new columns P_j (p32 + j * len, |entries| < 2^15,
 * exponent ep[j]): every coefficient Q_j . x from the same x, then one update
 * x -= sum_j (Q_j . x) Q_j per entry with a single rounding. cf[j] += Q_j . x in units
 * 2^(exponent of column j + exponent of x). Returns ||x||^2 after the update. Twice applied
 * (see extend_basis) it is as orthogonal as modified Gram-Schmidt twice, and it reads x once
 * per column for the coefficients and once for the update instead of twice per column. */
static uint64_t project_pass(const int16_t *qm, uint8_t r, int32_t eq, const int32_t *p32,
                             const int32_t *ep, unsigned kk, int32_t *x, uint16_t len, int64_t *cf)
{
    int64_t dot[LRT_LOWRANK_MAX_CORE];
    int32_t d[LRT_LOWRANK_MAX_CORE], d0, d1, d2, d3;
    const unsigned cols = r + kk;
    int32_t top = INT32_MIN;
    uint64_t ss = 0;
    unsigned i, j;
    int sh;
    /* the coefficients two columns at a time: one load of x[i] for two products (four for
     * the default rank) */
    j = 0;
    if (r == 4) {
        int64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        const int16_t *q = qm;
        for (i = 0; i < len; i++, q += 4) {
            const int32_t xi = x[i];
            a0 += (int64_t)q[0] * xi;
            a1 += (int64_t)q[1] * xi;
            a2 += (int64_t)q[2] * xi;
            a3 += (int64_t)q[3] * xi;
        }
        dot[0] = a0;
        dot[1] = a1;
        dot[2] = a2;
        dot[3] = a3;
        j = 4;
    }
    for (; j + 1 < r; j += 2) {
        int64_t a0 = 0, a1 = 0;
        const int16_t *q = qm + j;
        for (i = 0; i < len; i++, q += r) {
            a0 += (int64_t)q[0] * x[i];
            a1 += (int64_t)q[1] * x[i];
        }
        dot[j] = a0;
        dot[j + 1] = a1;
    }
    if (j < r) {
        int64_t a0 = 0;
        for (i = 0; i < len; i++)
            a0 += (int64_t)qm[(size_t)i * r + j] * x[i];
        dot[j] = a0;
    }
    for (j = 0; j + 1 < kk; j += 2) {
        int64_t a0 = 0, a1 = 0;
        const int32_t *q0 = p32 + (size_t)j * len, *q1 = q0 + len;
        for (i = 0; i < len; i++) {
            a0 += (int64_t)q0[i] * x[i];
            a1 += (int64_t)q1[i] * x[i];
        }
        dot[r + j] = a0;
        dot[r + j + 1] = a1;
    }
    if (j < kk) {
        int64_t a0 = 0;
        const int32_t *q0 = p32 + (size_t)j * len;
        for (i = 0; i < len; i++)
            a0 += (int64_t)q0[i] * x[i];
        dot[r + j] = a0;
    }
    for (j = 0; j < cols; j++) {
        const int64_t acc = dot[j];
        if (acc != 0) {
            const int32_t e2 = 2 * (j < r ? eq : ep[j - r]);
            cf[j] += acc;
            if (bits64(abs64(acc)) + e2 > top)
                top = bits64(abs64(acc)) + e2;
        }
    }
    if (top == INT32_MIN) {
        for (i = 0; i < len; i++)
            ss += (uint64_t)((int64_t)x[i] * x[i]);
        return ss;
    }
    /* projection coefficient j is dot_j 2^(2 e_j) in units of x, = d_j 2^-sh with the largest
     * |d_j| < 2^30; then |sum_j d_j Q_j| < 24 * 2^45 fits int64 */
    sh = 30 - (int)top;
    for (j = 0; j < cols; j++) {
        const int32_t e2 = 2 * (j < r ? eq : ep[j - r]);
        const int a = -(int)(e2 + sh);
        d[j] = dot[j] == 0 || a > 63 ? 0 : (int32_t)lrt_shr_round64(dot[j], a);
    }
    d0 = r == 4 ? d[0] : 0;
    d1 = r == 4 ? d[1] : 0;
    d2 = r == 4 ? d[2] : 0;
    d3 = r == 4 ? d[3] : 0;
#if LRT_LOWRANK_HOST_CHUNKS
    /* host: the sums of a chunk of entries in a small array, one new column at a time, so
     * that the column's contiguous entries vectorize (the same integers, summed in another
     * order; no sum overflows, see above) */
    for (i = 0; i < len; i += HOST_CHUNK) {
        const unsigned cnt = len - i < HOST_CHUNK ? len - i : HOST_CHUNK;
        const int16_t *qi = qm + (size_t)i * r;
        int64_t acc[HOST_CHUNK];
        unsigned t;
        if (r == 4) {
            for (t = 0; t < cnt; t++, qi += 4)
                acc[t] = (int64_t)d0 * qi[0] + (int64_t)d1 * qi[1] + (int64_t)d2 * qi[2] +
                         (int64_t)d3 * qi[3];
        } else {
            for (t = 0; t < cnt; t++, qi += r) {
                int64_t a0 = 0;
                for (j = 0; j < r; j++)
                    a0 += (int64_t)d[j] * qi[j];
                acc[t] = a0;
            }
        }
        for (j = 0; j < kk; j++) {
            const int32_t dj = d[r + j], *pc = p32 + (size_t)j * len + i;
            if (dj == 0)
                continue;
            for (t = 0; t < cnt; t++)
                acc[t] += (int64_t)dj * pc[t];
        }
        if (sh >= 1 && sh <= 62) { /* the usual shift: a loop without the general rounding */
            for (t = 0; t < cnt; t++) {
                const int32_t v = x[i + t] - (int32_t)rsh(acc[t], sh);
                x[i + t] = v;
                ss += (uint64_t)((int64_t)v * v);
            }
        } else {
            for (t = 0; t < cnt; t++)
                ss += update_entry(x + i + t, acc[t], sh);
        }
    }
#else
    /* two entries at a time: each coefficient of a new column is loaded once for both */
    for (i = 0; i < len; i += 2) {
        const unsigned two = i + 1 < len; /* 0 on an odd last entry */
        const int16_t *q0 = qm + (size_t)i * r, *q1 = q0 + (two ? r : 0u);
        const int32_t *pc = p32 + i;
        int64_t acc0 = 0, acc1 = 0;
        if (r == 4) { /* the default rank: its coefficients stay in registers */
            acc0 = (int64_t)d0 * q0[0] + (int64_t)d1 * q0[1] + (int64_t)d2 * q0[2] +
                   (int64_t)d3 * q0[3];
            acc1 = (int64_t)d0 * q1[0] + (int64_t)d1 * q1[1] + (int64_t)d2 * q1[2] +
                   (int64_t)d3 * q1[3];
        } else {
            for (j = 0; j < r; j++) {
                acc0 += (int64_t)d[j] * q0[j];
                acc1 += (int64_t)d[j] * q1[j];
            }
        }
        for (j = 0; j < kk; j++, pc += len) {
            const int64_t dj = d[r + j];
            acc0 += dj * pc[0];
            acc1 += dj * pc[two];
        }
        ss += update_entry(x + i, acc0, sh);
        if (two)
            ss += update_entry(x + i + 1, acc1, sh);
    }
#endif
    return ss;
}

/* ||x||, 32 significant bits (see the U normalisation in lrt_lowrank_svd for why not isqrt) */
static lrt_ufx vec_norm(const int32_t *x, uint16_t len)
{
    uint64_t ss = 0;
    unsigned i;
    for (i = 0; i < len; i++)
        ss += (uint64_t)((int64_t)x[i] * x[i]);
    return lrt_ufx_sqrt(lrt_ufx_make(ss, 0));
}

/* x / norm as int16-range values (max in [2^14, 2^15)) in place; returns their exponent. */
static int32_t unit_column(int32_t *x, uint16_t len, lrt_ufx norm)
{
    unsigned i;
    const uint32_t xmax = max_abs32(x, len);
    int32_t eq;
    lrt_ufx f;
    /* real column max = xmax / norm = ratio.m * 2^ratio.e with ratio.m in [2^31, 2^32) */
    eq = lrt_ufx_div(lrt_ufx_make(xmax, 0), norm).e + 17;
    f = lrt_ufx_div(lrt_ufx_make(1, -eq), norm);
    for (i = 0; i < len; i++) { /* -f.e >= 17 (see above) */
        int64_t val = -f.e <= 62 ? rsh((int64_t)x[i] * f.m, -f.e) : 0;
        x[i] = (int32_t)LRT_CLAMP(val, -QMAX, QMAX);
    }
    return eq;
}

/* Scale a block to max|x| in [2^22, 2^23); returns the added exponent, or INT32_MIN if the
 * block is all zero. */
static int32_t normalize_block(int32_t *x, size_t count)
{
    const uint32_t mx = max_abs32(x, count);
    size_t i;
    int sh;
    if (mx == 0)
        return INT32_MIN;
    sh = (32 - lrt_clz32(mx)) - 23; /* bits(mx) - 23: > 0 shift down, < 0 shift up */
    if (sh > 0) {
        for (i = 0; i < count; i++)
            x[i] = (int32_t)rsh(x[i], sh);
    } else if (sh < 0) {
        for (i = 0; i < count; i++)
            x[i] = x[i] * (1 << -sh);
    }
    return sh;
}

/* Values x_i * 2^e_i -> mantissas |out_i| <= 2^COEF_BITS with one exponent (returned). */
static int32_t to_common(const int64_t *x, const int32_t *e, unsigned cnt, int32_t *out)
{
    int32_t top = INT32_MIN;
    unsigned i;
    for (i = 0; i < cnt; i++)
        if (x[i] != 0 && bits64(abs64(x[i])) + e[i] > top)
            top = bits64(abs64(x[i])) + e[i];
    if (top == INT32_MIN) {
        for (i = 0; i < cnt; i++)
            out[i] = 0;
        return 0;
    }
    top -= COEF_BITS;
    for (i = 0; i < cnt; i++) {
        int sh = (int)(top - e[i]);
        out[i] = x[i] == 0 ? 0 : (int32_t)lrt_shr_round64(x[i], sh > 63 ? 63 : sh);
    }
    return top;
}

/* [Q | X] = [Q | P] [[I, A1], [0, A2]] for the block X (len x k, column-major, units 2^ex,
 * overwritten): the accepted new columns P go to the first kk column slots of X with
 * exponents ep[], and coef (column-major, P rows = stride) receives [A1; A2] with one
 * exponent per block column (ecol[]). Classical Gram-Schmidt twice per column; a column
 * whose residual is below 2^-RESID_FLOOR_SHIFT of its norm adds no direction. Returns kk. */
static unsigned extend_basis(const int16_t *qm, uint8_t r, int32_t eq, int32_t *x, uint16_t len,
                             uint16_t k, int32_t ex, int32_t *coef, size_t stride, int32_t *ecol,
                             int32_t *ep)
{
    unsigned c, j, pass, kk = 0;
    for (c = 0; c < k; c++) {
        int32_t *xc = x + (size_t)c * len;
        int64_t cf[LRT_LOWRANK_MAX_CORE];
        int32_t ce[LRT_LOWRANK_MAX_CORE];
        lrt_ufx n0, nr;
        unsigned rows = r + kk;
        memset(cf, 0, sizeof(cf));
        n0 = vec_norm(xc, len);
        nr = n0;
        for (pass = 0; pass < 2 && n0.m != 0; pass++) {
            lrt_ufx before = nr;
            nr = lrt_ufx_sqrt(lrt_ufx_make(project_pass(qm, r, eq, x, ep, kk, xc, len, cf), 0));
            /* a second pass only where the first shrank the norm more than 4 times
             * ("twice is enough" with kappa = 4, between Kahan-Parlett's sqrt 2 and
             * Rutishauser's 10): one pass leaves about kappa times the bases' int16 rounding
             * (2^-15) along the old directions, below what the second pass would fix */
            if (lrt_ufx_cmp(lrt_ufx_ldexp(lrt_ufx_mul(nr, nr), 4), lrt_ufx_mul(before, before)) >=
                0)
                break;
        }
        for (j = 0; j < r; j++)
            ce[j] = eq + ex;
        for (j = 0; j < kk; j++)
            ce[r + j] = ep[j] + ex;
        if (n0.m != 0 && lrt_ufx_cmp(lrt_ufx_ldexp(nr, LRT_LOWRANK_RESID_FLOOR_SHIFT), n0) > 0) {
            cf[rows] = (int64_t)(nr.m >> 1); /* 31 bits, so that it fits int64 signed */
            ce[rows] = nr.e + 1 + ex;
            rows++;
            ep[kk] = unit_column(xc, len, nr);
            if (kk != c)
                memcpy(x + (size_t)kk * len, xc, sizeof(int32_t) * len);
            kk++;
        }
        for (j = rows; j < stride; j++)
            coef[(size_t)c * stride + j] = 0;
        ecol[c] = to_common(cf, ce, rows, coef + (size_t)c * stride);
    }
    return kk;
}

/* Bring the per-column exponents of a coefficient matrix to one; returns it. */
static int32_t common_columns(int32_t *coef, size_t stride, uint16_t k, const int32_t *ecol)
{
    int32_t top = INT32_MIN;
    unsigned c, j;
    for (c = 0; c < k; c++) {
        int any = 0;
        for (j = 0; j < stride; j++)
            any |= coef[(size_t)c * stride + j] != 0;
        if (any && ecol[c] > top)
            top = ecol[c];
    }
    if (top == INT32_MIN)
        return 0;
    for (c = 0; c < k; c++) {
        int sh = (int)(top - ecol[c]);
        for (j = 0; j < stride; j++) {
            int32_t *v = &coef[(size_t)c * stride + j];
            *v = sh > 40 ? 0 : (int32_t)lrt_shr_round64(*v, sh);
        }
    }
    return top;
}

/* rotate_basis at rank 4: the sums s[k] += x * w[j][k] of one source entry x (row j of W) */
static inline void mac4(int64_t *s0, int64_t *s1, int64_t *s2, int64_t *s3, int32_t x,
                        const int32_t *wj)
{
    *s0 += (int64_t)x * wj[0];
    *s1 += (int64_t)x * wj[1];
    *s2 += (int64_t)x * wj[2];
    *s3 += (int64_t)x * wj[3];
}

#if LRT_LOWRANK_HOST_CHUNKS
/* rotate_basis's sums for rank 4 over a chunk of cnt rows (rows: the first one's Q entries,
 * p: its entry of the first new column): the Q part row by row, then each new column over
 * the chunk's contiguous entries, which vectorizes */
static void rotate_sums_chunk(const int16_t *rows, const int32_t *p, uint16_t len, unsigned cnt,
                              unsigned j0, unsigned kk, const int32_t *w,
                              int64_t sums[4][HOST_CHUNK])
{
    unsigned t, j, k;
    for (t = 0; t < cnt; t++, rows += 4) {
        int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (j = j0; j < 4u; j++)
            mac4(&s0, &s1, &s2, &s3, rows[j], w + j * 4u);
        sums[0][t] = s0;
        sums[1][t] = s1;
        sums[2][t] = s2;
        sums[3][t] = s3;
    }
    for (j = 0; j < kk; j++, p += len) {
        const int32_t *wj = w + (4u + j) * 4u;
        for (k = 0; k < 4u; k++) {
            const int32_t wk = wj[k];
            int64_t *sk = sums[k];
            if (wk == 0)
                continue;
            for (t = 0; t < cnt; t++)
                sk[t] += (int64_t)p[t] * wk;
        }
    }
}
#endif

/* Q[:, :r] <- [Q | P] W (W: (r + kk) x r, Q30), Q's columns with exponent eq (absent if
 * empty), column j of P (p32 + j * len) with exponent ep[j]. Renormalises to max|Q| in
 * [2^14, 2^15) and returns the new exponent. W is rescaled in place. On an int16 overflow
 * the rows already written are halved and the exponent bumped. */
static int32_t rotate_basis(int16_t *qm, uint16_t len, uint8_t r, int32_t eq, int empty,
                            const int32_t *p32, const int32_t *ep, unsigned kk, int32_t *w)
{
    int32_t eref = INT32_MIN, en;
#if LRT_LOWRANK_HOST_CHUNKS
    int64_t chunk_sums[4][HOST_CHUNK];
#endif
    uint32_t maxabs = 0;
    int sh, halved = 0;
    unsigned i, j, k;
    const unsigned j0 = empty ? r : 0u;
    if (!empty)
        eref = eq;
    for (j = 0; j < kk; j++)
        if (ep[j] > eref)
            eref = ep[j];
    if (eref == INT32_MIN)
        return Q_EXP_EMPTY;
    for (j = j0; j < r + kk; j++) { /* weights in units of the largest source exponent */
        int d = (int)(eref - (j < r ? eq : ep[j - r]));
        for (k = 0; k < r; k++)
            w[j * r + k] = d > 31 ? 0 : (int32_t)lrt_shr_round64(w[j * r + k], d);
    }
    en = eref;
    sh = 30;
    for (i = 0; i < len; i++) {
        int16_t *row = qm + (size_t)i * r;
        int64_t s[LRT_LOWRANK_MAX_RANK];
        int16_t out[LRT_LOWRANK_MAX_RANK];
        if (LRT_LOWRANK_HOST_CHUNKS && r == 4) {
#if LRT_LOWRANK_HOST_CHUNKS
            const unsigned t = i % HOST_CHUNK;
            if (t == 0)
                rotate_sums_chunk(row, kk ? p32 + i : NULL, len,
                                  len - i < HOST_CHUNK ? len - i : HOST_CHUNK, j0, kk, w,
                                  chunk_sums);
            for (k = 0; k < 4u; k++)
                s[k] = chunk_sums[k][t];
#endif
        } else if (r == 4) { /* the default rank: four sums in registers, not in memory */
            int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            const int32_t *wj = w + j0 * 4u, *px = kk ? p32 + i : NULL; /* NULL: reorth */
            for (j = j0; j < 4u; j++, wj += 4)
                mac4(&s0, &s1, &s2, &s3, row[j], wj);
            for (j = 0; j < kk; j++, wj += 4, px += len) {
                const int32_t x = *px;
                if (x == 0)
                    continue;
                mac4(&s0, &s1, &s2, &s3, x, wj);
            }
            s[0] = s0;
            s[1] = s1;
            s[2] = s2;
            s[3] = s3;
        } else {
            for (k = 0; k < r; k++)
                s[k] = 0;
            for (j = j0; j < r + kk; j++) { /* row of W contiguous: one load of the source */
                const int32_t *wj = w + j * r;
                const int64_t x = j < r ? row[j] : p32[(size_t)(j - r) * len + i];
                if (x == 0)
                    continue;
                for (k = 0; k < r; k++)
                    s[k] += x * wj[k];
            }
        }
        for (;;) {
            uint32_t rowmax = 0;
            for (k = 0; k < r; k++) {
                int64_t val = sh >= 1 && sh <= 62 ? rsh(s[k], sh) : lrt_shr_round64(s[k], sh);
                int64_t cl = LRT_CLAMP(val, -QMAX - 1, QMAX + 1); /* QMAX + 1: overflow */
                uint32_t a = (uint32_t)(cl < 0 ? -cl : cl);
                out[k] = (int16_t)LRT_CLAMP(cl, -QMAX, QMAX);
                if (a > rowmax)
                    rowmax = a;
            }
            if (rowmax <= QMAX) {
                if (rowmax > maxabs)
                    maxabs = rowmax;
                break;
            }
            for (j = 0; j < i; j++)
                for (k = 0; k < r; k++)
                    qm[(size_t)j * r + k] = (int16_t)lrt_shr_round64(qm[(size_t)j * r + k], 1);
            en++;
            sh++;
            halved = 1;
        }
        for (k = 0; k < r; k++)
            row[k] = out[k];
    }
    if (halved) {
        maxabs = 0;
        for (i = 0; i < (unsigned)len * r; i++) {
            uint32_t a = (uint32_t)(qm[i] < 0 ? -qm[i] : qm[i]);
            if (a > maxabs)
                maxabs = a;
        }
    }
    if (maxabs == 0)
        return Q_EXP_EMPTY;
    if (maxabs < QNORM_LO) {
        int up = 0;
        while ((maxabs << up) < QNORM_LO)
            up++;
        for (i = 0; i < (unsigned)len * r; i++)
            qm[i] = (int16_t)(qm[i] * (1 << up));
        en -= up;
    }
    return en;
}

/* e = Q^T Q - I in Q30 (r x r). Absent (all-zero) columns get no correction. */
static void gram_error(const int16_t *qm, uint16_t len, uint8_t r, int32_t eq, int32_t *e)
{
    const int sh = -(2 * (int)eq + 30); /* Gram in units 2^(2 eq) -> Q30 */
    unsigned i, k, l;
    uint8_t dead[LRT_LOWRANK_MAX_RANK];
    for (k = 0; k < r; k++) {
        for (l = k; l < r; l++) {
            int64_t sum = 0, val;
            for (i = 0; i < len; i++)
                sum += (int32_t)qm[(size_t)i * r + k] * qm[(size_t)i * r + l];
            val = lrt_shr_round64(sum, sh) - (k == l ? ONE_Q30 : 0);
            if (k == l)
                dead[k] = val < -ONE_Q30 / 2;
            val = LRT_CLAMP(val, -GRAM_ERR_MAX, GRAM_ERR_MAX);
            e[k * r + l] = (int32_t)val;
            e[l * r + k] = (int32_t)val;
        }
    }
    for (k = 0; k < r; k++)
        if (dead[k])
            for (l = 0; l < r; l++)
                e[k * r + l] = e[l * r + k] = 0;
}

/* Q <- Q (I - e/2): first-order symmetric (Loewdin) orthonormalisation, the smallest change
 * of basis that restores orthonormality. w: r x r scratch. Returns the new exponent. */
static int32_t reorth_basis(int16_t *qm, uint16_t len, uint8_t r, int32_t eq, int32_t *w)
{
    unsigned j, k;
    gram_error(qm, len, r, eq, w);
    for (j = 0; j < r; j++)
        for (k = 0; k < r; k++)
            w[j * r + k] =
                (j == k ? (int32_t)ONE_Q30 : 0) - (int32_t)lrt_shr_round64(w[j * r + k], 1);
    return rotate_basis(qm, len, r, eq, 0, NULL, NULL, 0, w);
}

/* Rank-r truncation of the sorted SVD (U, V: p x p, Q30, columns = singular vectors):
 * fills W_L, W_R (p x r, Q30) and the new cx (units of sigma). Biased: the r largest.
 * Unbiased: keep sigma_0..sigma_{i-1}; the tail (sum s1) gets k' = r - i equal weights
 * s1 / k' along X = G[:, S], G a chain of Givens rotations that gives the projector X X^T
 * the diagonal p_t = sigma_{i+t} k' / s1, the rows of X signed by the bits of word
 * (docs/ESTIMATOR.md). */
static void truncate_rank(uint8_t r, int biased, const uint32_t *sigma, int32_t *u, int32_t *vm,
                          uint8_t p, uint32_t word, int32_t *wl, int32_t *wr, uint32_t *cx)
{
    unsigned live = 0, keep, i, c, row, t, sel = 0;
    uint64_t tail[LRT_LOWRANK_MAX_CORE + 1], s1, den32, sum = 0;
    int64_t pq[LRT_LOWRANK_MAX_CORE];
    int32_t cs[LRT_LOWRANK_MAX_CORE], sn[LRT_LOWRANK_MAX_CORE];
    uint8_t pick[LRT_LOWRANK_MAX_CORE];
    unsigned kp, tl;
    int64_t carry;
    int sh;
    memset(wl, 0, sizeof(int32_t) * p * r);
    memset(wr, 0, sizeof(int32_t) * p * r);
    memset(cx, 0, sizeof(uint32_t) * r);
    while (live < p && sigma[live] != 0)
        live++;
    keep = live < r ? live : r;
    if (!biased && live > r) {
        tail[live] = 0;
        for (i = live; i-- > 0;)
            tail[i] = tail[i + 1] + sigma[i];
        /* smallest i with (r - i) sigma_i <= sum_{j >= i} sigma_j; i = r - 1 always holds */
        for (i = 0; i + 1 < r; i++)
            if ((uint64_t)(r - i) * sigma[i] <= tail[i])
                break;
        keep = i;
    }
    for (c = 0; c < keep; c++) {
        for (row = 0; row < p; row++) {
            wl[row * r + c] = u[row * p + c];
            wr[row * r + c] = vm[row * p + c];
        }
        cx[c] = sigma[c];
    }
    if (keep == r || keep == live)
        return;
    i = keep;
    kp = r - i;
    tl = live - i;
    s1 = tail[i];
    /* p_t = sigma_{i+t} k' / s1 in Q30, rounding residue on the largest so sum p = k' */
    sh = bits64(s1) - 32;
    if (sh < 0)
        sh = 0;
    den32 = s1 >> sh;
    for (t = 0; t < tl; t++) {
        uint64_t num = ((uint64_t)kp * sigma[i + t]) >> sh;
        uint64_t frac = lrt_udiv64_32(num << 30, (uint32_t)den32);
        pq[t] = frac > (uint64_t)ONE_Q30 ? ONE_Q30 : (int64_t)frac;
        sum += (uint64_t)pq[t];
    }
    pq[0] += (int64_t)kp * ONE_Q30 - (int64_t)sum;
    pq[0] = LRT_CLAMP(pq[0], 0, ONE_Q30);
    /* the Givens chain: carry starts at 1 on row 0 (selected) */
    carry = ONE_Q30;
    pick[0] = 1;
    for (t = 0; t + 1 < tl; t++) {
        const int64_t f = pq[t] > carry ? ONE_Q30 : 0;
        const int64_t dn = f - carry, nm = pq[t] - carry;
        int64_t s2 = dn == 0 ? 0 : (nm * ONE_Q30) / dn; /* same signs, |nm| <= |dn| */
        s2 = LRT_CLAMP(s2, 0, ONE_Q30);
        cs[t] = (int32_t)lrt_isqrt64((uint64_t)(ONE_Q30 - s2) << 30);
        sn[t] = (int32_t)lrt_isqrt64((uint64_t)s2 << 30);
        pick[t + 1] = f != 0;
        carry = LRT_CLAMP(carry + f - pq[t], 0, ONE_Q30);
    }
    /* U_tail D G and V_tail D G: signs on the tail columns, then the rotations from the last
     * plane to the first (G = R_last ... R_0) */
    for (t = 0; t < tl; t++) {
        if ((word >> (31u - t)) & 1u) {
            for (row = 0; row < p; row++) {
                u[row * p + i + t] = -u[row * p + i + t];
                vm[row * p + i + t] = -vm[row * p + i + t];
            }
        }
    }
    for (t = tl - 1; t-- > 0;) {
        const unsigned a = i + t, b = i + t + 1;
        for (row = 0; row < p; row++) {
            int64_t x = u[row * p + a], y = u[row * p + b];
            u[row * p + a] = (int32_t)rsh(cs[t] * x + sn[t] * y, 30);
            u[row * p + b] = (int32_t)rsh(cs[t] * y - sn[t] * x, 30);
            x = vm[row * p + a];
            y = vm[row * p + b];
            vm[row * p + a] = (int32_t)rsh(cs[t] * x + sn[t] * y, 30);
            vm[row * p + b] = (int32_t)rsh(cs[t] * y - sn[t] * x, 30);
        }
    }
    for (t = 0; t < tl && sel < kp; t++) {
        if (!pick[t])
            continue;
        c = i + sel++;
        for (row = 0; row < p; row++) {
            wl[row * r + c] = u[row * p + i + t];
            wr[row * r + c] = vm[row * p + i + t];
        }
        cx[c] = (uint32_t)((s1 + kp / 2u) / kp);
    }
}

static int step_block(lrt_lowrank *acc, uint32_t word, int32_t *left, int32_t exl, int32_t *right,
                      int32_t exr, uint16_t k)
{
    const uint8_t r = acc->cfg.rank;
    const uint16_t n = acc->n, m = acc->m;
    const size_t pw = (size_t)r + acc->cfg.max_block; /* row stride of A, B */
    int32_t *cm = work_mat(acc, 0), *vm = work_mat(acc, 1), *um = cm;
    int32_t *am = work_mat(acc, 2), *bm = work_mat(acc, 3);
    int32_t *wl = am, *wr = bm; /* A and B are done with once the core is built */
    int32_t eca[LRT_LOWRANK_MAX_BLOCK], ecb[LRT_LOWRANK_MAX_BLOCK];
    int32_t epl[LRT_LOWRANK_MAX_BLOCK], epr[LRT_LOWRANK_MAX_BLOCK];
    uint32_t sigma[LRT_LOWRANK_MAX_CORE], cx[LRT_LOWRANK_MAX_RANK];
    const int empty = acc->cx[0] == 0;
    unsigned kl, kr, rl, rr, p, i, j, c;
    int32_t ea, eb, ep, ec, top = INT32_MIN;
    uint64_t smax = 0;
    int biased = acc->cfg.mode == LRT_LOWRANK_BIASED, transposed;

    /* int16 rounding makes the bases drift from orthonormal (~1e-5 per step); every
     * REORTH_PERIOD applied steps pull them back (the represented sum moves by O(drift)) */
    if (!empty && acc->applied % LRT_LOWRANK_REORTH_PERIOD == LRT_LOWRANK_REORTH_PERIOD - 1) {
        acc->ql_exp = reorth_basis(acc->ql, n, r, acc->ql_exp, wl);
        acc->qr_exp = reorth_basis(acc->qr, m, r, acc->qr_exp, wr);
    }
    kl = extend_basis(acc->ql, r, acc->ql_exp, left, n, k, exl, am, pw, eca, epl);
    kr = extend_basis(acc->qr, r, acc->qr_exp, right, m, k, exr, bm, pw, ecb, epr);
    ea = common_columns(am, pw, k, eca);
    eb = common_columns(bm, pw, k, ecb);
    ep = ea + eb;
    rl = r + kl;
    rr = r + kr;
    p = rl > rr ? rl : rr;
    if (p < 2)
        p = 2;

    /* core C = diag(cx, 0) + A B^T with one exponent ec, |C_ij| <= 2^(C_TOP_BITS + 1): the
     * Frobenius norm then stays below 2^30, which the Jacobi sums need for p up to 24. The
     * int64 entries of A B^T wait in the C and V areas (2 P^2 contiguous words; memcpy, as
     * the work buffer is only 4-byte aligned) until their largest fixes the exponent. */
    for (i = 0; i < rl; i++) {
        for (j = 0; j < rr; j++) {
            int64_t s = 0;
            for (c = 0; c < k; c++)
                s += (int64_t)am[c * pw + i] * bm[c * pw + j];
            if (abs64(s) > smax)
                smax = abs64(s);
            memcpy(cm + 2u * (i * rr + j), &s, sizeof(s));
        }
    }
    if (smax)
        top = bits64(smax) + ep;
    if (!empty) {
        int32_t tc = bits64(acc->cx[0]) + acc->cx_exp;
        if (tc > top)
            top = tc;
    }
    if (top == INT32_MIN)
        return 0; /* nothing new and nothing stored */
    ec = top - C_TOP_BITS;
    /* A core wider than tall (rl < rr: the left block I_n of a narrow conv adds n - r
     * directions, the right one n) goes into the SVD transposed, C^T = V diag(sigma) U^T:
     * its zero columns rl.. then cost the Jacobi sweeps nothing (rl (rl - 1) / 2 column
     * pairs instead of rr (rr - 1) / 2); U and V swap places afterwards. */
    transposed = rl < rr;
    /* A B^T at the exponent ec (|entries| <= 2^(C_TOP_BITS + 1)), packed in place (entry e
     * moves from words 2e, 2e + 1 to word e, never over one not yet read) and copied to the V
     * area, from where C is filled */
    for (c = 0; c < rl * rr; c++) {
        int64_t s;
        memcpy(&s, cm + 2u * c, sizeof(s));
        cm[c] = s ? (int32_t)lrt_shr_round64(s, (int)(ec - ep)) : 0;
    }
    memcpy(vm, cm, sizeof(int32_t) * rl * rr);
    for (i = 0; i < p; i++) {
        for (j = 0; j < p; j++) {
            int64_t val = i < rl && j < rr ? vm[i * rr + j] : 0;
            if (i == j && i < r && acc->cx[i]) /* (cx_exp is stale while cx is 0) */
                val += lrt_shr_round64(acc->cx[i], (int)(ec - acc->cx_exp));
            cm[transposed ? j * p + i : i * p + j] = (int32_t)val;
        }
    }

    if (lrt_lowrank_svd(cm, (uint8_t)p, sigma, vm) < 0)
        return LRT_ERR_STATE; /* cannot happen */
    if (transposed) {         /* left singular vectors in um, right ones in vm */
        um = vm;
        vm = cm;
    }
    for (i = 1; i < p; i++) { /* sigma floor: below the int16 noise level counts as zero */
        if (((uint64_t)sigma[i] << LRT_LOWRANK_SIGMA_FLOOR_SHIFT) < sigma[0]) {
            sigma[i] = 0;
            for (j = 0; j < p; j++) {
                um[j * p + i] = 0;
                vm[j * p + i] = 0;
            }
        }
    }
    truncate_rank(r, biased, sigma, um, vm, (uint8_t)p, word, wl, wr, cx);

    acc->ql_exp = rotate_basis(acc->ql, n, r, acc->ql_exp, empty, left, epl, kl, wl);
    acc->qr_exp = rotate_basis(acc->qr, m, r, acc->qr_exp, empty, right, epr, kr, wr);
    memcpy(acc->cx, cx, sizeof(uint32_t) * r);
    acc->cx_exp = ec;
    acc->applied++;
    return 1;
}

int lrt_lowrank_step_block(lrt_lowrank *acc, int32_t *left, int left_exp, int32_t *right,
                           int right_exp, uint16_t k)
{
    uint32_t word;
    int32_t sl, sr;
    if (!acc || !left || !right || k < 1 || k > acc->cfg.max_block)
        return LRT_ERR_ARG;
    if (left_exp > 96 || left_exp < -96 || right_exp > 96 || right_exp < -96)
        return LRT_ERR_ARG;
    /* one RNG word per call, applied or not, so that the sign stream does not depend on the
     * data */
    word = lrt_xorshift32_next(&acc->rng);
    acc->steps++;
    sl = normalize_block(left, (size_t)acc->n * k);
    sr = normalize_block(right, (size_t)acc->m * k);
    if (sl == INT32_MIN || sr == INT32_MIN)
        return 0;
    return step_block(acc, word, left, left_exp + sl, right, right_exp + sr, k);
}

/* ---- exact pseudo-batch sums of whole-sample blocks ------------------------------------- */

size_t lrt_lowrank_sum_size(uint16_t n, uint16_t m)
{
    return LRT_LOWRANK_SUM_SIZE(n, m);
}

int lrt_lowrank_sum_init(lrt_lowrank_sum *s, uint16_t n, uint16_t m, void *buf, size_t size)
{
    if (!s || !buf || n < 1 || m < 1 || ((uintptr_t)buf & 1u))
        return LRT_ERR_ARG;
    if (size < lrt_lowrank_sum_size(n, m))
        return LRT_ERR_SIZE;
    s->sum = (int16_t *)buf;
    s->len = (uint32_t)n * m;
    s->n = n;
    s->exp = 0;
    s->max_abs = 0;
    memset(s->sum, 0, sizeof(int16_t) * s->len); /* an empty sum holds zeros (sum_add) */
    return LRT_OK;
}

/* round(x * 2^-d), halves up; d <= 0 is an exact left shift (the caller keeps the result
 * within int16), and d > 40 rounds every |x| < 2^32 to zero */
static inline int32_t scale_round(int32_t x, int d)
{
    if (d <= 0)
        return x * (1 << -d);
    if (d > 40)
        return 0;
    return (int32_t)rsh(x, d);
}

void lrt_lowrank_sum_add(lrt_lowrank_sum *s, const int32_t *x, int x_exp)
{
    const uint32_t mx = max_abs32(x, s->len);
    uint32_t i, top = 0;
    int e, dx, ds;
    if (mx == 0)
        return;
    /* the sample's own scale: its largest entry below 2^14, so that it and an int16 sum
     * rescaled by at most one more bit add up to less than 2^15 */
    e = x_exp + (32 - lrt_clz32(mx)) - 14;
    if (s->max_abs == 0)
        s->exp = e; /* empty: its zeros take the sample's scale */
    else if (s->exp > e)
        e = s->exp;
    ds = e - s->exp;
    dx = e - x_exp;
    if ((ds > 15 ? 1u : ((uint32_t)s->max_abs >> ds) + 1u) +
            (dx > 0 ? (dx > 31 ? 1u : (mx >> dx) + 1u) : mx << -dx) >
        32767u) {
        e++;
        ds++;
        dx++;
    }
    if (dx >= 1 && dx <= 16 && ds <= 16) {
        /* the common case in 32 bits: |x| < 2^(dx + 14), so x + 2^(dx - 1) < 2^31; a sum
         * entry shifted by more than 16 bits rounds to zero */
        const int32_t hx = (int32_t)1 << (dx - 1), hs = ds > 0 ? (int32_t)1 << (ds - 1) : 0;
        for (i = 0; i < s->len; i++) {
            const int32_t v = ((s->sum[i] + hs) >> ds) + ((x[i] + hx) >> dx);
            const uint32_t a = (uint32_t)(v < 0 ? -v : v);
            s->sum[i] = (int16_t)v;
            top = a > top ? a : top;
        }
    } else {
        for (i = 0; i < s->len; i++) {
            const int32_t v = scale_round(s->sum[i], ds) + scale_round(x[i], dx);
            const uint32_t a = (uint32_t)(v < 0 ? -v : v);
            s->sum[i] = (int16_t)v;
            top = a > top ? a : top;
        }
    }
    s->exp = e;
    s->max_abs = (uint16_t)top;
}

int lrt_lowrank_sum_step(lrt_lowrank_sum *s, lrt_lowrank *acc, int left_exp, int32_t *block,
                         size_t block_words)
{
    const size_t nn = (size_t)s->n * s->n;
    int32_t *right = block + nn;
    size_t i;
    if (!acc || !block || acc->n != s->n || (size_t)acc->m * s->n != s->len)
        return LRT_ERR_ARG;
    if (block_words < nn + s->len)
        return LRT_ERR_SIZE;
    if (s->max_abs == 0)
        return 0;
    for (i = 0; i < nn; i++)
        block[i] = (i % (s->n + 1u)) == 0;
    for (i = 0; i < s->len; i++) {
        right[i] = s->sum[i];
        s->sum[i] = 0;
    }
    s->max_abs = 0;
    return lrt_lowrank_step_block(acc, block, left_exp, right, s->exp, s->n);
}

/* ---- flush ------------------------------------------------------------------------------- */

static const lrt_ufx UFX_ONE = {0x80000000u, -31};

static lrt_ufx factor_max(const int16_t *qm, uint16_t len, uint8_t r, int32_t eq,
                          const uint32_t *cx, int32_t ecx)
{
    lrt_ufx best = {0u, 0};
    unsigned i, k;
    for (k = 0; k < r; k++) {
        uint32_t mx = 0;
        lrt_ufx val;
        for (i = 0; i < len; i++) {
            int32_t x = qm[(size_t)i * r + k];
            uint32_t a = (uint32_t)(x < 0 ? -x : x);
            if (a > mx)
                mx = a;
        }
        val = lrt_ufx_mul(lrt_ufx_make(mx, eq), lrt_ufx_sqrt(lrt_ufx_make(cx[k], ecx)));
        if (lrt_ufx_cmp(val, best) > 0)
            best = val;
    }
    return best;
}

static lrt_ufx maxnorm_divisor(const lrt_lowrank *acc, lrt_mnorm *s, lrt_ufx xmax)
{
    const uint32_t beta = acc->cfg.maxnorm_beta_q30;
    if (beta == 0 || beta >= (1u << 30))
        return lrt_mnorm_update(s, xmax);
    return lrt_mnorm_update_beta(s, xmax, lrt_ufx_make((1u << 30) - beta, -30));
}

int lrt_lowrank_flush_prepare(lrt_lowrank *acc, int weight_exp, lrt_lowrank_plan *plan)
{
    const uint8_t r = acc ? acc->cfg.rank : 0;
    lrt_ufx lr, b, den = UFX_ONE, wk[LRT_LOWRANK_MAX_RANK];
    int32_t top = INT32_MIN;
    unsigned k;
    if (!acc || !plan || weight_exp > 64 || weight_exp < -64)
        return LRT_ERR_ARG;
    memset(plan, 0, sizeof(*plan));
    lr = lrt_ufx_make(acc->cfg.lr_q24, -24);
    b = lrt_ufx_make(acc->b_eff_q16, -16);
    if (acc->cfg.b_cap != 0 && acc->b_eff_q16 > ((uint32_t)acc->cfg.b_cap << 16))
        b = lrt_ufx_make(acc->cfg.b_cap, 0);
    if (acc->cfg.batch_pow2 == 1)
        lr = lrt_ufx_mul(lr, lrt_ufx_sqrt(b));
    else if (acc->cfg.batch_pow2 == 2)
        lr = lrt_ufx_mul(lr, b);
    if (acc->b_eff_q16 == 0)
        lr.m = 0;
    plan->lr_eff = lr;
    plan->div_l = UFX_ONE;
    plan->div_r = UFX_ONE;
    if (acc->cfg.maxnorm) {
        plan->div_l = maxnorm_divisor(
            acc, &acc->mn_l, factor_max(acc->ql, acc->n, r, acc->ql_exp, acc->cx, acc->cx_exp));
        plan->div_r = maxnorm_divisor(
            acc, &acc->mn_r, factor_max(acc->qr, acc->m, r, acc->qr_exp, acc->cx, acc->cx_exp));
        den = lrt_ufx_mul(plan->div_l, plan->div_r);
    }
    for (k = 0; k < r; k++) {
        /* delta_ij = sum_k QL_ik QR_jk * lr_eff cx_k / (d_L d_R) * 2^(ql_exp + qr_exp - wexp) */
        wk[k] = lrt_ufx_div(lrt_ufx_mul(lr, lrt_ufx_make(acc->cx[k], acc->cx_exp)), den);
        wk[k] = lrt_ufx_ldexp(wk[k], acc->ql_exp + acc->qr_exp - weight_exp);
        if (wk[k].m && wk[k].e + 32 > top)
            top = wk[k].e + 32;
    }
    if (top != INT32_MIN) { /* common exponent: the largest mantissa gets 15 bits */
        for (k = 0; k < r; k++)
            plan->w[k] = (int32_t)lrt_ufx_to_u64(wk[k], top - 15);
        plan->shift = 15 - top;
    }
    plan->min_nonzero = lrt_share_cells(acc->cfg.rho_min_q16, (uint32_t)acc->n * acc->m);
    return LRT_OK;
}

static inline int16_t delta_value(int64_t s, int32_t shift)
{
    if (shift >= 1 && shift <= 62) {
        s = rsh(s, shift);
    } else if (shift >= 0) {
        s = lrt_shr_round64(s, shift);
    } else if (s != 0) {
        if (shift < -20)
            return s > 0 ? INT16_MAX : -INT16_MAX;
        s *= (int64_t)1 << -shift; /* |s| < 2^49 before the shift */
    }
    return (int16_t)LRT_CLAMP(s, -INT16_MAX, INT16_MAX);
}

static void row_scale(const lrt_lowrank *acc, const lrt_lowrank_plan *plan, uint16_t row,
                      int32_t *t)
{
    const uint8_t r = acc->cfg.rank;
    const int16_t *ql = acc->ql + (size_t)row * r;
    unsigned k;
    for (k = 0; k < r; k++)
        t[k] = ql[k] * plan->w[k]; /* <= 2^15 * 2^15 */
}

void lrt_lowrank_delta_row(const lrt_lowrank *acc, const lrt_lowrank_plan *plan, uint16_t row,
                           int16_t *delta)
{
    const uint8_t r = acc->cfg.rank;
    int32_t t[LRT_LOWRANK_MAX_RANK];
    unsigned j, k;
    row_scale(acc, plan, row, t);
    for (j = 0; j < acc->m; j++) {
        const int16_t *qr = acc->qr + (size_t)j * r;
        int64_t s = 0;
        for (k = 0; k < r; k++)
            s += (int64_t)t[k] * qr[k];
        delta[j] = delta_value(s, plan->shift);
    }
}

uint32_t lrt_lowrank_count_nonzero(const lrt_lowrank *acc, const lrt_lowrank_plan *plan,
                                   uint32_t stop_at)
{
    const uint8_t r = acc->cfg.rank;
    int32_t t[LRT_LOWRANK_MAX_RANK];
    uint32_t count = 0;
    unsigned i, j, k;
    for (i = 0; i < acc->n; i++) {
        row_scale(acc, plan, (uint16_t)i, t);
        for (j = 0; j < acc->m; j++) {
            const int16_t *qr = acc->qr + (size_t)j * r;
            int64_t s = 0;
            for (k = 0; k < r; k++)
                s += (int64_t)t[k] * qr[k];
            if (delta_value(s, plan->shift) != 0)
                count++;
        }
        if (stop_at && count >= stop_at)
            break;
    }
    return count;
}

int lrt_lowrank_flush_check(lrt_lowrank *acc, int weight_exp, lrt_lowrank_plan *plan)
{
    int err = lrt_lowrank_flush_prepare(acc, weight_exp, plan);
    if (err)
        return err;
    if (lrt_lowrank_count_nonzero(acc, plan, plan->min_nonzero) >= plan->min_nonzero)
        return 1;
    lrt_lowrank_defer(acc);
    return 0;
}
