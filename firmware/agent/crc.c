/* The protocol's CRCs. A 16-entry (nibble) table for CRC-32: ~4x faster than bitwise, 64 bytes of flash. */
#include "ev_crc.h"

#include "edgevit_protocol.h"

uint16_t ev_crc16(const uint8_t *p, size_t n) {
    uint16_t crc = EV_CRC16_INIT;
    while (n--) {
        crc ^= (uint16_t)((uint16_t)(*p++) << 8);
        for (int i = 0; i < 8; i++) crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ EV_CRC16_POLY) : (uint16_t)(crc << 1);
    }
    return (uint16_t)(crc ^ EV_CRC16_XOROUT);
}

/* crc32 of a single nibble for the reflected polynomial */
static const uint32_t crc32_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t ev_crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    while (n--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ crc32_nibble[crc & 15u];
        crc = (crc >> 4) ^ crc32_nibble[crc & 15u];
    }
    return crc;
}

uint32_t ev_crc32(const uint8_t *p, size_t n) { return ev_crc32_update(EV_CRC32_INIT, p, n) ^ EV_CRC32_XOROUT; }
