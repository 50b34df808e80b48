/* nvm_api.c - the rest of the lrt_nvm API: unmapped backends, the lrt_wstore adapter in any
 * order, bind, abort, worn-out slots, wear summary and flush budget. With a flash window
 * smaller than a page (chunk=), writes must increase: the adapter then writes in increasing
 * order, and a write below the window is checked to be refused (or accepted as a no-op).
 *
 * usage: nvm_api <geometry key=value...>     prints "OK ..." lines, exits non-zero on failure
 */
#include "nvm_util.h"

static uint8_t mem_a[NVM_MAX_REGION], mem_b[NVM_MAX_REGION];
static uint32_t work_a[16384], work_b[16384];
static uint8_t blob[65536], prev[65536], got[65536];
static uint32_t order[65536];

int main(int argc, char **argv)
{
    lrt_nvm_config ca, cb;
    lrt_nvm_ram ra, rb;
    lrt_nvm a, b;
    lrt_nvm_mount_info info;
    lrt_wstore ws;
    lrt_nvm_wear wear;
    const int8_t *bound = NULL;
    uint32_t n, region, i, c, rng = 3, worn_at = 0;
    int ordered;

    CHECK(nvm_geom_args(argc - 1, argv + 1, &ca) >= 0);
    cb = ca;
    n = ca.blob_size;
    region = nvm_region_size(&ca);
    CHECK_OK(lrt_nvm_ram_init(&ra, &ca, mem_a, 1));
    CHECK_OK(lrt_nvm_ram_init(&rb, &cb, mem_b, 1));
    cb.mapped = NULL; /* b goes through the read callback only */
    ordered = ca.tech == LRT_NVM_TECH_FLASH && ca.chunk_size != 0u && ca.chunk_size < ca.page_size;
    CHECK_OK(lrt_nvm_mount(&a, &ca, work_a, sizeof work_a, &info));
    CHECK_OK(lrt_nvm_mount(&b, &cb, work_b, sizeof work_b, &info));
    CHECK(lrt_nvm_blob(&b) == NULL);
    lrt_nvm_bind(&a, &bound);
    CHECK(bound == NULL);
    CHECK_OK(lrt_nvm_wstore(&ws, &a));
    memset(prev, 0, n);

    for (c = 0; c < 200u; c++) {
        uint32_t k = 0;
        memcpy(blob, prev, n);
        nvm_mutate(blob, n, &rng);
        /* a: the trainer's interface, one byte per write, in random order */
        for (i = 0; i < n; i++)
            if (blob[i] != prev[i] || c == 0u)
                order[k++] = i;
        for (i = k; i > 1u && !ordered; i--) {
            uint32_t j = rnd(&rng) % i, t = order[i - 1u];
            order[i - 1u] = order[j];
            order[j] = t;
        }
        CHECK_OK(lrt_wstore_begin(&ws));
        CHECK(lrt_wstore_begin(&ws) == LRT_ERR_STATE);
        for (i = 0; i < k; i++)
            CHECK_OK(lrt_wstore_write(&ws, order[i], blob + order[i], 1));
        CHECK(bound == NULL || memcmp(bound, prev, n) == 0); /* old set until commit */
        CHECK_OK(lrt_wstore_commit(&ws));
        CHECK(bound == lrt_nvm_blob(&a) && memcmp(bound, blob, n) == 0);
        /* b: unmapped, increasing order; must store exactly the same bytes except where
         * a's backward writes reprogrammed (only the counters can differ then) */
        CHECK_OK(nvm_commit_blob(&b, blob, prev, n, 1, &rng));
        CHECK_OK(lrt_nvm_read(&b, 0, got, n));
        CHECK(memcmp(got, blob, n) == 0);
        CHECK(ra.violations == 0u && rb.violations == 0u);
        memcpy(prev, blob, n);
    }
    /* same blobs in increasing order on both: identical images */
    CHECK_OK(nvm_commit_blob(&a, blob, prev, n, 0, &rng));
    CHECK_OK(nvm_commit_blob(&b, blob, prev, n, 0, &rng));
    CHECK(lrt_nvm_generation(&a) == lrt_nvm_generation(&b));
    {
        /* the blob areas and headers' generations agree; tables may differ (a reprogrammed) */
        uint32_t s = (uint32_t)lrt_nvm_current_slot(&a);
        CHECK(s == (uint32_t)lrt_nvm_current_slot(&b));
        CHECK(memcmp(mem_a + s * a.lay.slot_size + a.lay.meta_size,
                     mem_b + s * b.lay.slot_size + b.lay.meta_size, n) == 0);
    }
    CHECK_OK(lrt_nvm_mount(&b, &cb, work_b, sizeof work_b, &info));
    CHECK(info.flags == 0u && info.generation == 201u);
    printf("OK wstore-%s unmapped gen=%u\n", ordered ? "increasing" : "any-order",
           info.generation);

    if (ordered) {
        /* below the window: a write that changes nothing is accepted, one that changes a byte
         * is refused and drops the commit; the current set stays */
        uint32_t gen = lrt_nvm_generation(&a);
        memcpy(blob, prev, n);
        blob[0] ^= 0x11u;
        blob[n - 1u] ^= 0x22u;
        CHECK_OK(lrt_nvm_commit_begin(&a));
        CHECK_OK(lrt_nvm_commit_write(&a, n - 1u, blob + n - 1u, 1));
        CHECK_OK(lrt_nvm_commit_write(&a, 1, blob + 1, 1)); /* unchanged byte, below */
        CHECK(lrt_nvm_commit_write(&a, 0, blob, 1) == LRT_ERR_UNSUPPORTED);
        CHECK(lrt_nvm_commit_end(&a) == LRT_ERR_STATE);
        CHECK(lrt_nvm_generation(&a) == gen && memcmp(lrt_nvm_blob(&a), prev, n) == 0);
        CHECK_OK(lrt_nvm_mount(&a, &ca, work_a, sizeof work_a, &info));
        CHECK(info.generation == gen && memcmp(lrt_nvm_blob(&a), prev, n) == 0);
        /* the same change in increasing order goes through */
        CHECK_OK(lrt_nvm_commit_begin(&a));
        CHECK_OK(lrt_nvm_commit_write(&a, 0, blob, 1));
        CHECK_OK(lrt_nvm_commit_write(&a, n - 1u, blob + n - 1u, 1));
        CHECK_OK(lrt_nvm_commit_end(&a));
        CHECK(memcmp(lrt_nvm_blob(&a), blob, n) == 0);
        memcpy(prev, blob, n);
        printf("OK backward write refused\n");
    }

    /* abort keeps the current set and the blob pointer */
    {
        const int8_t *before = lrt_nvm_blob(&a);
        memset(blob, 0x5A, n);
        CHECK_OK(lrt_nvm_commit_begin(&a));
        CHECK_OK(lrt_nvm_commit_write(&a, 0, blob, n));
        CHECK_OK(lrt_nvm_commit_abort(&a));
        CHECK(lrt_nvm_commit_end(&a) == LRT_ERR_STATE);
        CHECK(lrt_nvm_blob(&a) == before && memcmp(before, prev, n) == 0);
        CHECK(lrt_nvm_commit_write(&a, 0, blob, 1) == LRT_ERR_STATE);
        CHECK_OK(lrt_nvm_mount(&a, &ca, work_a, sizeof work_a, &info));
        CHECK(memcmp(lrt_nvm_blob(&a), prev, n) == 0);
        CHECK_OK(lrt_nvm_commit_begin(&a));
        CHECK(lrt_nvm_commit_write(&a, n, blob, 1) == LRT_ERR_ARG);
        CHECK(lrt_nvm_commit_write(&a, 1, blob, n) == LRT_ERR_ARG);
        CHECK_OK(lrt_nvm_commit_abort(&a));
        printf("OK abort\n");
    }

    /* wear summary against the table, flush budget */
    CHECK_OK(lrt_nvm_wear_summary(&a, &wear));
    {
        uint32_t s, u, v, mx = 0, mm = 0, next_max = 0;
        uint64_t tot = 0;
        uint32_t next = ((uint32_t)lrt_nvm_current_slot(&a) + 1u) % a.lay.n_slots;
        for (s = 0; s < a.lay.n_slots; s++) {
            for (u = 0; u <= a.lay.blob_units; u++) {
                CHECK_OK(lrt_nvm_wear_get(&a, s, u, &v));
                if (u == 0u)
                    mm = v > mm ? v : mm;
                else {
                    mx = v > mx ? v : mx;
                    tot += v;
                }
                if (s == next)
                    next_max = v > next_max ? v : next_max;
            }
        }
        CHECK(wear.max_blob == mx && wear.max_meta == mm && wear.total_blob == tot);
        CHECK(wear.next_max == next_max && wear.n_units == a.lay.n_slots * a.lay.blob_units);
        CHECK(lrt_nvm_wear_get(&a, a.lay.n_slots, 0, &v) == LRT_ERR_ARG);
        {
            lrt_nvm_budget bud;
            lrt_nvm_throttle t;
            bud.endurance = 1000;
            bud.target_days = 365;
            bud.sample_rate_mhz = 1000;
            bud.burst = 0;
            /* 201 commits in 1000 samples is far ahead of a one-year schedule */
            CHECK_OK(lrt_nvm_flush_allowed(&a, &bud, 1000, 655, &t));
            CHECK(!t.allow && t.rho_min_q16 > 655);
            /* after a year's worth of samples the same wear is within budget */
            CHECK_OK(lrt_nvm_flush_allowed(&a, &bud, 365ull * 86400u, 655, &t));
            CHECK(t.allow && t.rho_min_q16 == 655);
            CHECK(t.projected_days >= 365u);
        }
        printf("OK wear max_blob=%u max_meta=%u next_max=%u\n", mx, mm, next_max);
    }

    /* endurance: slots with a worn unit are skipped, then LRT_ERR_WORN */
    memset(mem_a, ca.erase_value, region);
    ca.endurance = 5;
    CHECK_OK(lrt_nvm_mount(&a, &ca, work_a, sizeof work_a, &info));
    for (c = 0; c < 1000u; c++) {
        int rc;
        for (i = 0; i < n; i++)
            blob[i] = (uint8_t)rnd(&rng);
        rc = nvm_commit_blob(&a, blob, blob, n, 0, &rng);
        if (rc == LRT_ERR_WORN) {
            worn_at = c;
            break;
        }
        CHECK_OK(rc);
    }
    CHECK(worn_at == 5u * a.lay.n_slots);
    CHECK_OK(lrt_nvm_mount(&a, &ca, work_a, sizeof work_a, &info));
    CHECK(info.flags == 0u && memcmp(lrt_nvm_blob(&a), blob, n) != 0); /* last one refused */
    CHECK(lrt_nvm_commit_begin(&a) == LRT_ERR_WORN);
    printf("OK worn after %u commits (%u slots x endurance 5)\n", worn_at, a.lay.n_slots);
    return 0;
}
