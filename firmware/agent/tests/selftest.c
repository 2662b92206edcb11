/* Host check of the agent's CRCs and SHA-256: reads stdin, prints "crc16 crc32 sha256" (hex). Also hashes the
 * input once byte by byte, to exercise the streaming path; both digests must agree (exit 1 otherwise). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ev_crc.h"
#include "ev_sha256.h"
#include "edgevit_runner.h"

static char buf[1 << 22];

void ev_hex(const uint8_t *digest, size_t n, char *out) {     /* agent.c's, without linking the agent */
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[digest[i] >> 4];
        out[2 * i + 1] = digits[digest[i] & 15];
    }
    out[2 * n] = 0;
}

int main(void) {
    const size_t n = fread(buf, 1, sizeof buf, stdin);
    uint8_t d1[32], d2[32];
    char hex[65];
    ev_sha256((const uint8_t *)buf, n, d1);
    ev_sha256_ctx ctx;
    ev_sha256_init(&ctx);
    for (size_t i = 0; i < n; i++) ev_sha256_update(&ctx, (const uint8_t *)buf + i, 1);
    ev_sha256_final(&ctx, d2);
    if (memcmp(d1, d2, 32)) return 1;
    ev_hex(d1, 32, hex);
    printf("%04x %08lx %s\n", ev_crc16((const uint8_t *)buf, n), (unsigned long)ev_crc32((const uint8_t *)buf, n), hex);
    return 0;
}
