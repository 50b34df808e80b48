/* proto_dummy.h - deterministic stand-in handlers for testing lrt_app without a model.
 *
 * The behaviour is simple enough to re-derive independently (the fuzz harness in C, the
 * Python client tests in Python):
 *   logits[i] = input[i % input_size] ^ i            (as uint8, reinterpreted int8)
 *   pred      = (uint8)input[0] % n_classes
 *   infer/train fail with LRT_ERR_STATE when input[0] == input[1] == 0x7F (a handler error)
 *   train: samples += 1 after computing the reply
 *   STATS: samples, samples / 10, then per layer l < DUMMY_LAYERS:
 *          samples + l, 2 * samples + l, 0
 *   blob: DUMMY_BLOB_SIZE bytes, blob[i] = (i * 7 + 3) & 0xFF; offset > size -> LRT_ERR_ARG
 *   DRIFT: seed 0 -> LRT_ERR_UNSUPPORTED; otherwise drift_count += 1
 *   HELLO: scheme LRT with max-norm, DUMMY_LAYERS layers, in 4x4x3 (input_size 48), fingerprint DE AD BE EF
 */
#ifndef PROTO_DUMMY_H
#define PROTO_DUMMY_H

#include "lrt_app.h"

#ifndef DUMMY_IN_H /* overridable to measure throughput at real input sizes */
#define DUMMY_IN_H 4u
#define DUMMY_IN_W 4u
#define DUMMY_IN_C 3u
#endif
#define DUMMY_INPUT_SIZE (DUMMY_IN_H * DUMMY_IN_W * DUMMY_IN_C)
#define DUMMY_CLASSES 10u
#define DUMMY_LAYERS 2u
#define DUMMY_BLOB_SIZE 5000u
/* the device's frames: the payload its input size needs (overridable: a RAM-tight device
 * with shorter frames), in buffers of lrt_app's size helper */
#ifndef DUMMY_MAX_PAYLOAD
#define DUMMY_MAX_PAYLOAD LRT_APP_PAYLOAD_FOR(DUMMY_INPUT_SIZE)
#endif
static uint8_t dummy_frames[LRT_APP_BUFFER_SIZE(DUMMY_MAX_PAYLOAD)];

typedef struct {
    uint32_t samples;
    uint32_t drift_count;
} dummy_state;

static uint8_t dummy_blob_byte(uint32_t i)
{
    return (uint8_t)((i * 7u + 3u) & 0xFFu);
}

static int dummy_hello(void *ctx, lrt_app_info *info)
{
    const dummy_state *s = (const dummy_state *)ctx;
    info->scheme = LRT_PROTO_SCHEME_LRT;
    info->flags = LRT_PROTO_FLAG_MAX_NORM;
    info->n_layers = DUMMY_LAYERS;
    info->n_classes = DUMMY_CLASSES;
    info->in_h = DUMMY_IN_H;
    info->in_w = DUMMY_IN_W;
    info->in_c = DUMMY_IN_C;
    info->fingerprint[0] = 0xDE;
    info->fingerprint[1] = 0xAD;
    info->fingerprint[2] = 0xBE;
    info->fingerprint[3] = 0xEF;
    info->samples = s->samples;
    info->store = LRT_PROTO_STORE_FALLBACK;
    info->generation = 0x01020304u;
    return LRT_OK;
}

static int dummy_infer(void *ctx, const int8_t *input, int8_t *logits, uint8_t *pred)
{
    uint32_t i;
    (void)ctx;
    if (input[0] == 0x7F && input[1] == 0x7F)
        return LRT_ERR_STATE;
    for (i = 0; i < DUMMY_CLASSES; i++)
        logits[i] = (int8_t)((uint8_t)input[i % DUMMY_INPUT_SIZE] ^ (uint8_t)i);
    *pred = (uint8_t)((uint8_t)input[0] % DUMMY_CLASSES);
    return LRT_OK;
}

static int dummy_train(void *ctx, const int8_t *input, uint8_t label, int8_t *logits,
                       uint8_t *pred)
{
    dummy_state *s = (dummy_state *)ctx;
    int err = dummy_infer(ctx, input, logits, pred);
    (void)label;
    if (err == LRT_OK)
        s->samples++;
    return err;
}

static int dummy_stats(void *ctx, uint8_t *out, size_t cap, size_t *len)
{
    const dummy_state *s = (const dummy_state *)ctx;
    uint32_t l;
    if (cap < LRT_PROTO_STATS_HEAD_SIZE + DUMMY_LAYERS * LRT_PROTO_STATS_LAYER_SIZE)
        return LRT_ERR_SIZE;
    lrt_put_le32(out, s->samples);
    lrt_put_le32(out + 4, s->samples / 10u);
    for (l = 0; l < DUMMY_LAYERS; l++) {
        uint8_t *p = out + LRT_PROTO_STATS_HEAD_SIZE + l * LRT_PROTO_STATS_LAYER_SIZE;
        lrt_put_le32(p, s->samples + l);
        lrt_put_le32(p + 4, 2u * s->samples + l);
        lrt_put_le32(p + 8, 0);
    }
    *len = LRT_PROTO_STATS_HEAD_SIZE + DUMMY_LAYERS * LRT_PROTO_STATS_LAYER_SIZE;
    return LRT_OK;
}

static int dummy_read_blob(void *ctx, uint32_t offset, uint16_t length, uint8_t *out,
                           size_t *len)
{
    uint32_t i, n;
    (void)ctx;
    if (offset > DUMMY_BLOB_SIZE)
        return LRT_ERR_ARG;
    n = DUMMY_BLOB_SIZE - offset;
    if (n > length)
        n = length;
    for (i = 0; i < n; i++)
        out[i] = dummy_blob_byte(offset + i);
    *len = n;
    return LRT_OK;
}

static int dummy_drift(void *ctx, uint8_t kind, uint32_t seed, int32_t param)
{
    dummy_state *s = (dummy_state *)ctx;
    (void)kind;
    (void)param;
    if (seed == 0)
        return LRT_ERR_UNSUPPORTED;
    s->drift_count++;
    return LRT_OK;
}

static void dummy_setup(dummy_state *s, lrt_app_handlers *h, lrt_app_config *cfg)
{
    s->samples = 0;
    s->drift_count = 0;
    h->hello = dummy_hello;
    h->infer = dummy_infer;
    h->train = dummy_train;
    h->stats = dummy_stats;
    h->read_blob = dummy_read_blob;
    h->drift = dummy_drift;
    h->write_blob = NULL; /* push is not part of the dummy device */
    h->commit_blob = NULL;
    h->wear = NULL; /* nor is an NVM store */
    h->bye = NULL;
    h->ctx = s;
    cfg->input_size = DUMMY_INPUT_SIZE;
    cfg->n_classes = DUMMY_CLASSES;
    cfg->frames = dummy_frames;
    cfg->frames_size = (uint32_t)sizeof(dummy_frames);
}

#endif /* PROTO_DUMMY_H */
