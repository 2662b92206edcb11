/* ev_frames.h - layer 1 of the protocol (docs/serial-protocol.md section 2): frames on a byte stream. */
#ifndef EV_FRAMES_H
#define EV_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint8_t version, type;
    uint16_t seq;
    uint16_t len;
    const uint8_t *payload;     /* valid only during the callback */
} ev_frame;

typedef struct ev_decoder {
    uint8_t *buf;               /* max_payload + EV_OVERHEAD bytes */
    uint32_t len, need, max_payload;
    uint32_t garbage, damaged;  /* bytes skipped looking for a frame; damaged frames seen */
    void (*on_frame)(const ev_frame *frame);
    void (*on_damaged)(uint8_t type, uint16_t seq, uint8_t reason);    /* reason: EV_NAK_* */
} ev_decoder;

/* Byte by byte, exactly as section 2.3: find the marker, check the header CRC, refuse a too-long length, wait
 * for the frame, check the CRC-32; after any failed check drop only the two marker bytes and rescan. */
void ev_decoder_feed(ev_decoder *d, uint8_t byte);

/* Finish a frame whose payload (len bytes) is already at out + EV_HEADER_SIZE; returns the frame's size. */
size_t ev_frame_finish(uint8_t *out, uint8_t version, uint8_t type, uint16_t seq, uint16_t len);

static inline uint16_t ev_rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t ev_rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void ev_wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void ev_wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

#ifdef __cplusplus
}
#endif

#endif
