/* lrt_nvm_host.c - host-only NVM backends (see lrt_nvm_host.h). */
#define _POSIX_C_SOURCE 200809L

#include "lrt_nvm_host.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lrt_util.h"

/* ---- RAM ---- */

static int ram_range_ok(const lrt_nvm_ram *r, uint32_t addr, uint32_t len)
{
    return addr <= r->size && len <= r->size - addr;
}

static int ram_read(const lrt_nvm_config *c, uint32_t addr, void *buf, uint32_t len)
{
    lrt_nvm_ram *r = (lrt_nvm_ram *)c->context;

    if (!ram_range_ok(r, addr, len))
        return LRT_ERR_ARG;
    r->n_read_ops++;
    memcpy(buf, r->mem + addr, len);
    return LRT_OK;
}

static int ram_prog(const lrt_nvm_config *c, uint32_t addr, const void *buf, uint32_t len)
{
    lrt_nvm_ram *r = (lrt_nvm_ram *)c->context;
    const uint8_t *src = (const uint8_t *)buf;
    uint32_t i, w;

    if (!ram_range_ok(r, addr, len) || addr % r->prog_size != 0u || len % r->prog_size != 0u)
        return LRT_ERR_ARG;
    r->n_prog_ops++;
    r->n_prog_bytes += len;
    for (w = 0; w < len; w += r->prog_size) {
        uint8_t *dst = r->mem + addr + w;
        if (r->word_progs != NULL)
            r->word_progs[(addr + w) / r->prog_size]++;
        if (r->tech == LRT_NVM_TECH_FLASH) {
            int erased = 1;
            for (i = 0; i < r->prog_size; i++)
                erased &= dst[i] == r->erase_value;
            if (r->strict && !erased)
                r->violations++;
            /* NOR: programming only moves bits away from their erased value (1 -> 0 for
             * the usual erase value 0xFF). */
            for (i = 0; i < r->prog_size; i++) {
                uint8_t e = r->erase_value, o = dst[i], d = src[w + i];
                dst[i] = (uint8_t)((o & d & e) | ((o | d) & (uint8_t)~e));
            }
        } else {
            memcpy(dst, src + w, r->prog_size);
        }
    }
    return LRT_OK;
}

static int ram_erase(const lrt_nvm_config *c, uint32_t addr)
{
    lrt_nvm_ram *r = (lrt_nvm_ram *)c->context;

    if (r->tech != LRT_NVM_TECH_FLASH)
        return LRT_ERR_UNSUPPORTED;
    if (addr % r->page_size != 0u || !ram_range_ok(r, addr, r->page_size))
        return LRT_ERR_ARG;
    r->n_erase_ops++;
    if (r->page_erases != NULL)
        r->page_erases[addr / r->page_size]++;
    memset(r->mem + addr, r->erase_value, r->page_size);
    return LRT_OK;
}

static int ram_sync(const lrt_nvm_config *c)
{
    lrt_nvm_ram *r = (lrt_nvm_ram *)c->context;

    r->n_syncs++;
    return LRT_OK;
}

int lrt_nvm_ram_init(lrt_nvm_ram *ram, lrt_nvm_config *cfg, uint8_t *mem, int fresh)
{
    uint64_t size;

    if (ram == NULL || cfg == NULL || mem == NULL || cfg->prog_size == 0u || cfg->page_size == 0u)
        return LRT_ERR_ARG;
    size = (uint64_t)cfg->page_size * cfg->page_count;
    if (size == 0u || size > 0xFFFFFFFFu)
        return LRT_ERR_ARG;
    memset(ram, 0, sizeof *ram);
    ram->mem = mem;
    ram->size = (uint32_t)size;
    ram->prog_size = cfg->prog_size;
    ram->page_size = cfg->page_size;
    ram->tech = cfg->tech;
    ram->erase_value = cfg->erase_value;
    ram->strict = 1;
    if (fresh)
        memset(mem, cfg->erase_value, ram->size);
    cfg->read = ram_read;
    cfg->prog = ram_prog;
    cfg->erase = cfg->tech == LRT_NVM_TECH_FLASH ? ram_erase : NULL;
    cfg->sync = ram_sync;
    cfg->context = ram;
    cfg->mapped = mem;
    return LRT_OK;
}

/* ---- file (mmap) ---- */

static int file_sync(const lrt_nvm_config *c)
{
    lrt_nvm_file *f = (lrt_nvm_file *)((uint8_t *)c->context - offsetof(lrt_nvm_file, ram));

    f->ram.n_syncs++;
    if (f->msync_on_sync && msync(f->ram.mem, f->ram.size, MS_SYNC) != 0)
        return LRT_ERR_IO;
    return LRT_OK;
}

int lrt_nvm_file_open(lrt_nvm_file *f, lrt_nvm_config *cfg, const char *path, int msync_on_sync)
{
    struct stat st;
    uint64_t size;
    void *map;
    int fresh = 0, err;

    if (f == NULL || cfg == NULL || path == NULL)
        return LRT_ERR_ARG;
    size = (uint64_t)cfg->page_size * cfg->page_count;
    if (size == 0u || size > 0x7FFFFFFFu)
        return LRT_ERR_ARG;
    f->fd = open(path, O_RDWR | O_CREAT, 0644);
    if (f->fd < 0)
        return LRT_ERR_IO;
    if (fstat(f->fd, &st) != 0)
        goto io;
    if (st.st_size == 0) {
        if (ftruncate(f->fd, (off_t)size) != 0)
            goto io;
        fresh = 1;
    } else if ((uint64_t)st.st_size != size) {
        close(f->fd);
        f->fd = -1;
        return LRT_ERR_SIZE;
    }
    map = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
    if (map == MAP_FAILED)
        goto io;
    err = lrt_nvm_ram_init(&f->ram, cfg, (uint8_t *)map, fresh);
    if (err != LRT_OK) {
        munmap(map, (size_t)size);
        close(f->fd);
        f->fd = -1;
        return err;
    }
    f->msync_on_sync = (uint8_t)(msync_on_sync != 0);
    cfg->sync = file_sync;
    return LRT_OK;
io:
    close(f->fd);
    f->fd = -1;
    return LRT_ERR_IO;
}

int lrt_nvm_file_close(lrt_nvm_file *f)
{
    int err = LRT_OK;

    if (f == NULL || f->fd < 0)
        return LRT_ERR_ARG;
    if (msync(f->ram.mem, f->ram.size, MS_SYNC) != 0)
        err = LRT_ERR_IO;
    if (munmap(f->ram.mem, f->ram.size) != 0)
        err = LRT_ERR_IO;
    if (close(f->fd) != 0)
        err = LRT_ERR_IO;
    f->fd = -1;
    f->ram.mem = NULL;
    return err;
}

/* ---- fault injection ---- */

static uint32_t fault_rand(lrt_nvm_fault *f)
{
    return lrt_xorshift32_next(&f->rng);
}

static int fault_read(const lrt_nvm_config *c, uint32_t addr, void *buf, uint32_t len)
{
    lrt_nvm_fault *f = (lrt_nvm_fault *)c->context;

    return f->inner->read(f->inner, addr, buf, len);
}

/* 1 if this op is the one that loses power (the caller tears it), 0 if it runs normally;
 * sets dead. Negative if power is already off. */
static int fault_step(lrt_nvm_fault *f)
{
    if (f->dead)
        return LRT_ERR_IO;
    if (f->ops++ == f->cut_at) {
        f->dead = 1;
        return 1;
    }
    return 0;
}

/* Program one word with only the bits in `mask` taking their new value. */
static int prog_partial(lrt_nvm_fault *f, uint32_t addr, const uint8_t *src, uint32_t n,
                        int all_bits)
{
    uint8_t tmp[LRT_NVM_MAX_PROG];
    const uint8_t *old = f->inner_mem + addr;
    uint32_t i;

    for (i = 0; i < n; i++) {
        uint8_t mask = all_bits ? 0xFFu : (uint8_t)fault_rand(f);
        if (f->inner->tech == LRT_NVM_TECH_FLASH)
            /* erased-value bits are no-ops on NOR */
            tmp[i] = (uint8_t)((src[i] & mask) | (f->inner->erase_value & (uint8_t)~mask));
        else
            tmp[i] = (uint8_t)((src[i] & mask) | (old[i] & (uint8_t)~mask));
    }
    return f->inner->prog(f->inner, addr, tmp, n);
}

/* A cut that leaves the cells of [addr, addr + len) undefined: random or all zero. */
static void tear_fill(lrt_nvm_fault *f, uint32_t addr, uint32_t len)
{
    uint32_t i;

    for (i = 0; i < len; i++)
        f->inner_mem[addr + i] = f->tear == LRT_NVM_TEAR_ZEROS ? 0u : (uint8_t)fault_rand(f);
}

static int fault_prog(const lrt_nvm_config *c, uint32_t addr, const void *buf, uint32_t len)
{
    lrt_nvm_fault *f = (lrt_nvm_fault *)c->context;
    const uint8_t *src = (const uint8_t *)buf;
    uint32_t p = f->inner->prog_size, nw = len / p, w, land;
    int st = fault_step(f);

    if (st < 0)
        return st;
    if (st == 0)
        return f->inner->prog(f->inner, addr, buf, len);
    if (f->tear == LRT_NVM_TEAR_PREFIX && nw > 0u) {
        land = fault_rand(f) % nw; /* whole words; all of them = the op completed */
        for (w = 0; w < land; w++)
            prog_partial(f, addr + w * p, src + w * p, p, 1);
        prog_partial(f, addr + land * p, src + land * p, p, 0);
    } else if (f->tear == LRT_NVM_TEAR_BITS) {
        for (w = 0; w < nw; w++)
            prog_partial(f, addr + w * p, src + w * p, p, 0);
    } else if (f->tear >= LRT_NVM_TEAR_GARBAGE) {
        tear_fill(f, addr, len);
    }
    return LRT_ERR_IO;
}

static int fault_erase(const lrt_nvm_config *c, uint32_t addr)
{
    lrt_nvm_fault *f = (lrt_nvm_fault *)c->context;
    uint32_t P = f->inner->page_size, i, land;
    uint8_t ev = f->inner->erase_value;
    int st = fault_step(f);

    if (st < 0)
        return st;
    if (st == 0)
        return f->inner->erase(f->inner, addr);
    /* A torn erase leaves some cells at the erased value and others as they were. */
    if (f->tear == LRT_NVM_TEAR_PREFIX) {
        land = fault_rand(f) % P;
        memset(f->inner_mem + addr, ev, land);
        for (i = land; i < LRT_MIN(land + 1u, P); i++) {
            uint8_t mask = (uint8_t)fault_rand(f);
            f->inner_mem[addr + i] = (uint8_t)((f->inner_mem[addr + i] & ~mask) | (ev & mask));
        }
    } else if (f->tear == LRT_NVM_TEAR_BITS) {
        for (i = 0; i < P; i++) {
            uint8_t mask = (uint8_t)fault_rand(f);
            f->inner_mem[addr + i] = (uint8_t)((f->inner_mem[addr + i] & ~mask) | (ev & mask));
        }
    } else if (f->tear >= LRT_NVM_TEAR_GARBAGE) {
        tear_fill(f, addr, P);
    }
    return LRT_ERR_IO;
}

static int fault_sync(const lrt_nvm_config *c)
{
    lrt_nvm_fault *f = (lrt_nvm_fault *)c->context;

    if (f->dead)
        return LRT_ERR_IO;
    return f->inner->sync != NULL ? f->inner->sync(f->inner) : LRT_OK;
}

int lrt_nvm_fault_init(lrt_nvm_fault *f, lrt_nvm_config *cfg, const lrt_nvm_config *inner,
                       uint8_t *inner_mem)
{
    if (f == NULL || cfg == NULL || inner == NULL || inner_mem == NULL)
        return LRT_ERR_ARG;
    memset(f, 0, sizeof *f);
    f->inner = inner;
    f->inner_mem = inner_mem;
    lrt_nvm_fault_arm(f, UINT64_MAX, LRT_NVM_TEAR_NONE, 1);
    *cfg = *inner;
    cfg->read = fault_read;
    cfg->prog = fault_prog;
    cfg->erase = inner->erase != NULL ? fault_erase : NULL;
    cfg->sync = fault_sync;
    cfg->context = f;
    return LRT_OK;
}

void lrt_nvm_fault_arm(lrt_nvm_fault *f, uint64_t cut_at, int tear, uint32_t seed)
{
    f->ops = 0;
    f->cut_at = cut_at;
    f->tear = (uint8_t)tear;
    f->rng = seed;
    f->dead = 0;
}

/* ---- image files ---- */

int lrt_nvm_image_save(const char *path, const uint8_t *mem, uint32_t size)
{
    FILE *fp = fopen(path, "wb");
    int ok;

    if (fp == NULL)
        return LRT_ERR_IO;
    ok = fwrite(mem, 1, size, fp) == size;
    ok &= fclose(fp) == 0;
    return ok ? LRT_OK : LRT_ERR_IO;
}

int lrt_nvm_image_load(const char *path, uint8_t *mem, uint32_t size)
{
    FILE *fp = fopen(path, "rb");
    int ok;

    if (fp == NULL)
        return LRT_ERR_IO;
    ok = fread(mem, 1, size, fp) == size;
    ok &= fgetc(fp) == EOF;
    fclose(fp);
    return ok ? LRT_OK : LRT_ERR_SIZE;
}
