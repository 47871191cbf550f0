/* The engines a mount talks to: the default one and each one a template
 * names, each with its own `docker events` stream.  What a stream reports
 * goes to the sink the model registered; this file knows no sandbox. */
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>

#include "events.h"
#include "engines.h"
#include "ioloop.h"
#include "lock.h"
#include "log.h"
#include "template.h"

/* One slot per engine endpoint.  Each has its own events stream,
 * reconnected with a backoff of 1 s doubling up to 60 s.  A slot that no
 * template names and no sandbox uses is freed (by the I/O thread, which
 * owns its stream); `users` counts the sandboxes (and reconciliations)
 * that point at it. */
enum engine_health { ENGINE_UNKNOWN, ENGINE_UP, ENGINE_DOWN };

static sbx_mutex slots_lock = SBX_MUTEX_INIT;

#define BACKOFF_MAX 60
#define STREAM_STABLE 30 /* seconds a stream must have lived to reset the backoff */

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
	int backoff;	 /* seconds before the next attempt */
	double next_try; /* monotonic time of the next attempt */
	double connected_at;
	bool dead; /* freed at the end of the I/O batch */

	unsigned users SBX_GUARDED_BY(slots_lock);
	enum engine_health health SBX_GUARDED_BY(slots_lock);
	bool kick SBX_GUARDED_BY(slots_lock);	     /* a call worked while the stream is down */
	double rechecked SBX_GUARDED_BY(slots_lock); /* monotonic time of the last recheck */
};

#define MAX_ENGINES 32
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
		e->backoff = 1;
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

/* ---- who uses an engine, and whether it answers ---- */

static struct engine_slot *slot_of(const struct engine *e)
{
	return (struct engine_slot *)((char *)e - offsetof(struct engine_slot, engine));
}

static const char *slot_name(const struct engine_slot *e)
{
	return e->engine.endpoint ? e->engine.endpoint : "default";
}

/* Makes the slot's timer fire now: the I/O thread then checks whether the
 * slot is still needed (and when not, frees it). */
static void slot_poke(struct engine_slot *e)
{
	struct itimerspec its = { .it_value = { .tv_nsec = 1 } };
	if (e->retry.fd >= 0)
		timerfd_settime(e->retry.fd, 0, &its, NULL);
}

void engine_use(const struct engine *e, int delta)
{
	if (!e)
		return;
	struct engine_slot *slot = slot_of(e);
	sbx_lock(&slots_lock);
	slot->users += delta;
	if (slot->users == 0 && started)
		slot_poke(slot);
	sbx_unlock(&slots_lock);
}

void engine_answered(const struct engine *e)
{
	struct engine_slot *slot = slot_of(e);
	sbx_lock(&slots_lock);
	if (slot->health == ENGINE_DOWN && !slot->kick && started) {
		slot->kick = true;
		slot_poke(slot);
	}
	sbx_unlock(&slots_lock);
}

void engines_poke_all(void)
{
	sbx_lock(&slots_lock);
	for (size_t i = 1; started && i < nslots; i++)
		slot_poke(slots[i]);
	sbx_unlock(&slots_lock);
}

/* Logs an engine's reachability once per change (not per attempt). */
static void health_locked(struct engine_slot *e, bool up, const char *why) SBX_REQUIRES(slots_lock)
{
	if (up && e->health == ENGINE_DOWN) {
		log_info("engine %s answers again", slot_name(e));
		events_simple("engine_back", NULL, "engine", slot_name(e));
	} else if (!up && e->health != ENGINE_DOWN) {
		log_warn("engine %s does not answer (%s); retrying every 1 to %d s", slot_name(e),
			 why, BACKOFF_MAX);
		events_simple("engine_lost", NULL, "engine", slot_name(e));
	}
	e->health = up ? ENGINE_UP : ENGINE_DOWN;
}

void engine_health(const struct engine *e, bool up, const char *why)
{
	sbx_lock(&slots_lock);
	health_locked(slot_of(e), up, why);
	sbx_unlock(&slots_lock);
}

bool engine_down(const struct engine *e)
{
	if (!e)
		return false;
	sbx_lock(&slots_lock);
	bool down = slot_of(e)->health == ENGINE_DOWN;
	sbx_unlock(&slots_lock);
	return down;
}

void engine_recheck(const struct engine *e)
{
	if (!e)
		return;
	struct engine_slot *slot = slot_of(e);
	double now = mono_now();
	sbx_lock(&slots_lock);
	if (slot->health == ENGINE_DOWN && started && !slot->kick && now - slot->rechecked >= 1) {
		slot->rechecked = now;
		slot->kick = true;
		slot_poke(slot);
	}
	sbx_unlock(&slots_lock);
}

/* ---- the events streams (I/O thread) ---- */

static void events_connect(struct engine_slot *e);

static void arm_at(struct engine_slot *e, double when)
{
	double d = when - mono_now();
	if (d < 1e-6)
		d = 1e-6;
	struct itimerspec its = { .it_value = {
					  .tv_sec = (time_t)d,
					  .tv_nsec = (long)((d - (double)(time_t)d) * 1e9) } };
	if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
		its.it_value.tv_nsec = 1;
	timerfd_settime(e->retry.fd, 0, &its, NULL);
}

/* The I/O thread's half of freeing a slot that nothing needs any more. */
static void slot_free(struct engine_slot *e)
{
	log_info("engine %s: no template or sandbox uses it any more; its events stream is "
		 "closed",
		 slot_name(e));
	e->dead = true;
	if (e->out.fd >= 0) {
		ioloop_del(&e->out);
		close(e->out.fd);
		e->out.fd = -1;
	}
	if (e->pid > 0)
		cleanup_pidp(&e->pid);
	ioloop_del(&e->retry);
	close(e->retry.fd);
	e->retry.fd = -1;
	free(e->engine.endpoint);
	e->engine.endpoint = NULL;
	ioloop_free_later(e);
}

/* Removes the slot from the table when nothing uses it; true if it did. */
static bool slot_collect(struct engine_slot *e)
{
	char **names = NULL;
	size_t n = 0;
	bool named = false, gone = false;
	/* Before slots_lock: the templates' lock is never taken under it. */
	if (template_engines(&names, &n) < 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		named |= e->engine.endpoint && !strcmp(names[i], e->engine.endpoint);
		free(names[i]);
	}
	free(names);
	sbx_lock(&slots_lock);
	if (!named && e->users == 0 && e->engine.endpoint && slots[0] != e) {
		for (size_t i = 1; i < nslots; i++) {
			if (slots[i] == e) {
				memmove(&slots[i], &slots[i + 1],
					(nslots - i - 1) * sizeof(*slots));
				nslots--;
				gone = true;
				break;
			}
		}
	}
	sbx_unlock(&slots_lock);
	if (gone)
		slot_free(e);
	return gone;
}

static void events_retry_fired(struct io_watch *w, uint32_t mask)
{
	struct engine_slot *e = w->ctx;
	uint64_t ticks;
	if (e->dead || (read(w->fd, &ticks, sizeof(ticks)) < 0 && errno == EAGAIN))
		return;
	if (slot_collect(e) || e->out.fd >= 0)
		return; /* freed, or a poke while the stream is up */
	sbx_lock(&slots_lock);
	bool kick = e->kick;
	e->kick = false;
	sbx_unlock(&slots_lock);
	if (kick) {
		e->backoff = 1;
	} else if (mono_now() < e->next_try) {
		arm_at(e, e->next_try); /* a poke during the backoff */
		return;
	}
	events_connect(e);
}

static void events_schedule_retry(struct engine_slot *e)
{
	e->next_try = mono_now() + e->backoff;
	arm_at(e, e->next_try);
	e->backoff = e->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : e->backoff * 2;
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
	if (mono_now() - e->connected_at >= STREAM_STABLE)
		e->backoff = 1;
	/* Said once: until a listing tells, the engine's state is unknown. */
	sbx_lock(&slots_lock);
	bool was_up = e->health == ENGINE_UP;
	if (was_up)
		e->health = ENGINE_UNKNOWN;
	sbx_unlock(&slots_lock);
	if (was_up)
		log_warn("docker events stream of engine %s ended; reconnecting", slot_name(e));
	e->outage = true;
	e->outage_mono = mono_now();
	events_schedule_retry(e);
}

static void events_readable(struct io_watch *w, uint32_t mask)
{
	struct engine_slot *e = w->ctx;
	char buf[16384];
	if (e->dead)
		return;
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
		engine_health(&e->engine, false, err.msg);
		events_schedule_retry(e);
		return;
	}
	e->connected_at = mono_now();
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
