/* nvm_writeskip.c - commit given blobs and report exactly what the backend programmed.
 *
 * usage: nvm_writeskip blobs=FILE image=OUT plan=0|1|2 <geometry key=value...>
 * FILE holds k blobs of blob_size bytes back to back; each becomes one commit. After each
 * commit the driver prints the RAM backend's own counter deltas (not the layer's opinion):
 *   C gen=G slot=S units=U prog_ops=.. prog_bytes=.. erases=.. early=..
 *   W addr:count ...   (words programmed, region byte addresses)
 *   E addr:count ...   (pages erased)
 * and, at the start, the layout: L n_slots=.. slot_size=.. meta_size=.. table_len=..
 * blob_units=.. unit_size=.. region=..  The final region is saved to OUT.
 */
#include "nvm_util.h"

static uint8_t mem[NVM_MAX_REGION];
static uint32_t words[NVM_MAX_REGION], words0[NVM_MAX_REGION];
static uint32_t pages[NVM_MAX_REGION], pages0[NVM_MAX_REGION];
static uint32_t work[16384];
static uint8_t blob[65536], prev[65536];

int main(int argc, char **argv)
{
    lrt_nvm_config cfg;
    lrt_nvm_ram ram;
    lrt_nvm nvm;
    lrt_nvm_mount_info info;
    const char *blobs = NULL, *image = NULL;
    char *rest[32];
    int i, nrest = 0, plan = 0;
    uint32_t n, region, nw, np, a, rng = 77;
    FILE *fp;

    for (i = 1; i < argc && nrest < 32; i++) {
        if (strncmp(argv[i], "blobs=", 6) == 0)
            blobs = argv[i] + 6;
        else if (strncmp(argv[i], "image=", 6) == 0)
            image = argv[i] + 6;
        else if (strncmp(argv[i], "plan=", 5) == 0)
            plan = atoi(argv[i] + 5);
        else
            rest[nrest++] = argv[i];
    }
    CHECK(blobs != NULL && image != NULL);
    CHECK(nvm_geom_args(nrest, rest, &cfg) >= 0);
    n = cfg.blob_size;
    region = nvm_region_size(&cfg);
    nw = region / cfg.prog_size;
    np = region / cfg.page_size;
    CHECK_OK(lrt_nvm_ram_init(&ram, &cfg, mem, 1));
    ram.word_progs = words;
    ram.page_erases = pages;
    CHECK_OK(lrt_nvm_mount(&nvm, &cfg, work, sizeof work, &info));
    printf("L n_slots=%u slot_size=%u meta_size=%u table_len=%u blob_units=%u unit_size=%u "
           "region=%u\n",
           nvm.lay.n_slots, nvm.lay.slot_size, nvm.lay.meta_size, nvm.lay.table_len,
           nvm.lay.blob_units, nvm.lay.unit_size, region);
    fp = fopen(blobs, "rb");
    CHECK(fp != NULL);
    memset(prev, 0, n);
    while (fread(blob, 1, n, fp) == n) {
        const lrt_nvm_commit_stats *st;
        memcpy(words0, words, nw * sizeof words[0]);
        memcpy(pages0, pages, np * sizeof pages[0]);
        CHECK_OK(nvm_commit_blob(&nvm, blob, prev, n, plan, &rng));
        CHECK(memcmp(nvm_current(&nvm), blob, n) == 0);
        CHECK(ram.violations == 0u);
        st = lrt_nvm_last_commit(&nvm);
        printf("C gen=%u slot=%d units=%u prog_ops=%u prog_bytes=%u erases=%u early=%u\nW",
               nvm.gen, (int)nvm.cur, st->blob_units, st->prog_ops, st->prog_bytes, st->erases,
               st->early_dirty);
        for (a = 0; a < nw; a++)
            if (words[a] != words0[a])
                printf(" %u:%u", a * cfg.prog_size, words[a] - words0[a]);
        printf("\nE");
        for (a = 0; a < np; a++)
            if (pages[a] != pages0[a])
                printf(" %u:%u", a * cfg.page_size, pages[a] - pages0[a]);
        printf("\n");
        memcpy(prev, blob, n);
    }
    fclose(fp);
    CHECK_OK(lrt_nvm_image_save(image, mem, region));
    return 0;
}
