/* exec: everything written between open and close is one command; the run
 * starts at flush, or at once when the same open reads its number back. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "fs_internal.h"
#include "log.h"
#include "stream.h"

#define EXEC_WRITE_MAX (256u << 20)

static int exec_open(struct handle *h, int flags)
{
	if ((flags & O_ACCMODE) == O_RDONLY)
		return 0;
	struct sandbox_view v;
	sandbox_view(h->sbx, &v);
	/* Known now, so said now: bash ignores the errors of close(). */
	if (v.engine_down) {
		sandbox_engine_recheck(h->sbx);
		return refusal(ECONNREFUSED, "open exec: the engine of %s does not answer",
			       sandbox_name(h->sbx));
	}
	if (!v.running && !v.idle_stopped)
		return refusal(EHOSTDOWN, "open exec: the container of %s is not running",
			       sandbox_name(h->sbx));
	if (v.paused)
		return refusal(EBUSY, "open exec: the container of %s is paused",
			       sandbox_name(h->sbx));
	return 0;
}

/* Starts the handle's run once, whichever of flush and read comes first.
 * exec_lock makes the other wait until h->run is set: a flush from a
 * forked child's close can race the parent's read of the number.
 * Returns 1 when this handle has a run to await, 0 when it has none. */
static int start_exec(struct handle *h, struct sbx_err *err)
{
	int rc = 0;
	sbx_lock(&h->exec_lock);
	if (h->poison_errno) {
		/* Part of the command is missing: running the rest could do
		 * anything the whole would not have. */
		rc = sbx_err_set(err, h->poison_errno,
				 "sandbox %s: exec: an earlier write failed (%s), nothing was run",
				 sandbox_name(h->sbx), strerror(h->poison_errno));
		/* Reported once: a later read or close of this open is quiet. */
		h->poison_errno = 0;
		h->exec_started = true;
		cmd_spool_free(&h->cmd);
	} else if (!h->exec_started && h->cmd.len > 0) {
		struct run *r = NULL;
		h->exec_started = true;
		rc = run_start(h->sbx, &h->cmd, &r, err);
		h->run = r;
		cmd_spool_free(&h->cmd);
		if (r)
			rc = 0; /* a numbered run reports its own failure when awaited */
	}
	if (rc == 0)
		rc = h->run ? 1 : 0;
	sbx_unlock(&h->exec_lock);
	return rc;
}

static void exec_read(fuse_req_t req, struct handle *h, size_t size, off_t off)
{
	struct sbx_err err = { 0 };
	int rc = start_exec(h, &err);
	if (rc < 0) {
		log_error("%s", err.msg);
		fuse_reply_err(req, -rc);
	} else if (rc == 1 && !h->number_read) {
		stream_park_or_answer(req, h, W_START_NUMBER, 0, 0);
	} else {
		fuse_reply_buf(req, NULL, 0);
	}
}

/* Any failed write poisons the handle: its close runs nothing and fails
 * with the same errno. */
static int exec_write_locked(struct handle *h, const char *buf, size_t size)
	SBX_REQUIRES(h->exec_lock)
{
	struct sbx_err err = { 0 };
	if (h->exec_started)
		return refusal(EBUSY, "write exec: this open already started run %u",
			       h->run ? run_number(h->run) : 0);
	if (h->poison_errno)
		return refusal(h->poison_errno, "write exec: an earlier write on this open failed");
	int rc;
	if (h->cmd.len + size > EXEC_WRITE_MAX)
		rc = sbx_err_set(&err, EFBIG, "write exec: more than %u bytes", EXEC_WRITE_MAX);
	else
		rc = cmd_spool_append(&h->cmd, buf, size, &err);
	if (rc < 0) {
		h->poison_errno = -rc;
		cmd_spool_free(&h->cmd);
		log_error("sandbox %s: %s; nothing will run", sandbox_name(h->sbx), err.msg);
		return -rc;
	}
	return 0;
}

static int exec_write(struct handle *h, const char *buf, size_t size)
{
	/* The command is also read by a start racing on another thread. */
	sbx_lock(&h->exec_lock);
	int e = exec_write_locked(h, buf, size);
	sbx_unlock(&h->exec_lock);
	return e;
}

static void exec_flush(fuse_req_t req, struct handle *h)
{
	struct sbx_err err = { 0 };
	sbx_lock(&h->exec_lock);
	bool mine = (!h->exec_started && h->cmd.len > 0) || h->poison_errno;
	sbx_unlock(&h->exec_lock);
	int rc = mine ? start_exec(h, &err) : 0;
	if (rc < 0) {
		log_error("%s", err.msg);
		fuse_reply_err(req, -rc);
	} else if (rc == 1) {
		stream_park_or_answer(req, h, W_START, 0, 0);
	} else {
		fuse_reply_err(req, 0);
	}
}

static void exec_release(struct handle *h)
{
	cmd_spool_free(&h->cmd);
}

const struct file_ops exec_file_ops = {
	.open = exec_open,
	.read = exec_read,
	.write = exec_write,
	.flush = exec_flush,
	.release = exec_release,
};
