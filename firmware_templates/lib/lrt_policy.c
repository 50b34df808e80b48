/* lrt_policy.c - write policy of the batched schemes (see lrt_policy.h). */
#include "lrt_policy.h"

#include "lrt_util.h"

int lrt_policy_due(const lrt_policy *p, uint32_t errors_since, uint32_t commits, uint32_t samples)
{
    if (p == NULL || p->kind != LRT_POLICY_GATED) {
        return 1;
    }
    if (errors_since < p->gate_errors) {
        return 0;
    }
    if (p->samples_per_commit != 0u) {
        uint64_t allowed = (uint64_t)p->burst + samples / p->samples_per_commit;
        if ((uint64_t)commits + 1u > allowed) {
            return 0;
        }
    }
    return 1;
}

uint32_t lrt_policy_min_cells(const lrt_policy *p, uint32_t cells, uint32_t rho_min_q16)
{
    uint32_t q16 = rho_min_q16;
    if (p != NULL && p->kind == LRT_POLICY_GATED && p->gate_cells_q16 != 0u) {
        q16 = p->gate_cells_q16;
    }
    /* the LRT accumulator's own rounding of rho_min */
    return lrt_share_cells(q16, cells);
}
