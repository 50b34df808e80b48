/* Prints lrt_util.h's generator and share rounding for tests/c/test_rng.py:
 *   seed S N      the seeded state of S, then N words of its stream
 *   state X N     N words from the raw state X (0 included: the zero-state rule)
 *   share Q C     lrt_share_cells(Q, C) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrt_util.h"

int main(int argc, char **argv)
{
    uint32_t s, i, n;
    if (argc != 4) {
        return 2;
    }
    s = (uint32_t)strtoul(argv[2], NULL, 0);
    n = (uint32_t)strtoul(argv[3], NULL, 0);
    if (strcmp(argv[1], "share") == 0) {
        printf("%lu\n", (unsigned long)lrt_share_cells(s, n));
        return 0;
    }
    if (strcmp(argv[1], "seed") == 0) {
        s = lrt_xorshift32_seed(s);
        printf("%lu\n", (unsigned long)s);
    } else if (strcmp(argv[1], "state") != 0) {
        return 2;
    }
    for (i = 0; i < n; i++) {
        printf("%lu\n", (unsigned long)lrt_xorshift32_next(&s));
    }
    return 0;
}
