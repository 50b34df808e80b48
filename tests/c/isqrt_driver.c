/* Driver of tests/c/test_isqrt.py.
 *   isqrt_driver sweep LO HI   every x in [LO, HI) against a digit-by-digit reference
 *   isqrt_driver squares STEP  k^2 - 1, k^2, k^2 + 1 for k = 1, 1 + STEP, ... < 2^32 and for
 *                              every k within 2^12 of 2^16 and of 2^32
 *   isqrt_driver               reads little-endian uint64 from stdin, writes uint32 roots
 * The sweeps print "checked N bad M" (and the first failures). */
#include <stdio.h>
#include <stdlib.h>

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

int main(int argc, char **argv)
{
    if (argc == 4) {
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
