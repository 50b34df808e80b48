/* lrt_wstore.h - the only path by which training changes the weight blob.
 *
 * Weights live in net->blob, which may be memory-mapped NVM: training never writes through
 * that pointer. Every weight change (one sample of SGD, one LRT flush) is one transaction:
 * begin, write(offset, data, len)..., commit. An NVM implementation (lrt_nvm) can stage the
 * writes in a spare slot and make them visible atomically at commit, and may then point
 * net->blob at the new slot; callers must therefore re-read net->blob after a commit and
 * never cache weight pointers across one. Until commit, reads of net->blob may return the
 * old or the new bytes (RAM store: new; A/B NVM slots: old); the trainer is written so that
 * both give the same result (it reads each cell once, before writing it).
 *
 * Offsets are byte offsets into the blob (weights at lrt_layer.w_offset, the little-endian
 * int32 bias snapshot at lrt_layer.b_offset), as laid out by codegen.
 */
#ifndef LRT_WSTORE_H
#define LRT_WSTORE_H

#include "lrt_common.h"

typedef struct {
    /* Open a transaction. LRT_ERR_STATE if one is already open. */
    int (*begin)(void *ctx);
    /* Stage len bytes at blob offset `offset`. Offsets may come in any order; a byte is
     * written at most once per transaction by the trainer. */
    int (*write)(void *ctx, uint32_t offset, const void *data, uint32_t len);
    /* Make every staged write durable and visible; after it returns, net->blob may move. */
    int (*commit)(void *ctx);
    /* Optional (may be NULL): drop the open transaction after an error. */
    int (*abort)(void *ctx);
    void *ctx;
} lrt_wstore;

/* RAM implementation: writes land in the blob at once (no atomicity; emulator builds and
 * boards whose weights are in RAM). It counts what it was asked to do, for tests. */
typedef struct {
    int8_t *blob;
    uint32_t size;
    uint8_t open;
    uint32_t n_commits;     /* transactions committed */
    uint32_t n_writes;      /* write calls */
    uint32_t bytes_written; /* bytes passed to write */
} lrt_wstore_ram;

/* Fill `ws` with the RAM callbacks over `ram`, which is reset to an empty store over
 * blob[size]. Point net->blob at the same blob. */
int lrt_wstore_ram_init(lrt_wstore *ws, lrt_wstore_ram *ram, int8_t *blob, uint32_t size);

/* Checked dispatch (LRT_ERR_ARG for a store without the mandatory callbacks). */
int lrt_wstore_begin(const lrt_wstore *ws);
int lrt_wstore_write(const lrt_wstore *ws, uint32_t offset, const void *data, uint32_t len);
int lrt_wstore_commit(const lrt_wstore *ws);
int lrt_wstore_abort(const lrt_wstore *ws);

#endif /* LRT_WSTORE_H */
