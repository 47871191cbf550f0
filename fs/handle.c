/* Handles: per-open state from open to release (fs/handle.h), the list
 * of those still open (an unmount can leave some the kernel never
 * releases), and the replies and refusals every kind of file shares. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_internal.h"
#include "log.h"

static sbx_mutex handles_lock = SBX_MUTEX_INIT;
static struct handle *open_files SBX_GUARDED_BY(handles_lock);

int refusal(int e, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warn("%s (%s)", msg, strerror(e));
	return e;
}

void refuse(fuse_req_t req, int e, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fuse_reply_err(req, refusal(e, "%s", msg));
}

/* Replies with a copy: once the kernel has the reply, the opener may close
 * and a release on another thread free `data` while writev's caller still
 * looks at it (ASan's writev interceptor does exactly that). */
void reply_buf_at(fuse_req_t req, const char *data, size_t len, size_t size, off_t off)
{
	if (!data || off < 0 || (size_t)off >= len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	size_t n = len - (size_t)off < size ? len - (size_t)off : size;
	char *copy = malloc(n);
	if (!copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(copy, data + off, n);
	fuse_reply_buf(req, copy, n);
	free(copy);
}

/* ---- write buffers ---- */

int write_buf_append(struct write_buf *w, const char *buf, size_t size, size_t max)
{
	if (w->len + size > max)
		return EFBIG;
	if (w->len + size > w->cap) {
		size_t cap = w->cap ? w->cap : 4096;
		while (cap < w->len + size)
			cap *= 2;
		char *b = malloc(cap);
		if (!b)
			return ENOMEM;
		/* Not realloc: a credential must not linger in freed memory. */
		if (w->data) {
			memcpy(b, w->data, w->len);
			secret_free_n(w->data, w->cap);
		}
		w->data = b;
		w->cap = cap;
	}
	memcpy(w->data + w->len, buf, size);
	w->len += size;
	return 0;
}

void write_buf_clear(struct write_buf *w)
{
	if (w->data)
		explicit_bzero(w->data, w->len);
	w->len = 0;
}

void write_buf_free(struct write_buf *w)
{
	secret_free_n(w->data, w->cap);
	*w = (struct write_buf){ 0 };
}

struct handle *handle_alloc(enum kind kind, uint64_t ino, int flags)
{
	struct handle *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	sbx_mutex_init(&h->exec_lock);
	cmd_spool_init(&h->cmd);
	h->file_fd = -1;
	h->ino = ino;
	h->kind = kind;
	h->ops = kind_info(kind)->ops;
	h->stream = kind_info(kind)->stream;
	h->writable = (flags & O_ACCMODE) != O_RDONLY;
	h->trunc = h->writable && (flags & O_TRUNC);
	return h;
}

void handle_track(struct handle *h, bool add)
{
	sbx_lock(&handles_lock);
	if (add) {
		h->open_next = open_files;
		if (open_files)
			open_files->open_prev = h;
		open_files = h;
	} else if (h->open_prev || open_files == h) {
		if (h->open_prev)
			h->open_prev->open_next = h->open_next;
		else
			open_files = h->open_next;
		if (h->open_next)
			h->open_next->open_prev = h->open_prev;
		h->open_prev = h->open_next = NULL;
	}
	sbx_unlock(&handles_lock);
}

struct handle *handle_first_open(void)
{
	sbx_lock(&handles_lock);
	struct handle *h = open_files;
	sbx_unlock(&handles_lock);
	return h;
}

void handle_free(struct handle *h)
{
	if (!h)
		return;
	handle_track(h, false);
	if (h->counted)
		sandbox_files_opened(h->sbx, -1);
	if (h->ops && h->ops->release)
		h->ops->release(h);
	if (h->run)
		run_put(h->run);
	if (h->sbx)
		sandbox_put(h->sbx);
	sbx_mutex_destroy(&h->exec_lock);
	free(h->data);
	if (h->file_fd >= 0)
		close(h->file_fd);
	cmd_spool_free(&h->cmd);
	free(h->tpl_name);
	write_buf_free(&h->w);
	free(h);
}
