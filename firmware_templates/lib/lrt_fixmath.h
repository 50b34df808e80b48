/* lrt_fixmath.h - integer arithmetic helpers of the LRT accumulator.
 *
 *  - lrt_isqrt64, lrt_clz*, lrt_shr_round64: the building blocks of the fixed-point SVD.
 *  - lrt_ufx: a tiny unsigned floating-point number (32-bit mantissa, int32 exponent) for
 *    scale factors that span many octaves (learning rate x sqrt(B), max-norm divisors,
 *    singular values of different steps). Integer only: mantissa ops use uint64.
 *  - lrt_xorshift32: the seeded generator of the random signs of the unbiased truncation.
 *    toolchain/lrt/lowrank.py has a bit-exact Python twin (XorShift32).
 *  - lrt_mnorm: the paper's gradient max-norm ("Supporting techniques": beta 0.999,
 *    eps 1e-4) with its running average in lrt_ufx.
 *
 * Rounding convention everywhere: round half up (toward +inf), i.e. floor(x + 1/2).
 * Right shifts of negative values rely on arithmetic shifts (gcc/clang on every target).
 */
#ifndef LRT_FIXMATH_H
#define LRT_FIXMATH_H

#include <limits.h>

#include "lrt_common.h"
#include "lrt_util.h" /* lrt_xorshift32 */

/* Number of leading zero bits; 32 / 64 for 0. Inline: the SVD asks for bit lengths in its
 * innermost decisions, where a call costs more than the count. */
static inline int lrt_clz32(uint32_t x)
{
    if (x == 0)
        return 32;
#if defined(__GNUC__) && UINT_MAX == 0xFFFFFFFFu
    return __builtin_clz(x); /* one CLZ instruction from Cortex-M3 on */
#else
    {
        int n = 0;
        while (!(x & 0x80000000u)) {
            x <<= 1;
            n++;
        }
        return n;
    }
#endif
}

static inline int lrt_clz64(uint64_t x)
{
    const uint32_t hi = (uint32_t)(x >> 32);
    return hi ? lrt_clz32(hi) : 32 + lrt_clz32((uint32_t)x);
}

/* floor(sqrt(x)). */
uint32_t lrt_isqrt64(uint64_t x);

/* floor(n / d), d > 0, with 32-bit divisions only: the M-profile cores divide 32 bits in
 * hardware, and libgcc's generic 64-bit division costs several times more. */
uint64_t lrt_udiv64_32(uint64_t n, uint32_t d);

/* round(x * 2^-sh), halves toward +inf. sh >= 64 gives 0 or -0 rounding; sh < 0 multiplies
 * by 2^-sh and the caller guarantees that the result fits. */
static inline int64_t lrt_shr_round64(int64_t x, int sh)
{
    if (sh == 0 || x == 0)
        return x;
    if (sh < 0)
        return x * ((int64_t)1 << -sh);
    if (sh >= 64)
        return 0;
    /* floor(x / 2^sh) plus the first dropped bit: round half up without an overflowing add */
    return (x >> sh) + ((x >> (sh - 1)) & 1);
}

/* ---- unsigned pseudo-float: value = m * 2^e, m == 0 or 2^31 <= m < 2^32 ----------------- */
typedef struct {
    uint32_t m;
    int32_t e;
} lrt_ufx;

lrt_ufx lrt_ufx_make(uint64_t mant, int32_t e); /* mant * 2^e, rounded to 32 bits */
lrt_ufx lrt_ufx_mul(lrt_ufx a, lrt_ufx b);
lrt_ufx lrt_ufx_div(lrt_ufx a, lrt_ufx b); /* b == 0 gives the largest value */
lrt_ufx lrt_ufx_add(lrt_ufx a, lrt_ufx b);
lrt_ufx lrt_ufx_sub(lrt_ufx a, lrt_ufx b); /* max(a - b, 0) */
lrt_ufx lrt_ufx_sqrt(lrt_ufx a);
lrt_ufx lrt_ufx_ldexp(lrt_ufx a, int32_t k); /* a * 2^k */
int lrt_ufx_cmp(lrt_ufx a, lrt_ufx b);       /* -1, 0, 1 */
/* round(a * 2^-e), saturated to UINT64_MAX. */
uint64_t lrt_ufx_to_u64(lrt_ufx a, int32_t e);

/* ---- gradient max-norm ------------------------------------------------------------------- */
/* Per tensor: k = 0, x_mv = eps; per call: k += 1; x_max = max|x| + eps;
 * x_mv = beta x_mv + (1 - beta) x_max; x_hat = x_mv / (1 - beta^k);
 * x <- x / max(x_max, x_hat). beta = 0.999 unless given, eps = 1e-4 (real units of x).
 * One implementation for the LRT factors (lrt_lowrank) and the bias/SGD gradients
 * (lrt_train). */
typedef struct {
    uint32_t steps;
    lrt_ufx mv; /* running average of max|x| + eps */
    lrt_ufx om; /* 1 - beta^steps, kept by om <- om + (1 - beta)(1 - om): no cancellation */
} lrt_mnorm;

void lrt_mnorm_init(lrt_mnorm *s);
/* One call per tensor: xmax = max|x| (real). Returns the divisor max(xmax + eps, x_hat). */
lrt_ufx lrt_mnorm_update(lrt_mnorm *s, lrt_ufx xmax);
/* The same with another beta, given as 1 - beta (> 0). */
lrt_ufx lrt_mnorm_update_beta(lrt_mnorm *s, lrt_ufx xmax, lrt_ufx one_minus_beta);
/* Update with x (real x * 2^x_exp) and write out = round(x / divisor * 2^-out_exp),
 * saturated to the output type. out may alias x. Returns LRT_OK or LRT_ERR_ARG. */
int lrt_mnorm_s8(lrt_mnorm *s, const int8_t *x, int x_exp, uint32_t len, int8_t *out, int out_exp);
int lrt_mnorm_s32(lrt_mnorm *s, const int32_t *x, int x_exp, uint32_t len, int32_t *out,
                  int out_exp);

#endif /* LRT_FIXMATH_H */
