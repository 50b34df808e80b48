/* nvm_mount_batch.c - the firmware's mount verdict on many NVM images, one process.
 *
 * stdin: records of little-endian u32 tech, prog, page, pages, blob, unit, slots, erase,
 * model_id, image length, then the image bytes. For each record one line on stdout:
 *     rc flags slot generation may_initialise wear_slot max_blob max_meta s0,s1,...
 * (slot states LRT_NVM_SLOT_*; the wear maxima of lrt_nvm_wear_summary)
 * or "bad-geometry rc" when lrt_nvm_mount rejects the configuration. The output is flushed
 * after every line so a test can drive it one image at a time.
 */
#include "nvm_util.h"

static uint8_t mem[NVM_MAX_REGION];
static uint32_t work[16384];

static int read_u32(uint32_t *v)
{
    uint8_t b[4];
    if (fread(b, 1, 4, stdin) != 4)
        return 0;
    *v = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
    return 1;
}

int main(void)
{
    for (;;) {
        uint32_t f[10], s;
        lrt_nvm_config cfg;
        lrt_nvm_ram ram;
        lrt_nvm nvm;
        lrt_nvm_mount_info info;
        int i, rc;

        for (i = 0; i < 10; i++)
            if (!read_u32(&f[i]))
                return 0;
        CHECK(f[9] <= NVM_MAX_REGION);
        CHECK(fread(mem, 1, f[9], stdin) == f[9]);
        memset(&cfg, 0, sizeof cfg);
        cfg.tech = (uint8_t)f[0];
        cfg.prog_size = f[1];
        cfg.page_size = f[2];
        cfg.page_count = f[3];
        cfg.blob_size = f[4];
        cfg.wear_unit = f[5];
        cfg.n_slots = (uint16_t)f[6];
        cfg.erase_value = (uint8_t)f[7];
        cfg.model_id = f[8];
        CHECK(nvm_region_size(&cfg) == f[9]);
        CHECK_OK(lrt_nvm_ram_init(&ram, &cfg, mem, 0));
        rc = lrt_nvm_mount(&nvm, &cfg, work, sizeof work, &info);
        if (rc != LRT_OK && rc != LRT_ERR_CORRUPT) {
            printf("bad-geometry %d\n", rc);
        } else {
            lrt_nvm_wear w;
            CHECK_OK(lrt_nvm_wear_summary(&nvm, &w));
            printf("%d %u %d %u %d %d %u %u ", rc, (unsigned)info.flags, (int)info.slot,
                   (unsigned)info.generation, lrt_nvm_may_initialise(rc, &info),
                   (int)info.wear_slot, (unsigned)w.max_blob, (unsigned)w.max_meta);
            for (s = 0; s < nvm.lay.n_slots; s++)
                printf("%s%u", s ? "," : "", (unsigned)info.slot_state[s]);
            printf("\n");
        }
        fflush(stdout);
    }
}
