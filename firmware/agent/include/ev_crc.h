/* ev_crc.h - the protocol's two CRCs (docs/serial-protocol.md section 2.2), table-free. */
#ifndef EV_CRC_H
#define EV_CRC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CRC-16/IBM-3740: poly 0x1021, init 0xFFFF, no reflection; check("123456789") = 0x29B1. */
uint16_t ev_crc16(const uint8_t *p, size_t n);
/* CRC-32/ISO-HDLC (zlib): reflected poly 0xEDB88320; check("123456789") = 0xCBF43926.
 * Incremental: crc = ev_crc32_update(EV_CRC32_INIT, ...) ...; value = crc ^ EV_CRC32_XOROUT. */
uint32_t ev_crc32_update(uint32_t crc, const uint8_t *p, size_t n);
uint32_t ev_crc32(const uint8_t *p, size_t n);

#ifdef __cplusplus
}
#endif

#endif
