/* Shared helpers of the libFuzzer targets. */
#ifndef SBX_FUZZ_COMMON_H
#define SBX_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define fuzz_assert(cond)                                                                          \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__,       \
				#cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* A failure must carry errno EINVAL and a one-line, non-empty reason. */
static inline void fuzz_check_err(int r, const struct sbx_err *e)
{
	fuzz_assert(r == -EINVAL);
	fuzz_assert(e->code == EINVAL);
	fuzz_assert(memchr(e->msg, '\0', sizeof(e->msg)) != NULL);
	fuzz_assert(e->msg[0] != '\0');
	fuzz_assert(strchr(e->msg, '\n') == NULL);
}

/* Fixed words of the parsers' messages: a "secret" that happens to be one
 * of them is not a leak. */
static const char fuzz_vocabulary[] =
	"line : expected KEY=VALUE invalid variable name ': must match [A-Za-z_][A-Za-z0-9_]* "
	"and be at most 255 bytes empty variable name the value of contains a NUL byte "
	"newline carriage return is not valid UTF-8 JSON strings must not contain \\u0000 "
	"\"env\" must be an object of strings \"files\" env: is not a string files entry "
	"path must be absolute or start with ~/ contains a .. component does not name a file "
	"contains a control character is longer than 4095 bytes the content is not a string "
	"invalid JSON at byte trailing data after JSON at byte JSON auth must be an object "
	"unknown key in JSON auth: only \"env\" and \"files\" are allowed out of memory";

/* Fails if value (>= 8 bytes) shows up in msg, unless the message could
 * have it from its fixed text or from a name the input also contains. */
static inline void fuzz_check_no_leak(const char *msg, const char *v, size_t vlen,
				      const char *names, size_t nlen)
{
	if (vlen < 8 || !memmem(msg, strlen(msg), v, vlen))
		return;
	if (memmem(fuzz_vocabulary, sizeof(fuzz_vocabulary) - 1, v, vlen))
		return;
	if (names && memmem(names, nlen, v, vlen))
		return;
	fprintf(stderr, "value leaked into message: %s\n", msg);
	abort();
}

#endif
