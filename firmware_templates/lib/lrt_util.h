/* lrt_util.h - the small helpers every layer of the library shares, defined once:
 *  - little-endian byte order of the NVM format, the wire protocol and the weight blob;
 *  - lrt_xorshift32: the one pseudo-random generator (LRT's random signs, simulated drift),
 *    twin of toolchain/lrt/rng.py;
 *  - lrt_share_cells: a Q16 share of a layer's cells as a cell count (rho_min, gates);
 *  - LRT_ASSERT: an internal-invariant hook, a no-op unless the build defines it (tests can
 *    map it to assert()).
 */
#ifndef LRT_UTIL_H
#define LRT_UTIL_H

#include "lrt_common.h"

#ifndef LRT_ASSERT
#define LRT_ASSERT(cond) ((void)0)
#endif

/* ---- little-endian byte order ----------------------------------------------------------- */

static inline void lrt_put_le16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void lrt_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint16_t lrt_get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | ((uint16_t)p[1] << 8));
}

static inline uint32_t lrt_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---- xorshift32 (Marsaglia 13/17/5) ------------------------------------------------------ */

/* A zero state (xorshift's one fixed point) is replaced by this one, so a zero seed used
 * directly as a state still gives a stream. lrt_xorshift32_seed never returns 0. */
#define LRT_XORSHIFT32_ZERO_STATE 0x9E3779B9u

/* Initial state of a user seed: murmur3's finaliser, so nearby seeds give unrelated streams;
 * never 0. */
static inline uint32_t lrt_xorshift32_seed(uint32_t seed)
{
    uint32_t h = seed + 0x9E3779B9u;
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h ? h : 0x6D2B79F5u;
}

/* Advance *state and return the new state (never 0). */
static inline uint32_t lrt_xorshift32_next(uint32_t *state)
{
    uint32_t x = *state != 0u ? *state : LRT_XORSHIFT32_ZERO_STATE;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

/* ---- shares of cells --------------------------------------------------------------------- */

/* ceil(min(q16, 1) * cells), at least one cell: how many of a layer's cells a Q16 share
 * (rho_min, a policy's changed-cell gate) asks to change before a flush is written. */
static inline uint32_t lrt_share_cells(uint32_t q16, uint32_t cells)
{
    const uint64_t need = ((uint64_t)LRT_MIN(q16, 65536u) * cells + 65535u) >> 16;
    return need < 1u ? 1u : (uint32_t)need;
}

#endif /* LRT_UTIL_H */
