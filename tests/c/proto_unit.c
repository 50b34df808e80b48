/* proto_unit.c - targeted cases for lrt_proto (receiver, encoder) and lrt_app (init, I/O
 * errors, missing handlers). Prints "checks=N failures=M"; exit status 0 iff M == 0. */
#include <stdio.h>
#include <string.h>

#include "lrt_crc32.h"
#include "proto_dummy.h"

static int checks, failures;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        checks++;                                                                          \
        if (!(cond)) {                                                                     \
            if (failures++ < 20)                                                           \
                fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);      \
        }                                                                                  \
    } while (0)

/* ---- receiver event log ------------------------------------------------------------- */

typedef struct {
    uint8_t kind, type;
    int8_t err;
    uint16_t len;
    uint32_t crc; /* of the payload, so logs compare cheaply */
} event_rec;

typedef struct {
    event_rec ev[1024];
    int n;
} event_log;

static void log_event(event_log *log, const lrt_proto_event *ev)
{
    event_rec *r = &log->ev[log->n < 1023 ? log->n : 1023];
    memset(r, 0, sizeof(*r)); /* padding too: logs are compared with memcmp */
    r->kind = ev->kind;
    r->type = ev->type;
    r->err = ev->err;
    r->len = ev->len;
    r->crc = ev->kind == LRT_PROTO_EV_FRAME ? lrt_crc32_update(0, ev->payload, ev->len) : 0;
    log->n++;
}

/* Feed data in pieces of `chunk` bytes (0 = all at once), then optionally end the input. */
static void run(lrt_proto_rx *rx, const uint8_t *data, size_t len, size_t chunk, int end,
                event_log *log)
{
    size_t off = 0;
    lrt_proto_event ev;

    log->n = 0;
    while (off < len) {
        size_t piece = chunk == 0 || len - off < chunk ? len - off : chunk;
        size_t used = 0;
        do {
            used += lrt_proto_rx_feed(rx, data + off + used, piece - used, &ev);
            if (ev.kind != LRT_PROTO_EV_NONE)
                log_event(log, &ev);
        } while (ev.kind != LRT_PROTO_EV_NONE);
        CHECK(used == piece);
        off += piece;
    }
    if (end) {
        lrt_proto_rx_end(rx);
        do {
            lrt_proto_rx_feed(rx, NULL, 0, &ev);
            if (ev.kind != LRT_PROTO_EV_NONE)
                log_event(log, &ev);
        } while (ev.kind != LRT_PROTO_EV_NONE);
    }
}

static size_t put_frame(uint8_t *out, uint8_t type, const uint8_t *payload, size_t len)
{
    int n = lrt_proto_encode(type, payload, len, out, LRT_PROTO_FRAME_SIZE(len));
    CHECK(n == (int)LRT_PROTO_FRAME_SIZE(len));
    return n > 0 ? (size_t)n : 0;
}

static int is_frame(const event_rec *r, uint8_t type, const uint8_t *payload, uint16_t len)
{
    return r->kind == LRT_PROTO_EV_FRAME && r->type == type && r->len == len &&
           r->crc == lrt_crc32_update(0, payload, len);
}

static int is_error(const event_rec *r, int err, uint8_t type)
{
    return r->kind == LRT_PROTO_EV_ERROR && r->err == err && r->type == type;
}

static uint8_t rx_mem[LRT_PROTO_FRAME_SIZE(LRT_PROTO_MAX_PAYLOAD) + 16];
static uint8_t stream[2 * LRT_PROTO_FRAME_SIZE(LRT_PROTO_MAX_PAYLOAD) + 16384];
static uint8_t payload[LRT_PROTO_MAX_PAYLOAD + 16];

static void test_encode(void)
{
    uint8_t out[32];
    static const uint8_t p[3] = {1, 2, 3};
    uint32_t crc;

    CHECK(lrt_proto_encode(0x42, p, 3, out, sizeof(out)) == 12);
    CHECK(out[0] == 0xA5 && out[1] == 0x5A && out[2] == 0x42 && out[3] == 3 && out[4] == 0);
    CHECK(memcmp(out + 5, p, 3) == 0);
    crc = lrt_crc32_update(0, out + 2, 6);
    CHECK(lrt_get_le32(out + 8) == crc);
    CHECK(lrt_proto_encode(0x42, p, 3, out, 11) == LRT_ERR_SIZE);
    CHECK(lrt_proto_encode(0x42, NULL, 3, out, sizeof(out)) == LRT_ERR_ARG);
    CHECK(lrt_proto_encode(0x42, NULL, 0, out, 9) == 9);
    CHECK(lrt_proto_encode(0x42, payload, LRT_PROTO_MAX_PAYLOAD + 1, stream, sizeof(stream)) ==
          LRT_ERR_SIZE);
    /* in place: payload already at out + header */
    out[5] = 9;
    out[6] = 8;
    CHECK(lrt_proto_encode(0x07, out + 5, 2, out, sizeof(out)) == 11 && out[5] == 9 &&
          out[6] == 8);
}

static void test_init(void)
{
    lrt_proto_rx rx;
    CHECK(lrt_proto_rx_init(&rx, rx_mem, LRT_PROTO_OVERHEAD) == LRT_ERR_ARG);
    CHECK(lrt_proto_rx_init(&rx, NULL, 100) == LRT_ERR_ARG);
    CHECK(lrt_proto_rx_init(&rx, rx_mem, 100) == LRT_OK && rx.max_payload == 91);
    CHECK(lrt_proto_rx_init(&rx, rx_mem, sizeof(rx_mem)) == LRT_OK &&
          rx.max_payload == LRT_PROTO_MAX_PAYLOAD);
    CHECK(lrt_proto_rx_idle(&rx));
}

/* Every payload length round-trips, whatever the chunking. */
static void test_roundtrip(void)
{
    static const size_t lens[] = {0, 1, 2, 5, 100, 1000, LRT_PROTO_MAX_PAYLOAD};
    static const size_t chunks[] = {0, 1, 3, 64};
    lrt_proto_rx rx;
    event_log log;
    size_t i, c, k;

    for (k = 0; k < sizeof(payload); k++)
        payload[k] = (uint8_t)(k * 31u + 0xA5u); /* includes sync-like bytes */
    for (i = 0; i < LRT_ARRAY_LEN(lens); i++) {
        for (c = 0; c < LRT_ARRAY_LEN(chunks); c++) {
            size_t n = put_frame(stream, 0x33, payload, lens[i]);
            n += put_frame(stream + n, 0x34, payload + 1, lens[i] ? lens[i] - 1 : 0);
            lrt_proto_rx_init(&rx, rx_mem, sizeof(rx_mem));
            run(&rx, stream, n, chunks[c], 1, &log);
            CHECK(log.n == 2);
            CHECK(is_frame(&log.ev[0], 0x33, payload, (uint16_t)lens[i]));
            CHECK(is_frame(&log.ev[1], 0x34, payload + 1, (uint16_t)(lens[i] ? lens[i] - 1 : 0)));
            CHECK(lrt_proto_rx_idle(&rx));
        }
    }
}

static void test_garbage(void)
{
    lrt_proto_rx rx;
    event_log log;
    size_t n = 0;
    static const uint8_t junk[] = {0x00, 0x5A, 0xA5, 0x11, 0xFF};
    uint8_t p[4] = {1, 2, 3, 4};

    memcpy(stream, junk, sizeof(junk));
    n = sizeof(junk);
    n += put_frame(stream + n, 0x02, p, 4);
    stream[n++] = 0x5A; /* second bad region */
    stream[n++] = 0xA5;
    n += put_frame(stream + n, 0x03, p, 2); /* A5 A5 5A: the lone A5 is noise */
    n += put_frame(stream + n, 0x04, p, 0);
    lrt_proto_rx_init(&rx, rx_mem, sizeof(rx_mem));
    run(&rx, stream, n, 1, 1, &log);
    CHECK(log.n == 5);
    CHECK(is_error(&log.ev[0], LRT_ERR_FRAME, 0));
    CHECK(is_frame(&log.ev[1], 0x02, p, 4));
    CHECK(is_error(&log.ev[2], LRT_ERR_FRAME, 0));
    CHECK(is_frame(&log.ev[3], 0x03, p, 2));
    CHECK(is_frame(&log.ev[4], 0x04, p, 0));
}

static void test_oversize_and_crc(void)
{
    lrt_proto_rx rx;
    event_log log;
    uint8_t small[LRT_PROTO_FRAME_SIZE(16)];
    uint8_t p[17];
    size_t n = 0, k;

    for (k = 0; k < sizeof(p); k++)
        p[k] = (uint8_t)(0x40 + k);
    n += put_frame(stream + n, 0x05, p, 17); /* one byte over this receiver's limit */
    n += put_frame(stream + n, 0x06, p, 16);
    k = put_frame(stream + n, 0x07, p, 3);
    stream[n + 6] ^= 0x01; /* payload bit -> CRC mismatch */
    n += k;
    n += put_frame(stream + n, 0x08, p, 1);
    lrt_proto_rx_init(&rx, small, sizeof(small));
    run(&rx, stream, n, 0, 1, &log);
    CHECK(log.n == 4);
    CHECK(is_error(&log.ev[0], LRT_ERR_SIZE, 0x05));
    CHECK(is_frame(&log.ev[1], 0x06, p, 16));
    CHECK(is_error(&log.ev[2], LRT_ERR_CRC, 0x07));
    CHECK(is_frame(&log.ev[3], 0x08, p, 1));
}

/* A frame whose length promises more than was sent must not swallow the frames after it. */
static void test_truncated(void)
{
    lrt_proto_rx rx;
    event_log log;
    uint8_t p[64];
    size_t n = 0, k;

    for (k = 0; k < sizeof(p); k++)
        p[k] = (uint8_t)k;
    n = put_frame(stream, 0x02, p, 64);
    n = 20; /* cut inside the payload */
    n += put_frame(stream + n, 0x11, p, 5);
    n += put_frame(stream + n, 0x12, p + 5, 6);
    k = n;
    /* enough later frames to complete the cut one (64 + 4 - 15 = 53 more bytes) */
    n += put_frame(stream + n, 0x13, p, 40);
    n += put_frame(stream + n, 0x14, p, 7);
    lrt_proto_rx_init(&rx, rx_mem, sizeof(rx_mem));
    run(&rx, stream, n, 0, 0, &log);
    CHECK(log.n == 5);
    CHECK(is_error(&log.ev[0], LRT_ERR_CRC, 0x02));
    CHECK(is_frame(&log.ev[1], 0x11, p, 5));
    CHECK(is_frame(&log.ev[2], 0x12, p + 5, 6));
    CHECK(is_frame(&log.ev[3], 0x13, p, 40));
    CHECK(is_frame(&log.ev[4], 0x14, p, 7));

    /* the same cut followed by too little input: nothing until end of input */
    lrt_proto_rx_init(&rx, rx_mem, sizeof(rx_mem));
    run(&rx, stream, k, 0, 0, &log);
    CHECK(log.n == 0 && !lrt_proto_rx_idle(&rx));
    lrt_proto_rx_init(&rx, rx_mem, sizeof(rx_mem));
    run(&rx, stream, k, 1, 1, &log);
    CHECK(log.n == 3);
    CHECK(is_error(&log.ev[0], LRT_ERR_EOF, 0x02));
    CHECK(is_frame(&log.ev[1], 0x11, p, 5));
    CHECK(is_frame(&log.ev[2], 0x12, p + 5, 6));
    CHECK(lrt_proto_rx_idle(&rx));

    /* lone sync byte at the very end */
    stream[0] = 0xA5;
    lrt_proto_rx_init(&rx, rx_mem, sizeof(rx_mem));
    run(&rx, stream, 1, 0, 1, &log);
    CHECK(log.n == 1 && is_error(&log.ev[0], LRT_ERR_EOF, 0));
}

/* Nested failures during a re-scan: a cut frame containing another cut frame. */
static void test_nested(void)
{
    lrt_proto_rx rx;
    event_log log;
    uint8_t p[300];
    size_t n, k;

    for (k = 0; k < sizeof(p); k++)
        p[k] = (uint8_t)(k ^ 0x5A);
    n = put_frame(stream, 0x21, p, 200);
    n = 30;
    k = put_frame(stream + n, 0x22, p, 100);
    n += 40; /* second cut frame inside the first one's span */
    (void)k;
    n += put_frame(stream + n, 0x23, p, 9);
    n += put_frame(stream + n, 0x24, p, 250);
    n += put_frame(stream + n, 0x25, p, 1);
    lrt_proto_rx_init(&rx, rx_mem, sizeof(rx_mem));
    run(&rx, stream, n, 7, 1, &log);
    CHECK(log.n == 4);
    CHECK(log.ev[0].kind == LRT_PROTO_EV_ERROR);
    CHECK(is_frame(&log.ev[1], 0x23, p, 9));
    CHECK(is_frame(&log.ev[2], 0x24, p, 250));
    CHECK(is_frame(&log.ev[3], 0x25, p, 1));
}

/* Splitting input differently must not change the events (pseudo-random streams). */
static void test_chunking(void)
{
    uint32_t x = 12345u;
    int round;

    for (round = 0; round < 200; round++) {
        lrt_proto_rx rx;
        event_log a, b;
        size_t n = 0, target = 2000 + (size_t)(round * 37) % 3000, i;
        while (n + 200 < target) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if (x % 3 == 0) {
                size_t len = x % 120;
                for (i = 0; i < len; i++)
                    payload[i] = (uint8_t)(x >> (i % 24));
                n += put_frame(stream + n, (uint8_t)(x >> 8), payload, len);
                if (x % 7 == 0)
                    n -= 1 + (x >> 10) % 8; /* cut */
            } else {
                size_t len = 1 + x % 9;
                for (i = 0; i < len; i++)
                    stream[n++] = (uint8_t)((x >> i) | ((x & 16) ? 0xA5 : 0));
            }
        }
        lrt_proto_rx_init(&rx, rx_mem, 200);
        run(&rx, stream, n, 0, 1, &a);
        lrt_proto_rx_init(&rx, rx_mem, 200);
        run(&rx, stream, n, 1 + (size_t)round % 13, 1, &b);
        CHECK(a.n == b.n && a.n < 1024 && memcmp(a.ev, b.ev, (size_t)a.n * sizeof(a.ev[0])) == 0);
    }
}

/* ---- lrt_app edges the fuzz harness does not reach ----------------------------------- */

typedef struct {
    const uint8_t *in;
    size_t n, pos;
    int fail_read_at; /* read returns -1 once pos reaches this (or never if < 0) */
    int fail_write;
    uint8_t out[4096];
    size_t out_n;
} mem_io;

static int mem_read(void *ctx, uint8_t *buf, size_t len)
{
    mem_io *m = (mem_io *)ctx;
    size_t k = m->n - m->pos;
    if (m->fail_read_at >= 0 && m->pos >= (size_t)m->fail_read_at)
        return -1;
    if (k > len)
        k = len;
    memcpy(buf, m->in + m->pos, k);
    m->pos += k;
    return (int)k;
}

static int mem_write(void *ctx, const uint8_t *buf, size_t len)
{
    mem_io *m = (mem_io *)ctx;
    if (m->fail_write || m->out_n + len > sizeof(m->out))
        return -1;
    memcpy(m->out + m->out_n, buf, len);
    m->out_n += len;
    return (int)len;
}

static int bad_hello(void *ctx, lrt_app_info *info)
{
    (void)ctx;
    (void)info;
    return -1000; /* not an lrt_err: cannot be sent as an int8 code */
}

static int bad_infer(void *ctx, const int8_t *input, int8_t *logits, uint8_t *pred)
{
    (void)ctx;
    (void)input;
    memset(logits, 0, DUMMY_CLASSES);
    *pred = DUMMY_CLASSES; /* out of range */
    return LRT_OK;
}

static int failing_bye(void *ctx)
{
    (void)ctx;
    return LRT_ERR_IO;
}

static lrt_app app;
static uint8_t big_frames[2u * LRT_PROTO_FRAME_SIZE(LRT_PROTO_MAX_PAYLOAD) + 101u];

static void test_app(void)
{
    dummy_state st;
    lrt_app_handlers h;
    lrt_app_config cfg;
    lrt_app_io io = {mem_read, mem_write, NULL};
    mem_io m;
    size_t n = 0;
    uint8_t in[DUMMY_INPUT_SIZE] = {0};

    dummy_setup(&st, &h, &cfg);
    io.ctx = &m;
    memset(&m, 0, sizeof(m));
    m.fail_read_at = -1;

    cfg.n_classes = 0;
    CHECK(lrt_app_init(&app, &cfg, &io, &h) == LRT_ERR_ARG);
    cfg.n_classes = 256;
    CHECK(lrt_app_init(&app, &cfg, &io, &h) == LRT_ERR_ARG);
    cfg.n_classes = DUMMY_CLASSES;
    cfg.input_size = DUMMY_MAX_PAYLOAD; /* + label does not fit the frames */
    CHECK(lrt_app_init(&app, &cfg, &io, &h) == LRT_ERR_SIZE);
    cfg.input_size = DUMMY_MAX_PAYLOAD - 1u; /* + label does */
    CHECK(lrt_app_init(&app, &cfg, &io, &h) == LRT_OK);
    CHECK(app.cfg.frames_size == 2u * LRT_PROTO_FRAME_SIZE(DUMMY_MAX_PAYLOAD));
    cfg.input_size = DUMMY_INPUT_SIZE;
    CHECK(lrt_app_init(&app, &cfg, NULL, &h) == LRT_ERR_ARG);
    cfg.frames = NULL;
    CHECK(lrt_app_init(&app, &cfg, &io, &h) == LRT_ERR_ARG);
    cfg.frames = dummy_frames;
    /* frames too short for the INFO reply, though the sample and the logits would fit */
    cfg.input_size = 4u;
    cfg.frames_size = 2u * LRT_PROTO_FRAME_SIZE(LRT_PROTO_INFO_SIZE) - 1u;
    CHECK(lrt_app_init(&app, &cfg, &io, &h) == LRT_ERR_SIZE);
    cfg.frames_size = 2u * LRT_PROTO_FRAME_SIZE(LRT_PROTO_INFO_SIZE);
    CHECK(lrt_app_init(&app, &cfg, &io, &h) == LRT_OK);
    /* frames beyond the protocol's cap: only a capped frame of each half is used */
    cfg.frames = big_frames;
    cfg.frames_size = (uint32_t)sizeof(big_frames);
    CHECK(lrt_app_init(&app, &cfg, &io, &h) == LRT_OK);
    CHECK(app.cfg.frames_size == 2u * LRT_PROTO_FRAME_SIZE(LRT_PROTO_MAX_PAYLOAD));
    cfg.frames = dummy_frames;
    cfg.input_size = DUMMY_INPUT_SIZE;
    cfg.frames_size = (uint32_t)sizeof(dummy_frames);

    /* missing handlers, contract-breaking handlers, BYE whose handler fails */
    h.stats = NULL;
    h.hello = bad_hello;
    h.infer = bad_infer;
    h.bye = failing_bye;
    n += put_frame(stream + n, LRT_MSG_STATS, NULL, 0);
    n += put_frame(stream + n, LRT_MSG_HELLO, NULL, 0);
    n += put_frame(stream + n, LRT_MSG_INFER, in, sizeof(in));
    n += put_frame(stream + n, LRT_MSG_BYE, NULL, 0);
    n += put_frame(stream + n, LRT_MSG_HELLO, NULL, 0); /* after BYE: never served */
    m.in = stream;
    m.n = n;
    CHECK(lrt_app_init(&app, &cfg, &io, &h) == LRT_OK);
    CHECK(lrt_app_serve(&app) == LRT_APP_BYE);
    CHECK(m.out_n == 4 * LRT_PROTO_FRAME_SIZE(2));
    if (m.out_n == 4 * LRT_PROTO_FRAME_SIZE(2)) {
        static const int8_t codes[4] = {LRT_ERR_UNSUPPORTED, LRT_ERR_STATE, LRT_ERR_STATE,
                                        LRT_ERR_IO};
        static const uint8_t types[4] = {LRT_MSG_STATS, LRT_MSG_HELLO, LRT_MSG_INFER,
                                         LRT_MSG_BYE};
        int i;
        for (i = 0; i < 4; i++) {
            const uint8_t *f = m.out + i * LRT_PROTO_FRAME_SIZE(2);
            CHECK(f[2] == LRT_MSG_ERROR && (int8_t)f[5] == codes[i] && f[6] == types[i]);
        }
    }

    /* transport errors */
    dummy_setup(&st, &h, &cfg);
    memset(&m, 0, sizeof(m));
    m.in = stream;
    m.n = n;
    m.fail_read_at = -1;
    m.fail_write = 1;
    CHECK(lrt_app_init(&app, &cfg, &io, &h) == LRT_OK);
    CHECK(lrt_app_serve(&app) == LRT_ERR_IO);
    memset(&m, 0, sizeof(m));
    m.in = stream;
    m.n = n;
    m.fail_read_at = 0;
    CHECK(lrt_app_init(&app, &cfg, &io, &h) == LRT_OK);
    CHECK(lrt_app_serve(&app) == LRT_ERR_IO);

    /* end of input with nothing pending */
    memset(&m, 0, sizeof(m));
    m.in = stream;
    m.n = 0;
    m.fail_read_at = -1;
    CHECK(lrt_app_init(&app, &cfg, &io, &h) == LRT_OK);
    CHECK(lrt_app_serve(&app) == LRT_ERR_EOF && m.out_n == 0);
}

int main(void)
{
    test_encode();
    test_init();
    test_roundtrip();
    test_garbage();
    test_oversize_and_crc();
    test_truncated();
    test_nested();
    test_chunking();
    test_app();
    printf("checks=%d\nfailures=%d\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
