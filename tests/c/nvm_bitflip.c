/* nvm_bitflip.c - every single-bit flip in a committed set is detected.
 *
 * Two sets are committed (older in one slot, newer in the next). Then, exhaustively, each bit
 * of each slot's header, wear table and blob is flipped in turn and the region remounted:
 * a flip in the newer slot must make mount fall back to the older set (flag FALLBACK, the
 * slot reported not valid); a flip in the older slot must leave the newer set in use with the
 * older slot reported corrupt. Then drift: silent in-place drift of the live set makes a
 * remount fall back, a refresh commit re-seals it, flips in both slots give DEGRADED.
 *
 * usage: nvm_bitflip [flipslot=1] <geometry key=value...>   (flipslot=1: the newer slot only)
 * prints: RESULT flips=.. detected=.. fell_back=.. kept_newer=..
 */
#include "nvm_util.h"

static uint8_t mem[NVM_MAX_REGION];
static uint32_t work[16384];
static uint8_t set1[65536], set2[65536];

int main(int argc, char **argv)
{
    lrt_nvm_config cfg;
    lrt_nvm_ram ram;
    lrt_nvm nvm;
    lrt_nvm_mount_info info;
    uint32_t n, i, rng = 12345, s1, s2, flips = 0, detected = 0, fell_back = 0, kept = 0;
    uint32_t pass, passes = 2;
    int32_t changed;
    char *rest[32];
    int a, nrest = 0;

    for (a = 1; a < argc && nrest < 32; a++) {
        if (strcmp(argv[a], "flipslot=1") == 0)
            passes = 1;
        else
            rest[nrest++] = argv[a];
    }
    CHECK(nvm_geom_args(nrest, rest, &cfg) >= 0);
    n = cfg.blob_size;
    CHECK_OK(lrt_nvm_ram_init(&ram, &cfg, mem, 1));
    CHECK_OK(lrt_nvm_mount(&nvm, &cfg, work, sizeof work, &info));
    for (i = 0; i < n; i++)
        set1[i] = (uint8_t)rnd(&rng);
    memcpy(set2, set1, n);
    for (i = 0; i < n; i += 3)
        set2[i] = (uint8_t)rnd(&rng);
    CHECK_OK(nvm_commit_blob(&nvm, set1, set1, n, 0, &rng));
    s1 = (uint32_t)lrt_nvm_current_slot(&nvm);
    CHECK_OK(nvm_commit_blob(&nvm, set2, set1, n, 0, &rng));
    s2 = (uint32_t)lrt_nvm_current_slot(&nvm);
    CHECK(s1 != s2);

    for (pass = 0; pass < passes; pass++) {
        uint32_t s = pass == 0u ? s2 : s1, base = s * nvm.lay.slot_size, r;
        /* covered ranges: header, wear table, blob */
        uint32_t lo[3], hi[3];
        lo[0] = base;
        hi[0] = base + LRT_NVM_HEADER_SIZE;
        lo[1] = hi[0];
        hi[1] = lo[1] + nvm.lay.table_len;
        lo[2] = base + nvm.lay.meta_size;
        hi[2] = lo[2] + n;
        for (r = 0; r < 3u; r++) {
            uint32_t a, bit;
            for (a = lo[r]; a < hi[r]; a++) {
                for (bit = 0; bit < 8u; bit++) {
                    lrt_nvm m2;
                    int rc;
                    mem[a] ^= (uint8_t)(1u << bit);
                    flips++;
                    rc = lrt_nvm_mount(&m2, &cfg, work, sizeof work, &info);
                    CHECK(rc == LRT_OK);
                    if (info.slot_state[s] != LRT_NVM_SLOT_VALID && info.n_corrupt == 1u)
                        detected++;
                    if (s == s2) {
                        /* newest hit: older set, reported */
                        if (info.slot == (int32_t)s1 && memcmp(nvm_current(&m2), set1, n) == 0 &&
                            (info.flags & LRT_NVM_F_FALLBACK) && !(info.flags & LRT_NVM_F_DEGRADED))
                            fell_back++;
                        else if (fell_back + kept + 10u > flips)
                            fprintf(stderr, "flip at %u bit %u: slot %d flags %x\n", a, bit,
                                    (int)info.slot, (unsigned)info.flags);
                    } else {
                        /* A broken header cannot be dated, so it may be reported as a
                         * possible newer set (FALLBACK); a broken blob/table behind a good,
                         * older header may not. */
                        uint32_t ok_flags = r == 0u ? LRT_NVM_F_FALLBACK : 0u;
                        if (info.slot == (int32_t)s2 && memcmp(nvm_current(&m2), set2, n) == 0 &&
                            (info.flags & ~ok_flags) == 0u)
                            kept++;
                        else if (fell_back + kept + 10u > flips)
                            fprintf(stderr, "flip at %u bit %u (older): slot %d flags %x\n", a,
                                    bit, (int)info.slot, (unsigned)info.flags);
                    }
                    mem[a] ^= (uint8_t)(1u << bit);
                }
            }
        }
    }
    printf("RESULT flips=%u detected=%u fell_back=%u kept_newer=%u\n", flips, detected,
           fell_back, kept);

    /* Drift: silent, visible at once through the mapping, not sealed until the next commit. */
    CHECK_OK(lrt_nvm_mount(&nvm, &cfg, work, sizeof work, &info));
    CHECK(info.slot == (int32_t)s2 && info.flags == 0u);
    changed = lrt_nvm_drift_apply(&nvm, mem, 0, n, LRT_NVM_DRIFT_DIGITAL, 0x08000000u, 99);
    CHECK(changed > 0);
    CHECK(memcmp(nvm_current(&nvm), set2, n) != 0);
    memcpy(set2, nvm_current(&nvm), n); /* what the running device now computes with */
    {
        lrt_nvm m2;
        CHECK_OK(lrt_nvm_mount(&m2, &cfg, work, sizeof work, &info));
        CHECK(info.slot == (int32_t)s1 && (info.flags & LRT_NVM_F_FALLBACK));
        printf("DRIFT changed=%d reboot_before_refresh=fallback\n", (int)changed);
    }
    /* refresh: an empty commit seals the drifted bytes under a new generation */
    CHECK_OK(lrt_nvm_mount(&nvm, &cfg, work, sizeof work, &info));
    CHECK(info.slot == (int32_t)s1);
    /* the mount above chose the older set: put the running (drifted) set back explicitly */
    CHECK_OK(nvm_commit_blob(&nvm, set2, set1, n, 0, &rng));
    CHECK_OK(lrt_nvm_mount(&nvm, &cfg, work, sizeof work, &info));
    CHECK(info.flags == 0u && memcmp(nvm_current(&nvm), set2, n) == 0);
    {
        /* drift then an empty refresh commit: sealed, no fallback on reboot */
        uint32_t gen = info.generation;
        lrt_nvm m2;
        changed = lrt_nvm_drift_apply(&nvm, mem, 0, n, LRT_NVM_DRIFT_ANALOG, 4u << 16, 7);
        CHECK(changed > 0);
        memcpy(set1, nvm_current(&nvm), n);
        CHECK_OK(lrt_nvm_commit_begin(&nvm));
        CHECK_OK(lrt_nvm_commit_end(&nvm));
        CHECK_OK(lrt_nvm_mount(&m2, &cfg, work, sizeof work, &info));
        CHECK(info.flags == 0u && info.generation == gen + 1u);
        CHECK(memcmp(nvm_current(&m2), set1, n) == 0);
        printf("DRIFT analog_changed=%d refresh=sealed\n", (int)changed);
    }
    /* every slot hit: degraded, newest header wins */
    for (i = 0; i < nvm.lay.n_slots; i++)
        mem[i * nvm.lay.slot_size + nvm.lay.meta_size] ^= 1u;
    CHECK_OK(lrt_nvm_mount(&nvm, &cfg, work, sizeof work, &info));
    CHECK(info.flags & LRT_NVM_F_DEGRADED);
    CHECK(info.generation == info.slot_generation[info.slot]);
    for (i = 0; i < nvm.lay.n_slots; i++)
        CHECK(info.slot_generation[i] <= info.generation);
    printf("DEGRADED slot=%d\n", (int)info.slot);
    return (detected == flips && fell_back + kept == flips) ? 0 : 1;
}
