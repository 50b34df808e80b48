/* nvm_filekill.c - file-backed NVM across kill -9.
 *
 * usage: nvm_filekill run FILE seed=S [max=N] <geometry...>
 *            mount, check the stored set, then commit generation after generation forever
 *            (or N commits), printing "G <generation>" after each commit returns.
 *        nvm_filekill verify FILE seed=S out=BLOB <geometry...>
 *            mount and check that the set is exactly the one its generation should hold;
 *            prints "MOUNT gen=.. slot=.. flags=.. ok=1" and writes the blob to BLOB.
 * The blob of generation g is a pure function of (seed, g): byte i changes every
 * 1 + i % 16 generations, so commits change varying amounts.
 */
#include "nvm_util.h"

static uint32_t work[16384];
static uint8_t blob[65536];

static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

static void expected(uint32_t seed, uint32_t gen, uint8_t *out, uint32_t n)
{
    uint32_t i;

    for (i = 0; i < n; i++)
        out[i] = (uint8_t)mix(seed ^ mix(i * 2654435761u) ^ mix(gen / (1u + i % 16u) + 1u));
}

int main(int argc, char **argv)
{
    lrt_nvm_config cfg;
    lrt_nvm_file file;
    lrt_nvm nvm;
    lrt_nvm_mount_info info;
    const char *out = NULL;
    char *rest[32];
    int i, nrest = 0, rc, ok;
    uint32_t seed = 1, max = 0, n, g;

    CHECK(argc >= 3);
    for (i = 3; i < argc && nrest < 32; i++) {
        if (strncmp(argv[i], "seed=", 5) == 0)
            seed = (uint32_t)strtoul(argv[i] + 5, NULL, 0);
        else if (strncmp(argv[i], "max=", 4) == 0)
            max = (uint32_t)strtoul(argv[i] + 4, NULL, 0);
        else if (strncmp(argv[i], "out=", 4) == 0)
            out = argv[i] + 4;
        else
            rest[nrest++] = argv[i];
    }
    CHECK(nvm_geom_args(nrest, rest, &cfg) >= 0);
    n = cfg.blob_size;
    CHECK_OK(lrt_nvm_file_open(&file, &cfg, argv[2], 0));
    rc = lrt_nvm_mount(&nvm, &cfg, work, sizeof work, &info);
    CHECK(rc == LRT_OK || rc == LRT_ERR_CORRUPT);
    g = info.generation;
    ok = 1;
    if (info.slot >= 0) {
        expected(seed, g, blob, n);
        ok = memcmp(nvm_current(&nvm), blob, n) == 0 && !(info.flags & LRT_NVM_F_DEGRADED);
    }
    if (strcmp(argv[1], "verify") == 0) {
        printf("MOUNT gen=%u slot=%d flags=%u ok=%d\n", g, (int)info.slot, info.flags, ok);
        if (out != NULL && info.slot >= 0) {
            FILE *fp = fopen(out, "wb");
            CHECK(fp != NULL && fwrite(nvm_current(&nvm), 1, n, fp) == n);
            fclose(fp);
        }
        CHECK_OK(lrt_nvm_file_close(&file));
        return ok ? 0 : 1;
    }
    CHECK(strcmp(argv[1], "run") == 0);
    CHECK(ok);
    printf("START gen=%u\n", g);
    fflush(stdout);
    for (;;) {
        uint32_t i2 = 0;
        expected(seed, g + 1u, blob, n);
        CHECK_OK(lrt_nvm_commit_begin(&nvm));
        /* only the bytes that change, as the trainer would write them */
        {
            static uint8_t old[65536];
            expected(seed, g, old, n);
            while (i2 < n) {
                uint32_t j;
                if (g > 0u && old[i2] == blob[i2]) {
                    i2++;
                    continue;
                }
                for (j = i2; j < n && (g == 0u || old[j] != blob[j]); j++)
                    ;
                CHECK_OK(lrt_nvm_commit_write(&nvm, i2, blob + i2, j - i2));
                i2 = j;
            }
        }
        CHECK_OK(lrt_nvm_commit_end(&nvm));
        g++;
        CHECK(nvm.gen == g);
        printf("G %u\n", g);
        fflush(stdout);
        if (max != 0u && --max == 0u)
            break;
    }
    CHECK_OK(lrt_nvm_file_close(&file));
    return 0;
}
