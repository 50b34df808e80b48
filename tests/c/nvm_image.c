/* nvm_image.c - mount an NVM image file the way the firmware does at boot.
 *
 * usage: nvm_image image=FILE [commit=1] [format=1] <geometry key=value...>
 * prints: WORK bytes=<lrt_nvm_work_size>, then MOUNT rc=.. flags=.. slot=.. gen=.. states=s0,..
 * With commit=1 it then does what the firmware does at boot: when lrt_nvm_may_initialise
 * allows (or after lrt_nvm_format with format=1) it commits the blob i -> (uint8_t)(7 * i + 1)
 * as the built-in set, remounts (printing MOUNT again) and saves FILE; when the store holds
 * another model's sets it prints REFUSED and leaves FILE untouched.
 */
#include "nvm_util.h"

static uint8_t mem[NVM_MAX_REGION];
static uint32_t work[16384];
static uint8_t blob[65536];

static int mount_print(lrt_nvm *nvm, const lrt_nvm_config *cfg)
{
    lrt_nvm_mount_info info;
    uint32_t s;
    int rc = lrt_nvm_mount(nvm, cfg, work, sizeof work, &info);

    printf("MOUNT rc=%d flags=%u slot=%d gen=%u states=", rc, (unsigned)info.flags,
           (int)info.slot, (unsigned)info.generation);
    for (s = 0; s < nvm->lay.n_slots; s++)
        printf("%s%u", s ? "," : "", (unsigned)info.slot_state[s]);
    printf("\n");
    return rc;
}

int main(int argc, char **argv)
{
    lrt_nvm_config cfg;
    lrt_nvm_ram ram;
    lrt_nvm nvm;
    const char *image = NULL;
    char *rest[32];
    lrt_nvm_mount_info info;
    int i, nrest = 0, commit = 0, format = 0, rc;
    uint32_t n;

    for (i = 1; i < argc && nrest < 32; i++) {
        if (strncmp(argv[i], "image=", 6) == 0)
            image = argv[i] + 6;
        else if (strncmp(argv[i], "commit=", 7) == 0)
            commit = atoi(argv[i] + 7);
        else if (strncmp(argv[i], "format=", 7) == 0)
            format = atoi(argv[i] + 7);
        else
            rest[nrest++] = argv[i];
    }
    CHECK(image != NULL && nvm_geom_args(nrest, rest, &cfg) >= 0);
    n = cfg.blob_size;
    CHECK_OK(lrt_nvm_ram_init(&ram, &cfg, mem, 0));
    printf("WORK bytes=%u\n", (unsigned)lrt_nvm_work_size(&cfg));
    CHECK_OK(lrt_nvm_image_load(image, mem, nvm_region_size(&cfg)));
    rc = mount_print(&nvm, &cfg);
    if (!commit)
        return 0;
    CHECK(rc == LRT_OK || rc == LRT_ERR_CORRUPT);
    if (format) {
        CHECK_OK(lrt_nvm_format(&nvm));
        rc = mount_print(&nvm, &cfg);
    }
    CHECK(lrt_nvm_mount(&nvm, &cfg, work, sizeof work, &info) == rc);
    if (!lrt_nvm_may_initialise(rc, &info)) {
        printf("REFUSED\n");
        return 0;
    }
    for (i = 0; i < (int)n; i++)
        blob[i] = (uint8_t)(7 * i + 1);
    CHECK_OK(lrt_nvm_commit_begin(&nvm));
    CHECK_OK(lrt_nvm_commit_write(&nvm, 0, blob, n));
    CHECK_OK(lrt_nvm_commit_end(&nvm));
    CHECK_OK(mount_print(&nvm, &cfg));
    CHECK(memcmp(nvm_current(&nvm), blob, n) == 0);
    CHECK_OK(lrt_nvm_image_save(image, mem, nvm_region_size(&cfg)));
    return 0;
}
