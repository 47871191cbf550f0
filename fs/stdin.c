/* stdin and runs/N/stdin: each write goes to that run's stdin, in order
 * (docs/interface.md).  The run must have been started after `ctl stdin
 * open`; `ctl eof` ends it. */
#include "fs_internal.h"
#include "log.h"

static int stdin_write(struct handle *h, const char *buf, size_t size)
{
	struct sbx_err err = { 0 };
	if (!h->run) {
		log_error("sandbox %s: stdin: no run", sandbox_name(h->sbx));
		return ESRCH;
	}
	int rc = run_stdin_write(h->run, buf, size, &err);
	if (rc < 0)
		log_error("sandbox %s: %s", sandbox_name(h->sbx), err.msg);
	return rc < 0 ? -rc : 0;
}

const struct file_ops stdin_file_ops = { .write = stdin_write };
