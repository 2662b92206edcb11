/* ev_sha256.h - SHA-256 (FIPS 180-4), streaming, no allocation. */
#ifndef EV_SHA256_H
#define EV_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint32_t state[8];
    uint64_t length;        /* bytes hashed so far */
    uint8_t block[64];
    uint32_t used;          /* bytes in block */
} ev_sha256_ctx;

void ev_sha256_init(ev_sha256_ctx *ctx);
void ev_sha256_update(ev_sha256_ctx *ctx, const uint8_t *p, size_t n);
void ev_sha256_final(ev_sha256_ctx *ctx, uint8_t digest[32]);
void ev_sha256(const uint8_t *p, size_t n, uint8_t digest[32]);

#ifdef __cplusplus
}
#endif

#endif
