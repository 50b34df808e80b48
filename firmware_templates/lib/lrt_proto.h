/* lrt_proto.h - framed wire protocol (docs/PROTOCOL.md): incremental receiver and encoder.
 *
 * Frame: 0xA5 0x5A | type | length (u16 LE) | payload | CRC-32 (LE) over type..payload.
 *
 * The receiver keeps the raw bytes of the frame it is assembling in a caller-provided buffer.
 * When a candidate frame turns out bad (over-long length, CRC mismatch, cut by end of input)
 * it re-scans the bytes after that candidate's sync instead of dropping them: a frame whose
 * length field was damaged or that was cut short must not swallow the good frames that
 * follow it. One bad region between two good frames yields exactly one error event, so a
 * host that corrupts one request gets one ERROR reply.
 */
#ifndef LRT_PROTO_H
#define LRT_PROTO_H

#include "lrt_common.h"
#include "lrt_util.h" /* little-endian fields */

#define LRT_PROTO_VERSION 2u /* 2: INFO reports the weight store's mount state */
#define LRT_PROTO_SYNC0 0xA5u
#define LRT_PROTO_SYNC1 0x5Au
/* Largest payload any conforming peer sends. A device accepts at most this: what its frame
 * buffers hold (see lrt_proto_rx_init, LRT_APP_PAYLOAD_FOR and INFO.max_payload); the host
 * never sends more than the device reports. */
#define LRT_PROTO_MAX_PAYLOAD 16384u
#define LRT_PROTO_HEADER_SIZE 5u /* sync, sync, type, len lo, len hi */
#define LRT_PROTO_CRC_SIZE 4u
#define LRT_PROTO_OVERHEAD (LRT_PROTO_HEADER_SIZE + LRT_PROTO_CRC_SIZE)
/* Bytes a frame of `payload` bytes occupies on the wire / in a buffer. */
#define LRT_PROTO_FRAME_SIZE(payload) ((size_t)(payload) + LRT_PROTO_OVERHEAD)

/* Message types: requests < 0x80, reply = request | LRT_MSG_REPLY. */
enum {
    LRT_MSG_HELLO = 0x01,
    LRT_MSG_INFER = 0x02,
    LRT_MSG_TRAIN = 0x03,
    LRT_MSG_STATS = 0x04,
    LRT_MSG_READ = 0x05,
    LRT_MSG_BYE = 0x06,
    LRT_MSG_DRIFT = 0x07,
    LRT_MSG_WRITE = 0x08,  /* stage bytes of a new weight set (push) */
    LRT_MSG_COMMIT = 0x09, /* commit the staged weight set atomically */
    LRT_MSG_WEAR = 0x0A,   /* physical wear of the weight store */
    LRT_MSG_REPLY = 0x80,
    LRT_MSG_ERROR = 0xFF
};

/* Training scheme as reported in INFO.scheme. */
enum {
    LRT_PROTO_SCHEME_INFERENCE = 0,
    LRT_PROTO_SCHEME_BIAS = 1,
    LRT_PROTO_SCHEME_SGD = 2,
    LRT_PROTO_SCHEME_LRT = 3,
    LRT_PROTO_SCHEME_SGD_BATCH = 4
};

/* INFO.flags */
#define LRT_PROTO_FLAG_MAX_NORM 0x01u /* per-tensor gradient max-norm is on */

/* INFO.store: the weight store's state at boot (bits 0-4, 6: lrt_nvm_mount_info.flags) */
#define LRT_PROTO_STORE_EMPTY 0x01u      /* was blank: the built-in set was committed */
#define LRT_PROTO_STORE_FALLBACK 0x02u   /* a newer (or undatable) set failed verification */
#define LRT_PROTO_STORE_DEGRADED 0x04u   /* no set verified: running on a CRC-failing one */
#define LRT_PROTO_STORE_VERSION 0x08u    /* a slot of another format version was seen */
#define LRT_PROTO_STORE_FOREIGN 0x10u    /* a slot of another model/geometry was seen */
#define LRT_PROTO_STORE_FORMATTED 0x20u  /* formatted at boot on request, built-in set committed */
#define LRT_PROTO_STORE_WEAR_STALE 0x40u /* its wear table failed: older counts */
#define LRT_PROTO_STORE_NONE 0x80u       /* no NVM store: weights in the firmware image */

/* DRIFT.kind */
enum { LRT_PROTO_DRIFT_ANALOG = 1, LRT_PROTO_DRIFT_DIGITAL = 2 };

/* Fixed payload sizes (bytes) of the model-independent messages. */
#define LRT_PROTO_INFO_SIZE 26u
#define LRT_PROTO_READ_REQ_SIZE 6u
#define LRT_PROTO_DRIFT_REQ_SIZE 9u
#define LRT_PROTO_WRITE_HEAD_SIZE 4u   /* u32 offset, then the bytes */
#define LRT_PROTO_COMMIT_REPLY_SIZE 4u /* u32 generation of the committed set */
#define LRT_PROTO_ERROR_SIZE 2u
#define LRT_PROTO_STATS_HEAD_SIZE 8u   /* samples, flushes */
#define LRT_PROTO_STATS_LAYER_SIZE 12u /* max writes, total writes, paper max writes */
#define LRT_PROTO_WEAR_HEAD_SIZE 12u   /* technology, blob max, metadata max */
#define LRT_PROTO_WEAR_LAYER_SIZE 4u   /* max programs per cell */

typedef enum {
    LRT_PROTO_EV_NONE = 0,  /* need more input */
    LRT_PROTO_EV_FRAME = 1, /* a frame with a good CRC: type, len, payload */
    LRT_PROTO_EV_ERROR = 2  /* start of a bad region: err, type (0 if no header was read) */
} lrt_proto_ev_kind;

typedef struct {
    uint8_t kind; /* lrt_proto_ev_kind */
    uint8_t type;
    int8_t err; /* LRT_ERR_FRAME (bad sync), LRT_ERR_SIZE (length over the receiver's
                 * limit), LRT_ERR_CRC, LRT_ERR_EOF (frame cut by end of input) */
    uint16_t len;
    const uint8_t *payload; /* valid until the next lrt_proto_rx_feed() */
} lrt_proto_event;

typedef struct {
    uint8_t *buf;         /* raw bytes of the candidate frame (from its sync), then the
                           * replay queue [pend_off, pend_end) */
    uint16_t max_payload; /* longest accepted payload (buffer size - overhead) */
    uint16_t fill;        /* bytes of the candidate in buf */
    uint16_t need;        /* full size of the candidate once its length is known */
    uint16_t pend_off;
    uint16_t pend_end;
    uint8_t state;
    uint8_t synced; /* 0 inside a bad region: further errors are not reported */
    uint8_t eof;
} lrt_proto_rx;

/* Buffer size for a receiver accepting payloads up to max_payload bytes. */
static inline size_t lrt_proto_rx_buffer_size(size_t max_payload)
{
    return LRT_PROTO_FRAME_SIZE(max_payload);
}

/* buf must hold at least lrt_proto_rx_buffer_size(1) bytes; the accepted payload length is
 * buf_size - LRT_PROTO_OVERHEAD, capped at LRT_PROTO_MAX_PAYLOAD. */
int lrt_proto_rx_init(lrt_proto_rx *rx, uint8_t *buf, size_t buf_size);

/* Consume input until one event happens or `data` is used up; returns the number of bytes of
 * `data` consumed (data may be NULL if len is 0). Bytes queued for re-scanning are processed
 * before new ones, so after an event call again, with the rest of the data or with len 0,
 * until ev->kind is LRT_PROTO_EV_NONE. */
size_t lrt_proto_rx_feed(lrt_proto_rx *rx, const uint8_t *data, size_t len, lrt_proto_event *ev);

/* Declare end of input: later feeds treat an incomplete frame as cut (LRT_ERR_EOF) and
 * re-scan its bytes, so frames it swallowed are still delivered. */
void lrt_proto_rx_end(lrt_proto_rx *rx);

/* 1 when no partial frame and no queued bytes are held. */
int lrt_proto_rx_idle(const lrt_proto_rx *rx);

/* Build a frame in out (out_size >= LRT_PROTO_FRAME_SIZE(len)). payload may already sit at
 * out + LRT_PROTO_HEADER_SIZE (then nothing is copied), or be NULL when len is 0.
 * Returns the frame size, or a negative lrt_err. */
int lrt_proto_encode(uint8_t type, const uint8_t *payload, size_t len, uint8_t *out,
                     size_t out_size);

#endif /* LRT_PROTO_H */
