/* Driver of tests/c/test_isqrt.py.
 *   isqrt_driver sweep LO HI   every x in [LO, HI) against a digit-by-digit reference
 *   isqrt_driver squares STEP  k^2 - 1, k^2, k^2 + 1 for k = 1, 1 + STEP, ... < 2^32 and for
 *                              every k within 2^12 of 2^16 and of 2^32
 *   isqrt_driver div COUNT     lrt_udiv64_32 against the compiler's 64-bit division: COUNT
 *                              random dividends and divisors of every bit length, and the
 *                              edges (quotient digits of 0xFFFF, remainders d - 1, d = 1,
 *                              2^31, 2^32 - 1, n = 2^64 - 1)
 *   isqrt_driver               reads little-endian uint64 from stdin, writes uint32 roots
 * The sweeps print "checked N bad M" (and the first failures). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrt_fixmath.h"

/* the textbook bit-by-bit floor square root: slow, obviously exact */
static uint32_t reference(uint64_t x)
{
    uint64_t res = 0, bit = (uint64_t)1 << 62;
    while (bit > x) {
        bit >>= 2;
    }
    while (bit) {
        if (x >= res + bit) {
            x -= res + bit;
            res = (res >> 1) + bit;
        } else {
            res >>= 1;
        }
        bit >>= 2;
    }
    return (uint32_t)res;
}

static unsigned long long checked, bad;

static void check(uint64_t x)
{
    uint32_t got = lrt_isqrt64(x), want = reference(x);
    checked++;
    if (got != want && ++bad <= 5) {
        printf("x=%llu got %lu want %lu\n", (unsigned long long)x, (unsigned long)got,
               (unsigned long)want);
    }
}

static void around(uint64_t k)
{
    check(k * k - 1u);
    check(k * k);
    if (k < 0xFFFFFFFFull) {
        check(k * k + 1u);
    }
}

static void check_div(uint64_t n, uint32_t d)
{
    uint64_t got = lrt_udiv64_32(n, d), want = n / d;
    checked++;
    if (got != want && ++bad <= 5) {
        printf("n=%llu d=%lu got %llu want %llu\n", (unsigned long long)n, (unsigned long)d,
               (unsigned long long)got, (unsigned long long)want);
    }
}

static uint64_t xorshift64(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void div_sweep(uint64_t count)
{
    static const uint32_t edges[] = {1u, 2u, 3u, 0xFFFFu, 0x10000u, 0x10001u, 0x7FFFFFFFu,
                                     0x80000000u, 0x80000001u, 0xFFFF0000u, 0xFFFFFFFFu};
    uint64_t s = 0x9E3779B97F4A7C15ull, k;
    unsigned e, b;
    for (e = 0; e < sizeof(edges) / sizeof(edges[0]); e++) {
        const uint32_t d = edges[e];
        check_div(0, d);
        check_div(d - 1u, d);
        check_div(d, d);
        check_div(UINT64_MAX, d);
        check_div(((uint64_t)d << 32) - 1u, d); /* the largest n with a 32-bit quotient */
        check_div((uint64_t)d << 32, d);
        for (b = 0; b < 64; b++) {
            check_div((uint64_t)1 << b, d);
            check_div(((uint64_t)1 << b) - 1u, d);
        }
    }
    for (k = 0; k < count; k++) {
        const uint64_t r = xorshift64(&s), q = xorshift64(&s);
        const unsigned nb = (unsigned)(r & 63u) + 1u, db = (unsigned)((r >> 6) % 32u) + 1u;
        const uint32_t d = (uint32_t)(q >> (64 - db)) | (1u << (db - 1u));
        const uint64_t n = xorshift64(&s) >> (64 - nb);
        check_div(n, d);
        /* remainders next to d - 1 and quotients whose 16-bit digits need the correction */
        check_div(n / d * d + (d - 1u), d);
        check_div((((n >> 32) % d) << 32) | 0xFFFFFFFFu, d);
    }
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "div") == 0) {
        div_sweep(strtoull(argv[2], NULL, 0));
    } else if (argc == 4) {
        uint64_t lo = strtoull(argv[2], NULL, 0), hi = strtoull(argv[3], NULL, 0), x;
        for (x = lo; x != hi; x++) {
            check(x);
        }
    } else if (argc == 3) {
        uint64_t step = strtoull(argv[2], NULL, 0), k;
        for (k = 1; k < ((uint64_t)1 << 32); k += step) {
            around(k);
        }
        for (k = (1u << 16) - 4096u; k < (1u << 16) + 4096u; k++) {
            around(k);
        }
        for (k = ((uint64_t)1 << 32) - 4096u; k < ((uint64_t)1 << 32); k++) {
            around(k);
        }
    } else {
        unsigned char b[8];
        while (fread(b, 1, 8, stdin) == 8) {
            uint64_t x = 0;
            uint32_t r;
            int i;
            for (i = 7; i >= 0; i--) {
                x = (x << 8) | b[i];
            }
            r = lrt_isqrt64(x);
            for (i = 0; i < 4; i++) {
                putchar((int)((r >> (8 * i)) & 0xFFu));
            }
        }
        return 0;
    }
    printf("checked %llu bad %llu\n", checked, bad);
    return bad != 0;
}
