/* lrt_proto.c - frame receiver with in-place re-scan, and frame encoder. */
#include "lrt_proto.h"

#include <string.h>

#include "lrt_crc32.h"

enum {
    RX_HUNT = 0, /* looking for SYNC0 */
    RX_SYNC1,    /* SYNC0 seen (buf[0]) */
    RX_HEADER,   /* sync seen, reading type and length */
    RX_BODY,     /* reading payload and CRC up to `need` bytes */
    RX_DONE      /* a frame was delivered; its payload stays valid until the next feed */
};

int lrt_proto_rx_init(lrt_proto_rx *rx, uint8_t *buf, size_t buf_size)
{
    size_t max_payload;

    if (rx == NULL || buf == NULL || buf_size < lrt_proto_rx_buffer_size(1))
        return LRT_ERR_ARG;
    max_payload = buf_size - LRT_PROTO_OVERHEAD;
    if (max_payload > LRT_PROTO_MAX_PAYLOAD)
        max_payload = LRT_PROTO_MAX_PAYLOAD;
    memset(rx, 0, sizeof(*rx));
    rx->buf = buf;
    rx->max_payload = (uint16_t)max_payload;
    rx->state = RX_HUNT;
    rx->synced = 1;
    return LRT_OK;
}

void lrt_proto_rx_end(lrt_proto_rx *rx)
{
    rx->eof = 1;
}

int lrt_proto_rx_idle(const lrt_proto_rx *rx)
{
    return (rx->state == RX_HUNT || rx->state == RX_DONE) && rx->pend_off == rx->pend_end;
}

/* Report the start of a bad region only: inside one, everything up to the next good frame
 * is the same error from the host's point of view. */
static int rx_report(lrt_proto_rx *rx, int err, uint8_t type, lrt_proto_event *ev)
{
    if (!rx->synced)
        return 0;
    rx->synced = 0;
    ev->kind = LRT_PROTO_EV_ERROR;
    ev->err = (int8_t)err;
    ev->type = type;
    ev->len = 0;
    ev->payload = NULL;
    return 1;
}

/* Drop the candidate frame but queue its bytes after the sync for re-scanning. The queue is
 * kept contiguous in buf just before the bytes already queued; the candidate always starts
 * at buf[0] and never reaches the queue (fill <= pend_off), so memmove suffices. */
static int rx_reject(lrt_proto_rx *rx, int err, lrt_proto_event *ev)
{
    uint8_t type = rx->fill > 2 ? rx->buf[2] : 0;
    uint16_t keep = (uint16_t)(rx->fill - 2);
    int reported = rx_report(rx, err, type, ev);

    if (rx->pend_off == rx->pend_end) {
        rx->pend_off = rx->fill;
        rx->pend_end = rx->fill;
    }
    rx->pend_off = (uint16_t)(rx->pend_off - keep);
    if (keep > 0 && rx->pend_off != 2)
        memmove(rx->buf + rx->pend_off, rx->buf + 2, keep);
    rx->fill = 0;
    rx->need = 0;
    rx->state = RX_HUNT;
    return reported;
}

static int rx_check_frame(lrt_proto_rx *rx, lrt_proto_event *ev)
{
    uint16_t len = (uint16_t)(rx->need - LRT_PROTO_OVERHEAD);
    const uint8_t *crc_at = rx->buf + LRT_PROTO_HEADER_SIZE + len;
    uint32_t crc = lrt_crc32_update(0, rx->buf + 2, (size_t)3 + len);

    if (crc != lrt_get_le32(crc_at))
        return rx_reject(rx, LRT_ERR_CRC, ev);
    rx->synced = 1;
    rx->state = RX_DONE;
    ev->kind = LRT_PROTO_EV_FRAME;
    ev->err = LRT_OK;
    ev->type = rx->buf[2];
    ev->len = len;
    ev->payload = rx->buf + LRT_PROTO_HEADER_SIZE;
    return 1;
}

/* One byte through the state machine; 1 if it produced an event. */
static int rx_step(lrt_proto_rx *rx, uint8_t b, lrt_proto_event *ev)
{
    switch (rx->state) {
    case RX_HUNT:
        if (b == LRT_PROTO_SYNC0) {
            rx->buf[0] = b;
            rx->fill = 1;
            rx->state = RX_SYNC1;
            return 0;
        }
        return rx_report(rx, LRT_ERR_FRAME, 0, ev);
    case RX_SYNC1:
        if (b == LRT_PROTO_SYNC1) {
            rx->buf[1] = b;
            rx->fill = 2;
            rx->state = RX_HEADER;
            return 0;
        }
        /* The lone SYNC0 was noise; this byte may itself open the next frame. */
        if (b != LRT_PROTO_SYNC0) {
            rx->fill = 0;
            rx->state = RX_HUNT;
        }
        return rx_report(rx, LRT_ERR_FRAME, 0, ev);
    case RX_HEADER:
        rx->buf[rx->fill++] = b;
        if (rx->fill == LRT_PROTO_HEADER_SIZE) {
            uint16_t len = lrt_get_le16(rx->buf + 3);
            if (len > rx->max_payload)
                return rx_reject(rx, LRT_ERR_SIZE, ev);
            rx->need = (uint16_t)(LRT_PROTO_OVERHEAD + len);
            rx->state = RX_BODY;
        }
        return 0;
    case RX_BODY:
        rx->buf[rx->fill++] = b;
        if (rx->fill == rx->need)
            return rx_check_frame(rx, ev);
        return 0;
    default: return 0;
    }
}

size_t lrt_proto_rx_feed(lrt_proto_rx *rx, const uint8_t *data, size_t len, lrt_proto_event *ev)
{
    size_t used = 0;

    ev->kind = LRT_PROTO_EV_NONE;
    ev->type = 0;
    ev->err = LRT_OK;
    ev->len = 0;
    ev->payload = NULL;
    if (rx->state == RX_DONE) {
        rx->fill = 0;
        rx->state = RX_HUNT;
    }
    for (;;) {
        uint8_t b;
        if (rx->pend_off != rx->pend_end) {
            b = rx->buf[rx->pend_off++];
        } else if (used < len) {
            b = data[used++];
        } else if (rx->eof && rx->state != RX_HUNT) {
            if (rx->state == RX_SYNC1) {
                rx->fill = 0;
                rx->state = RX_HUNT;
                if (rx_report(rx, LRT_ERR_EOF, 0, ev))
                    return used;
                continue;
            }
            if (rx_reject(rx, LRT_ERR_EOF, ev))
                return used;
            continue;
        } else {
            return used;
        }
        if (rx_step(rx, b, ev))
            return used;
    }
}

int lrt_proto_encode(uint8_t type, const uint8_t *payload, size_t len, uint8_t *out,
                     size_t out_size)
{
    uint32_t crc;

    if (out == NULL || (payload == NULL && len > 0))
        return LRT_ERR_ARG;
    if (len > LRT_PROTO_MAX_PAYLOAD || out_size < LRT_PROTO_FRAME_SIZE(len))
        return LRT_ERR_SIZE;
    if (len > 0 && payload != out + LRT_PROTO_HEADER_SIZE)
        memmove(out + LRT_PROTO_HEADER_SIZE, payload, len);
    out[0] = LRT_PROTO_SYNC0;
    out[1] = LRT_PROTO_SYNC1;
    out[2] = type;
    lrt_put_le16(out + 3, (uint16_t)len);
    crc = lrt_crc32_update(0, out + 2, 3 + len);
    lrt_put_le32(out + LRT_PROTO_HEADER_SIZE + len, crc);
    return (int)LRT_PROTO_FRAME_SIZE(len);
}
