/* lrt_nvm_drift.c - simulated cell drift of an NVM weight set (see lrt_nvm.h): random bit
 * flips (digital) or Gaussian noise on int8 cells (analog), drawn from lrt_xorshift32. Python
 * twin in toolchain/lrt/nvm.py. */
#include "lrt_nvm.h"
#include "lrt_util.h"

uint32_t lrt_nvm_drift_bits(uint8_t *buf, uint32_t len, uint32_t p_q32, uint32_t *rng)
{
    uint32_t i, bit, flips = 0;

    for (i = 0; i < len; i++) {
        for (bit = 0; bit < 8u; bit++) {
            if (lrt_xorshift32_next(rng) < p_q32) {
                buf[i] = (uint8_t)(buf[i] ^ (1u << bit));
                flips++;
            }
        }
    }
    return flips;
}

uint32_t lrt_nvm_drift_noise(int8_t *w, uint32_t len, uint32_t sigma_q16, uint32_t *rng)
{
    uint32_t i, k, changed = 0;

    for (i = 0; i < len; i++) {
        uint32_t sum = 0;
        int64_t q, n, v;

        for (k = 0; k < 6u; k++) {
            uint32_t r = lrt_xorshift32_next(rng);
            sum += (r & 0xFFFFu) + (r >> 16);
        }
        /* Irwin-Hall: sum of 12 U[0,1) minus 6 has mean 0, variance 1 (Q16 here). */
        q = ((int64_t)sum - 6 * 65536) * (int64_t)sigma_q16 + ((int64_t)1 << 31);
        /* floor(q / 2^32) without shifting a negative number (implementation-defined) */
        n = q >= 0 ? (int64_t)((uint64_t)q >> 32)
                   : -(int64_t)(((uint64_t)(-q) + 0xFFFFFFFFu) >> 32);
        v = LRT_CLAMP((int64_t)w[i] + n, -128, 127);
        if (v != w[i])
            changed++;
        w[i] = (int8_t)v;
    }
    return changed;
}

int32_t lrt_nvm_drift_apply(lrt_nvm *nvm, uint8_t *region, uint32_t offset, uint32_t len, int kind,
                            uint32_t param, uint32_t seed)
{
    uint8_t *p;
    uint32_t rng = seed, changed = 0, i, addr;
    int err;

    if (nvm == NULL || region == NULL)
        return LRT_ERR_ARG;
    err = lrt_nvm_blob_addr(nvm, offset, len, &addr);
    if (err != LRT_OK)
        return err;
    p = region + addr;
    if (kind == LRT_NVM_DRIFT_ANALOG) {
        changed = lrt_nvm_drift_noise((int8_t *)p, len, param, &rng);
    } else if (kind == LRT_NVM_DRIFT_DIGITAL) {
        /* Count changed cells (bytes), not flips: a byte can take several flips. */
        for (i = 0; i < len; i++)
            changed += lrt_nvm_drift_bits(p + i, 1, param, &rng) != 0u;
    } else {
        return LRT_ERR_ARG;
    }
    return changed > 0x7FFFFFFFu ? 0x7FFFFFFF : (int32_t)changed;
}
