/* nvm_twin.c - run lrt_nvm's integer helpers on inputs from stdin, for the Python twins.
 *
 * stdin lines:
 *   life ENDURANCE WORST SAMPLES RATE_MHZ          -> "life DAYS"
 *   budget END TARGET_DAYS RATE BURST WORST SAMPLES RHO -> "budget ALLOW RHO ALLOWED DAYS"
 *   bits P_Q32 SEED HEX                            -> "bits FLIPS HEX"
 *   noise SIGMA_Q16 SEED HEX                       -> "noise CHANGED HEX"  (int8 as bytes)
 */
#include <inttypes.h>

#include "nvm_util.h"

static uint8_t buf[65536];
static char line[200000];

static uint32_t from_hex(const char *h, uint8_t *out)
{
    uint32_t n = 0;
    unsigned v;

    while (h[0] && h[1] && sscanf(h, "%2x", &v) == 1) {
        out[n++] = (uint8_t)v;
        h += 2;
    }
    return n;
}

static void print_hex(const uint8_t *b, uint32_t n)
{
    uint32_t i;

    for (i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
}

int main(void)
{
    while (fgets(line, sizeof line, stdin) != NULL) {
        unsigned long long a[7];
        char hex[8];
        char *h;
        if (sscanf(line, "life %llu %llu %llu %llu", &a[0], &a[1], &a[2], &a[3]) == 4) {
            printf("life %" PRIu32 "\n",
                   lrt_nvm_projected_lifetime_days((uint32_t)a[0], (uint32_t)a[1], a[2],
                                                   (uint32_t)a[3]));
        } else if (sscanf(line, "budget %llu %llu %llu %llu %llu %llu %llu", &a[0], &a[1], &a[2],
                          &a[3], &a[4], &a[5], &a[6]) == 7) {
            lrt_nvm_budget b;
            lrt_nvm_throttle t;
            b.endurance = (uint32_t)a[0];
            b.target_days = (uint32_t)a[1];
            b.sample_rate_mhz = (uint32_t)a[2];
            b.burst = (uint32_t)a[3];
            CHECK_OK(lrt_nvm_budget_check(&b, (uint32_t)a[4], a[5], (uint32_t)a[6], &t));
            printf("budget %u %" PRIu32 " %" PRIu32 " %" PRIu32 "\n", t.allow, t.rho_min_q16,
                   t.allowed, t.projected_days);
        } else if (sscanf(line, "%5s %llu %llu", hex, &a[0], &a[1]) == 3 &&
                   (strcmp(hex, "bits") == 0 || strcmp(hex, "noise") == 0)) {
            uint32_t rng = (uint32_t)a[1], n, r;
            h = strrchr(line, ' ') + 1;
            n = from_hex(h, buf);
            if (hex[0] == 'b')
                r = lrt_nvm_drift_bits(buf, n, (uint32_t)a[0], &rng);
            else
                r = lrt_nvm_drift_noise((int8_t *)buf, n, (uint32_t)a[0], &rng);
            printf("%s %" PRIu32 " ", hex, r);
            print_hex(buf, n);
        } else {
            fprintf(stderr, "bad line: %s", line);
            return 2;
        }
    }
    return 0;
}
