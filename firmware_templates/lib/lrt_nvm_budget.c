/* lrt_nvm_budget.c - the endurance budget of the NVM layer (see lrt_nvm.h): how much wear
 * a lifetime target allows so far, and the rho_min that keeps flushes within it. Integer
 * only; Python twin in toolchain/lrt/nvm.py. */
#include <string.h>

#include "lrt_nvm.h"

/* a * b / c in 64 bits without overflow for the ranges that matter; saturates otherwise. */
static uint64_t mul_div(uint64_t a, uint64_t b, uint64_t c)
{
    if (a == 0u || b == 0u)
        return 0u;
    if (a <= UINT64_MAX / b)
        return a * b / c;
    a /= c; /* loses the fraction, only reached for lifetimes of > 1e10 years */
    if (a > UINT64_MAX / b)
        return UINT64_MAX;
    return a * b;
}

uint32_t lrt_nvm_projected_lifetime_days(uint32_t endurance, uint32_t worst, uint64_t samples,
                                         uint32_t sample_rate_mhz)
{
    uint64_t life, days;

    if (worst == 0u || sample_rate_mhz == 0u)
        return UINT32_MAX;
    life = mul_div(samples, endurance, worst); /* samples until worn out */
    days = mul_div(life, 1000u, 86400ull * sample_rate_mhz);
    return days >= UINT32_MAX ? UINT32_MAX : (uint32_t)days;
}

int lrt_nvm_budget_check(const lrt_nvm_budget *b, uint32_t worst_after, uint64_t samples,
                         uint32_t rho_min_q16, lrt_nvm_throttle *out)
{
    uint64_t target_samples, allowed;

    if (b == NULL || out == NULL || b->target_days == 0u || b->sample_rate_mhz == 0u)
        return LRT_ERR_ARG;
    memset(out, 0, sizeof *out);
    if (b->endurance == 0u) {
        out->allow = 1;
        out->allowed = UINT32_MAX;
        out->rho_min_q16 = rho_min_q16;
        out->projected_days = UINT32_MAX;
        return LRT_OK;
    }
    target_samples = mul_div(86400ull * b->target_days, b->sample_rate_mhz, 1000u);
    if (target_samples == 0u)
        target_samples = 1u;
    allowed = mul_div(samples, b->endurance, target_samples);
    allowed = allowed > UINT64_MAX - b->burst ? UINT64_MAX : allowed + b->burst;
    out->allowed = allowed >= UINT32_MAX ? UINT32_MAX : (uint32_t)allowed;
    out->allow = (uint8_t)(worst_after <= out->allowed && worst_after <= b->endurance);
    out->projected_days =
        lrt_nvm_projected_lifetime_days(b->endurance, worst_after, samples, b->sample_rate_mhz);
    if (out->allow) {
        out->rho_min_q16 = rho_min_q16;
    } else {
        uint64_t r = mul_div(rho_min_q16, (uint64_t)worst_after + 1u, (uint64_t)out->allowed + 1u);
        /* never below the base, never above 1.0 (a base above 1.0 already stops flushes) */
        if (rho_min_q16 >= 65536u)
            out->rho_min_q16 = rho_min_q16;
        else
            out->rho_min_q16 = (uint32_t)LRT_CLAMP(r, rho_min_q16, 65536u);
    }
    return LRT_OK;
}

int lrt_nvm_flush_allowed(const lrt_nvm *nvm, const lrt_nvm_budget *b, uint64_t samples,
                          uint32_t rho_min_q16, lrt_nvm_throttle *out)
{
    lrt_nvm_wear w;
    int err;

    if (nvm == NULL)
        return LRT_ERR_ARG;
    err = lrt_nvm_wear_summary(nvm, &w);
    if (err != LRT_OK)
        return err;
    return lrt_nvm_budget_check(b, w.next_max == UINT32_MAX ? w.next_max : w.next_max + 1u, samples,
                                rho_min_q16, out);
}
