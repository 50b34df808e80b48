/* lrt_app.c - request validation, dispatch and replies. */
#include "lrt_app.h"

#include <string.h>

int lrt_app_init(lrt_app *app, const lrt_app_config *cfg, const lrt_app_io *io,
                 const lrt_app_handlers *h)
{
    uint32_t half;
    size_t frame;

    if (app == NULL || cfg == NULL || io == NULL || h == NULL || io->read == NULL ||
        io->write == NULL)
        return LRT_ERR_ARG;
    if (cfg->input_size == 0 || cfg->n_classes == 0 || cfg->n_classes > 255 || cfg->frames == NULL)
        return LRT_ERR_ARG;
    half = cfg->frames_size / 2u;
    if (half > LRT_PROTO_FRAME_SIZE(LRT_PROTO_MAX_PAYLOAD))
        half = (uint32_t)LRT_PROTO_FRAME_SIZE(LRT_PROTO_MAX_PAYLOAD);
    frame = (size_t)half;
    if (frame < LRT_PROTO_FRAME_SIZE(LRT_PROTO_INFO_SIZE))
        return LRT_ERR_SIZE;
    /* TRAIN carries input + label; INFER/TRAIN replies carry logits + prediction. */
    if (cfg->input_size >= frame - LRT_PROTO_OVERHEAD ||
        (size_t)cfg->n_classes >= frame - LRT_PROTO_OVERHEAD)
        return LRT_ERR_SIZE;
    memset(app, 0, sizeof(*app));
    app->cfg = *cfg;
    app->cfg.frames_size = (uint32_t)(2u * frame); /* what is used of them */
    app->io = io;
    app->h = h;
    return lrt_proto_rx_init(&app->rx, app->cfg.frames, frame);
}

/* Each frame buffer's size, the reply frame, and the largest payload. */
static size_t app_frame_size(const lrt_app *app)
{
    return app->cfg.frames_size / 2u;
}

static uint8_t *app_tx(const lrt_app *app)
{
    return app->cfg.frames + app_frame_size(app);
}

static size_t app_max_payload(const lrt_app *app)
{
    return app_frame_size(app) - LRT_PROTO_OVERHEAD;
}

static int app_write_all(lrt_app *app, const uint8_t *p, size_t n)
{
    while (n > 0) {
        int w = app->io->write(app->io->ctx, p, n);
        if (w <= 0 || (size_t)w > n)
            return LRT_ERR_IO;
        p += w;
        n -= (size_t)w;
    }
    return LRT_OK;
}

/* The reply payload is built in place at tx_buf + HEADER, so no copy is needed here. */
static int app_send(lrt_app *app, uint8_t type, size_t len)
{
    int n = lrt_proto_encode(type, app_tx(app) + LRT_PROTO_HEADER_SIZE, len, app_tx(app),
                             app_frame_size(app));
    if (n < 0)
        return LRT_ERR_IO; /* unreachable: every reply length is checked against the buffer */
    return app_write_all(app, app_tx(app), (size_t)n);
}

static int app_send_error(lrt_app *app, int err, uint8_t type)
{
    uint8_t *p = app_tx(app) + LRT_PROTO_HEADER_SIZE;

    if (err >= 0 || err < -128)
        err = LRT_ERR_STATE; /* a handler broke its contract; still a well-formed reply */
    p[0] = (uint8_t)(int8_t)err;
    p[1] = type;
    app->n_errors++;
    return app_send(app, LRT_MSG_ERROR, LRT_PROTO_ERROR_SIZE);
}

/* Runs one request; returns the reply payload length (>= 0) or a negative lrt_err to send as
 * ERROR. The reply payload goes to `out` (app_max_payload bytes). */
static int app_dispatch(lrt_app *app, uint8_t type, const uint8_t *in, size_t len, uint8_t *out)
{
    const lrt_app_handlers *h = app->h;
    const size_t cap = app_max_payload(app);
    const size_t n_in = app->cfg.input_size;
    const uint16_t n_cls = app->cfg.n_classes;
    size_t out_len = 0;
    int err;

    switch (type) {
    case LRT_MSG_HELLO: {
        lrt_app_info info;
        if (len != 0)
            return LRT_ERR_SIZE;
        if (h->hello == NULL)
            return LRT_ERR_UNSUPPORTED;
        memset(&info, 0, sizeof(info));
        err = h->hello(h->ctx, &info);
        if (err < 0)
            return err;
        out[0] = (uint8_t)LRT_PROTO_VERSION;
        out[1] = info.scheme;
        out[2] = info.n_layers;
        out[3] = info.n_classes;
        lrt_put_le16(out + 4, info.in_h);
        lrt_put_le16(out + 6, info.in_w);
        lrt_put_le16(out + 8, info.in_c);
        memcpy(out + 10, info.fingerprint, 4);
        lrt_put_le32(out + 14, info.samples);
        lrt_put_le16(out + 18, (uint16_t)cap);
        out[20] = info.flags;
        out[21] = info.store;
        lrt_put_le32(out + 22, info.generation);
        return (int)LRT_PROTO_INFO_SIZE;
    }
    case LRT_MSG_INFER:
    case LRT_MSG_TRAIN: {
        uint8_t pred = 0;
        int train = type == LRT_MSG_TRAIN;
        if (len != n_in + (size_t)train)
            return LRT_ERR_SIZE;
        if (train && in[n_in] >= n_cls)
            return LRT_ERR_ARG;
        if (train && h->train != NULL)
            err = h->train(h->ctx, (const int8_t *)in, in[n_in], (int8_t *)out, &pred);
        else if (!train && h->infer != NULL)
            err = h->infer(h->ctx, (const int8_t *)in, (int8_t *)out, &pred);
        else
            return LRT_ERR_UNSUPPORTED;
        if (err < 0)
            return err;
        if (pred >= n_cls)
            return LRT_ERR_STATE;
        out[n_cls] = pred;
        return (int)n_cls + 1;
    }
    case LRT_MSG_STATS:
    case LRT_MSG_WEAR:
        if (len != 0)
            return LRT_ERR_SIZE;
        if ((type == LRT_MSG_STATS ? h->stats : h->wear) == NULL)
            return LRT_ERR_UNSUPPORTED;
        err = (type == LRT_MSG_STATS ? h->stats : h->wear)(h->ctx, out, cap, &out_len);
        if (err < 0)
            return err;
        return out_len <= cap ? (int)out_len : LRT_ERR_STATE;
    case LRT_MSG_READ: {
        uint16_t length;
        if (len != LRT_PROTO_READ_REQ_SIZE)
            return LRT_ERR_SIZE;
        length = lrt_get_le16(in + 4);
        if (length > cap)
            return LRT_ERR_SIZE;
        if (h->read_blob == NULL)
            return LRT_ERR_UNSUPPORTED;
        err = h->read_blob(h->ctx, lrt_get_le32(in), length, out, &out_len);
        if (err < 0)
            return err;
        return out_len <= length ? (int)out_len : LRT_ERR_STATE;
    }
    case LRT_MSG_DRIFT:
        if (len != LRT_PROTO_DRIFT_REQ_SIZE)
            return LRT_ERR_SIZE;
        if (in[0] != LRT_PROTO_DRIFT_ANALOG && in[0] != LRT_PROTO_DRIFT_DIGITAL)
            return LRT_ERR_ARG;
        if (h->drift == NULL)
            return LRT_ERR_UNSUPPORTED;
        err = h->drift(h->ctx, in[0], lrt_get_le32(in + 1), (int32_t)lrt_get_le32(in + 5));
        return err < 0 ? err : 0;
    case LRT_MSG_WRITE:
        if (len <= LRT_PROTO_WRITE_HEAD_SIZE)
            return LRT_ERR_SIZE;
        if (h->write_blob == NULL)
            return LRT_ERR_UNSUPPORTED;
        err = h->write_blob(h->ctx, lrt_get_le32(in), in + LRT_PROTO_WRITE_HEAD_SIZE,
                            len - LRT_PROTO_WRITE_HEAD_SIZE);
        return err < 0 ? err : 0;
    case LRT_MSG_COMMIT: {
        uint32_t generation = 0;
        if (len != 0)
            return LRT_ERR_SIZE;
        if (h->commit_blob == NULL)
            return LRT_ERR_UNSUPPORTED;
        err = h->commit_blob(h->ctx, &generation);
        if (err < 0)
            return err;
        lrt_put_le32(out, generation);
        return (int)LRT_PROTO_COMMIT_REPLY_SIZE;
    }
    case LRT_MSG_BYE:
        if (len != 0)
            return LRT_ERR_SIZE;
        if (h->bye != NULL) {
            err = h->bye(h->ctx);
            if (err < 0)
                return err;
        }
        return 0;
    default: return LRT_ERR_TYPE;
    }
}

static int app_handle(lrt_app *app, const lrt_proto_event *ev)
{
    int n, err;

    if (ev->kind == LRT_PROTO_EV_ERROR) {
        app->n_resyncs++;
        return app_send_error(app, ev->err, ev->type);
    }
    app->n_requests++;
    n = app_dispatch(app, ev->type, ev->payload, ev->len, app_tx(app) + LRT_PROTO_HEADER_SIZE);
    if (n < 0)
        err = app_send_error(app, n, ev->type);
    else
        err = app_send(app, (uint8_t)(ev->type | LRT_MSG_REPLY), (size_t)n);
    if (err < 0)
        return err;
    /* BYE stops the server even if its handler failed: the host is leaving either way. */
    return ev->type == LRT_MSG_BYE && ev->len == 0 ? LRT_APP_BYE : LRT_OK;
}

int lrt_app_feed(lrt_app *app, const uint8_t *data, size_t len)
{
    size_t off = 0;

    for (;;) {
        lrt_proto_event ev;
        int err;
        /* data is NULL when draining at end of input; NULL + 0 is UB in C. */
        off += lrt_proto_rx_feed(&app->rx, data != NULL ? data + off : NULL, len - off, &ev);
        if (ev.kind == LRT_PROTO_EV_NONE)
            return LRT_OK;
        err = app_handle(app, &ev);
        if (err != LRT_OK)
            return err;
    }
}

int lrt_app_finish(lrt_app *app)
{
    int err;

    lrt_proto_rx_end(&app->rx);
    err = lrt_app_feed(app, NULL, 0);
    return err == LRT_OK ? LRT_ERR_EOF : err;
}

int lrt_app_serve(lrt_app *app)
{
    for (;;) {
        int n = app->io->read(app->io->ctx, app->in_buf, sizeof(app->in_buf));
        int err;
        if (n < 0 || (size_t)n > sizeof(app->in_buf))
            return LRT_ERR_IO;
        if (n == 0)
            return lrt_app_finish(app);
        err = lrt_app_feed(app, app->in_buf, (size_t)n);
        if (err != LRT_OK)
            return err;
    }
}
