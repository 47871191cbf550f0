/* Files whose reads may wait: output/stdout/stderr (stream files), wait,
 * and exec's start.  A request that cannot be answered yet is parked on
 * one list with the run it waits for, and answered by the model's
 * run_changed callback (from the I/O thread) — never by a parked thread.
 * Interrupts find parked requests by fuse_req_t, not by pointer, because
 * libfuse may call the interrupt function after the request was answered.
 *
 * stream_lock guards the parked list, the poll list and each handle's
 * pos/ph/poll_next.  Lock order: stream_lock, then the model's lock (taken
 * inside the model's functions); the model never calls back with its lock
 * held. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_internal.h"
#include "stream.h"
#include "events.h"
#include "log.h"

struct waiter {
	fuse_req_t req;
	struct handle *h;
	enum wait_kind kind;
	size_t size;
	off_t pos;
	struct waiter *prev, *next;
};

static sbx_mutex stream_lock = SBX_MUTEX_INIT;
static struct waiter *parked SBX_GUARDED_BY(stream_lock);  /* every parked request */
static struct handle *pollers SBX_GUARDED_BY(stream_lock); /* handles holding a poll handle */

static void unlink_waiter_locked(struct waiter *w) SBX_REQUIRES(stream_lock)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		parked = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->prev = w->next = NULL;
}

/* Can the waiter be answered, given a view of its run? */
static bool ready_in(const struct waiter *w, const struct run_view *v)
{
	switch (w->kind) {
	case W_READ:
		return v->size[w->h->stream] > w->pos || v->ended;
	case W_WAIT:
		return v->ended;
	default:
		return v->started || v->ended;
	}
}

static bool is_events(const struct handle *h)
{
	return h->kind == K_EVENTS || h->kind == K_META_EVENTS;
}

/* events shows one sandbox's lines, .sandboxfs/events every line. */
static const char *events_filter(const struct handle *h)
{
	return h->kind == K_EVENTS ? sandbox_name(h->sbx) : NULL;
}

static bool ready(const struct waiter *w)
{
	struct run_view v;
	if (w->kind == W_EVENTS)
		return events_ready((uint64_t)w->pos, events_filter(w->h));
	if (!w->h->run)
		return true;
	run_view(w->h->run, &v);
	return ready_in(w, &v);
}

static short revents(struct handle *h, off_t pos, const struct run_view *v)
{
	if (is_events(h))
		return events_ready((uint64_t)pos, events_filter(h)) ? POLLIN | POLLRDNORM : 0;
	if (!h->run)
		return POLLIN | POLLRDNORM;
	struct waiter probe = { .h = h,
				.kind = h->ops == &wait_file_ops ? W_WAIT : W_READ,
				.pos = pos };
	return ready_in(&probe, v) ? POLLIN | POLLRDNORM : 0;
}

/* Answers a read that is ready (or at end-of-file). */
static void answer_read(fuse_req_t req, struct handle *h, size_t size, off_t pos)
{
	int fd;
	size_t n;
	if (!h->run) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	run_read_span(h->run, h->stream, pos, size, &fd, &n);
	if (h->nonseekable) {
		sbx_lock(&stream_lock);
		h->pos = pos + (off_t)n;
		sbx_unlock(&stream_lock);
	}
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
	run_status_line(h->run, line, sizeof(line));
	reply_buf_at(req, line, strlen(line), size, off);
}

static void answer_start(fuse_req_t req, struct handle *h, bool number)
{
	struct run_view v;
	run_view(h->run, &v);
	if (v.start_errno) {
		fuse_reply_err(req, v.start_errno);
	} else if (number) {
		char line[16];
		int len = snprintf(line, sizeof(line), "%u\n", run_number(h->run));
		h->number_read = true;
		fuse_reply_buf(req, line, (size_t)len);
	} else {
		fuse_reply_err(req, 0);
	}
}

/* Whole lines from the handle's position, which moves past them. */
static void answer_events(fuse_req_t req, struct handle *h, size_t size)
{
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	sbx_lock(&stream_lock);
	uint64_t pos = (uint64_t)h->pos;
	size_t n = events_read(&pos, events_filter(h), buf, size);
	h->pos = (off_t)pos;
	sbx_unlock(&stream_lock);
	fuse_reply_buf(req, buf, n);
	free(buf);
}

static void answer(struct waiter *w)
{
	switch (w->kind) {
	case W_EVENTS:
		answer_events(w->req, w->h, w->size);
		break;
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
	sbx_lock(&stream_lock);
	for (struct waiter *w = parked; w; w = w->next) {
		if (w->req == req) {
			unlink_waiter_locked(w);
			found = w;
			break;
		}
	}
	sbx_unlock(&stream_lock);
	if (found) {
		fuse_reply_err(req, EINTR);
		free(found);
	}
}

/* Answers at once when ready, else parks.  Readiness is checked again
 * after parking, under stream_lock: a producer that changed the run in
 * between either is seen by that check or finds the waiter parked.  The
 * interrupt function is set without stream_lock held (libfuse may call
 * it at once, and it takes the lock). */
void stream_park_or_answer(fuse_req_t req, struct handle *h, enum wait_kind kind, size_t size,
			   off_t pos)
{
	struct waiter *w = calloc(1, sizeof(*w));
	if (!w) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	*w = (struct waiter){ .req = req, .h = h, .kind = kind, .size = size, .pos = pos };
	if (ready(w)) {
		answer(w);
		return;
	}
	fuse_req_interrupt_func(req, on_interrupt, NULL);
	sbx_lock(&stream_lock);
	if (fuse_req_interrupted(req)) {
		sbx_unlock(&stream_lock);
		free(w);
		fuse_reply_err(req, EINTR);
		return;
	}
	w->next = parked;
	if (parked)
		parked->prev = w;
	parked = w;
	bool now = ready(w);
	if (now)
		unlink_waiter_locked(w);
	sbx_unlock(&stream_lock);
	if (now)
		answer(w);
}

/* ---- output, stdout, stderr ---- */

static int stream_open(struct handle *h, int flags)
{
	/* The top-level files follow the latest run as a stream; those of runs/N
	 * are plain files that may be read at any offset. */
	h->nonseekable = kind_info(h->kind)->follows_latest;
	if (h->run) {
		run_reader_open(h->run);
		h->reader = true;
	}
	return 0;
}

static void stream_read(fuse_req_t req, struct handle *h, size_t size, off_t off)
{
	off_t pos = off;
	if (h->nonseekable) {
		sbx_lock(&stream_lock);
		pos = h->pos;
		sbx_unlock(&stream_lock);
	}
	stream_park_or_answer(req, h, W_READ, size, pos);
}

static void stream_poll(fuse_req_t req, struct handle *h, struct fuse_pollhandle *ph)
{
	struct fuse_pollhandle *old = NULL;
	sbx_lock(&stream_lock);
	if (ph) {
		old = h->ph;
		if (!old) {
			h->poll_next = pollers;
			pollers = h;
		}
		h->ph = ph;
	}
	off_t pos = h->nonseekable ? h->pos : 0;
	struct run_view v = { 0 };
	if (h->run)
		run_view(h->run, &v);
	short rev = revents(h, pos, &v);
	sbx_unlock(&stream_lock);
	if (old)
		fuse_pollhandle_destroy(old);
	fuse_reply_poll(req, (unsigned)rev);
}

static void forget_poller(struct handle *h)
{
	struct fuse_pollhandle *ph = NULL;
	sbx_lock(&stream_lock);
	for (struct handle **p = &pollers; *p; p = &(*p)->poll_next) {
		if (*p == h) {
			*p = h->poll_next;
			break;
		}
	}
	ph = h->ph;
	h->ph = NULL;
	sbx_unlock(&stream_lock);
	if (ph)
		fuse_pollhandle_destroy(ph);
}

static void stream_release(struct handle *h)
{
	forget_poller(h);
	if (h->reader)
		run_reader_close(h->run);
	h->reader = false;
}

const struct file_ops stream_file_ops = {
	.open = stream_open,
	.read = stream_read,
	.release = stream_release,
	.poll = stream_poll,
};

/* ---- wait ---- */

static void wait_read(fuse_req_t req, struct handle *h, size_t size, off_t off)
{
	if (!h->run) {
		reply_buf_at(req, "idle\n", 5, size, off);
		return;
	}
	stream_park_or_answer(req, h, W_WAIT, size, off);
}

const struct file_ops wait_file_ops = {
	.read = wait_read,
	.release = forget_poller,
	.poll = stream_poll,
};

/* ---- events: a stream of lines that never ends ---- */

static int events_open(struct handle *h, int flags)
{
	h->nonseekable = true; /* read from the oldest line kept, then follow */
	h->nonblock = flags & O_NONBLOCK;
	return 0;
}

static void events_read_req(fuse_req_t req, struct handle *h, size_t size, off_t off)
{
	sbx_lock(&stream_lock);
	off_t pos = h->pos;
	sbx_unlock(&stream_lock);
	if (h->nonblock && !events_ready((uint64_t)pos, events_filter(h))) {
		fuse_reply_err(req, EAGAIN);
		return;
	}
	stream_park_or_answer(req, h, W_EVENTS, size, pos);
}

const struct file_ops events_file_ops = {
	.open = events_open,
	.read = events_read_req,
	.release = forget_poller,
	.poll = stream_poll,
};

/* Which parked requests and polling handles a change concerns, and
 * whether they can be answered: events readers, or the readers of run r
 * (with one view of it taken before: a change after it is notified again
 * by the producer). */
struct wake_for {
	struct run *run; /* NULL: the audit log */
	const struct run_view *view;
};

static bool waiter_wakes(const struct waiter *w, const struct wake_for *f) SBX_REQUIRES(stream_lock)
{
	if (!f->run)
		return w->kind == W_EVENTS && ready(w);
	return w->h->run == f->run && ready_in(w, f->view);
}

static bool poller_wakes(struct handle *h, const struct wake_for *f) SBX_REQUIRES(stream_lock)
{
	if (!h->ph)
		return false;
	if (!f->run)
		return is_events(h) && revents(h, h->pos, NULL);
	return h->run == f->run && revents(h, h->nonseekable ? h->pos : 0, f->view);
}

/* Answers what became ready and notifies the pollers, in rounds of at
 * most 64 poll handles, replying without stream_lock held. */
static void wake(const struct wake_for *f)
{
	struct waiter *done = NULL;
	struct fuse_pollhandle *notify[64];
	size_t nnotify = 0;
	bool more;
	do {
		more = false;
		sbx_lock(&stream_lock);
		for (struct waiter *w = parked, *next; w; w = next) {
			next = w->next;
			if (waiter_wakes(w, f)) {
				unlink_waiter_locked(w);
				w->next = done;
				done = w;
			}
		}
		for (struct handle **p = &pollers; *p;) {
			struct handle *h = *p;
			if (poller_wakes(h, f)) {
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
		sbx_unlock(&stream_lock);
		while (done) {
			struct waiter *w = done;
			done = w->next;
			answer(w);
		}
		for (size_t i = 0; i < nnotify; i++) {
			fuse_lowlevel_notify_poll(notify[i]);
			fuse_pollhandle_destroy(notify[i]);
		}
		nnotify = 0;
	} while (more);
}

/* New lines: answer the parked readers of events and notify their pollers. */
void stream_events_changed(void)
{
	wake(&(struct wake_for){ .run = NULL });
}

/* ---- the model's callback ---- */

void stream_run_changed(struct run *r)
{
	struct run_view v;
	run_view(r, &v);
	wake(&(struct wake_for){ .run = r, .view = &v });
}

void stream_cleanup(void)
{
	sbx_lock(&stream_lock);
	struct waiter *w = parked;
	parked = NULL;
	sbx_unlock(&stream_lock);
	while (w) {
		struct waiter *next = w->next;
		fuse_reply_err(w->req, ENOTCONN); /* frees the request */
		free(w);
		w = next;
	}
}
