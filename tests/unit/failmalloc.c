/* See failmalloc.h.  __real_* are the libc (or sanitizer) functions. */
#include "failmalloc.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_vasprintf(char **out, const char *fmt, va_list ap);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap);
int __wrap_asprintf(char **out, const char *fmt, ...);

static __thread unsigned long fail_at, calls;
static __thread bool fired, last_fired;

static bool fail_now(void)
{
	if (!fail_at || fired || ++calls != fail_at)
		return false;
	fired = true;
	errno = ENOMEM;
	return true;
}

void failmalloc_arm(unsigned long n)
{
	fail_at = n;
	calls = 0;
	fired = false;
}

bool failmalloc_disarm(void)
{
	bool f = fired;
	last_fired = f;
	fail_at = 0;
	fired = false;
	return f;
}

bool failmalloc_last_fired(void)
{
	return last_fired;
}

void *__wrap_malloc(size_t n)
{
	return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
	return fail_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
	return fail_now() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
	return fail_now() ? NULL : __real_strndup(s, n);
}

int __wrap_vasprintf(char **out, const char *fmt, va_list ap)
{
	if (fail_now()) {
		*out = NULL;
		return -1;
	}
	return __real_vasprintf(out, fmt, ap);
}

int __wrap_asprintf(char **out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = __wrap_vasprintf(out, fmt, ap);
	va_end(ap);
	return r;
}

static void *cjson_malloc(size_t n)
{
	return __wrap_malloc(n);
}

static void cjson_free(void *p)
{
	free(p);
}

void failmalloc_init(void)
{
	cJSON_Hooks hooks = { .malloc_fn = cjson_malloc, .free_fn = cjson_free };
	cJSON_InitHooks(&hooks);
}
