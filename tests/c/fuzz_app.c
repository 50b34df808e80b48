/* fuzz_app.c - stress lrt_app_serve with random and mutated frames (run under ASan/UBSan).
 *
 * usage: fuzz_app SEED ROUNDS ITEMS_PER_ROUND
 *
 * Each round builds one input stream from items of three kinds and predicts the exact reply
 * stream:
 *   valid request        -> its reply (computed here from the documented dummy behaviour)
 *   well-formed bad one  -> ERROR(code, type): wrong payload size, unknown type, bad label,
 *                           bad READ/DRIFT arguments, handler error
 *   corrupted item       -> random bytes, bit flips, truncation, stale CRC after extending or
 *                           changing the length, wrong CRC, over-long length, lone sync bytes.
 *                           A run of corrupted items between two well-formed frames must give
 *                           exactly one ERROR (FRAME, SIZE, CRC or EOF) and must not hide the
 *                           well-formed frames around it.
 * Rounds end with BYE (server must stop there) or with end of input right after a truncated
 * frame followed by valid ones (they must still be served). Reads and writes are split into
 * random pieces. Prints key=value counts; exit status 0 iff every reply matched.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrt_crc32.h"
#include "proto_dummy.h"

#define MAXP DUMMY_MAX_PAYLOAD

/* ---- helpers ----------------------------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rnd(void)
{
    /* splitmix64: seedable, good enough for test data */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 16);
}

static uint32_t rnd_below(uint32_t n)
{
    return rnd() % n;
}

typedef struct {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void bytes_put(bytes *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        b->p = (uint8_t *)realloc(b->p, cap);
        if (b->p == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(3);
        }
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void bytes_put_u8(bytes *b, uint8_t v)
{
    bytes_put(b, &v, 1);
}

/* Independent encoder (not lrt_proto_encode): the harness checks the library. */
static size_t frame_make(uint8_t *out, uint8_t type, const uint8_t *payload, size_t len)
{
    uint32_t crc;
    out[0] = 0xA5;
    out[1] = 0x5A;
    out[2] = type;
    out[3] = (uint8_t)len;
    out[4] = (uint8_t)(len >> 8);
    memcpy(out + 5, payload, len);
    crc = lrt_crc32_update(0, out + 2, 3 + len);
    out[5 + len] = (uint8_t)crc;
    out[6 + len] = (uint8_t)(crc >> 8);
    out[7 + len] = (uint8_t)(crc >> 16);
    out[8 + len] = (uint8_t)(crc >> 24);
    return len + 9;
}

static void le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* ---- expected replies ----------------------------------------------------------------- */

enum { EXP_VALID = 0, EXP_BADREQ = 1, EXP_GAP = 2 };

typedef struct {
    uint8_t kind;
    uint8_t type;
    uint32_t len;
    size_t off; /* into exp_data */
} expect;

static expect *exps;
static size_t n_exp, cap_exp;
static bytes exp_data;

static void expect_push(uint8_t kind, uint8_t type, const uint8_t *payload, size_t len)
{
    if (n_exp == cap_exp) {
        cap_exp = cap_exp ? 2 * cap_exp : 1024;
        exps = (expect *)realloc(exps, cap_exp * sizeof(*exps));
        if (exps == NULL)
            exit(3);
    }
    exps[n_exp].kind = kind;
    exps[n_exp].type = type;
    exps[n_exp].len = (uint32_t)len;
    exps[n_exp].off = exp_data.n;
    bytes_put(&exp_data, payload, len);
    n_exp++;
}

static void expect_error(uint8_t kind, int code, uint8_t type)
{
    uint8_t p[2];
    p[0] = (uint8_t)(int8_t)code;
    p[1] = type;
    expect_push(kind, LRT_MSG_ERROR, p, 2);
}

/* ---- the mirror of the dummy device ------------------------------------------------ */

static uint32_t m_samples;

static void mirror_logits(const uint8_t *in, uint8_t *reply)
{
    uint32_t i;
    for (i = 0; i < DUMMY_CLASSES; i++)
        reply[i] = (uint8_t)(in[i % DUMMY_INPUT_SIZE] ^ i);
    reply[DUMMY_CLASSES] = (uint8_t)(in[0] % DUMMY_CLASSES);
}

/* ---- stream generation -------------------------------------------------------------- */

static bytes stream;
static uint8_t frame_buf[LRT_PROTO_FRAME_SIZE(65535) + 64];
static uint8_t pay[LRT_PROTO_MAX_PAYLOAD + 64];
static uint8_t rep[LRT_PROTO_MAX_PAYLOAD + 64];
static int in_gap;

static struct {
    unsigned long valid_sent, badreq_sent, corrupted, gaps, rounds, bye_rounds, eof_rounds;
} sent;

static void random_input(uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
    if (p[0] == 0x7F && p[1] == 0x7F)
        p[1] = 0; /* that pattern is the dummy's handler-error trigger */
}

static void emit_wellformed(uint8_t type, const uint8_t *payload, size_t len)
{
    bytes_put(&stream, frame_buf, frame_make(frame_buf, type, payload, len));
    in_gap = 0;
}

/* Builds a valid request in `pay`; if `apply`, also records its reply and updates the
 * mirror. Returns its type and sets *len. */
static uint8_t make_valid(size_t *len, int apply)
{
    uint32_t r = rnd_below(100);
    uint8_t type;
    size_t rl = 0;

    if (r < 30) {
        type = LRT_MSG_INFER;
        *len = DUMMY_INPUT_SIZE;
        random_input(pay, *len);
        mirror_logits(pay, rep);
        rl = DUMMY_CLASSES + 1;
    } else if (r < 60) {
        type = LRT_MSG_TRAIN;
        *len = DUMMY_INPUT_SIZE + 1;
        random_input(pay, DUMMY_INPUT_SIZE);
        pay[DUMMY_INPUT_SIZE] = (uint8_t)rnd_below(DUMMY_CLASSES);
        mirror_logits(pay, rep);
        rl = DUMMY_CLASSES + 1;
        if (apply)
            m_samples++;
    } else if (r < 65) {
        type = LRT_MSG_HELLO;
        *len = 0;
        rep[0] = LRT_PROTO_VERSION;
        rep[1] = LRT_PROTO_SCHEME_LRT;
        rep[2] = DUMMY_LAYERS;
        rep[3] = DUMMY_CLASSES;
        rep[4] = DUMMY_IN_H;
        rep[5] = 0;
        rep[6] = DUMMY_IN_W;
        rep[7] = 0;
        rep[8] = DUMMY_IN_C;
        rep[9] = 0;
        rep[10] = 0xDE;
        rep[11] = 0xAD;
        rep[12] = 0xBE;
        rep[13] = 0xEF;
        le32(rep + 14, m_samples);
        rep[18] = (uint8_t)(MAXP & 0xFF);
        rep[19] = (uint8_t)(MAXP >> 8);
        rep[20] = LRT_PROTO_FLAG_MAX_NORM;
        rep[21] = LRT_PROTO_STORE_FALLBACK;
        le32(rep + 22, 0x01020304u);
        rl = LRT_PROTO_INFO_SIZE;
    } else if (r < 70) {
        uint32_t l;
        type = LRT_MSG_STATS;
        *len = 0;
        le32(rep, m_samples);
        le32(rep + 4, m_samples / 10u);
        for (l = 0; l < DUMMY_LAYERS; l++) {
            le32(rep + 8 + 12 * l, m_samples + l);
            le32(rep + 12 + 12 * l, 2u * m_samples + l);
            le32(rep + 16 + 12 * l, 0);
        }
        rl = 8 + 12 * DUMMY_LAYERS;
    } else if (r < 88) {
        uint32_t off = rnd_below(DUMMY_BLOB_SIZE + 1), i;
        uint16_t length = (uint16_t)(rnd_below(8) == 0 ? rnd_below(MAXP + 1) : rnd_below(64));
        type = LRT_MSG_READ;
        *len = 6;
        le32(pay, off);
        pay[4] = (uint8_t)length;
        pay[5] = (uint8_t)(length >> 8);
        rl = DUMMY_BLOB_SIZE - off < length ? DUMMY_BLOB_SIZE - off : length;
        for (i = 0; i < rl; i++)
            rep[i] = dummy_blob_byte(off + i);
    } else {
        type = LRT_MSG_DRIFT;
        *len = 9;
        pay[0] = (uint8_t)(1 + rnd_below(2));
        le32(pay + 1, rnd() | 1u);
        le32(pay + 5, rnd());
        rl = 0;
    }
    if (apply)
        expect_push(EXP_VALID, (uint8_t)(type | LRT_MSG_REPLY), rep, rl);
    return type;
}

static void gen_valid(void)
{
    size_t len;
    uint8_t type = make_valid(&len, 1);
    emit_wellformed(type, pay, len);
    sent.valid_sent++;
}

static void gen_badreq(void)
{
    static const uint8_t types[] = {LRT_MSG_HELLO, LRT_MSG_INFER, LRT_MSG_TRAIN,
                                    LRT_MSG_STATS, LRT_MSG_READ,  LRT_MSG_BYE,
                                    LRT_MSG_DRIFT};
    static const size_t right_len[] = {0, DUMMY_INPUT_SIZE, DUMMY_INPUT_SIZE + 1, 0, 6, 0, 9};
    uint32_t r = rnd_below(8);
    uint8_t type;
    size_t len;
    int code;

    switch (r) {
    case 0:
    case 1: { /* wrong payload size for a known type */
        uint32_t k = rnd_below(LRT_ARRAY_LEN(types));
        type = types[k];
        do
            len = rnd_below(rnd_below(4) == 0 ? MAXP + 1 : 80);
        while (len == right_len[k]);
        random_input(pay, len > 2 ? len : 2);
        code = LRT_ERR_SIZE;
        break;
    }
    case 2: /* unknown type, including reply types the host must never send */
        do
            type = (uint8_t)rnd();
        while (type >= LRT_MSG_HELLO && type <= LRT_MSG_WEAR);
        len = rnd_below(40);
        random_input(pay, len + 2);
        code = LRT_ERR_TYPE;
        break;
    case 3: /* label out of range */
        type = LRT_MSG_TRAIN;
        len = DUMMY_INPUT_SIZE + 1;
        random_input(pay, DUMMY_INPUT_SIZE);
        pay[DUMMY_INPUT_SIZE] = (uint8_t)(DUMMY_CLASSES + rnd_below(256 - DUMMY_CLASSES));
        code = LRT_ERR_ARG;
        break;
    case 4: /* READ: too long for a reply, or past the blob */
        type = LRT_MSG_READ;
        len = 6;
        if (rnd_below(2)) {
            uint16_t length = (uint16_t)(MAXP + 1 + rnd_below(65535 - MAXP));
            le32(pay, rnd_below(DUMMY_BLOB_SIZE));
            pay[4] = (uint8_t)length;
            pay[5] = (uint8_t)(length >> 8);
            code = LRT_ERR_SIZE;
        } else {
            le32(pay, DUMMY_BLOB_SIZE + 1 + rnd_below(0x7FFFFFFF));
            pay[4] = (uint8_t)rnd_below(64);
            pay[5] = 0;
            code = LRT_ERR_ARG;
        }
        break;
    case 5: /* DRIFT: bad kind, or the handler refuses (seed 0) */
        type = LRT_MSG_DRIFT;
        len = 9;
        random_input(pay, 9);
        if (rnd_below(2)) {
            do
                pay[0] = (uint8_t)rnd();
            while (pay[0] == 1 || pay[0] == 2);
            code = LRT_ERR_ARG;
        } else {
            pay[0] = (uint8_t)(1 + rnd_below(2));
            le32(pay + 1, 0);
            code = LRT_ERR_UNSUPPORTED;
        }
        break;
    default: /* handler error on INFER/TRAIN */
        type = rnd_below(2) ? LRT_MSG_INFER : LRT_MSG_TRAIN;
        len = DUMMY_INPUT_SIZE + (type == LRT_MSG_TRAIN);
        random_input(pay, len);
        pay[0] = 0x7F;
        pay[1] = 0x7F;
        if (type == LRT_MSG_TRAIN)
            pay[DUMMY_INPUT_SIZE] = (uint8_t)rnd_below(DUMMY_CLASSES);
        code = LRT_ERR_STATE;
        break;
    }
    emit_wellformed(type, pay, len);
    expect_error(EXP_BADREQ, code, type);
    sent.badreq_sent++;
}

static void gen_corrupted(void)
{
    uint32_t r = rnd_below(9);
    size_t len, n, i;
    uint8_t type;

    if (!in_gap) {
        expect_error(EXP_GAP, 0, 0);
        in_gap = 1;
        sent.gaps++;
    }
    if (getenv("FUZZ_DEBUG"))
        fprintf(stderr, "exp %zu corrupt kind %u at %zu\n", n_exp - 1, (unsigned)r, stream.n);
    sent.corrupted++;
    if (r == 0) { /* random bytes */
        n = 1 + rnd_below(64);
        for (i = 0; i < n; i++)
            frame_buf[i] = (uint8_t)rnd();
        bytes_put(&stream, frame_buf, n);
        return;
    }
    if (r == 1) { /* lone sync / header prefix */
        static const uint8_t head[3] = {0xA5, 0x5A, 0x02};
        bytes_put(&stream, head, 1 + rnd_below(3));
        return;
    }
    type = make_valid(&len, 0);
    n = frame_make(frame_buf, type, pay, len);
    switch (r) {
    case 2: { /* flip 1..3 distinct bits */
        uint32_t k, flips = 1 + rnd_below(3), pos[3];
        for (k = 0; k < flips; k++) {
            uint32_t j, again;
            do {
                pos[k] = rnd_below((uint32_t)n * 8);
                again = 0;
                for (j = 0; j < k; j++)
                    again |= pos[j] == pos[k];
            } while (again);
            frame_buf[pos[k] / 8] ^= (uint8_t)(1u << (pos[k] % 8));
        }
        break;
    }
    case 3: /* truncated, then a byte that differs from the one cut off (otherwise the next
             * item could supply exactly the missing bytes and repair the frame) */
        i = 1 + rnd_below((uint32_t)n - 1);
        frame_buf[i] = (uint8_t)(frame_buf[i] ^ (1 + rnd_below(255)));
        n = i + 1;
        break;
    case 4: { /* extended inside the length, CRC left stale */
        size_t e = 1 + rnd_below(16);
        if (len + e > MAXP)
            e = 0;
        memmove(frame_buf + 5 + len + e, frame_buf + 5 + len, 4);
        for (i = 0; i < e; i++)
            frame_buf[5 + len + i] = (uint8_t)rnd();
        frame_buf[3] = (uint8_t)(len + e);
        frame_buf[4] = (uint8_t)((len + e) >> 8);
        n += e;
        if (e == 0)
            frame_buf[n - 1] ^= 0x40; /* still must be corrupt */
        break;
    }
    case 5: { /* length field changed, CRC stale */
        uint16_t l2;
        do
            l2 = (uint16_t)rnd_below(rnd_below(2) ? 100 : 65536);
        while (l2 == len);
        frame_buf[3] = (uint8_t)l2;
        frame_buf[4] = (uint8_t)(l2 >> 8);
        break;
    }
    case 6: /* wrong CRC */
        frame_buf[n - 1 - rnd_below(4)] ^= (uint8_t)(1 + rnd_below(255));
        break;
    case 7: { /* over-long length, then some bytes */
        uint16_t l2 = (uint16_t)(MAXP + 1 + rnd_below(65535 - MAXP));
        frame_buf[3] = (uint8_t)l2;
        frame_buf[4] = (uint8_t)(l2 >> 8);
        n = 5 + rnd_below((uint32_t)n - 4);
        break;
    }
    default: /* a frame with its sync damaged */
        frame_buf[rnd_below(2)] ^= (uint8_t)(1 + rnd_below(255));
        break;
    }
    bytes_put(&stream, frame_buf, n);
}

static void gen_round(unsigned long items, int end_with_bye)
{
    unsigned long k;

    in_gap = 0;
    for (k = 0; k < items; k++) {
        uint32_t r = rnd_below(100);
        if (r < 45)
            gen_valid();
        else if (r < 60)
            gen_badreq();
        else
            gen_corrupted();
    }
    if (end_with_bye) {
        emit_wellformed(LRT_MSG_BYE, pay, 0);
        expect_push(EXP_VALID, LRT_MSG_BYE | LRT_MSG_REPLY, rep, 0);
        sent.valid_sent++;
        /* bytes after BYE must be ignored */
        for (k = 0; k < 100; k++)
            bytes_put_u8(&stream, (uint8_t)rnd());
    } else {
        /* A long frame cut short, then valid frames it swallows; end of input follows. */
        size_t len;
        uint8_t type = make_valid(&len, 0);
        size_t n = frame_make(frame_buf, type, pay, len);
        (void)n;
        frame_buf[3] = (uint8_t)(MAXP & 0xFF);
        frame_buf[4] = (uint8_t)(MAXP >> 8);
        if (!in_gap) {
            expect_error(EXP_GAP, 0, 0);
            sent.gaps++;
        }
        sent.corrupted++;
        bytes_put(&stream, frame_buf, 5 + rnd_below(3));
        in_gap = 1;
        gen_valid();
        gen_valid();
    }
}

/* ---- transport ------------------------------------------------------------------------ */

typedef struct {
    const bytes *in;
    size_t pos;
    uint32_t max_read;
    bytes out;
} io_ctx;

static int io_read(void *ctx, uint8_t *buf, size_t len)
{
    io_ctx *c = (io_ctx *)ctx;
    size_t n = c->in->n - c->pos;
    size_t want = 1 + rnd_below(c->max_read);
    if (want > len)
        want = len;
    if (n > want)
        n = want;
    memcpy(buf, c->in->p + c->pos, n);
    c->pos += n;
    return (int)n;
}

static int io_write(void *ctx, const uint8_t *buf, size_t len)
{
    io_ctx *c = (io_ctx *)ctx;
    size_t n = 1 + rnd_below((uint32_t)len);
    bytes_put(&c->out, buf, n);
    return (int)n;
}

/* ---- checking ------------------------------------------------------------------------- */

static struct {
    unsigned long valid_ok, badreq_ok, gap_ok, mismatches, replies;
} got;

static void mismatch(unsigned long round, size_t idx, const char *what)
{
    if (got.mismatches < 10)
        fprintf(stderr, "round %lu expected reply %zu: %s\n", round, idx, what);
    got.mismatches++;
}

static void check_round(unsigned long round, const bytes *out)
{
    size_t pos = 0, i;

    for (i = 0; i < n_exp; i++) {
        const expect *e = &exps[i];
        uint32_t len, crc;
        const uint8_t *f = out->p + pos;
        if (out->n - pos < 9) {
            mismatch(round, i, "missing reply");
            return;
        }
        len = (uint32_t)f[3] | ((uint32_t)f[4] << 8);
        if (f[0] != 0xA5 || f[1] != 0x5A || out->n - pos < 9 + (size_t)len) {
            mismatch(round, i, "bad reply frame");
            return;
        }
        crc = (uint32_t)f[5 + len] | ((uint32_t)f[6 + len] << 8) |
              ((uint32_t)f[7 + len] << 16) | ((uint32_t)f[8 + len] << 24);
        if (crc != lrt_crc32_update(0, f + 2, 3 + len)) {
            mismatch(round, i, "reply crc");
            return;
        }
        pos += 9 + len;
        got.replies++;
        if (e->kind == EXP_GAP) {
            int8_t code = (int8_t)f[5];
            if (f[2] == LRT_MSG_ERROR && len == 2 &&
                (code == LRT_ERR_FRAME || code == LRT_ERR_SIZE || code == LRT_ERR_CRC ||
                 code == LRT_ERR_EOF))
                got.gap_ok++;
            else
                mismatch(round, i, "expected one ERROR for a corrupted region");
            continue;
        }
        if (f[2] != e->type || len != e->len || memcmp(f + 5, exp_data.p + e->off, len) != 0) {
            char msg[128];
            sprintf(msg, "%s: got type %02x len %u (code %d type %02x), want type %02x len %u",
                    e->kind == EXP_VALID ? "valid" : "bad request", f[2], (unsigned)len,
                    len >= 2 ? (int)(int8_t)f[5] : 0, len >= 2 ? f[6] : 0, e->type,
                    (unsigned)e->len);
            mismatch(round, i, msg);
            continue;
        }
        if (e->kind == EXP_VALID)
            got.valid_ok++;
        else
            got.badreq_ok++;
    }
    if (pos != out->n)
        mismatch(round, n_exp, "extra replies");
}

int main(int argc, char **argv)
{
    unsigned long seed = argc > 1 ? strtoul(argv[1], NULL, 0) : 1;
    unsigned long rounds = argc > 2 ? strtoul(argv[2], NULL, 0) : 8;
    unsigned long items = argc > 3 ? strtoul(argv[3], NULL, 0) : 25000;
    static const uint32_t max_reads[] = {1, 7, 64, LRT_APP_READ_CHUNK};
    static lrt_app app;
    unsigned long round, bytes_in = 0, bytes_out = 0;

    rng_state = seed;
    for (round = 0; round < rounds; round++) {
        dummy_state st;
        lrt_app_handlers h;
        lrt_app_config cfg;
        lrt_app_io io;
        io_ctx ioc;
        int end_with_bye = (int)(round % 2 == 0), rc, want;
        unsigned long requests_before = sent.valid_sent + sent.badreq_sent;
        unsigned long errors_before = sent.badreq_sent + sent.gaps;
        unsigned long gaps_before = sent.gaps;

        stream.n = 0;
        exp_data.n = 0;
        n_exp = 0;
        m_samples = 0;
        gen_round(items, end_with_bye);

        dummy_setup(&st, &h, &cfg);
        memset(&ioc, 0, sizeof(ioc));
        ioc.in = &stream;
        ioc.max_read = max_reads[round % LRT_ARRAY_LEN(max_reads)];
        io.read = io_read;
        io.write = io_write;
        io.ctx = &ioc;
        if (lrt_app_init(&app, &cfg, &io, &h) != LRT_OK) {
            fprintf(stderr, "init failed\n");
            return 2;
        }
        rc = lrt_app_serve(&app);
        want = end_with_bye ? LRT_APP_BYE : LRT_ERR_EOF;
        if (rc != want) {
            fprintf(stderr, "round %lu: serve returned %d, want %d\n", round, rc, want);
            got.mismatches++;
        }
        if (app.n_requests != sent.valid_sent + sent.badreq_sent - requests_before ||
            app.n_errors != sent.badreq_sent + sent.gaps - errors_before ||
            app.n_resyncs != sent.gaps - gaps_before) {
            fprintf(stderr, "round %lu: server counted %u requests, %u errors\n", round,
                    (unsigned)app.n_requests, (unsigned)app.n_errors);
            got.mismatches++;
        }
        if (getenv("FUZZ_DEBUG")) {
            char name[64];
            FILE *fh;
            sprintf(name, "/tmp/fuzz_in_%lu.bin", round);
            fh = fopen(name, "wb");
            fwrite(stream.p, 1, stream.n, fh);
            fclose(fh);
            sprintf(name, "/tmp/fuzz_out_%lu.bin", round);
            fh = fopen(name, "wb");
            fwrite(ioc.out.p, 1, ioc.out.n, fh);
            fclose(fh);
        }
        check_round(round, &ioc.out);
        if (st.samples != m_samples) {
            fprintf(stderr, "round %lu: samples %u, mirror %u\n", round, (unsigned)st.samples,
                    (unsigned)m_samples);
            got.mismatches++;
        }
        sent.rounds++;
        if (end_with_bye)
            sent.bye_rounds++;
        else
            sent.eof_rounds++;
        bytes_in += (unsigned long)stream.n;
        bytes_out += (unsigned long)ioc.out.n;
        free(ioc.out.p);
    }
    printf("seed=%lu\nmax_payload=%u\nrounds=%lu\nbye_rounds=%lu\neof_rounds=%lu\n", seed,
           (unsigned)MAXP, sent.rounds, sent.bye_rounds, sent.eof_rounds);
    printf("valid_sent=%lu\nvalid_served=%lu\n", sent.valid_sent, got.valid_ok);
    printf("bad_requests_sent=%lu\nbad_request_errors=%lu\n", sent.badreq_sent, got.badreq_ok);
    printf("corrupted_sent=%lu\ngaps=%lu\ngap_errors=%lu\n", sent.corrupted, sent.gaps,
           got.gap_ok);
    printf("random_and_mutated=%lu\nreplies=%lu\nbytes_in=%lu\nbytes_out=%lu\nmismatches=%lu\n",
           sent.badreq_sent + sent.corrupted, got.replies, bytes_in, bytes_out, got.mismatches);
    free(stream.p);
    free(exp_data.p);
    free(exps);
    return got.mismatches == 0 ? 0 : 1;
}
