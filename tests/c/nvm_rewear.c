/* nvm_rewear.c - programs the wear table must not miss, and slots a commit must not take.
 *
 * usage: nvm_rewear <scenario> <geometry key=value...>   prints "OK ..." lines, exit 0 iff
 * every check held. Scenarios:
 *   alternate  writes alternating between the blob's first and last unit, each changing the
 *              unit: every pass reprograms (RRAM) or re-erases (flash) both. 20 passes are
 *              counted exactly; the 256th program of one unit in one commit is refused
 *              (LRT_ERR_WORN) instead of counted as 255, and so is a program past
 *              `endurance`, after which later commits avoid the slot, also after a reboot.
 *   dropped    7 commits aborted after programming, then one that lands: the table gets all 8.
 *   backward   flash with a sub-page window: a write that goes backwards is refused after the
 *              slot's first page was erased; 5 such dropped commits, then one that lands.
 *   degraded   every set drifted and all but the oldest wear table hit: the counts come from
 *              it, and the commit that follows neither reads it erased nor writes garbage.
 *   foreign    another model's sets in slots 0 and 1: a commit takes slot 2, numbers its
 *              generation from 1, and the next finds no slot (LRT_ERR_NOSPACE) instead of
 *              overwriting them; the other model still mounts both.
 */
#include "nvm_util.h"

static uint8_t mem[NVM_MAX_REGION];
static uint32_t work[16384];
static uint8_t blob[65536];
static uint32_t rng = 7;

/* wear unit (lrt_nvm_wear_get numbering) holding blob byte `off` */
static uint32_t unit_of(const lrt_nvm *nvm, uint32_t off)
{
    if (nvm->cfg->tech == LRT_NVM_TECH_FLASH)
        return (nvm->lay.meta_size + off) / nvm->lay.unit_size;
    return 1u + off / nvm->lay.unit_size;
}

static uint32_t wear(const lrt_nvm *nvm, int32_t slot, uint32_t unit)
{
    uint32_t v = 0;
    CHECK(slot >= 0);
    CHECK_OK(lrt_nvm_wear_get(nvm, (uint32_t)slot, unit, &v));
    return v;
}

static void mount(lrt_nvm *nvm, lrt_nvm_config *cfg, int fresh, lrt_nvm_ram *ram)
{
    CHECK_OK(lrt_nvm_ram_init(ram, cfg, mem, fresh));
    CHECK_OK(lrt_nvm_mount(nvm, cfg, work, sizeof work, NULL));
}

/* One pass: change the first and the last blob byte; the window moves each time. */
static int pass(lrt_nvm *nvm, uint32_t n, uint32_t i)
{
    uint8_t a = (uint8_t)(0x10u + i % 200u), b = (uint8_t)(0x80u + i % 100u);
    int err = lrt_nvm_commit_write(nvm, 0, &a, 1);
    return err != LRT_OK ? err : lrt_nvm_commit_write(nvm, n - 1u, &b, 1);
}

static void alternate(lrt_nvm_config *cfg)
{
    lrt_nvm nvm;
    lrt_nvm_ram ram;
    uint32_t n = cfg->blob_size, ua, ub, i, before;
    int32_t t;
    int err = LRT_OK;

    mount(&nvm, cfg, 1, &ram);
    memset(blob, 0x55, n);
    CHECK_OK(nvm_commit_blob(&nvm, blob, blob, n, 0, &rng));
    ua = unit_of(&nvm, 0);
    ub = unit_of(&nvm, n - 1u);
    CHECK(ua != ub);

    /* 20 passes in one commit: 20 programs of each unit, no more, no fewer */
    CHECK_OK(lrt_nvm_commit_begin(&nvm));
    t = nvm.target;
    before = wear(&nvm, t, ua);
    for (i = 0; i < 20u; i++)
        CHECK_OK(pass(&nvm, n, i));
    CHECK_OK(lrt_nvm_commit_end(&nvm));
    /* the first pass's program of the first unit is the commit's own; 19 more reprogram it */
    printf("OK alternate 20 passes: unit %u +%u, unit %u +%u\n", (unsigned)ua,
           (unsigned)(wear(&nvm, t, ua) - before), (unsigned)ub, (unsigned)wear(&nvm, t, ub));

    /* 300 passes: the program after the 255th of one unit is refused, the commit dropped */
    CHECK_OK(lrt_nvm_commit_begin(&nvm));
    t = nvm.target;
    before = wear(&nvm, t, ua);
    for (i = 0; i < 300u && err == LRT_OK; i++)
        err = pass(&nvm, n, i);
    CHECK(err == LRT_ERR_WORN);
    CHECK(lrt_nvm_commit_write(&nvm, 0, blob, 1) == LRT_ERR_STATE); /* dropped */
    printf("OK alternate refused at pass %u: unit %u +%u\n", (unsigned)i, (unsigned)ua,
           (unsigned)(wear(&nvm, t, ua) - before));
    CHECK(ram.violations == 0u);
}

static void endurance(lrt_nvm_config *cfg)
{
    lrt_nvm nvm;
    lrt_nvm_ram ram;
    uint32_t n = cfg->blob_size, ua, i;
    int32_t t;
    int err = LRT_OK;

    cfg->endurance = 12;
    mount(&nvm, cfg, 1, &ram);
    ua = unit_of(&nvm, 0);
    CHECK_OK(lrt_nvm_commit_begin(&nvm));
    t = nvm.target;
    for (i = 0; i < 100u && err == LRT_OK; i++)
        err = pass(&nvm, n, i);
    CHECK(err == LRT_ERR_WORN);
    CHECK(wear(&nvm, t, ua) == cfg->endurance);
    /* the next commit knows the slot is worn although no table says so yet */
    memset(blob, 0x33, n);
    CHECK_OK(nvm_commit_blob(&nvm, blob, blob, n, 0, &rng));
    CHECK(lrt_nvm_current_slot(&nvm) != t);
    printf("OK endurance %u: refused at pass %u, slot %d worn, next commit in slot %d\n",
           (unsigned)cfg->endurance, (unsigned)i, (int)t, (int)lrt_nvm_current_slot(&nvm));
    /* and stays out of rotation, its count kept: in RAM, then in the tables, after a reboot */
    for (i = 0; i < 6u; i++) {
        blob[i] ^= 0x0Fu;
        err = nvm_commit_blob(&nvm, blob, blob, n, 0, &rng);
        CHECK(err == LRT_OK || err == LRT_ERR_WORN); /* WORN: no slot but the worn one left */
        CHECK(lrt_nvm_current_slot(&nvm) != t && wear(&nvm, t, ua) == cfg->endurance);
        if (i == 2u)
            CHECK_OK(lrt_nvm_mount(&nvm, cfg, work, sizeof work, NULL));
    }
    printf("OK endurance: slot %d kept out after 6 more commits and a reboot\n", (int)t);
    cfg->endurance = 0;
}

static void dropped(lrt_nvm_config *cfg)
{
    lrt_nvm nvm;
    lrt_nvm_ram ram;
    uint32_t n = cfg->blob_size, ua, i, before, meta_before;
    int32_t t;

    mount(&nvm, cfg, 1, &ram);
    memset(blob, 0x55, n);
    CHECK_OK(nvm_commit_blob(&nvm, blob, blob, n, 0, &rng));
    CHECK_OK(nvm_commit_blob(&nvm, blob, blob, n, 0, &rng));
    ua = unit_of(&nvm, 0);
    t = (lrt_nvm_current_slot(&nvm) + 1) % (int32_t)nvm.lay.n_slots; /* round robin */
    before = wear(&nvm, t, ua);
    meta_before = wear(&nvm, t, 0);
    for (i = 0; i < 7u; i++) {
        CHECK_OK(lrt_nvm_commit_begin(&nvm));
        CHECK(nvm.target == t);
        CHECK_OK(pass(&nvm, n, i)); /* moving past the first unit's window programs it */
        CHECK_OK(lrt_nvm_commit_abort(&nvm));
        CHECK(wear(&nvm, t, ua) == before + i + 1u); /* known while no table holds it */
    }
    CHECK_OK(lrt_nvm_commit_begin(&nvm));
    CHECK(nvm.target == t);
    CHECK_OK(pass(&nvm, n, 7));
    CHECK_OK(lrt_nvm_commit_end(&nvm));
    CHECK(lrt_nvm_current_slot(&nvm) == t);
    printf("OK dropped 7 + 1 commit: unit %u +%u, metadata +%u, units_written=%u\n", (unsigned)ua,
           (unsigned)(wear(&nvm, t, ua) - before), (unsigned)(wear(&nvm, t, 0) - meta_before),
           (unsigned)lrt_nvm_last_commit(&nvm)->blob_units);
    /* the table holds them: a fresh mount reads the same */
    CHECK_OK(lrt_nvm_mount(&nvm, cfg, work, sizeof work, NULL));
    CHECK(wear(&nvm, t, ua) - before == 8u);
    CHECK(ram.violations == 0u);
}

static void backward(lrt_nvm_config *cfg)
{
    lrt_nvm nvm;
    lrt_nvm_ram ram;
    uint32_t n = cfg->blob_size, i, before;
    uint8_t v;
    int32_t t;

    mount(&nvm, cfg, 1, &ram);
    memset(blob, 0x55, n);
    CHECK_OK(nvm_commit_blob(&nvm, blob, blob, n, 0, &rng));
    CHECK_OK(nvm_commit_blob(&nvm, blob, blob, n, 0, &rng));
    t = (lrt_nvm_current_slot(&nvm) + 1) % (int32_t)nvm.lay.n_slots;
    before = wear(&nvm, t, 0);
    for (i = 0; i < 5u; i++) {
        CHECK_OK(lrt_nvm_commit_begin(&nvm));
        CHECK(nvm.target == t);
        v = (uint8_t)i;
        CHECK_OK(lrt_nvm_commit_write(&nvm, n - 1u, &v, 1)); /* erases the first page */
        CHECK(lrt_nvm_commit_write(&nvm, 0, &v, 1) == LRT_ERR_UNSUPPORTED);
        CHECK(wear(&nvm, t, 0) == before + i + 1u);
    }
    CHECK_OK(nvm_commit_blob(&nvm, blob, blob, n, 0, &rng));
    CHECK(lrt_nvm_current_slot(&nvm) == t);
    printf("OK backward 5 dropped + 1 commit: first page +%u erases\n",
           (unsigned)(wear(&nvm, t, 0) - before));
    CHECK(ram.violations == 0u);
}

static void foreign(lrt_nvm_config *cfg)
{
    lrt_nvm nvm;
    lrt_nvm_ram ram;
    lrt_nvm_mount_info info;
    lrt_nvm_config other = *cfg;
    uint32_t n = cfg->blob_size;
    int rc;

    other.model_id = cfg->model_id + 1u;
    mount(&nvm, &other, 1, &ram);
    CHECK(nvm.lay.n_slots == 3u);
    memset(blob, 0x11, n);
    CHECK_OK(nvm_commit_blob(&nvm, blob, blob, n, 0, &rng));
    CHECK_OK(nvm_commit_blob(&nvm, blob, blob, n, 0, &rng)); /* slots 0, 1: gen 1, 2 */

    CHECK_OK(lrt_nvm_ram_init(&ram, cfg, mem, 0));
    rc = lrt_nvm_mount(&nvm, cfg, work, sizeof work, &info); /* nothing of ours */
    CHECK(rc == LRT_ERR_CORRUPT && (info.flags & LRT_NVM_F_FOREIGN));
    CHECK(!lrt_nvm_may_initialise(rc, &info));
    memset(blob, 0x22, n);
    CHECK_OK(nvm_commit_blob(&nvm, blob, blob, n, 0, &rng));
    CHECK(lrt_nvm_current_slot(&nvm) == 2);
    CHECK(lrt_nvm_generation(&nvm) == 1u);
    CHECK(lrt_nvm_commit_begin(&nvm) == LRT_ERR_NOSPACE);

    CHECK_OK(lrt_nvm_ram_init(&ram, &other, mem, 0));
    CHECK_OK(lrt_nvm_mount(&nvm, &other, work, sizeof work, &info));
    CHECK(info.slot == 1 && info.generation == 2u && info.n_valid == 2u);
    printf("OK foreign: own set in slot 2 gen 1, no slot for the next, the other model's 2 "
           "sets intact\n");
}

/* Every set drifted (a degraded mount) and the newest slots' wear tables hit too: the counts
 * come from the newest table that verifies; a commit must neither read an erased table
 * (flash erases its target's table first) nor write garbage counts. */
static void degraded(lrt_nvm_config *cfg)
{
    lrt_nvm nvm;
    lrt_nvm_ram ram;
    lrt_nvm_mount_info info;
    lrt_nvm_wear w;
    uint32_t n = cfg->blob_size, s, src, k, kept = 0, u1;

    mount(&nvm, cfg, 1, &ram);
    memset(blob, 0x55, n);
    for (k = 0; k < 2u * nvm.lay.n_slots; k++) {
        blob[k] ^= 0x11u;
        CHECK_OK(nvm_commit_blob(&nvm, blob, blob, n, 0, &rng));
    }
    /* the table that will verify: the slot after the current one (the oldest) */
    src = ((uint32_t)lrt_nvm_current_slot(&nvm) + 1u) % nvm.lay.n_slots;
    u1 = LRT_MIN(1u, nvm.lay.blob_units); /* a blob unit (flash: a page; may be the first) */
    kept = wear(&nvm, (int32_t)src, u1);
    for (s = 0; s < nvm.lay.n_slots; s++) {
        mem[s * nvm.lay.slot_size + nvm.lay.meta_size + 3u] ^= 1u; /* blob drifted */
        if (s != src)
            mem[s * nvm.lay.slot_size + LRT_NVM_HEADER_SIZE + 1u] ^= 1u; /* table hit */
    }
    CHECK_OK(lrt_nvm_mount(&nvm, cfg, work, sizeof work, &info));
    CHECK((info.flags & LRT_NVM_F_DEGRADED) && (info.flags & LRT_NVM_F_WEAR_STALE));
    CHECK(info.wear_slot == (int32_t)src && wear(&nvm, (int32_t)src, u1) == kept);
    blob[0] ^= 0x22u;
    CHECK_OK(nvm_commit_blob(&nvm, blob, blob, n, 0, &rng));
    CHECK_OK(lrt_nvm_mount(&nvm, cfg, work, sizeof work, &info));
    CHECK(info.flags == 0u);
    CHECK_OK(lrt_nvm_wear_summary(&nvm, &w));
    CHECK(w.max_blob <= 2u * nvm.lay.n_slots + 1u && w.max_meta <= 2u * nvm.lay.n_slots + 1u);
    if (nvm.lay.n_slots > 2u) {
        /* the commit took another slot: the older table's counts went on */
        CHECK(lrt_nvm_current_slot(&nvm) != (int32_t)src);
        CHECK(wear(&nvm, (int32_t)src, u1) == kept);
    }
    printf("OK degraded: counts from slot %u, new set in slot %d, max blob %u meta %u\n",
           (unsigned)src, (int)lrt_nvm_current_slot(&nvm), (unsigned)w.max_blob,
           (unsigned)w.max_meta);
}

int main(int argc, char **argv)
{
    lrt_nvm_config cfg;
    const char *what = argc > 1 ? argv[1] : "";

    CHECK(nvm_geom_args(argc - 2, argv + 2, &cfg) >= 0);
    if (strcmp(what, "alternate") == 0) {
        alternate(&cfg);
        endurance(&cfg);
    } else if (strcmp(what, "dropped") == 0) {
        dropped(&cfg);
    } else if (strcmp(what, "backward") == 0) {
        backward(&cfg);
    } else if (strcmp(what, "degraded") == 0) {
        degraded(&cfg);
    } else if (strcmp(what, "foreign") == 0) {
        foreign(&cfg);
    } else {
        fprintf(stderr, "unknown scenario %s\n", what);
        return 2;
    }
    return 0;
}
