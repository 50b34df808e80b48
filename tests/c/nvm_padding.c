/* A blob whose size is not a multiple of the program size: the bytes between its end and the
 * next program boundary are programmed with it (RRAM, stale contents there), and their wear
 * must land in the blob's last unit, not past the end of the caller's work buffer. The work
 * buffer is malloc'ed at exactly lrt_nvm_work_size() so that AddressSanitizer guards its end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrt_nvm.h"
#include "lrt_nvm_mem.h"

static uint8_t region[4096];

int main(void)
{
    lrt_nvm_config c;
    lrt_nvm nvm;
    lrt_nvm_mount_info mi;
    lrt_nvm_wear w;
    const uint8_t blob[5] = {1, 2, 3, 4, 5};
    uint8_t *work;
    size_t size;
    int r;

    memset(&c, 0, sizeof c);
    c.tech = LRT_NVM_TECH_RRAM;
    c.prog_size = 1; /* one-byte units: blob 5 B in an area aligned to 8, 3 padding bytes */
    c.page_size = 64;
    c.page_count = 64;
    c.blob_size = sizeof blob;
    c.n_slots = 2;
    c.erase_value = 0;
    memset(region, 0x5A, sizeof region); /* what an earlier layout left there */
    r = lrt_nvm_mem_init(&c, region);
    if (r < 0)
        return printf("mem_init %d\n", r), 1;
    size = lrt_nvm_work_size(&c);
    work = malloc(size);
    if (work == NULL)
        return 1;
    r = lrt_nvm_mount(&nvm, &c, work, size, &mi);
    printf("mount %d\n", r);
    if (lrt_nvm_commit_begin(&nvm) < 0 || lrt_nvm_commit_write(&nvm, 0, blob, sizeof blob) < 0 ||
        lrt_nvm_commit_end(&nvm) < 0)
        return printf("commit failed\n"), 1;
    r = lrt_nvm_wear_summary(&nvm, &w);
    printf("OK commit wear=%d blob_max=%u\n", r, (unsigned)w.max_blob);
    free(work);
    return 0;
}
