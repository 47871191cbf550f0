/* SHA-256 (FIPS 180-4), for the command digests of the audit log. */
#ifndef SBX_SHA256_H
#define SBX_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct sha256 {
	uint32_t h[8];
	uint64_t len;
	unsigned char buf[64];
	size_t n;
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t len);
/* Writes 64 lower-case hex digits and a NUL to hex. */
void sha256_hex(struct sha256 *c, char hex[65]);

#endif
