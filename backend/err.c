#include "err.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

static void flatten(char *s)
{
	for (; *s; s++)
		if (*s == '\n' || *s == '\r')
			*s = ' ';
}

int sbx_err_set(struct sbx_err *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
		flatten(err->msg);
		err->code = code;
	}
	return -code;
}

int sbx_err_wrap(struct sbx_err *err, const char *fmt, ...)
{
	char prefix[SBX_ERR_MSG_MAX];
	char joined[2 * SBX_ERR_MSG_MAX + 4];
	va_list ap;

	if (!err)
		return -EIO;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	snprintf(joined, sizeof(joined), "%s: %s", prefix, err->msg);
	size_t n = strnlen(joined, sizeof(err->msg) - 1); /* truncation is fine here */
	memcpy(err->msg, joined, n);
	err->msg[n] = '\0';
	flatten(err->msg);
	if (!err->code)
		err->code = EIO;
	return -err->code;
}

void sbx_err_clear(struct sbx_err *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = '\0';
	}
}

void cleanup_pidp(pid_t *pid)
{
	if (*pid > 0) {
		int saved = errno;
		kill(*pid, SIGKILL);
		while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR)
			;
		errno = saved;
	}
}
