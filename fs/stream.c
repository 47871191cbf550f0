/* Reads that wait: a request that cannot be answered yet is parked on one
 * list with the run it waits for, and answered by the model's run_changed
 * callback (from the I/O thread) — never by a parked thread.  Interrupts
 * find parked requests by fuse_req_t, not by pointer, because libfuse may
 * call the interrupt function after the request was answered. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handle.h"
#include "log.h"

enum wait_kind { W_READ, W_WAIT, W_START, W_START_NUMBER };

struct waiter {
	fuse_req_t req;
	struct handle *h;
	enum wait_kind kind;
	size_t size;
	off_t pos;
	struct waiter *prev, *next;
};

static struct waiter *parked;         /* (L) every parked request */
static struct handle *pollers;        /* (L) handles holding a poll handle */

static void unlink_waiter(struct waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		parked = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->prev = w->next = NULL;
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

/* Under model_lock: can a read at pos be answered now? */
static bool read_ready(struct handle *h, off_t pos)
{
	struct run *r = h->run;
	return !r || r->size[h->stream] > pos || r->phase == RUN_ENDED;
}

static bool ready_locked(struct waiter *w)
{
	struct run *r = w->h->run;
	switch (w->kind) {
	case W_READ:
		return read_ready(w->h, w->pos);
	case W_WAIT:
		return r->phase == RUN_ENDED;
	default:
		return r->phase != RUN_STARTING;
	}
}

/* Answers a read that is ready (or at end-of-file). */
static void answer_read(fuse_req_t req, struct handle *h, size_t size, off_t pos)
{
	struct run *r = h->run;
	if (!r) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	pthread_mutex_lock(&model_lock);
	int fd = run_stream_fd(r, h->stream);
	off_t avail = r->size[h->stream];
	size_t n = 0;
	if (fd >= 0 && pos < avail)
		n = (size_t)(avail - pos) < size ? (size_t)(avail - pos) : size;
	if (h->nonseekable)
		h->pos = pos + (off_t)n;
	pthread_mutex_unlock(&model_lock);
	if (n == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(n);
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = fd;
	buf.buf[0].pos = pos;
	int rc = fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
	if (rc < 0 && rc != -ENOENT)
		log_warn("replying to a read: %s", strerror(-rc));
}

static void answer_wait(fuse_req_t req, struct handle *h, size_t size, off_t off)
{
	char line[64];
	pthread_mutex_lock(&model_lock);
	run_status_line(h->run, line, sizeof(line));
	pthread_mutex_unlock(&model_lock);
	reply_buf_at(req, line, strlen(line), size, off);
}

static void answer_start(fuse_req_t req, struct handle *h, bool number)
{
	pthread_mutex_lock(&model_lock);
	int e = h->run->start_errno;
	unsigned n = h->run->number;
	pthread_mutex_unlock(&model_lock);
	if (e) {
		fuse_reply_err(req, e);
	} else if (number) {
		char line[16];
		int len = snprintf(line, sizeof(line), "%u\n", n);
		h->number_read = true;
		fuse_reply_buf(req, line, (size_t)len);
	} else {
		fuse_reply_err(req, 0);
	}
}

static void answer(struct waiter *w)
{
	switch (w->kind) {
	case W_READ:
		answer_read(w->req, w->h, w->size, w->pos);
		break;
	case W_WAIT:
		answer_wait(w->req, w->h, w->size, w->pos);
		break;
	case W_START:
		answer_start(w->req, w->h, false);
		break;
	case W_START_NUMBER:
		answer_start(w->req, w->h, true);
		break;
	}
	free(w);
}

static void on_interrupt(fuse_req_t req, void *data)
{
	struct waiter *found = NULL;
	(void)data;
	pthread_mutex_lock(&model_lock);
	for (struct waiter *w = parked; w; w = w->next) {
		if (w->req == req) {
			unlink_waiter(w);
			found = w;
			break;
		}
	}
	pthread_mutex_unlock(&model_lock);
	if (found) {
		fuse_reply_err(req, EINTR);
		free(found);
	}
}

/* Answers at once when ready, else parks.  The interrupt function is set
 * before the request becomes visible to the producer, and without
 * model_lock held (libfuse may call it at once, and it takes the lock). */
static void park_or_answer(fuse_req_t req, struct handle *h, enum wait_kind kind, size_t size,
			   off_t pos)
{
	struct waiter *w = calloc(1, sizeof(*w));
	if (!w) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	*w = (struct waiter){ .req = req, .h = h, .kind = kind, .size = size, .pos = pos };

	pthread_mutex_lock(&model_lock);
	bool ready = ready_locked(w);
	pthread_mutex_unlock(&model_lock);
	if (ready) {
		answer(w);
		return;
	}

	fuse_req_interrupt_func(req, on_interrupt, NULL);
	pthread_mutex_lock(&model_lock);
	if (fuse_req_interrupted(req)) {
		pthread_mutex_unlock(&model_lock);
		free(w);
		fuse_reply_err(req, EINTR);
		return;
	}
	if (ready_locked(w)) {
		pthread_mutex_unlock(&model_lock);
		answer(w);
		return;
	}
	w->next = parked;
	if (parked)
		parked->prev = w;
	parked = w;
	pthread_mutex_unlock(&model_lock);
}

void stream_read(fuse_req_t req, struct handle *h, size_t size, off_t off)
{
	off_t pos = off;
	if (h->nonseekable) {
		pthread_mutex_lock(&model_lock);
		pos = h->pos;
		pthread_mutex_unlock(&model_lock);
	}
	park_or_answer(req, h, W_READ, size, pos);
}

void stream_wait(fuse_req_t req, struct handle *h, size_t size, off_t off)
{
	if (!h->run) {
		reply_buf_at(req, "idle\n", 5, size, off);
		return;
	}
	park_or_answer(req, h, W_WAIT, size, off);
}

void stream_await_start(fuse_req_t req, struct handle *h, bool reply_number)
{
	park_or_answer(req, h, reply_number ? W_START_NUMBER : W_START, 0, 0);
}

static short revents_locked(struct handle *h)
{
	struct run *r = h->run;
	bool ready;
	if (h->kind == K_WAIT)
		ready = !r || r->phase == RUN_ENDED;
	else
		ready = read_ready(h, h->nonseekable ? h->pos : 0);
	return ready ? POLLIN | POLLRDNORM : 0;
}

void stream_poll(fuse_req_t req, struct handle *h, struct fuse_pollhandle *ph)
{
	struct fuse_pollhandle *old = NULL;
	pthread_mutex_lock(&model_lock);
	if (ph) {
		old = h->ph;
		if (!old) {
			h->poll_next = pollers;
			pollers = h;
		}
		h->ph = ph;
	}
	short rev = revents_locked(h);
	pthread_mutex_unlock(&model_lock);
	if (old)
		fuse_pollhandle_destroy(old);
	fuse_reply_poll(req, (unsigned)rev);
}

void stream_forget_handle(struct handle *h)
{
	struct fuse_pollhandle *ph = NULL;
	pthread_mutex_lock(&model_lock);
	for (struct handle **p = &pollers; *p; p = &(*p)->poll_next) {
		if (*p == h) {
			*p = h->poll_next;
			break;
		}
	}
	ph = h->ph;
	h->ph = NULL;
	pthread_mutex_unlock(&model_lock);
	if (ph)
		fuse_pollhandle_destroy(ph);
}

void stream_run_changed(struct run *r)
{
	struct waiter *ready = NULL;
	struct fuse_pollhandle *notify[64];
	size_t nnotify = 0;
	bool more;

	do {
		more = false;
		pthread_mutex_lock(&model_lock);
		for (struct waiter *w = parked, *next; w; w = next) {
			next = w->next;
			if (w->h->run == r && ready_locked(w)) {
				unlink_waiter(w);
				w->next = ready;
				ready = w;
			}
		}
		for (struct handle **p = &pollers; *p;) {
			struct handle *h = *p;
			if (h->run == r && h->ph && revents_locked(h)) {
				if (nnotify == SBX_ARRAY_SIZE(notify)) {
					more = true;
					break;
				}
				notify[nnotify++] = h->ph;
				h->ph = NULL;
				*p = h->poll_next;
			} else {
				p = &h->poll_next;
			}
		}
		pthread_mutex_unlock(&model_lock);

		while (ready) {
			struct waiter *w = ready;
			ready = w->next;
			answer(w);
		}
		for (size_t i = 0; i < nnotify; i++) {
			fuse_lowlevel_notify_poll(notify[i]);
			fuse_pollhandle_destroy(notify[i]);
		}
		nnotify = 0;
	} while (more);
}
