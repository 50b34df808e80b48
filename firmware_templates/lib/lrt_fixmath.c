/* lrt_fixmath.c - integer helpers of the LRT accumulator (see lrt_fixmath.h). */
#include "lrt_fixmath.h"

/* floor(sqrt(y)) for y in [2^30, 2^32): integer Newton from above. The first guess is the
 * tangent of sqrt at 2^31 (a concave function lies below its tangents) plus a margin for the
 * truncated slope 181/256 < 1/sqrt(2): at most 6% high, so three steps reach floor(sqrt(y))
 * and a fourth sees no decrease. Integer Newton never drops below floor(sqrt(y)) from any
 * r > 0, and stops exactly there. One 32-bit UDIV per step. */
static uint32_t isqrt32_norm(uint32_t y)
{
    uint32_t r = 23178u + (((y >> 16) * 181u) >> 8);
    for (;;) {
        const uint32_t t = (r + y / r) >> 1;
        if (t >= r) {
            return r;
        }
        r = t;
    }
}

/* 64-bit inputs: one step of Zimmermann's Karatsuba square root (base 2^16) on top of the
 * 32-bit root of the high word, with 32-bit divisions only (no libgcc 64-bit division). */
uint32_t lrt_isqrt64(uint64_t x)
{
    int sh;
    if (x >> 32 == 0) {
        uint32_t y = (uint32_t)x;
        if (y == 0)
            return 0;
        sh = lrt_clz32(y) & ~1; /* even: y 4^(sh/2) in [2^30, 2^32) */
        return isqrt32_norm(y << sh) >> (sh / 2);
    }
    {
        uint64_t xn, r;
        uint32_t hi, s, rem, num_half, q, a1, a0;
        int64_t big_r;
        sh = lrt_clz64(x) & ~1;
        xn = x << sh;
        hi = (uint32_t)(xn >> 32);
        s = isqrt32_norm(hi); /* in [2^15, 2^16) */
        rem = hi - s * s;     /* <= 2 s */
        a1 = (uint32_t)(xn >> 16) & 0xFFFFu;
        a0 = (uint32_t)xn & 0xFFFFu;
        /* q = floor((rem 2^16 + a1) / (2 s)) = floor(floor((rem 2^16 + a1) / 2) / s) */
        num_half = (rem << 15) | (a1 >> 1); /* rem < 2^17: fits 32 bits */
        q = num_half / s;
        /* remainder u = rem 2^16 + a1 - 2 s q, then R = u 2^16 + a0 - q^2 */
        big_r = ((int64_t)(((int64_t)num_half - (int64_t)q * s) * 2 + (a1 & 1u)) << 16) +
                (int64_t)a0 - (int64_t)q * q;
        r = ((uint64_t)s << 16) + q;
        if (big_r < 0) {
            r -= 1; /* the normalised step overshoots by at most one */
        }
        return (uint32_t)(r >> (sh / 2));
    }
}

#if UINTPTR_MAX <= 0xFFFFFFFFu || defined(LRT_UDIV64_PORTABLE)
/* One 16-bit quotient digit of Knuth's algorithm D: floor((un 2^16 + next) / d) for a
 * normalised d = dn1 2^16 + dn0 and un < d; the estimate un / dn1 is at most two too high. */
static uint32_t divlu_digit(uint32_t un, uint32_t next, uint32_t dn1, uint32_t dn0)
{
    uint32_t q = un / dn1, rhat = un - q * dn1;
    while (q > 0xFFFFu || q * dn0 > ((rhat << 16) | next)) {
        q--;
        rhat += dn1;
        if (rhat > 0xFFFFu)
            break;
    }
    return q;
}

/* Hacker's Delight's divlu: floor((hi 2^32 + lo) / d) for hi < d, two 32-bit divisions. */
static uint32_t divlu(uint32_t hi, uint32_t lo, uint32_t d)
{
    const int s = lrt_clz32(d);
    uint32_t dn1, dn0, un32, un21, un10, q1, q0;
    d <<= s;
    dn1 = d >> 16;
    dn0 = d & 0xFFFFu;
    un32 = s ? (hi << s) | (lo >> (32 - s)) : hi;
    un10 = lo << s;
    q1 = divlu_digit(un32, un10 >> 16, dn1, dn0);
    un21 = (un32 << 16) + (un10 >> 16) - q1 * d;
    q0 = divlu_digit(un21, un10 & 0xFFFFu, dn1, dn0);
    return (q1 << 16) | q0;
}
#endif

uint64_t lrt_udiv64_32(uint64_t n, uint32_t d)
{
#if UINTPTR_MAX > 0xFFFFFFFFu && !defined(LRT_UDIV64_PORTABLE)
    return n / d; /* a 64-bit CPU divides in one instruction (the tests build the other path) */
#else
    uint32_t hi = (uint32_t)(n >> 32), qh = 0;
    if (hi >= d) {
        qh = hi / d;
        hi -= qh * d;
    }
    return ((uint64_t)qh << 32) | divlu(hi, (uint32_t)n, d);
#endif
}

/* ---- lrt_ufx ----------------------------------------------------------------------------- */

static const lrt_ufx UFX_ZERO = {0u, 0};

lrt_ufx lrt_ufx_make(uint64_t mant, int32_t e)
{
    lrt_ufx r;
    int sh;
    if (mant == 0)
        return UFX_ZERO;
    sh = 32 - lrt_clz64(mant); /* right shift that leaves 32 significant bits */
    if (sh > 0) {
        uint64_t y = (mant >> sh) + ((mant >> (sh - 1)) & 1u);
        if (y >> 32) { /* rounding carried into bit 32 */
            y >>= 1;
            sh++;
        }
        r.m = (uint32_t)y;
    } else {
        r.m = (uint32_t)(mant << -sh);
    }
    r.e = e + sh;
    return r;
}

lrt_ufx lrt_ufx_mul(lrt_ufx a, lrt_ufx b)
{
    if (a.m == 0 || b.m == 0)
        return UFX_ZERO;
    return lrt_ufx_make((uint64_t)a.m * b.m, a.e + b.e);
}

lrt_ufx lrt_ufx_div(lrt_ufx a, lrt_ufx b)
{
    lrt_ufx r;
    if (a.m == 0)
        return UFX_ZERO;
    if (b.m == 0) {
        r.m = 0xFFFFFFFFu;
        r.e = INT32_MAX / 2;
        return r;
    }
    /* a.m * 2^32 / b.m lies in (2^31, 2^33): 32 significant bits, one rounding */
    return lrt_ufx_make(lrt_udiv64_32(((uint64_t)a.m << 32) + (b.m >> 1), b.m), a.e - b.e - 32);
}

static uint64_t ufx_aligned(lrt_ufx x, int32_t drop)
{
    /* x.m * 2^31 shifted right by drop (rounded): aligns x to a larger exponent */
    uint64_t v = (uint64_t)x.m << 31;
    if (drop <= 0)
        return v;
    if (drop >= 64)
        return 0;
    return (v >> drop) + ((v >> (drop - 1)) & 1u);
}

lrt_ufx lrt_ufx_add(lrt_ufx a, lrt_ufx b)
{
    if (a.m == 0)
        return b;
    if (b.m == 0)
        return a;
    if (a.e < b.e) {
        lrt_ufx t = a;
        a = b;
        b = t;
    }
    return lrt_ufx_make(ufx_aligned(a, 0) + ufx_aligned(b, a.e - b.e), a.e - 31);
}

lrt_ufx lrt_ufx_sub(lrt_ufx a, lrt_ufx b)
{
    uint64_t x, y;
    if (b.m == 0)
        return a;
    if (lrt_ufx_cmp(a, b) <= 0)
        return UFX_ZERO;
    x = ufx_aligned(a, 0);
    y = ufx_aligned(b, a.e - b.e); /* a > b, so a.e >= b.e */
    return lrt_ufx_make(x - y, a.e - 31);
}

lrt_ufx lrt_ufx_sqrt(lrt_ufx a)
{
    uint64_t x;
    int32_t e;
    if (a.m == 0)
        return UFX_ZERO;
    /* make the exponent even, keeping >= 63 significant bits for the square root */
    if (a.e & 1) {
        x = (uint64_t)a.m << 31;
        e = a.e - 31;
    } else {
        x = (uint64_t)a.m << 32;
        e = a.e - 32;
    }
    return lrt_ufx_make(lrt_isqrt64(x), e / 2);
}

lrt_ufx lrt_ufx_ldexp(lrt_ufx a, int32_t k)
{
    if (a.m == 0)
        return a;
    a.e += k;
    return a;
}

int lrt_ufx_cmp(lrt_ufx a, lrt_ufx b)
{
    if (a.m == 0 || b.m == 0)
        return (a.m != 0) - (b.m != 0);
    if (a.e != b.e)
        return a.e > b.e ? 1 : -1;
    return (a.m > b.m) - (a.m < b.m);
}

uint64_t lrt_ufx_to_u64(lrt_ufx a, int32_t e)
{
    int32_t sh;
    if (a.m == 0)
        return 0;
    sh = a.e - e;
    if (sh >= 32)
        return UINT64_MAX;
    if (sh >= 0)
        return (uint64_t)a.m << sh;
    if (sh <= -64)
        return 0;
    sh = -sh;
    return ((uint64_t)a.m >> sh) + (((uint64_t)a.m >> (sh - 1)) & 1u);
}

/* ---- gradient max-norm ------------------------------------------------------------------- */

/* 1 - beta = 0.001 = 2199023256 * 2^-41, eps = 1e-4 = 3518437209 * 2^-45 */
static const lrt_ufx MN_ONE_MINUS_BETA = {2199023256u, -41};
static const lrt_ufx MN_EPS = {3518437209u, -45};
static const lrt_ufx MN_ONE = {0x80000000u, -31};

void lrt_mnorm_init(lrt_mnorm *s)
{
    s->steps = 0;
    s->mv = MN_EPS;
    s->om.m = 0;
    s->om.e = 0;
}

/* a + c (b - a) for c = 1 - beta: only the small constant enters, so its 32-bit rounding
 * does not compound over the ~1/(1 - beta) steps the average remembers */
static lrt_ufx mnorm_toward(lrt_ufx a, lrt_ufx b, lrt_ufx c)
{
    if (lrt_ufx_cmp(b, a) >= 0)
        return lrt_ufx_add(a, lrt_ufx_mul(c, lrt_ufx_sub(b, a)));
    return lrt_ufx_sub(a, lrt_ufx_mul(c, lrt_ufx_sub(a, b)));
}

lrt_ufx lrt_mnorm_update_beta(lrt_mnorm *s, lrt_ufx xmax, lrt_ufx one_minus_beta)
{
    lrt_ufx xm = lrt_ufx_add(xmax, MN_EPS);
    lrt_ufx xhat;
    if (s->steps < UINT32_MAX)
        s->steps++;
    s->mv = mnorm_toward(s->mv, xm, one_minus_beta);
    /* 1 - beta^k kept directly: 1 - (a number close to 1) would lose 10 bits at k = 1 */
    s->om = mnorm_toward(s->om, MN_ONE, one_minus_beta);
    xhat = lrt_ufx_div(s->mv, s->om);
    return lrt_ufx_cmp(xm, xhat) >= 0 ? xm : xhat;
}

lrt_ufx lrt_mnorm_update(lrt_mnorm *s, lrt_ufx xmax)
{
    return lrt_mnorm_update_beta(s, xmax, MN_ONE_MINUS_BETA);
}

/* factor f with out = x * f: 2^(x_exp - out_exp) / d */
static lrt_ufx mnorm_factor(lrt_ufx d, int x_exp, int out_exp)
{
    lrt_ufx one = {0x80000000u, -31};
    return lrt_ufx_div(lrt_ufx_ldexp(one, (int32_t)x_exp - out_exp), d);
}

static int64_t mnorm_scale(int32_t x, lrt_ufx f)
{
    int64_t p = (int64_t)x * (int64_t)f.m;
    int sh = -f.e;
    if (sh < 0) { /* |x / d| <= 1, so a left shift only happens for tiny out_exp: saturate */
        if (p == 0)
            return 0;
        if (sh < -30)
            return p > 0 ? INT64_MAX : INT64_MIN;
        if (p > (INT64_MAX >> -sh))
            return INT64_MAX;
        if (p < -(INT64_MAX >> -sh))
            return INT64_MIN;
    }
    return lrt_shr_round64(p, sh);
}

int lrt_mnorm_s8(lrt_mnorm *s, const int8_t *x, int x_exp, uint32_t len, int8_t *out, int out_exp)
{
    uint32_t i, amax = 0;
    lrt_ufx f;
    if (!s || (!x && len) || (!out && len))
        return LRT_ERR_ARG;
    for (i = 0; i < len; i++) {
        uint32_t a = (uint32_t)(x[i] < 0 ? -(int32_t)x[i] : x[i]);
        if (a > amax)
            amax = a;
    }
    f = mnorm_factor(lrt_mnorm_update(s, lrt_ufx_make(amax, x_exp)), x_exp, out_exp);
    for (i = 0; i < len; i++) {
        int64_t v = mnorm_scale(x[i], f);
        out[i] = (int8_t)LRT_CLAMP(v, -128, 127);
    }
    return LRT_OK;
}

int lrt_mnorm_s32(lrt_mnorm *s, const int32_t *x, int x_exp, uint32_t len, int32_t *out,
                  int out_exp)
{
    uint32_t i, amax = 0;
    lrt_ufx f;
    if (!s || (!x && len) || (!out && len))
        return LRT_ERR_ARG;
    for (i = 0; i < len; i++) {
        uint32_t a = x[i] < 0 ? 0u - (uint32_t)x[i] : (uint32_t)x[i];
        if (a > amax)
            amax = a;
    }
    f = mnorm_factor(lrt_mnorm_update(s, lrt_ufx_make(amax, x_exp)), x_exp, out_exp);
    for (i = 0; i < len; i++) {
        int64_t v = mnorm_scale(x[i], f);
        out[i] = (int32_t)LRT_CLAMP(v, (int64_t)INT32_MIN, (int64_t)INT32_MAX);
    }
    return LRT_OK;
}
