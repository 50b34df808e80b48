/* fuzz_libfuzzer.c - coverage-guided fuzzing of lrt_app/lrt_proto (clang -fsanitize=fuzzer).
 *
 * Input: byte 0 picks the read size, the rest is the byte stream the device receives. Checks
 * (abort on violation, which libFuzzer reports as a crash):
 *   - every reply is a well-formed frame (sync, CRC) of a reply or ERROR type;
 *   - the server sends exactly one reply per good frame plus one per bad region;
 *   - the receiver's events do not depend on how the input is split.
 */
#include <stdlib.h>
#include <string.h>

#include "lrt_crc32.h"
#include "proto_dummy.h"

typedef struct {
    uint8_t out[1 << 16];
    size_t out_n;
    int overflow;
} sink;

static int sink_read(void *ctx, uint8_t *buf, size_t len)
{
    (void)ctx;
    (void)buf;
    (void)len;
    return 0; /* lrt_app_feed is used; serve never reads */
}

static int sink_write(void *ctx, const uint8_t *buf, size_t len)
{
    sink *s = (sink *)ctx;
    if (s->out_n + len > sizeof(s->out)) {
        s->overflow = 1;
        s->out_n = 0; /* keep going; counts are checked only without overflow */
    }
    memcpy(s->out + s->out_n, buf, len);
    s->out_n += len;
    return (int)len;
}

static void check_replies(const sink *s, uint32_t expected)
{
    size_t pos = 0;
    uint32_t n = 0;
    while (pos < s->out_n) {
        const uint8_t *f = s->out + pos;
        size_t len;
        if (s->out_n - pos < LRT_PROTO_OVERHEAD || f[0] != 0xA5 || f[1] != 0x5A)
            abort();
        len = lrt_get_le16(f + 3);
        if (s->out_n - pos < LRT_PROTO_FRAME_SIZE(len))
            abort();
        if (lrt_crc32_update(0, f + 2, 3 + len) != lrt_get_le32(f + 5 + len))
            abort();
        if (f[2] != LRT_MSG_ERROR && (f[2] < (LRT_MSG_HELLO | LRT_MSG_REPLY) ||
                                      f[2] > (LRT_MSG_WEAR | LRT_MSG_REPLY)))
            abort();
        if (f[2] == LRT_MSG_ERROR && (len != 2 || (int8_t)f[5] >= 0))
            abort();
        pos += LRT_PROTO_FRAME_SIZE(len);
        n++;
    }
    if (n != expected)
        abort();
}

typedef struct {
    uint8_t kind, type;
    int8_t err;
    uint16_t len;
    uint32_t crc;
} rec;

static size_t events(const uint8_t *data, size_t size, size_t chunk, rec *out, size_t max)
{
    static uint8_t buf[LRT_PROTO_FRAME_SIZE(300)];
    lrt_proto_rx rx;
    lrt_proto_event ev;
    size_t off = 0, n = 0;

    lrt_proto_rx_init(&rx, buf, sizeof(buf));
    for (;;) {
        size_t piece = off < size ? LRT_MIN(chunk, size - off) : 0;
        size_t used = 0;
        if (off >= size)
            lrt_proto_rx_end(&rx);
        do {
            used += lrt_proto_rx_feed(&rx, data + off + used, piece - used, &ev);
            if (ev.kind != LRT_PROTO_EV_NONE && n < max) {
                memset(&out[n], 0, sizeof(out[n]));
                out[n].kind = ev.kind;
                out[n].type = ev.type;
                out[n].err = ev.err;
                out[n].len = ev.len;
                out[n].crc = ev.kind == LRT_PROTO_EV_FRAME
                                 ? lrt_crc32_update(0, ev.payload, ev.len)
                                 : 0;
                n++;
            }
        } while (ev.kind != LRT_PROTO_EV_NONE);
        if (used != piece)
            abort();
        if (off >= size)
            break;
        off += piece;
    }
    if (!lrt_proto_rx_idle(&rx))
        abort();
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lrt_app app;
    static sink s;
    static rec a[4096], b[4096];
    dummy_state st;
    lrt_app_handlers h;
    lrt_app_config cfg;
    lrt_app_io io;
    size_t chunk, off = 0, na, nb;
    int rc = LRT_OK;

    if (size < 1)
        return 0;
    chunk = 1 + data[0] % 64;
    data++;
    size--;

    dummy_setup(&st, &h, &cfg);
    io.read = sink_read;
    io.write = sink_write;
    io.ctx = &s;
    s.out_n = 0;
    s.overflow = 0;
    if (lrt_app_init(&app, &cfg, &io, &h) != LRT_OK)
        abort();
    while (off < size && rc == LRT_OK) {
        size_t piece = LRT_MIN(chunk, size - off);
        rc = lrt_app_feed(&app, data + off, piece);
        off += piece;
    }
    if (rc == LRT_OK)
        rc = lrt_app_finish(&app);
    if (rc != LRT_ERR_EOF && rc != LRT_APP_BYE)
        abort();
    if (!s.overflow)
        check_replies(&s, app.n_requests + app.n_resyncs);

    na = events(data, size, size ? size : 1, a, 4096);
    nb = events(data, size, chunk, b, 4096);
    if (na != nb || memcmp(a, b, LRT_MIN(na, (size_t)4096) * sizeof(rec)) != 0)
        abort();
    return 0;
}
