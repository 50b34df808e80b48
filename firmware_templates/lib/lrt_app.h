/* lrt_app.h - the device's request server: frames in, handler calls, frames out.
 *
 * Model-independent: it validates every request (payload size per type, label range, READ
 * length, DRIFT kind) before a handler sees it, so handlers only do the work. Anything wrong
 * is answered with an ERROR frame and the server keeps serving (docs/PROTOCOL.md).
 *
 * Typical main():
 *     static uint8_t frames[LRT_APP_BUFFER_SIZE(LRT_APP_PAYLOAD_FOR(INPUT_SIZE))];
 *     static lrt_app app;
 *     cfg.frames = frames; cfg.frames_size = sizeof(frames);
 *     lrt_app_init(&app, &cfg, &io, &handlers);
 *     return lrt_app_serve(&app) == LRT_ERR_IO ? 1 : 0;
 */
#ifndef LRT_APP_H
#define LRT_APP_H

#include "lrt_proto.h"

/* The caller provides the frame buffers (receive and reply): the largest payload the device
 * accepts and sends follows from their size, is reported to the host in INFO.max_payload, and
 * caps READ. LRT_APP_PAYLOAD_FOR is the payload a model of `input_size` int8 inputs needs: a
 * TRAIN request carries the sample and its label; at least LRT_APP_MIN_PAYLOAD, which keeps
 * READ and WRITE chunks (a weight commit's pieces) long. */
#define LRT_APP_MIN_PAYLOAD 2048u
#define LRT_APP_PAYLOAD_FOR(input_size)                                                            \
    ((input_size) + 1u > LRT_APP_MIN_PAYLOAD ? (input_size) + 1u : LRT_APP_MIN_PAYLOAD)
/* Bytes of frame buffers lrt_app_init takes for frames of `max_payload`. */
#define LRT_APP_BUFFER_SIZE(max_payload) (2u * LRT_PROTO_FRAME_SIZE(max_payload))
/* Bytes asked from io->read at a time. */
#ifndef LRT_APP_READ_CHUNK
#define LRT_APP_READ_CHUNK 256
#endif

/* lrt_app_feed/lrt_app_serve result when the host said BYE (a normal end, like LRT_ERR_EOF). */
#define LRT_APP_BYE 1

typedef struct {
    /* Block until at least one byte is available, then return how many were stored (<= len;
     * never wait to fill the whole buffer: the host waits for replies). 0 = end of input,
     * negative = transport error. */
    int (*read)(void *ctx, uint8_t *buf, size_t len);
    /* Deliver bytes before returning (flush any buffering): the host is waiting for them.
     * Returns the number of bytes taken (> 0; the server retries the rest) or negative. */
    int (*write)(void *ctx, const uint8_t *buf, size_t len);
    void *ctx;
} lrt_app_io;

/* INFO reply fields supplied by the hello handler (version and max_payload are filled in by
 * the server). */
typedef struct {
    uint8_t scheme;   /* LRT_PROTO_SCHEME_* (same values as lrt_train.h's lrt_scheme) */
    uint8_t flags;    /* LRT_PROTO_FLAG_* */
    uint8_t n_layers; /* weight layers (conv2d/dense) = entries in STATS */
    uint8_t n_classes;
    uint16_t in_h, in_w, in_c;
    uint8_t fingerprint[4]; /* first 4 bytes of the model fingerprint (its first 8 hex digits) */
    uint32_t samples;       /* training samples seen since the weights were built */
    uint8_t store;          /* LRT_PROTO_STORE_*: the weight store's state at boot */
    uint32_t generation;    /* NVM generation of the set in use (0: none / no store) */
} lrt_app_info;

/* Request handlers. Return LRT_OK or a negative lrt_err, which the server sends as an ERROR
 * reply. A NULL handler makes its request answer LRT_ERR_UNSUPPORTED. Inputs and outputs are
 * validated/sized by the server; output buffers are inside the server's reply frame. */
typedef struct {
    int (*hello)(void *ctx, lrt_app_info *info);
    /* input: cfg.input_size int8; logits: cfg.n_classes int8; *pred < n_classes. */
    int (*infer)(void *ctx, const int8_t *input, int8_t *logits, uint8_t *pred);
    /* As infer (logits and pred before the update), then learn `label` (< n_classes). */
    int (*train)(void *ctx, const int8_t *input, uint8_t label, int8_t *logits, uint8_t *pred);
    /* Write the STATS payload (u32 LE words: samples, flushes, then max/total/paper writes
     * per weight layer; lrt_put_le32 helps) into out[cap]; set *len. */
    int (*stats)(void *ctx, uint8_t *out, size_t cap, size_t *len);
    /* Copy min(length, blob_size - offset) bytes of the weight blob at offset into out;
     * set *len. offset > blob_size is LRT_ERR_ARG. length <= max payload. */
    int (*read_blob)(void *ctx, uint32_t offset, uint16_t length, uint8_t *out, size_t *len);
    /* kind is LRT_PROTO_DRIFT_ANALOG or LRT_PROTO_DRIFT_DIGITAL. */
    int (*drift)(void *ctx, uint8_t kind, uint32_t seed, int32_t param);
    /* Push: stage len bytes at blob offset `offset` of a new weight set (the first WRITE
     * opens it; bytes not written keep their current value). */
    int (*write_blob)(void *ctx, uint32_t offset, const uint8_t *data, size_t len);
    /* Commit the staged set atomically; *generation = its NVM generation (0 without NVM). */
    int (*commit_blob)(void *ctx, uint32_t *generation);
    /* Write the WEAR payload (u32 LE words: NVM technology (0 none, 1 flash, 2 RRAM), max
     * programs of any blob unit, of the metadata, then per weight layer the max programs
     * per cell of its weights) into out[cap]; set *len. */
    int (*wear)(void *ctx, uint8_t *out, size_t cap, size_t *len);
    /* Optional last chance to persist state before the BYE reply; an error is reported in
     * place of the empty reply, and the server still stops. */
    int (*bye)(void *ctx);
    void *ctx;
} lrt_app_handlers;

typedef struct {
    uint32_t input_size; /* int8 elements of one input sample */
    uint16_t n_classes;  /* 1..255 */
    uint8_t *frames;     /* LRT_APP_BUFFER_SIZE(max payload) bytes, owned by the caller */
    uint32_t frames_size;
} lrt_app_config;

typedef struct {
    lrt_app_config cfg;
    const lrt_app_io *io;
    const lrt_app_handlers *h;
    lrt_proto_rx rx;
    uint32_t n_requests; /* frames with a good CRC (each gets one reply) */
    uint32_t n_resyncs;  /* bad regions skipped (each gets one ERROR reply) */
    uint32_t n_errors;   /* ERROR replies sent, for either reason */
    /* cfg.frames: the receive frame, then the reply frame, of cfg.frames_size / 2 bytes each
     * (at most a frame of LRT_PROTO_MAX_PAYLOAD) */
    uint8_t in_buf[LRT_APP_READ_CHUNK];
} lrt_app;

/* LRT_ERR_ARG for NULL pointers, LRT_ERR_SIZE if a sample or reply does not fit the frames. */
int lrt_app_init(lrt_app *app, const lrt_app_config *cfg, const lrt_app_io *io,
                 const lrt_app_handlers *h);

/* Serve until BYE (returns LRT_APP_BYE), end of input (LRT_ERR_EOF, after serving every
 * complete frame received) or a transport error (LRT_ERR_IO). */
int lrt_app_serve(lrt_app *app);

/* The same, pushed: process received bytes and send the replies (for main loops that own the
 * transport). Returns LRT_OK, LRT_APP_BYE (stop feeding) or LRT_ERR_IO. */
int lrt_app_feed(lrt_app *app, const uint8_t *data, size_t len);

/* End of input: serve frames still held (those swallowed by a frame cut at the end). Returns
 * LRT_ERR_EOF, LRT_APP_BYE or LRT_ERR_IO. */
int lrt_app_finish(lrt_app *app);

#endif /* LRT_APP_H */
