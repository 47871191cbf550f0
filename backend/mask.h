/* Masks credential values in a byte stream that arrives in pieces.
 *
 * Each occurrence of any secret is replaced by "***", including one split
 * across two pushes: the masker holds back at most (longest secret - 1)
 * bytes until it knows they do not start a secret, and releases them at
 * flush.  Secrets shorter than MASK_MIN_LEN bytes are not masked (masking
 * "1" would destroy output); docs/interface.md says so. */
#ifndef SBX_MASK_H
#define SBX_MASK_H

#include <stddef.h>

#define MASK_MIN_LEN 4
#define MASK_REPLACEMENT "***"

struct mask_secret {
	char *value;
	size_t len;
};

struct masker {
	struct mask_secret *secrets; /* owned copies */
	size_t nsecrets;
	size_t maxlen; /* longest secret */
	char *carry;   /* held-back bytes, capacity maxlen */
	size_t carry_len;
	/* Internal to mask.c: KMP failure tables (one per secret), the next
	 * occurrence of each secret, each secret's partial match at the tail,
	 * and a window of capacity 2 * maxlen for carry + new bytes. */
	size_t **fail;
	size_t *next;
	size_t *part;
	char *window;
};

/* The emit callback receives masked bytes in order; returns 0 or -errno,
 * which mask_push/mask_flush return at once (the stream is then broken:
 * only masker_free is safe).  With no secrets, push hands buf itself to
 * emit, without copying or holding anything back. */
typedef int (*mask_emit_fn)(void *ctx, const char *buf, size_t len);

/* values: n NUL-terminated strings; short and duplicate ones are ignored.
 * Returns 0 or -ENOMEM. */
int masker_init(struct masker *m, const char *const *values, size_t n);
/* The same for binary secrets (file contents may hold NUL bytes): n
 * (value, len) pairs, copied.  Returns 0 or -ENOMEM. */
int masker_init_bytes(struct masker *m, const struct mask_secret *secrets, size_t n);
void masker_free(struct masker *m);
int mask_push(struct masker *m, const char *buf, size_t len, mask_emit_fn emit, void *ctx);
int mask_flush(struct masker *m, mask_emit_fn emit, void *ctx);

#endif
