/* lrt_nvm_host.h - host-only NVM backends for lrt_nvm: RAM, file (mmap), fault injection.
 *
 * Not for firmware: lrt_nvm_host.c uses POSIX (open/mmap) and stdio. Still no malloc: every
 * buffer (the region, optional counter arrays) is the caller's.
 *
 * All backends obey the technology's rules so that tests catch layers that break them:
 * flash prog only clears bits (the stored byte becomes old & new) and erase sets a page to
 * erase_value; RRAM prog overwrites words and has no erase.
 */
#ifndef LRT_NVM_HOST_H
#define LRT_NVM_HOST_H

#include "lrt_nvm.h"

/* RAM backend. Fill cfg's geometry (tech, prog_size, page_size, page_count, erase_value,
 * blob_size, ...) first; init sets the callbacks, context and mapping. */
typedef struct {
    uint8_t *mem; /* page_size * page_count bytes */
    uint32_t size;
    uint32_t prog_size, page_size;
    uint8_t tech, erase_value;
    uint8_t strict;        /* flash: count progs over words that are not erased (default 1) */
    uint32_t *word_progs;  /* optional [size / prog_size]: progs per word */
    uint32_t *page_erases; /* optional [size / page_size]: erases per page */
    uint64_t n_prog_ops, n_prog_bytes, n_erase_ops, n_read_ops, n_syncs;
    uint32_t violations; /* strict-mode NOR violations (double programs) */
} lrt_nvm_ram;

/* fresh != 0: fill mem with erase_value (a new device). */
int lrt_nvm_ram_init(lrt_nvm_ram *ram, lrt_nvm_config *cfg, uint8_t *mem, int fresh);

/* File backend: the region is a file mapped with MAP_SHARED, so every prog is in the kernel's
 * page cache the moment it returns and survives a kill -9 of the process. sync() calls
 * msync(MS_SYNC) when msync_on_sync is set (durability against OS crashes; slower). A missing
 * or empty file is created as a fresh device. */
typedef struct {
    lrt_nvm_ram ram; /* the same rules and counters over the mapping */
    int fd;
    uint8_t msync_on_sync;
} lrt_nvm_file;

int lrt_nvm_file_open(lrt_nvm_file *f, lrt_nvm_config *cfg, const char *path, int msync_on_sync);
int lrt_nvm_file_close(lrt_nvm_file *f);

/* Fault injection wrapper around another backend (usually RAM).
 * Power cut: the op with index cut_at (0-based, counting prog and erase calls since arm) is
 * torn according to `tear`, then power is off: that call and every later prog/erase/sync
 * fails with LRT_ERR_IO without touching the memory. */
enum {
    LRT_NVM_TEAR_NONE = 0,    /* the op does not happen at all */
    LRT_NVM_TEAR_PREFIX = 1,  /* a random prefix of the words lands, then one word partially */
    LRT_NVM_TEAR_BITS = 2,    /* every word: a random subset of its bit changes lands */
    LRT_NVM_TEAR_GARBAGE = 3, /* every cell the op touches is left at a random value */
    LRT_NVM_TEAR_ZEROS = 4,   /* every cell the op touches is left at 0x00 */
};

typedef struct {
    const lrt_nvm_config *inner;
    uint8_t *inner_mem; /* the inner backend's raw bytes (torn erases write them) */
    uint64_t ops;       /* prog + erase calls since arm */
    uint64_t cut_at;    /* UINT64_MAX: never */
    uint32_t rng;
    uint8_t tear;
    uint8_t dead;
} lrt_nvm_fault;

/* cfg gets inner's geometry and mapping with the wrapper's callbacks. */
int lrt_nvm_fault_init(lrt_nvm_fault *f, lrt_nvm_config *cfg, const lrt_nvm_config *inner,
                       uint8_t *inner_mem);
/* Restart counting; cut at op `cut_at` with the given tear mode (power back on). */
void lrt_nvm_fault_arm(lrt_nvm_fault *f, uint64_t cut_at, int tear, uint32_t seed);

/* Whole-region image files (what toolchain/lrt/nvm.py inspects). */
int lrt_nvm_image_save(const char *path, const uint8_t *mem, uint32_t size);
int lrt_nvm_image_load(const char *path, uint8_t *mem, uint32_t size);

#endif /* LRT_NVM_HOST_H */
