/* An allocation-failure injector for the unit tests (test-only).
 *
 * The test executable is linked with -Wl,--wrap=malloc,... (tests/meson.build),
 * so every malloc, calloc, realloc, strdup, strndup, asprintf and vasprintf
 * call of the backend goes through failmalloc.c, and cJSON allocates
 * through it too (failmalloc_init sets its hooks).  Allocations made inside
 * libc itself (fopen, posix_spawn, realpath) are not seen.
 *
 * Arming is per thread: the model's I/O and task threads keep allocating
 * normally while the test thread's Nth allocation fails. */
#ifndef SBX_FAILMALLOC_H
#define SBX_FAILMALLOC_H

#include <stdbool.h>

void failmalloc_init(void);
/* The nth allocation of this thread from now on fails (once); 0 disarms. */
void failmalloc_arm(unsigned long n);
/* Disarms; returns whether the armed failure happened. */
bool failmalloc_disarm(void);
/* What the last failmalloc_disarm() returned. */
bool failmalloc_last_fired(void);

#endif
