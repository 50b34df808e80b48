/* nvm_powerchain.c - power cuts chained over reboots, striking during recovery too.
 *
 * A device life: boot (mount; a blank store, or one holding only unreadable headers, gets the
 * built-in set committed: the recovery commit), then a few commits of changed sets, then the
 * next boot. Each boot cycle arms one power cut at a random program/erase op of the cycle
 * (recovery commit included) with a random tear: the op does not happen, lands a prefix,
 * lands a random subset of its bit changes, or leaves every cell it touches as garbage or as
 * zeros. The device reboots right after the cut, so the next cycle's mount and commits work
 * on the torn state, and the next cut may strike them again. Now and then the region is
 * wiped (a fresh device) or filled with garbage (a store that was never one), so that the
 * recovery commit itself is cut, repeatedly.
 *
 * After every boot the mounted set must be the last acknowledged one (commit_end returned
 * LRT_OK) or the one in flight when the cut struck; nothing else (torn), nothing older and no
 * empty or degraded store once a set was acknowledged (lost). Never FOREIGN.
 *
 * usage: nvm_powerchain cuts=N seed=S <geometry key=value...>
 * prints: RESULT cycles=.. cuts=.. recovery_cuts=.. chained_cuts=.. wipes=.. torn=.. lost=..
 */
#include "nvm_util.h"

static uint8_t mem[NVM_MAX_REGION];
static uint32_t work[16384];
static uint8_t acked[65536], pending[65536], next[65536], factory[65536];

int main(int argc, char **argv)
{
    lrt_nvm_config geo, rcfg, fcfg;
    lrt_nvm_ram ram;
    lrt_nvm_fault fault;
    lrt_nvm nvm;
    lrt_nvm_mount_info info;
    uint32_t target = 10000, seed = 1, n, region, rng, i;
    uint64_t span = 64; /* ops of the last uncut cycle: where a cut can strike */
    unsigned long cycles = 0, cuts = 0, recovery_cuts = 0, chained = 0, wipes = 0, torn = 0,
                  lost = 0, recoveries = 0;
    int has_acked = 0, has_pending = 0, last_cut = 0;
    char *rest[32];
    int nrest = 0, a;

    for (a = 1; a < argc && nrest < 32; a++) {
        if (strncmp(argv[a], "cuts=", 5) == 0)
            target = (uint32_t)strtoul(argv[a] + 5, NULL, 0);
        else if (strncmp(argv[a], "seed=", 5) == 0)
            seed = (uint32_t)strtoul(argv[a] + 5, NULL, 0);
        else
            rest[nrest++] = argv[a];
    }
    CHECK(nvm_geom_args(nrest, rest, &geo) >= 0);
    region = nvm_region_size(&geo);
    n = geo.blob_size;
    CHECK(region <= NVM_MAX_REGION && n <= sizeof acked);
    rcfg = geo;
    CHECK_OK(lrt_nvm_ram_init(&ram, &rcfg, mem, 1));
    ram.strict = 0; /* garbage tears leave programmed cells where the next op may land */
    CHECK_OK(lrt_nvm_fault_init(&fault, &fcfg, &rcfg, mem));
    rng = seed;
    for (i = 0; i < n; i++)
        factory[i] = (uint8_t)(i * 7u + 1u);

    while (cuts < target) {
        uint32_t commits, c, cut_at;
        int rc, cut = 0, tear;

        cycles++;
        if (rnd(&rng) % 64u == 0u) {
            /* a fresh device, or a region of garbage: nothing acknowledged survives that */
            if (rnd(&rng) % 2u == 0u) {
                memset(mem, geo.erase_value, region);
            } else {
                for (i = 0; i < region; i++)
                    mem[i] = (uint8_t)rnd(&rng);
            }
            has_acked = has_pending = 0;
            wipes++;
        }
        /* arm the cut somewhere in this cycle's ops (or, sometimes, past its end) */
        cut_at = rnd(&rng) % (uint32_t)(span + span / 4u + 1u);
        tear = (int)(rnd(&rng) % 5u);
        lrt_nvm_fault_arm(&fault, cut_at, tear, rnd(&rng));

        /* boot: mount does not write, so the cut cannot strike here */
        rc = lrt_nvm_mount(&nvm, &fcfg, work, sizeof work, &info);
        CHECK(rc == LRT_OK || rc == LRT_ERR_CORRUPT);
        CHECK((info.flags & LRT_NVM_F_FOREIGN) == 0u);
        if (rc == LRT_OK && info.slot >= 0 && !(info.flags & LRT_NVM_F_DEGRADED)) {
            const uint8_t *cur = nvm_current(&nvm);
            if (has_acked && memcmp(cur, acked, n) == 0) {
                has_pending = 0;
            } else if (has_pending && memcmp(cur, pending, n) == 0) {
                memcpy(acked, pending, n); /* the cut struck after its header landed */
                has_acked = 1;
                has_pending = 0;
            } else if (has_acked || has_pending) {
                fprintf(stderr, "TORN cycle %lu\n", cycles);
                torn++;
                memcpy(acked, cur, n);
                has_acked = 1;
            } else {
                memcpy(acked, cur, n); /* a wiped region never mounts a set: see the CHECK */
                CHECK(0);
            }
        } else if (has_acked) {
            fprintf(stderr, "LOST cycle %lu rc %d flags %u\n", cycles, rc, (unsigned)info.flags);
            lost++;
            has_acked = 0;
        }
        if (lrt_nvm_may_initialise(rc, &info)) {
            /* recovery: the built-in set */
            recoveries++;
            memcpy(pending, factory, n);
            has_pending = 1;
            rc = lrt_nvm_commit_begin(&nvm);
            if (rc == LRT_OK)
                rc = lrt_nvm_commit_write(&nvm, 0, factory, n);
            if (rc == LRT_OK)
                rc = lrt_nvm_commit_end(&nvm);
            if (rc != LRT_OK) {
                CHECK(fault.dead);
                cut = 1;
                recovery_cuts++;
            } else {
                memcpy(acked, factory, n);
                has_acked = 1;
                has_pending = 0;
            }
        } else {
            CHECK(rc == LRT_OK);
        }
        commits = 1u + rnd(&rng) % 3u;
        for (c = 0; c < commits && !cut; c++) {
            uint32_t r = rnd(&rng);
            memcpy(next, acked, n);
            nvm_mutate(next, n, &rng);
            memcpy(pending, next, n);
            has_pending = 1;
            rc = nvm_commit_blob(&nvm, next, acked, n, (int)(rnd(&rng) % 2u), &r);
            if (rc != LRT_OK) {
                CHECK(fault.dead);
                cut = 1;
            } else {
                memcpy(acked, next, n);
                has_pending = 0;
            }
        }
        if (cut) {
            cuts++;
            chained += last_cut;
        } else {
            span = fault.ops > 4u ? fault.ops : 4u;
        }
        last_cut = cut;
    }
    printf("RESULT cycles=%lu cuts=%lu recovery_cuts=%lu chained_cuts=%lu recoveries=%lu "
           "wipes=%lu torn=%lu lost=%lu\n",
           cycles, cuts, recovery_cuts, chained, recoveries, wipes, torn, lost);
    return (torn == 0u && lost == 0u) ? 0 : 1;
}
