/* The engines a mount talks to: the default one and each one a template
 * names, each with its own `docker events` stream.  What a stream reports
 * goes to the sink the model registered; this file knows no sandbox. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>

#include "engines.h"
#include "ioloop.h"
#include "lock.h"
#include "log.h"

/* Slots are never freed while the daemon runs, so sandboxes point at
 * their engine without a reference. */
struct engine_slot {
	struct engine engine;
	/* The I/O thread's alone once started. */
	struct io_watch out, retry;
	pid_t pid;
	char line[65536];
	size_t len;
	bool overflow;
	bool outage; /* the stream broke: the engine may have restarted */
	double outage_mono;
};

#define MAX_ENGINES 32
static sbx_mutex slots_lock = SBX_MUTEX_INIT;
static struct engine_slot *slots[MAX_ENGINES] SBX_GUARDED_BY(slots_lock);
static size_t nslots SBX_GUARDED_BY(slots_lock);
static bool started SBX_GUARDED_BY(slots_lock);
/* Set once by engines_init() before any other thread exists. */
static struct engine base;
static const struct engine_sink *sink;

double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void engines_init(const struct engine *default_engine, const struct engine_sink *s)
{
	base = *default_engine;
	sink = s;
}

static bool same_endpoint(const char *a, const char *b)
{
	return (!a || !a[0]) ? (!b || !b[0]) : (b && !strcmp(a, b));
}

static void slot_start(struct engine_slot *e);

const struct engine *engine_for(const char *endpoint)
{
	struct engine_slot *e = NULL;
	sbx_lock(&slots_lock);
	for (size_t i = 0; i < nslots; i++) {
		if (same_endpoint(slots[i]->engine.endpoint, endpoint)) {
			e = slots[i];
			sbx_unlock(&slots_lock);
			return &e->engine;
		}
	}
	if (nslots < MAX_ENGINES)
		e = calloc(1, sizeof(*e));
	if (e) {
		e->engine = base;
		e->engine.endpoint = endpoint && endpoint[0] ? strdup(endpoint) : NULL;
		e->out.fd = e->retry.fd = -1;
		if (endpoint && endpoint[0] && !e->engine.endpoint) {
			free(e);
			e = NULL;
		}
	}
	if (e) {
		slots[nslots++] = e;
		if (started)
			slot_start(e);
	}
	sbx_unlock(&slots_lock);
	return e ? &e->engine : NULL;
}

size_t engines_list(const struct engine **out, size_t max)
{
	sbx_lock(&slots_lock);
	size_t n = nslots < max ? nslots : max;
	for (size_t i = 0; i < n; i++)
		out[i] = &slots[i]->engine;
	sbx_unlock(&slots_lock);
	return n;
}

/* ---- the events streams (I/O thread) ---- */

static void events_connect(struct engine_slot *e);

static void events_retry_fired(struct io_watch *w, uint32_t mask)
{
	uint64_t ticks;
	if (read(w->fd, &ticks, sizeof(ticks)) < 0 && errno == EAGAIN)
		return;
	events_connect(w->ctx);
}

static void events_schedule_retry(struct engine_slot *e)
{
	struct itimerspec its = { .it_value = { .tv_sec = 1 } };
	timerfd_settime(e->retry.fd, 0, &its, NULL);
}

static void events_line(struct engine_slot *e, const char *line, size_t len)
{
	struct engine_event ev;
	if (engine_parse_event(line, len, &ev) < 0) {
		log_warn("docker events: unparsable line ignored");
		return;
	}
	sink->event(&e->engine, &ev);
}

static void events_ended(struct engine_slot *e, struct io_watch *w)
{
	ioloop_del(w);
	close(w->fd);
	w->fd = -1;
	cleanup_pidp(&e->pid);
	e->pid = 0;
	log_warn("docker events stream of engine %s ended; reconnecting",
		 e->engine.endpoint ? e->engine.endpoint : "default");
	e->outage = true;
	e->outage_mono = mono_now();
	events_schedule_retry(e);
}

static void events_readable(struct io_watch *w, uint32_t mask)
{
	struct engine_slot *e = w->ctx;
	char buf[16384];
	ssize_t n = read(w->fd, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		events_ended(e, w);
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		if (buf[i] == '\n') {
			if (!e->overflow)
				events_line(e, e->line, e->len);
			e->len = 0;
			e->overflow = false;
		} else if (e->len < sizeof(e->line) - 1) {
			e->line[e->len++] = buf[i];
		} else {
			e->overflow = true;
		}
	}
}

static void events_connect(struct engine_slot *e)
{
	struct sbx_err err = { 0 };
	int fd;
	if (engine_events_start(&e->engine, &e->pid, &fd, &err) < 0) {
		log_warn("docker events: %s", err.msg);
		events_schedule_retry(e);
		return;
	}
	e->out.fd = fd;
	e->out.fn = events_readable;
	e->out.ctx = e;
	e->len = 0;
	int rc = ioloop_add(&e->out, EPOLLIN);
	if (rc < 0) {
		log_error("docker events: epoll: %s", strerror(-rc));
		events_ended(e, &e->out);
		return;
	}
	/* Whatever happened while we were not listening. */
	sink->resync(&e->engine, e->outage, e->outage_mono);
	e->outage = false;
}

/* Connects from the I/O thread: the retry timer fires at once. */
static void slot_start(struct engine_slot *e)
{
	e->retry.fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (e->retry.fd < 0) {
		log_error("timerfd: %s", strerror(errno));
		return;
	}
	e->retry.fn = events_retry_fired;
	e->retry.ctx = e;
	int rc = ioloop_add(&e->retry, EPOLLIN);
	if (rc < 0) {
		log_error("engine %s: epoll: %s; its events are not followed",
			  e->engine.endpoint ? e->engine.endpoint : "default", strerror(-rc));
		close(e->retry.fd);
		e->retry.fd = -1;
		return;
	}
	struct itimerspec its = { .it_value = { .tv_nsec = 1 } };
	timerfd_settime(e->retry.fd, 0, &its, NULL);
}

void engines_start(void)
{
	sbx_lock(&slots_lock);
	started = true;
	for (size_t i = 0; i < nslots; i++)
		slot_start(slots[i]);
	sbx_unlock(&slots_lock);
}

/* After the I/O thread stopped: nothing else touches the slots. */
void engines_shutdown(void)
{
	sbx_lock(&slots_lock);
	struct engine_slot *gone[MAX_ENGINES];
	size_t n = nslots;
	memcpy(gone, slots, n * sizeof(*gone));
	nslots = 0;
	started = false;
	sbx_unlock(&slots_lock);
	for (size_t i = 0; i < n; i++) {
		struct engine_slot *e = gone[i];
		if (e->pid > 0)
			cleanup_pidp(&e->pid);
		if (e->out.fd >= 0)
			close(e->out.fd);
		if (e->retry.fd >= 0)
			close(e->retry.fd);
		free(e->engine.endpoint);
		free(e);
	}
}
