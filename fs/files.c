/* Opening, reading and writing the files of a sandbox: generated content
 * fixed at open (lxcfs style), settings applied at close, exec starting
 * runs, ctl acting at once. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs_internal.h"
#include "log.h"
#include "state.h"
#include "template.h"

/* ---- opening files ---- */

static char *meta_content(fuse_ino_t ino, size_t *len)
{
	char *text = NULL;
	const struct model_config *cfg = model_config();
	switch (ino) {
	case INO_META_VERSION:
		if (asprintf(&text, "sandboxfs %s\n", SANDBOXFS_VERSION) < 0)
			text = NULL;
		break;
	case INO_META_BACKEND:
		if (asprintf(&text, "cli: %s\nengine: %s\ninstance: %s\nstate: %s\nimage: %s\n",
			     cfg->engine.cli, opts.engine_version ? opts.engine_version : "unreachable",
			     cfg->engine.instance, cfg->state_dir, cfg->image) < 0)
			text = NULL;
		break;
	case INO_META_LOG:
		return sbx_log_snapshot(len);
	}
	if (text)
		*len = strlen(text);
	return text;
}

static char *kv_text(const struct kv_list *l, bool values, size_t *len)
{
	size_t cap = 1, n = 0;
	for (size_t i = 0; i < l->n; i++)
		cap += strlen(l->keys[i]) + (values ? strlen(l->values[i]) + 1 : 0) + 1;
	char *t = malloc(cap);
	if (!t)
		return NULL;
	for (size_t i = 0; i < l->n; i++)
		n += (size_t)(values ? sprintf(t + n, "%s=%s\n", l->keys[i], l->values[i]) :
				       sprintf(t + n, "%s\n", l->keys[i]));
	t[n] = '\0';
	*len = n;
	return t;
}

static char *run_file(struct run *r, const char *name, size_t *len)
{
	char path[4200];
	char *text = NULL;
	snprintf(path, sizeof(path), "%s/%s", r->dir, name);
	if (read_file(path, &text, len, 64u << 20) < 0) {
		text = strdup("");
		*len = 0;
	}
	return text;
}

/* Generated content, fixed at open. */
static char *snapshot(struct handle *h, size_t *len)
{
	char line[64];
	char *text = NULL;
	struct sandbox *s = h->sbx;

	*len = 0;
	switch (h->kind) {
	case K_STATUS:
	case K_RUN_STATUS:
		pthread_mutex_lock(&model_lock);
		if (h->kind == K_STATUS)
			sandbox_status_line(s, h->run, line, sizeof(line));
		else
			run_status_line(h->run, line, sizeof(line));
		pthread_mutex_unlock(&model_lock);
		text = strdup(line);
		break;
	case K_INFO:
		text = sandbox_info_json(s);
		break;
	case K_AUTH:
		pthread_mutex_lock(&model_lock);
		text = kv_text(&s->auth, false, len);
		if (text) {
			size_t extra = 0;
			for (size_t i = 0; i < s->nauth_files; i++)
				extra += strlen(s->auth_files[i]) + 1;
			char *t = realloc(text, *len + extra + 1);
			if (t) {
				text = t;
				for (size_t i = 0; i < s->nauth_files; i++)
					*len += (size_t)sprintf(text + *len, "%s\n", s->auth_files[i]);
			}
		}
		pthread_mutex_unlock(&model_lock);
		return text;
	case K_ENV:
		pthread_mutex_lock(&model_lock);
		text = kv_text(&s->env, true, len);
		pthread_mutex_unlock(&model_lock);
		return text;
	case K_WORKDIR:
		pthread_mutex_lock(&model_lock);
		if (asprintf(&text, "%s%s", s->workdir, s->workdir[0] ? "\n" : "") < 0)
			text = NULL;
		pthread_mutex_unlock(&model_lock);
		break;
	case K_TIMEOUT:
		pthread_mutex_lock(&model_lock);
		if (asprintf(&text, "%ld\n", s->timeout) < 0)
			text = NULL;
		pthread_mutex_unlock(&model_lock);
		break;
	case K_RUN_STARTED:
		return run_file(h->run, "started", len);
	case K_RUN_ENDED:
		return run_file(h->run, "ended", len);
	default:
		text = strdup("");
		break;
	}
	if (text)
		*len = strlen(text);
	return text;
}

void handle_free(struct handle *h)
{
	if (!h)
		return;
	stream_forget_handle(h);
	if (h->undo_valid)
		setting_undo_free(&h->undo);
	if (h->run && is_stream(h->kind))
		run_reader_put(h->run);
	if (h->run)
		run_put(h->run);
	if (h->sbx)
		sandbox_put(h->sbx);
	pthread_mutex_destroy(&h->exec_lock);
	free(h->data);
	if (h->file_fd >= 0)
		close(h->file_fd);
	free(h->tpl_name);
	if (h->wbuf)
		explicit_bzero(h->wbuf, h->wlen);
	free(h->wbuf);
	cmd_spool_free(&h->cmd);
	free(h);
}

bool kind_writable(enum kind k)
{
	return k == K_EXEC || k == K_AUTH || k == K_ENV || k == K_WORKDIR || k == K_TIMEOUT ||
	       k == K_CTL;
}

void sfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node n;
	int acc = fi->flags & O_ACCMODE;
	bool wants_write = acc != O_RDONLY, wants_read = acc != O_WRONLY;

	if (tpl_owns(ino) && ino != INO_TEMPLATES) {
		tpl_open(req, ino, fi);
		return;
	}
	if (ino == INO_TEMPLATES || node_resolve(ino, &n) < 0) {
		fuse_reply_err(req, ino == INO_TEMPLATES ? EISDIR : ENOENT);
		return;
	}
	if (n.ino == INO_ROOT || n.ino == INO_META || n.kind == K_DIR || n.kind == K_RUNS ||
	    n.kind == K_RUN_DIR) {
		node_release(&n);
		fuse_reply_err(req, EISDIR);
		return;
	}
	const char *fname = n.sbx ? kinds[n.kind].name : meta_names[n.ino];
	if (wants_write && (!n.sbx || !kind_writable(n.kind))) {
		node_release(&n);
		refuse(req, EACCES, "open %s for writing: the file is read-only", fname);
		return;
	}
	if (wants_read && n.kind == K_CTL) {
		node_release(&n);
		refuse(req, EACCES, "open ctl for reading: ctl is write-only");
		return;
	}

	struct handle *h = calloc(1, sizeof(*h));
	if (!h) {
		node_release(&n);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_init(&h->exec_lock, NULL);
	cmd_spool_init(&h->cmd);
	h->file_fd = -1;
	h->ino = ino;
	h->kind = n.sbx ? n.kind : K_NONE;
	h->sbx = steal_pointer(&n.sbx);
	h->writable = wants_write;
	h->trunc = wants_write && (fi->flags & O_TRUNC);
	h->stream = kind_stream(h->kind);

	if (h->sbx) {
		pthread_mutex_lock(&model_lock);
		struct run *r = n.run ? sandbox_run(h->sbx, n.run) :
			(is_stream(h->kind) || h->kind == K_STATUS || h->kind == K_WAIT) ?
			sandbox_latest_run(h->sbx) : NULL;
		if (r)
			run_get(r);
		if (r && is_stream(h->kind))
			run_reader_get_locked(r);
		h->run = r;
		bool running = h->sbx->state == SBX_RUNNING;
		pthread_mutex_unlock(&model_lock);
		if (h->kind == K_EXEC && wants_write && !running) {
			handle_free(h);
			refuse(req, EHOSTDOWN, "open exec: the container is not running");
			return;
		}
	}

	if (is_stream(h->kind) || h->kind == K_WAIT) {
		h->nonseekable = n.run == 0 && h->kind != K_WAIT;
	} else if (h->kind == K_RUN_CMD && wants_read) {
		/* A command may be 256 MiB: served from its file, never copied
		 * into memory per open. */
		char path[4200];
		snprintf(path, sizeof(path), "%s/cmd", h->run->dir);
		h->file_fd = open(path, O_RDONLY | O_CLOEXEC);
	} else if (h->kind != K_EXEC && h->kind != K_CTL && wants_read) {
		h->data = h->sbx ? snapshot(h, &h->len) : meta_content(ino, &h->len);
		if (!h->data) {
			handle_free(h);
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	fi->nonseekable = h->nonseekable;
	if (fuse_reply_open(req, fi) == -ENOENT)
		handle_free(h); /* the opener went away */
}

void sfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		       struct fuse_file_info *fi)
{
	if (parent == INO_TEMPLATES) {
		tpl_create(req, name, fi);
		return;
	}
	refuse(req, EPERM, "create %s: sandboxfs has no plain files", name);
}

void sfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	handle_free((struct handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- reading and writing ---- */

/* Starts the handle's run once, whichever of flush and read comes first.
 * exec_lock makes the other wait until h->run is set: a flush from a
 * forked child's close can race the parent's read of the number.
 * Returns 1 when this handle has a run to await, 0 when it has none. */
static int start_exec(struct handle *h, struct sbx_err *err)
{
	int rc = 0;
	pthread_mutex_lock(&h->exec_lock);
	if (h->poison_errno) {
		/* Part of the command is missing: running the rest could do
		 * anything the whole would not have. */
		rc = sbx_err_set(err, h->poison_errno,
				 "sandbox %s: exec: an earlier write failed (%s), nothing was run",
				 h->sbx->name, strerror(h->poison_errno));
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
	pthread_mutex_unlock(&h->exec_lock);
	return rc;
}

void sfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	if (is_stream(h->kind)) {
		stream_read(req, h, size, off);
	} else if (h->kind == K_WAIT) {
		stream_wait(req, h, size, off);
	} else if (h->kind == K_EXEC) {
		struct sbx_err err = { 0 };
		int rc = start_exec(h, &err);
		if (rc < 0) {
			log_error("%s", err.msg);
			fuse_reply_err(req, -rc);
		} else if (rc == 1 && !h->number_read) {
			stream_await_start(req, h, true);
		} else {
			fuse_reply_buf(req, NULL, 0);
		}
	} else if (h->file_fd >= 0) {
		struct stat st;
		if (fstat(h->file_fd, &st) < 0 || off >= st.st_size) {
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
	} else {
		reply_buf_at(req, h->data, h->len, size, off);
	}
}

static enum setting kind_setting(enum kind k)
{
	switch (k) {
	case K_ENV:
		return SETTING_ENV;
	case K_AUTH:
		return SETTING_AUTH;
	case K_WORKDIR:
		return SETTING_WORKDIR;
	default:
		return SETTING_TIMEOUT;
	}
}

/* Applies what the handle has written since the last flush. */
int apply_setting(struct handle *h, const char *buf, size_t len, bool replace,
			 struct sbx_err *err)
{
	switch (h->kind) {
	case K_ENV:
		return sandbox_set_env(h->sbx, buf, len, replace, err);
	case K_AUTH:
		return sandbox_set_auth(h->sbx, buf, len, replace, err);
	case K_WORKDIR:
		return sandbox_set_workdir(h->sbx, buf, len, err);
	case K_TIMEOUT:
		return sandbox_set_timeout(h->sbx, buf, len, err);
	default:
		return 0;
	}
}

/* Checks the complete lines written so far, so that a bad line fails the
 * write(2) that completes it rather than only the close. */
static int validate_partial(struct handle *h, struct sbx_err *err)
{
	const char *nl = memrchr(h->wbuf, '\n', h->wlen);
	if (!nl)
		return 0;
	size_t len = (size_t)(nl - h->wbuf) + 1;
	if (h->kind == K_ENV || h->kind == K_AUTH) {
		size_t i = 0;
		while (i < h->wlen && strchr(" \t\r\n", h->wbuf[i]))
			i++;
		if (i < h->wlen && h->wbuf[i] == '{')
			return 0; /* JSON: checked whole at close */
		struct kv_list tmp = { 0 };
		int rc = parse_kv_lines(h->wbuf, len, &tmp, err);
		kv_list_free(&tmp);
		return rc;
	}
	if (h->kind == K_TIMEOUT) {
		long secs;
		return parse_timeout(h->wbuf, len, &secs, err);
	}
	if (h->kind == K_WORKDIR) {
		char *dir = NULL;
		int rc = parse_workdir(h->wbuf, len, &dir, err);
		free(dir);
		return rc;
	}
	return 0;
}

#define WRITE_MAX (256u << 20)

/* Returns 0 or the errno to answer; never replies, because a reply lets the
 * opener close and a release on another thread free the handle. */
static int write_locked(struct handle *h, const char *buf, size_t size);

void sfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
	       struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	/* exec's buffer is also read by a start racing on another thread. */
	bool is_exec = h->kind == K_EXEC;
	if (is_exec)
		pthread_mutex_lock(&h->exec_lock);
	int e = write_locked(h, buf, size);
	if (is_exec)
		pthread_mutex_unlock(&h->exec_lock);
	if (e)
		fuse_reply_err(req, e);
	else
		fuse_reply_write(req, size);
}

/* Any failed write poisons the handle: its close runs nothing and fails
 * with the same errno. */
static int write_exec(struct handle *h, const char *buf, size_t size)
{
	struct sbx_err err = { 0 };
	if (h->exec_started)
		return refusal(EBUSY, "write exec: this open already started run %u",
			       h->run ? h->run->number : 0);
	if (h->poison_errno)
		return refusal(h->poison_errno, "write exec: an earlier write on this open failed");
	int rc;
	if (h->cmd.len + size > WRITE_MAX)
		rc = sbx_err_set(&err, EFBIG, "write exec: more than %u bytes", WRITE_MAX);
	else
		rc = cmd_spool_append(&h->cmd, buf, size, &err);
	if (rc < 0) {
		h->poison_errno = -rc;
		cmd_spool_free(&h->cmd);
		log_error("sandbox %s: %s; nothing will run", h->sbx->name, err.msg);
		return -rc;
	}
	return 0;
}

static int write_locked(struct handle *h, const char *buf, size_t size)
{
	struct sbx_err err = { 0 };
	const char *fname = h->tpl_name ? h->tpl_name : "file";

	if (h->kind != K_TEMPLATE && h->kind != K_NONE)
		fname = kinds[h->kind].name;
	if (h->kind == K_CTL) {
		int rc = sandbox_ctl(h->sbx, buf, size, &err);
		if (rc < 0)
			log_error("sandbox %s: %s", h->sbx->name, err.msg);
		return rc < 0 ? -rc : 0;
	}
	if (h->kind == K_EXEC)
		return write_exec(h, buf, size);
	if (h->poisoned) {
		return refusal(EINVAL, "write %s: an earlier write on this open was refused", fname);
	}
	if (h->wlen + size > WRITE_MAX) {
		h->poisoned = true;
		return refusal(EFBIG, "write %s: more than %u bytes", fname, WRITE_MAX);
	}
	if (h->wlen + size > h->wcap) {
		size_t cap = h->wcap ? h->wcap : 4096;
		while (cap < h->wlen + size)
			cap *= 2;
		char *b = malloc(cap);
		if (!b)
			return ENOMEM;
		/* Not realloc: a credential must not linger in freed memory. */
		if (h->wbuf) {
			memcpy(b, h->wbuf, h->wlen);
			explicit_bzero(h->wbuf, h->wcap);
			free(h->wbuf);
		}
		h->wbuf = b;
		h->wcap = cap;
	}
	memcpy(h->wbuf + h->wlen, buf, size);
	h->wlen += size;
	/* Checked at write(2) once the JSON is complete, so that a shell's
	 * `echo ... > templates/x` sees the error (shells ignore close's). */
	if (h->kind == K_TEMPLATE && template_check_complete(h->tpl_name, h->wbuf, h->wlen, &err) < 0) {
		h->poisoned = true;
		log_error("%s", err.msg);
		return err.code;
	}
	if (h->kind != K_EXEC && h->kind != K_TEMPLATE && validate_partial(h, &err) < 0) {
		h->poisoned = true;
		if (h->undo_valid) {
			setting_restore(h->sbx, &h->undo);
			h->undo_valid = false;
		}
		log_error("sandbox %s: %s", h->sbx->name, err.msg);
		return err.code;
	}
	return 0;
}

void sfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct sbx_err err = { 0 };

	if (h->kind == K_TEMPLATE) {
		tpl_flush(req, h);
		return;
	}
	if (h->kind == K_EXEC) {
		pthread_mutex_lock(&h->exec_lock);
		bool mine = (!h->exec_started && h->cmd.len > 0) || h->poison_errno;
		pthread_mutex_unlock(&h->exec_lock);
		int rc = mine ? start_exec(h, &err) : 0;
		if (rc < 0) {
			log_error("%s", err.msg);
			fuse_reply_err(req, -rc);
		} else if (rc == 1) {
			stream_await_start(req, h, false);
		} else {
			fuse_reply_err(req, 0);
		}
		return;
	}
	if (!h->writable || !h->sbx || h->kind == K_CTL) {
		fuse_reply_err(req, 0);
		return;
	}
	if (h->poisoned) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (h->wlen == 0 && !h->trunc) {
		fuse_reply_err(req, 0);
		return;
	}
	/* A shell closes a dup of the fd before it writes: an empty flush of
	 * an O_TRUNC open clears now, and keeps what it cleared in case a
	 * later write on this open turns out invalid. */
	if (h->wlen == 0 && !h->undo_valid &&
	    setting_save(h->sbx, kind_setting(h->kind), &h->undo) == 0)
		h->undo_valid = true;
	int rc = apply_setting(h, h->wbuf ? h->wbuf : "", h->wlen, h->trunc, &err);
	if (h->wbuf)
		explicit_bzero(h->wbuf, h->wlen);
	h->wlen = 0;
	h->trunc = false;
	if (rc < 0) {
		h->poisoned = true;
		if (h->undo_valid) {
			setting_restore(h->sbx, &h->undo);
			h->undo_valid = false;
		}
		log_error("sandbox %s: %s", h->sbx->name, err.msg);
		fuse_reply_err(req, -rc);
		return;
	}
	fuse_reply_err(req, 0);
}

void sfs_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct fuse_pollhandle *ph)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	if (is_stream(h->kind) || h->kind == K_WAIT) {
		stream_poll(req, h, ph);
		return;
	}
	if (ph)
		fuse_pollhandle_destroy(ph);
	fuse_reply_poll(req, POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM);
}

