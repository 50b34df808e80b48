/* lrt_wstore.c - dispatch helpers and the RAM weight store. */
#include "lrt_wstore.h"

#include <string.h>

static int ram_begin(void *ctx)
{
    lrt_wstore_ram *r = (lrt_wstore_ram *)ctx;
    if (r->open) {
        return LRT_ERR_STATE;
    }
    r->open = 1;
    return LRT_OK;
}

static int ram_write(void *ctx, uint32_t offset, const void *data, uint32_t len)
{
    lrt_wstore_ram *r = (lrt_wstore_ram *)ctx;
    if (!r->open) {
        return LRT_ERR_STATE;
    }
    if (offset > r->size || len > r->size - offset) {
        return LRT_ERR_SIZE;
    }
    if (len > 0) {
        memcpy(r->blob + offset, data, len);
    }
    r->n_writes++;
    r->bytes_written += len;
    return LRT_OK;
}

static int ram_commit(void *ctx)
{
    lrt_wstore_ram *r = (lrt_wstore_ram *)ctx;
    if (!r->open) {
        return LRT_ERR_STATE;
    }
    r->open = 0;
    r->n_commits++;
    return LRT_OK;
}

static int ram_abort(void *ctx)
{
    /* Writes already landed in RAM: nothing to roll back, only the state is reset. */
    lrt_wstore_ram *r = (lrt_wstore_ram *)ctx;
    r->open = 0;
    return LRT_OK;
}

int lrt_wstore_ram_init(lrt_wstore *ws, lrt_wstore_ram *ram, int8_t *blob, uint32_t size)
{
    if (ws == NULL || ram == NULL || (blob == NULL && size > 0)) {
        return LRT_ERR_ARG;
    }
    memset(ram, 0, sizeof(*ram));
    ram->blob = blob;
    ram->size = size;
    ws->begin = ram_begin;
    ws->write = ram_write;
    ws->commit = ram_commit;
    ws->abort = ram_abort;
    ws->ctx = ram;
    return LRT_OK;
}

int lrt_wstore_begin(const lrt_wstore *ws)
{
    if (ws == NULL || ws->begin == NULL) {
        return LRT_ERR_ARG;
    }
    return ws->begin(ws->ctx);
}

int lrt_wstore_write(const lrt_wstore *ws, uint32_t offset, const void *data, uint32_t len)
{
    if (ws == NULL || ws->write == NULL || (data == NULL && len > 0)) {
        return LRT_ERR_ARG;
    }
    return ws->write(ws->ctx, offset, data, len);
}

int lrt_wstore_commit(const lrt_wstore *ws)
{
    if (ws == NULL || ws->commit == NULL) {
        return LRT_ERR_ARG;
    }
    return ws->commit(ws->ctx);
}

int lrt_wstore_abort(const lrt_wstore *ws)
{
    if (ws == NULL) {
        return LRT_ERR_ARG;
    }
    return ws->abort != NULL ? ws->abort(ws->ctx) : LRT_OK;
}
