/* The one error convention of sandboxfs (docs/error-handling.md).
 *
 * A fallible function returns 0 (or a non-negative result) on success and a
 * negative errno on failure, and fills the caller's struct sbx_err with a
 * one-line human reason.  Callers add context with sbx_err_wrap() on the way
 * up; whoever finally answers the user logs err.msg and returns -err.code to
 * the kernel.  cleanup_* attributes release fds, memory, cJSON trees and
 * child processes on every return path; steal_pointer()/steal_fd() move
 * ownership out of such a variable explicitly. */
#ifndef SBX_ERR_H
#define SBX_ERR_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#define SBX_ERR_MSG_MAX 512

struct sbx_err {
	int code;		   /* positive errno, 0 = no error */
	char msg[SBX_ERR_MSG_MAX]; /* one line, no trailing newline */
};

/* Sets err (if non-NULL) and returns -code, so `return sbx_err_set(...)` works. */
int sbx_err_set(struct sbx_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prefixes "context: " to err->msg; keeps err->code; returns -err->code. */
int sbx_err_wrap(struct sbx_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbx_err_clear(struct sbx_err *err);

static inline void *steal_pointer_impl(void *pp)
{
	void **p = pp;
	void *v = *p;
	*p = NULL;
	return v;
}
#define steal_pointer(pp) ((__typeof__(*(pp)))steal_pointer_impl(pp))

static inline int steal_fd(int *fd)
{
	int v = *fd;
	*fd = -1;
	return v;
}

static inline void cleanup_freep(void *p)
{
	free(*(void **)p);
}
static inline void cleanup_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}
/* Kills (SIGKILL) and reaps a child that was not handed on. */
void cleanup_pidp(pid_t *pid);

#define cleanup_free __attribute__((cleanup(cleanup_freep)))
#define cleanup_close __attribute__((cleanup(cleanup_closep)))
#define cleanup_pid __attribute__((cleanup(cleanup_pidp)))
/* cleanup_cjson lives in backend/json.h so that this header needs no cJSON. */

#define SBX_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
