/* lrt_policy.c - write policy of the batched schemes (see lrt_policy.h). */
#include "lrt_policy.h"

#include "lrt_util.h"

uint32_t lrt_policy_gate_update(const lrt_policy *p, uint32_t excess_q16, int mispredicted)
{
    const uint32_t rate = p == NULL ? 0u : p->gate_rate_q16;
    uint64_t s = (uint64_t)excess_q16 + (mispredicted ? 65536u : 0u);
    s = s > rate ? s - rate : 0u;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

int lrt_policy_due(const lrt_policy *p, uint32_t excess_q16, uint32_t commits, uint32_t samples)
{
    if (p == NULL || p->kind != LRT_POLICY_GATED) {
        return 1;
    }
    if (excess_q16 < ((uint32_t)p->gate_errors << 16)) {
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

uint32_t lrt_policy_step_samples(const lrt_policy *p, uint32_t excess_q16, uint32_t batch)
{
    uint64_t n = LRT_MAX(batch, 1u);
    if (p == NULL || p->step_bound == LRT_STEP_ALL) {
        return 0u;
    }
    if (p->step_bound == LRT_STEP_EVIDENCE) {
        if (p->kind != LRT_POLICY_GATED) {
            return 0u;
        }
        n *= LRT_MAX(excess_q16 >> 16, 1u);
    }
    return n > 65535u ? 65535u : (uint32_t)n;
}

int lrt_policy_joins(const lrt_policy *p)
{
    return p != NULL && p->kind == LRT_POLICY_GATED && p->samples_per_commit != 0u;
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
