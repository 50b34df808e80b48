/* policy_driver.c - lrt_policy on many cases: for each line of stdin
 *   kind gate_errors gate_rate_q16 gate_cells_q16 samples_per_commit burst
 *   excess_q16 commits samples cells rho mispredicted step_bound batch
 * prints "due min_cells excess_after step_samples". */
#include <stdio.h>

#include "lrt_policy.h"

int main(void)
{
    unsigned long v[14];
    while (scanf("%lu %lu %lu %lu %lu %lu %lu %lu %lu %lu %lu %lu %lu %lu", &v[0], &v[1], &v[2],
                 &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12],
                 &v[13]) == 14) {
        lrt_policy p;
        p.kind = (uint8_t)v[0];
        p.gate_errors = (uint16_t)v[1];
        p.gate_rate_q16 = (uint32_t)v[2];
        p.gate_cells_q16 = (uint32_t)v[3];
        p.samples_per_commit = (uint32_t)v[4];
        p.burst = (uint32_t)v[5];
        p.step_bound = (uint8_t)v[12];
        printf("%d %lu %lu %lu %d\n",
               lrt_policy_due(&p, (uint32_t)v[6], (uint32_t)v[7], (uint32_t)v[8]),
               (unsigned long)lrt_policy_min_cells(&p, (uint32_t)v[9], (uint32_t)v[10]),
               (unsigned long)lrt_policy_gate_update(&p, (uint32_t)v[6], (int)v[11]),
               (unsigned long)lrt_policy_step_samples(&p, (uint32_t)v[6], (uint32_t)v[13]),
               lrt_policy_joins(&p));
    }
    return 0;
}
