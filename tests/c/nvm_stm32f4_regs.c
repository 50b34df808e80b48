/* nvm_stm32f4_regs.c - lrt_nvm_stm32f4.c against the simulated FLASH controller: the sector
 * map, init's checks, the unlock/lock discipline around every operation, cache flushes after
 * an erase, write protection (WRPERR) reported as LRT_ERR_IO with the controller locked and
 * SR clean afterwards, and a mount + commit on top. Prints "OK ..." lines.
 *
 * build: the driver with -include stm32f4_sim.h, this file, stm32f4_sim.c, lrt_nvm*.c
 */
#include "lrt_nvm_stm32f4.h"
#include "nvm_util.h"
#include "stm32f4_sim.h"

#define REGION_BASE 0x08020000u
#define SECTOR 0x20000u
#define CR_LOCK (1u << 31)
#define SR_ERRORS 0xF2u

static uint8_t mem[3 * SECTOR];
static uint32_t work[1024];
static uint8_t blob[21616];

static lrt_nvm_config geometry(uint32_t page, uint32_t pages)
{
    lrt_nvm_config c;
    memset(&c, 0, sizeof c);
    c.tech = LRT_NVM_TECH_FLASH;
    c.prog_size = 4;
    c.page_size = page;
    c.page_count = pages;
    c.blob_size = sizeof blob;
    c.erase_value = 0xFF;
    c.chunk_size = 1024;
    return c;
}

static void idle_locked(void)
{
    CHECK(g_stm32f4_sim.cr & CR_LOCK);
    CHECK((g_stm32f4_sim.sr & SR_ERRORS) == 0u);
    CHECK((g_stm32f4_sim.cr & 0x3u) == 0u); /* neither PG nor SER left set */
}

int main(void)
{
    static const uint32_t addr[] = {0x08000000u, 0x08003FFFu, 0x0800C000u, 0x08010000u,
                                    0x0801FFFFu, 0x08020000u, 0x08060000u, 0x0807FFFFu,
                                    0x080E0000u};
    static const int sector[] = {0, 0, 3, 4, 4, 5, 7, 7, 11};
    lrt_nvm_config cfg;
    lrt_nvm_ram sink;
    lrt_nvm nvm;
    lrt_nvm_mount_info info;
    uint32_t i, start, size;
    uint8_t w[8] = {0x12, 0x34, 0x56, 0x78, 0xF0, 0x0F, 0xFF, 0x00};

    for (i = 0; i < LRT_ARRAY_LEN(addr); i++)
        CHECK(lrt_nvm_stm32f4_sector(addr[i], NULL, NULL) == sector[i]);
    CHECK(lrt_nvm_stm32f4_sector(0x07FFFFFFu, NULL, NULL) < 0);
    CHECK(lrt_nvm_stm32f4_sector(0x08100000u, NULL, NULL) < 0);
    CHECK(lrt_nvm_stm32f4_sector(0x08061234u, &start, &size) == 7 && start == 0x08060000u &&
          size == SECTOR);
    printf("OK sector map\n");

    memset(mem, 0xFF, sizeof mem);
    memset(&sink, 0, sizeof sink);
    sink.strict = 1;
    stm32f4_sim_init(mem, REGION_BASE, sizeof mem, &sink);
    cfg = geometry(SECTOR, 3);
    CHECK(lrt_nvm_stm32f4_init(&cfg, REGION_BASE + 4u) == LRT_ERR_ARG);   /* not a sector */
    CHECK(lrt_nvm_stm32f4_init(&cfg, 0x08010000u) == LRT_ERR_ARG);        /* 64 KiB sector */
    cfg = geometry(0x4000u, 3);
    CHECK(lrt_nvm_stm32f4_init(&cfg, REGION_BASE) == LRT_ERR_ARG);        /* size mismatch */
    cfg = geometry(SECTOR, 3);
    cfg.prog_size = 8;
    CHECK(lrt_nvm_stm32f4_init(&cfg, REGION_BASE) == LRT_ERR_ARG);
    cfg = geometry(SECTOR, 3);
    CHECK_OK(lrt_nvm_stm32f4_init(&cfg, REGION_BASE));
    CHECK(cfg.mapped == mem);
    printf("OK init checks\n");

    /* program: NOR AND, locked after; erase: whole sector, caches flushed and re-enabled */
    CHECK_OK(cfg.prog(&cfg, SECTOR + 8u, w, 8));
    idle_locked();
    CHECK(memcmp(mem + SECTOR + 8u, w, 8) == 0 && mem[SECTOR + 16u] == 0xFFu);
    CHECK(cfg.prog(&cfg, SECTOR + 2u, w, 4) == LRT_ERR_ARG);
    g_stm32f4_sim.acr = (1u << 9) | (1u << 10) | 5u; /* ICEN | DCEN | 5 wait states */
    CHECK_OK(cfg.erase(&cfg, SECTOR));
    idle_locked();
    CHECK(g_stm32f4_sim.cache_flushes == 2u && g_stm32f4_sim.acr == ((1u << 9) | (1u << 10) | 5u));
    for (i = 0; i < SECTOR; i++)
        CHECK(mem[SECTOR + i] == 0xFFu);
    CHECK(cfg.erase(&cfg, SECTOR + 0x1000u) == LRT_ERR_ARG);
    CHECK(g_stm32f4_sim.unlocks == 2u);
    printf("OK program, erase, lock after each, caches flushed\n");

    /* write protection on sector 6: both operations fail with LRT_ERR_IO and leave the
     * controller locked with SR clean; the other sectors keep working */
    g_stm32f4_sim.wrp_sectors = 1u << 6;
    CHECK(cfg.erase(&cfg, SECTOR) == LRT_ERR_IO);
    idle_locked();
    CHECK(cfg.prog(&cfg, SECTOR, w, 8) == LRT_ERR_IO);
    idle_locked();
    CHECK(mem[SECTOR] == 0xFFu);
    CHECK_OK(cfg.prog(&cfg, 2u * SECTOR, w, 8));
    idle_locked();
    printf("OK WRPERR -> LRT_ERR_IO\n");

    /* the NVM layer on top: a commit with sector 6 protected fails cleanly, then works */
    for (i = 0; i < sizeof blob; i++)
        blob[i] = (uint8_t)(i * 13u + 5u);
    memset(mem, 0xFF, sizeof mem);
    g_stm32f4_sim.wrp_sectors = 1u << 5; /* slot 0, the first target */
    CHECK(lrt_nvm_work_size(&cfg) <= sizeof work);
    CHECK_OK(lrt_nvm_mount(&nvm, &cfg, work, sizeof work, &info));
    CHECK(info.flags & LRT_NVM_F_EMPTY);
    CHECK_OK(lrt_nvm_commit_begin(&nvm));
    CHECK_OK(lrt_nvm_commit_write(&nvm, 0, blob, 100)); /* still in the RAM window */
    CHECK(lrt_nvm_commit_write(&nvm, 100, blob + 100, sizeof blob - 100u) == LRT_ERR_IO);
    CHECK(lrt_nvm_commit_end(&nvm) == LRT_ERR_STATE); /* the failed commit was dropped */
    idle_locked();
    g_stm32f4_sim.wrp_sectors = 0;
    CHECK_OK(lrt_nvm_commit_begin(&nvm));
    CHECK_OK(lrt_nvm_commit_write(&nvm, 0, blob, sizeof blob));
    CHECK_OK(lrt_nvm_commit_end(&nvm));
    CHECK_OK(lrt_nvm_mount(&nvm, &cfg, work, sizeof work, &info));
    CHECK(info.slot == 0 && info.flags == 0u && memcmp(lrt_nvm_blob(&nvm), blob, sizeof blob) == 0);
    CHECK(g_stm32f4_sim.protocol_errors == 0u);
    idle_locked();
    printf("OK commit over the driver (work buffer %u bytes)\n", (unsigned)lrt_nvm_work_size(&cfg));
    return 0;
}
