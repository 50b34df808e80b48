/* nvm_powerloss.c - littlefs-style power-loss enumeration for lrt_nvm.
 *
 * For each of `commits` consecutive commits (random changes of random size, random write
 * plans), replay the commit once per cut point: power fails at program/erase op k, for every
 * k, with the op not happening, a torn prefix of words, or a random subset of bits landing.
 * After each cut, mount must find a set byte-identical to the previous or the new commit
 * (strictly the previous one for cuts before the last op, the new one once all ops ran), and
 * a follow-up commit from that state must succeed. The real chain runs without faults and its
 * stored wear table must equal the RAM backend's own per-word / per-page counters.
 *
 * Some commits restore bytes (a range, or the whole set) to the values the target slot already
 * holds, the case a flash page streamed through a sub-page window must remember (lrt_nvm.c).
 *
 * Built with -DNVM_SIM_STM32F4 (and lrt_nvm_stm32f4.c compiled with -include stm32f4_sim.h),
 * the region is the STM32F4 driver over the simulated flash controller instead of the RAM
 * backend: the same enumeration then runs the driver's register sequences, and the
 * simulator's protocol checks must stay clean. -DNVM_SIM_NRF52 does the same for the nRF52
 * NVMC driver (nrf52_sim.h).
 *
 * usage: nvm_powerloss commits=N seed=S followup=0|1 plans=1..3 [base=ADDR]
 *        <geometry key=value...>
 *        (plans=2: increasing write order only, as a sub-page flash window requires)
 * prints: RESULT commits=.. trials=.. old=.. new=.. torn=.. lost=.. max_ops=.. early=..
 */
#include "nvm_util.h"

#if defined(NVM_SIM_STM32F4)
#include "lrt_nvm_stm32f4.h"
#include "stm32f4_sim.h"
#elif defined(NVM_SIM_NRF52)
#include "lrt_nvm_nrf52.h"
#include "nrf52_sim.h"
#endif

static uint8_t mem[NVM_MAX_REGION], snap[NVM_MAX_REGION];
static uint32_t word_progs[NVM_MAX_REGION], page_erases[NVM_MAX_REGION];
static uint32_t work_a[16384], work_b[16384];
static uint8_t prev[65536], next[65536];
#define HIST 33u
static uint8_t hist[HIST][65536]; /* hist[c % HIST]: the set committed by commit c */

static void check_table(const lrt_nvm *nvm, const lrt_nvm_ram *ram)
{
    const lrt_nvm_config *c = nvm->cfg;
    const lrt_nvm_layout *l = &nvm->lay;
    uint32_t s, u, v, a;

    for (s = 0; s < l->n_slots; s++) {
        uint32_t base = s * l->slot_size, meta;
        CHECK_OK(lrt_nvm_wear_get(nvm, s, 0, &meta));
        if (c->tech == LRT_NVM_TECH_FLASH) {
            /* unit u = the slot's page u, exactly its erase count; page 0 (header) is erased
             * by every commit into the slot */
            for (u = 0; u <= l->blob_units; u++) {
                a = base + u * c->page_size;
                CHECK_OK(lrt_nvm_wear_get(nvm, s, u, &v));
                if (v != page_erases[a / c->page_size])
                    fprintf(stderr, "slot %u unit %u table %u erases %u\n", s, u, v,
                            page_erases[a / c->page_size]);
                CHECK(v == page_erases[a / c->page_size]);
            }
            continue;
        }
        for (u = 1; u <= l->blob_units; u++) {
            uint32_t addr = base + l->meta_size + (u - 1u) * l->unit_size;
            CHECK_OK(lrt_nvm_wear_get(nvm, s, u, &v));
            if (l->unit_size == c->prog_size) {
                CHECK(v == word_progs[addr / c->prog_size]);
            } else {
                for (a = addr; a < addr + l->unit_size; a += c->prog_size)
                    CHECK(word_progs[a / c->prog_size] <= v);
            }
        }
        /* metadata: rewritten once per commit into the slot, never more */
        for (a = base; a < base + l->meta_size; a += c->prog_size)
            CHECK(word_progs[a / c->prog_size] <= meta);
    }
    CHECK(ram->violations == 0u);
}

int main(int argc, char **argv)
{
    lrt_nvm_config geo, rcfg, fcfg;
    lrt_nvm_ram ram;
    lrt_nvm_fault fault;
    lrt_nvm nvm, saved, nvm2;
    lrt_nvm_mount_info info;
    uint32_t commits = 1000, seed = 1, followup = 1, plans = 3, base = 0x08020000u, n, region, c,
             rng;
    unsigned long trials = 0, n_old = 0, n_new = 0, torn = 0, lost = 0, max_ops = 0, ops = 0;
    unsigned long fallback = 0, early = 0, reverts = 0;
    int i;
    char *rest[32];
    int nrest = 0;

    for (i = 1; i < argc && nrest < 32; i++) {
        if (strncmp(argv[i], "commits=", 8) == 0)
            commits = (uint32_t)strtoul(argv[i] + 8, NULL, 0);
        else if (strncmp(argv[i], "seed=", 5) == 0)
            seed = (uint32_t)strtoul(argv[i] + 5, NULL, 0);
        else if (strncmp(argv[i], "followup=", 9) == 0)
            followup = (uint32_t)strtoul(argv[i] + 9, NULL, 0);
        else if (strncmp(argv[i], "plans=", 6) == 0)
            plans = (uint32_t)strtoul(argv[i] + 6, NULL, 0);
        else if (strncmp(argv[i], "base=", 5) == 0)
            base = (uint32_t)strtoul(argv[i] + 5, NULL, 0);
        else
            rest[nrest++] = argv[i];
    }
    CHECK(nvm_geom_args(nrest, rest, &geo) >= 0);
    region = nvm_region_size(&geo);
    n = geo.blob_size;
    CHECK(region <= NVM_MAX_REGION && n <= sizeof prev);
    rcfg = geo;
#if defined(NVM_SIM_STM32F4) || defined(NVM_SIM_NRF52)
    memset(mem, 0xFF, region);
    memset(&ram, 0, sizeof ram);
    ram.strict = 1;
#if defined(NVM_SIM_STM32F4)
    stm32f4_sim_init(mem, base, region, &ram);
    CHECK_OK(lrt_nvm_stm32f4_init(&rcfg, base));
#else
    nrf52_sim_init(mem, base, region, &ram);
    CHECK_OK(lrt_nvm_nrf52_init(&rcfg, base));
#endif
#else
    (void)base;
    CHECK_OK(lrt_nvm_ram_init(&ram, &rcfg, mem, 1));
#endif
    CHECK_OK(lrt_nvm_fault_init(&fault, &fcfg, &rcfg, mem));
    CHECK(lrt_nvm_work_size(&fcfg) <= sizeof work_a);
    CHECK_OK(lrt_nvm_mount(&nvm, &fcfg, work_a, sizeof work_a, &info));
    CHECK(info.flags & LRT_NVM_F_EMPTY);
    memset(prev, 0, n);
    rng = seed;

    for (c = 0; c < commits; c++) {
        uint32_t plan, plan_seed, r, k, K;
        int tear;

        memcpy(next, prev, n);
        if (c == 0u) {
            for (r = 0; r < n; r++)
                next[r] = (uint8_t)rnd(&rng);
        } else {
            nvm_mutate(next, n, &rng);
        }
        if (c >= nvm.lay.n_slots && rnd(&rng) % 3u == 0u) {
            /* back to what the target slot holds: a range, or everything (+ maybe a byte) */
            const uint8_t *old = hist[(c - nvm.lay.n_slots) % HIST];
            uint32_t len = 1u + rnd(&rng) % n, at = rnd(&rng) % (n - len + 1u);
            if (rnd(&rng) % 2u == 0u) {
                memcpy(next, old, n);
                if (rnd(&rng) % 2u == 0u)
                    next[rnd(&rng) % n] ^= 0x5Au;
            } else {
                memcpy(next + at, old + at, len);
            }
            reverts++;
        }
        plan = rnd(&rng) % plans;
        plan_seed = rnd(&rng);
        memcpy(snap, mem, region);
        saved = nvm;
        ram.word_progs = NULL;
        ram.page_erases = NULL;

        /* count the ops of this commit */
        lrt_nvm_fault_arm(&fault, UINT64_MAX, LRT_NVM_TEAR_NONE, 1);
        r = plan_seed;
        CHECK_OK(nvm_commit_blob(&nvm, next, prev, n, (int)plan, &r));
        K = (uint32_t)fault.ops;
        max_ops = K > max_ops ? K : max_ops;
        ops += K;

        for (k = 0; k <= K; k++) {
            for (tear = LRT_NVM_TEAR_NONE; tear <= LRT_NVM_TEAR_BITS; tear++) {
                const uint8_t *cur;
                int is_old, is_new, rc;

                if (k == K && tear != LRT_NVM_TEAR_NONE)
                    break;
                memcpy(mem, snap, region);
                nvm = saved;
                lrt_nvm_fault_arm(&fault, k, tear, seed ^ (c * 7919u + k * 31u + (uint32_t)tear));
                r = plan_seed;
                rc = nvm_commit_blob(&nvm, next, prev, n, (int)plan, &r);
                CHECK((k < K) == (rc != LRT_OK));
                lrt_nvm_fault_arm(&fault, UINT64_MAX, LRT_NVM_TEAR_NONE, 1);
                trials++;
                rc = lrt_nvm_mount(&nvm2, &fcfg, work_b, sizeof work_b, &info);
                if (c == 0u && k < K && info.slot < 0) {
                    /* nothing was committed before: "the previous set" is none */
                    CHECK(rc == LRT_OK || rc == LRT_ERR_CORRUPT);
                    n_old++;
                    cur = prev;
                    goto follow;
                }
                if (rc != LRT_OK || info.slot < 0 || (info.flags & LRT_NVM_F_DEGRADED)) {
                    fprintf(stderr, "LOST commit %u cut %u tear %d rc %d\n", c, k, tear, rc);
                    lost++;
                    continue;
                }
                fallback += (info.flags & LRT_NVM_F_FALLBACK) != 0u;
                cur = nvm_current(&nvm2);
                is_old = memcmp(cur, prev, n) == 0;
                is_new = memcmp(cur, next, n) == 0;
                if (!is_old && !is_new) {
                    fprintf(stderr, "TORN commit %u cut %u/%u tear %d\n", c, k, K, tear);
                    torn++;
                    continue;
                }
                if (k + 1u < K)
                    CHECK(is_old);
                if (k == K)
                    CHECK(is_new);
                n_old += is_old && !is_new;
                n_new += is_new && !is_old;
                CHECK(ram.violations == 0u);
            follow:
                if (followup) {
                    r = plan_seed ^ 0x5A5Au;
                    CHECK_OK(nvm_commit_blob(&nvm2, next, cur, n, 0, &r));
                    CHECK_OK(lrt_nvm_mount(&nvm2, &fcfg, work_b, sizeof work_b, &info));
                    CHECK(info.slot >= 0 && memcmp(nvm_current(&nvm2), next, n) == 0);
                    CHECK(info.flags == 0u);
                    CHECK(ram.violations == 0u);
                }
            }
        }

        /* the real chain */
        memcpy(mem, snap, region);
        nvm = saved;
        ram.word_progs = word_progs;
        ram.page_erases = page_erases;
        r = plan_seed;
        CHECK_OK(nvm_commit_blob(&nvm, next, prev, n, (int)plan, &r));
        CHECK(memcmp(nvm_current(&nvm), next, n) == 0);
        CHECK(lrt_nvm_generation(&nvm) == c + 1u);
        check_table(&nvm, &ram);
        early += lrt_nvm_last_commit(&nvm)->early_dirty;
        memcpy(prev, next, n);
        memcpy(hist[c % HIST], next, n);
    }
    CHECK_OK(lrt_nvm_mount(&nvm2, &fcfg, work_b, sizeof work_b, &info));
    CHECK(info.generation == commits && info.flags == 0u);
    CHECK(memcmp(nvm_current(&nvm2), prev, n) == 0);
    printf("RESULT commits=%u trials=%lu cut_points=%lu old=%lu new=%lu torn=%lu lost=%lu "
           "max_ops=%lu fallback_flagged=%lu slots=%u early=%lu reverts=%lu\n",
           commits, trials, ops + commits, n_old, n_new, torn, lost, max_ops, fallback,
           nvm.lay.n_slots, early, reverts);
#ifdef NVM_SIM_STM32F4
    printf("SIM protocol_errors=%lu erases=%lu programs=%lu polls=%lu unlocks=%lu\n",
           g_stm32f4_sim.protocol_errors, g_stm32f4_sim.erases, g_stm32f4_sim.programs,
           g_stm32f4_sim.polls, g_stm32f4_sim.unlocks);
    CHECK(g_stm32f4_sim.protocol_errors == 0u && (g_stm32f4_sim.cr & (1u << 31))); /* locked */
#elif defined(NVM_SIM_NRF52)
    printf("SIM protocol_errors=%lu erases=%lu programs=%lu polls=%lu\n",
           g_nrf52_sim.protocol_errors, g_nrf52_sim.erases, g_nrf52_sim.programs,
           g_nrf52_sim.polls);
    CHECK(g_nrf52_sim.protocol_errors == 0u && g_nrf52_sim.config == 0u); /* read-only */
#endif
    return (torn == 0u && lost == 0u) ? 0 : 1;
}
