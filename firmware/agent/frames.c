/* Layer 1: frames. The decoder mirrors edgevit/links/serial/frames.py's FrameDecoder step for step. */
#include "ev_frames.h"

#include <string.h>

#include "edgevit_protocol.h"
#include "ev_crc.h"

static void drop(ev_decoder *d, uint32_t n) {
    memmove(d->buf, d->buf + n, d->len - n);
    d->len -= n;
    d->need = 0;
}

static void process(ev_decoder *d) {
    for (;;) {
        uint32_t i = 0;
        while (i + 1 < d->len && !(d->buf[i] == EV_SOF0 && d->buf[i + 1] == EV_SOF1)) i++;
        if (i + 1 >= d->len) {     /* no marker; a trailing A5 may be the first half of one */
            const uint32_t keep = (d->len && d->buf[d->len - 1] == EV_SOF0) ? 1u : 0u;
            d->garbage += d->len - keep;
            if (keep) d->buf[0] = EV_SOF0;
            d->len = keep;
            d->need = 0;
            return;
        }
        if (i) {
            d->garbage += i;
            drop(d, i);
        }
        if (d->len < EV_HEADER_SIZE) {
            d->need = EV_HEADER_SIZE;
            return;
        }
        if (ev_crc16(d->buf, EV_HEADER_SIZE - 2) != ev_rd16(d->buf + EV_HEADER_SIZE - 2)) {
            d->garbage += 2;       /* not a header: garbage that happened to contain the marker */
            drop(d, 2);
            continue;
        }
        const uint32_t n = ev_rd16(d->buf + 6);
        if (n > d->max_payload) {
            d->damaged++;
            if (d->on_damaged) d->on_damaged(d->buf[3], ev_rd16(d->buf + 4), EV_NAK_TOO_LONG);
            d->garbage += 2;
            drop(d, 2);
            continue;
        }
        const uint32_t end = EV_HEADER_SIZE + n;
        if (d->len < end + EV_TRAILER_SIZE) {
            d->need = end + EV_TRAILER_SIZE;
            return;
        }
        if (ev_crc32(d->buf, end) != ev_rd32(d->buf + end)) {
            d->damaged++;
            if (d->on_damaged) d->on_damaged(d->buf[3], ev_rd16(d->buf + 4), EV_NAK_BAD_CRC);
            d->garbage += 2;       /* rescan: a shortened frame may have swallowed the start of the next */
            drop(d, 2);
            continue;
        }
        ev_frame f;
        f.version = d->buf[2];
        f.type = d->buf[3];
        f.seq = ev_rd16(d->buf + 4);
        f.len = (uint16_t)n;
        f.payload = d->buf + EV_HEADER_SIZE;
        if (d->on_frame) d->on_frame(&f);
        drop(d, end + EV_TRAILER_SIZE);
    }
}

void ev_decoder_feed(ev_decoder *d, uint8_t byte) {
    if (d->len == d->max_payload + EV_OVERHEAD) drop(d, 1);   /* cannot happen (need <= capacity); stay safe */
    d->buf[d->len++] = byte;
    if (d->len < d->need) return;
    process(d);
}

size_t ev_frame_finish(uint8_t *out, uint8_t version, uint8_t type, uint16_t seq, uint16_t len) {
    out[0] = EV_SOF0;
    out[1] = EV_SOF1;
    out[2] = version;
    out[3] = type;
    ev_wr16(out + 4, seq);
    ev_wr16(out + 6, len);
    ev_wr16(out + 8, ev_crc16(out, 8));
    ev_wr32(out + EV_HEADER_SIZE + len, ev_crc32(out, EV_HEADER_SIZE + (size_t)len));
    return (size_t)len + EV_OVERHEAD;
}
