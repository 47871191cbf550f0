/* The plain kinds of file: generated content fixed at open (lxcfs style:
 * status, info, the cmd of a run, the files of .sandboxfs), settings applied at close
 * (env, auth, workdir, timeout), and ctl acting at once. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs_internal.h"
#include "log.h"

/* ---- generated content ---- */

static int status_open(struct handle *h, int flags)
{
	char line[64];
	if (h->kind == K_STATUS)
		sandbox_status_line(h->sbx, h->run, line, sizeof(line));
	else
		run_status_line(h->run, line, sizeof(line));
	h->data = strdup(line);
	h->len = h->data ? strlen(h->data) : 0;
	return h->data ? 0 : ENOMEM;
}

static int info_open(struct handle *h, int flags)
{
	h->data = sandbox_info_json(h->sbx);
	h->len = h->data ? strlen(h->data) : 0;
	return h->data ? 0 : ENOMEM;
}

static int run_text_open(struct handle *h, int flags)
{
	const char *name = h->kind == K_RUN_STARTED ? "started" : "ended";
	h->data = run_file_text(h->run, name, &h->len);
	return h->data ? 0 : ENOMEM;
}

/* A command may be 256 MiB: served from its file, never copied into
 * memory per open. */
static int run_cmd_open(struct handle *h, int flags)
{
	h->file_fd = run_file_open(h->run, "cmd");
	return 0; /* a missing file reads as empty */
}

static void run_cmd_read(fuse_req_t req, struct handle *h, size_t size, off_t off)
{
	struct stat st;
	if (h->file_fd < 0 || fstat(h->file_fd, &st) < 0 || off >= st.st_size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if ((off_t)size > st.st_size - off)
		size = (size_t)(st.st_size - off);
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = h->file_fd;
	buf.buf[0].pos = off;
	int rc = fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
	if (rc < 0 && rc != -ENOENT)
		log_warn("replying to a read of cmd: %s", strerror(-rc));
}

static int meta_open(struct handle *h, int flags)
{
	const struct model_config *cfg = model_config();
	switch (h->ino) {
	case INO_META_VERSION:
		if (asprintf(&h->data, "sandboxfs %s\n", SANDBOXFS_VERSION) < 0)
			h->data = NULL;
		break;
	case INO_META_BACKEND:
		if (asprintf(&h->data, "cli: %s\nengine: %s\ninstance: %s\nstate: %s\nimage: %s\n",
			     cfg->engine.cli,
			     opts.engine_version ? opts.engine_version : "unreachable",
			     cfg->engine.instance, cfg->state_dir, cfg->image) < 0)
			h->data = NULL;
		break;
	case INO_META_POOL:
		h->data = model_pool_text();
		break;
	case INO_META_LOG:
		h->data = sbx_log_snapshot(&h->len);
		return h->data ? 0 : ENOMEM;
	}
	h->len = h->data ? strlen(h->data) : 0;
	return h->data ? 0 : ENOMEM;
}

const struct file_ops status_file_ops = { .open = status_open };
const struct file_ops info_file_ops = { .open = info_open };
const struct file_ops run_text_file_ops = { .open = run_text_open };
const struct file_ops run_cmd_file_ops = { .open = run_cmd_open, .read = run_cmd_read };
const struct file_ops meta_file_ops = { .open = meta_open };

/* ---- settings: env, auth, workdir, timeout ---- */

static enum setting kind_setting(enum kind k)
{
	switch (k) {
	case K_ENV:
		return SETTING_ENV;
	case K_AUTH:
		return SETTING_AUTH;
	case K_WORKDIR:
		return SETTING_WORKDIR;
	case K_TTL:
		return SETTING_TTL;
	default:
		return SETTING_TIMEOUT;
	}
}

#define SETTING_WRITE_MAX (256u << 20)

static int setting_open(struct handle *h, int flags)
{
	if ((flags & O_ACCMODE) == O_WRONLY)
		return 0;
	h->data = sandbox_setting_text(h->sbx, kind_setting(h->kind), &h->len);
	return h->data ? 0 : ENOMEM;
}

/* A refused write puts back what this open's O_TRUNC cleared. */
static void poison(struct handle *h, const struct sbx_err *err)
{
	h->w.poisoned = true;
	h->cleared = false;
	if (h->undo_valid) {
		setting_restore(h->sbx, &h->undo);
		h->undo_valid = false;
	}
	if (err)
		log_error("sandbox %s: %s", sandbox_name(h->sbx), err->msg);
}

/* Checks the complete lines written so far, so that a bad line fails the
 * write(2) that completes it rather than only the close.  Only the new
 * lines are parsed: a long write is not quadratic. */
static int setting_write(struct handle *h, const char *buf, size_t size)
{
	struct sbx_err err = { 0 };
	const char *name = kind_info(h->kind)->name;
	if (h->w.poisoned)
		return refusal(EINVAL, "write %s: an earlier write on this open was refused", name);
	size_t before = h->w.len;
	int e = write_buf_append(&h->w, buf, size, SETTING_WRITE_MAX);
	if (e) {
		poison(h, NULL);
		return refusal(e, "write %s: %s", name, e == EFBIG ? "too large" : strerror(e));
	}
	/* Re-check from the start of the line the new bytes complete. */
	const char *start = before ? memrchr(h->w.data, '\n', before) : NULL;
	size_t from = start ? (size_t)(start - h->w.data) + 1 : 0;
	enum setting which = kind_setting(h->kind);
	bool json = false;
	if (which == SETTING_AUTH || which == SETTING_ENV) {
		size_t i = 0;
		while (i < h->w.len && strchr(" \t\r\n", h->w.data[i]))
			i++;
		json = i < h->w.len && h->w.data[i] == '{';
	}
	/* timeout and workdir are one value: checked whole. */
	if (which == SETTING_TIMEOUT || which == SETTING_TTL || which == SETTING_WORKDIR)
		from = 0;
	if (!json && setting_check_partial(which, h->w.data + from, h->w.len - from, &err) < 0) {
		poison(h, &err);
		return err.code;
	}
	return 0;
}

static void setting_flush(fuse_req_t req, struct handle *h)
{
	struct sbx_err err = { 0 };
	if (!h->writable) {
		fuse_reply_err(req, 0);
		return;
	}
	if (h->w.poisoned) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (h->w.len == 0 && !h->trunc) {
		fuse_reply_err(req, 0);
		return;
	}
	enum setting which = kind_setting(h->kind);
	/* A shell closes a dup of the fd before it writes: an empty flush of
	 * an O_TRUNC open clears now, and keeps what it cleared in case a
	 * later write on this open turns out invalid. */
	if (h->w.len == 0 && !h->undo_valid && setting_save(h->sbx, which, &h->undo) == 0)
		h->undo_valid = true;
	/* The clear is logged with what follows it: one line per `>`. */
	bool clear = h->w.len == 0 && h->trunc;
	int rc = clear ? sandbox_setting_clear(h->sbx, which, &err)
		       : sandbox_setting_apply(h->sbx, which, h->w.data ? h->w.data : "", h->w.len,
					       h->trunc || h->cleared, &err);
	h->cleared = rc == 0 && clear;
	write_buf_clear(&h->w);
	h->trunc = false;
	if (rc < 0) {
		poison(h, &err);
		fuse_reply_err(req, -rc);
		return;
	}
	fuse_reply_err(req, 0);
}

static void setting_release(struct handle *h)
{
	if (h->cleared && h->kind == K_AUTH)
		log_info("sandbox %s: auth cleared", sandbox_name(h->sbx));
	if (h->undo_valid)
		setting_undo_free(&h->undo);
	h->undo_valid = false;
}

static int setting_truncate(struct sandbox *s, enum kind k, struct sbx_err *err)
{
	return sandbox_setting_apply(s, kind_setting(k), "", 0, true, err);
}

const struct file_ops setting_file_ops = {
	.open = setting_open,
	.write = setting_write,
	.flush = setting_flush,
	.release = setting_release,
	.truncate = setting_truncate,
};

/* ---- ctl: one action per write ---- */

static int ctl_write(struct handle *h, const char *buf, size_t size)
{
	struct sbx_err err = { 0 };
	int rc = sandbox_ctl(h->sbx, buf, size, &err);
	if (rc < 0)
		log_error("sandbox %s: %s", sandbox_name(h->sbx), err.msg);
	return rc < 0 ? -rc : 0;
}

const struct file_ops ctl_file_ops = { .write = ctl_write };
