/* nvm_util.h - shared bits of the NVM test drivers (geometry from argv, RNG, checks). */
#ifndef NVM_UTIL_H
#define NVM_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrt_nvm_host.h"
#include "lrt_util.h"

#define NVM_MAX_REGION (1u << 20)

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
            exit(3);                                                                         \
        }                                                                                    \
    } while (0)

#define CHECK_OK(expr)                                                                       \
    do {                                                                                     \
        int rc_ = (expr);                                                                    \
        if (rc_ != LRT_OK) {                                                                 \
            fprintf(stderr, "%s:%d: %s -> %d (%s)\n", __FILE__, __LINE__, #expr, rc_,        \
                    lrt_err_str(rc_));                                                       \
            exit(3);                                                                         \
        }                                                                                    \
    } while (0)

/* Geometry from "key=value" arguments: tech=flash|rram prog= page= pages= blob= slots=
 * unit= erase= endurance= chunk= model=. Unknown keys are an error; returns the number of args used. */
static inline int nvm_geom_args(int argc, char **argv, lrt_nvm_config *cfg)
{
    int i, used = 0;

    memset(cfg, 0, sizeof *cfg);
    cfg->tech = LRT_NVM_TECH_FLASH;
    cfg->prog_size = 4;
    cfg->page_size = 64;
    cfg->page_count = 24;
    cfg->blob_size = 300;
    cfg->erase_value = 0xFF;
    for (i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        unsigned long v;
        if (eq == NULL)
            continue;
        used++;
        if (strncmp(a, "tech=", 5) == 0) {
            cfg->tech = strcmp(eq + 1, "rram") == 0 ? LRT_NVM_TECH_RRAM : LRT_NVM_TECH_FLASH;
            continue;
        }
        v = strtoul(eq + 1, NULL, 0);
        if (strncmp(a, "prog=", 5) == 0)
            cfg->prog_size = (uint32_t)v;
        else if (strncmp(a, "page=", 5) == 0)
            cfg->page_size = (uint32_t)v;
        else if (strncmp(a, "pages=", 6) == 0)
            cfg->page_count = (uint32_t)v;
        else if (strncmp(a, "blob=", 5) == 0)
            cfg->blob_size = (uint32_t)v;
        else if (strncmp(a, "slots=", 6) == 0)
            cfg->n_slots = (uint16_t)v;
        else if (strncmp(a, "unit=", 5) == 0)
            cfg->wear_unit = (uint32_t)v;
        else if (strncmp(a, "erase=", 6) == 0)
            cfg->erase_value = (uint8_t)v;
        else if (strncmp(a, "endurance=", 10) == 0)
            cfg->endurance = (uint32_t)v;
        else if (strncmp(a, "chunk=", 6) == 0)
            cfg->chunk_size = (uint32_t)v;
        else if (strncmp(a, "model=", 6) == 0)
            cfg->model_id = (uint32_t)v;
        else
            used = -1000;
    }
    return used;
}

static inline uint32_t nvm_region_size(const lrt_nvm_config *cfg)
{
    return cfg->page_size * cfg->page_count;
}

static inline uint32_t rnd(uint32_t *s)
{
    return lrt_xorshift32_next(s);
}

/* Change `blob` the way successive flushes might: nothing, one byte, a run, a scattered
 * fraction, or everything. */
static inline void nvm_mutate(uint8_t *blob, uint32_t n, uint32_t *rng)
{
    uint32_t kind = rnd(rng) % 8u, i;

    if (kind == 0u) {
        return;
    } else if (kind == 1u) {
        blob[rnd(rng) % n] ^= (uint8_t)(1u + rnd(rng) % 255u);
    } else if (kind <= 3u) {
        uint32_t len = 1u + rnd(rng) % (n / 2u), at = rnd(rng) % (n - len + 1u);
        for (i = 0; i < len; i++)
            blob[at + i] = (uint8_t)rnd(rng);
    } else if (kind <= 6u) {
        uint32_t pct = 1u + rnd(rng) % 30u;
        for (i = 0; i < n; i++)
            if (rnd(rng) % 100u < pct)
                blob[i] = (uint8_t)rnd(rng);
    } else {
        for (i = 0; i < n; i++)
            blob[i] = (uint8_t)rnd(rng);
    }
}

/* Write `blob` as one commit. Plans: 0 = everything in random-sized increasing pieces,
 * 1 = only the bytes that differ from `old`, in increasing order, 2 = the differing runs in
 * reverse order (exercises re-opened chunks). Returns the commit_end result (or the first
 * error). */
static inline int nvm_commit_blob(lrt_nvm *nvm, const uint8_t *blob, const uint8_t *old, uint32_t n,
                           int plan, uint32_t *rng)
{
    int err = lrt_nvm_commit_begin(nvm);
    uint32_t i = 0;

    if (err != LRT_OK)
        return err;
    if (plan == 0) {
        while (i < n && err == LRT_OK) {
            uint32_t len = 1u + rnd(rng) % 97u;
            if (len > n - i)
                len = n - i;
            err = lrt_nvm_commit_write(nvm, i, blob + i, len);
            i += len;
        }
    } else if (plan == 1) {
        while (i < n && err == LRT_OK) {
            uint32_t j;
            if (blob[i] == old[i]) {
                i++;
                continue;
            }
            for (j = i; j < n && blob[j] != old[j]; j++)
                ;
            err = lrt_nvm_commit_write(nvm, i, blob + i, j - i);
            i = j;
        }
    } else {
        uint32_t end = n;
        while (end > 0u && err == LRT_OK) {
            uint32_t j;
            if (blob[end - 1u] == old[end - 1u]) {
                end--;
                continue;
            }
            for (j = end; j > 0u && blob[j - 1u] != old[j - 1u]; j--)
                ;
            err = lrt_nvm_commit_write(nvm, j, blob + j, end - j);
            end = j;
        }
    }
    if (err != LRT_OK) {
        (void)lrt_nvm_commit_abort(nvm);
        return err;
    }
    return lrt_nvm_commit_end(nvm);
}

/* Current set as bytes (through the mapping). */
static inline const uint8_t *nvm_current(const lrt_nvm *nvm)
{
    return (const uint8_t *)lrt_nvm_blob(nvm);
}

#endif /* NVM_UTIL_H */
