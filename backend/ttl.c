/* The idle TTL: a sandbox with nothing going on (no live run, no new run,
 * no open file) for `ttl` seconds is stopped (info: "stopped (idle)") or
 * removed.  A live run is always activity: it is never killed for being
 * long.  The next exec starts an idle-stopped sandbox again.  The TTL,
 * the action and whether it is stopped for idleness live in the spool
 * directory's `ttl` file, so that they survive a restart. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events.h"
#include "log.h"
#include "model_internal.h"
#include "state.h"
#include "workspace.h"

static double real_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Writes STATE/sandboxes/NAME/ttl: "SECONDS stop|remove[ idle]\n". */
static void ttl_persist(struct sandbox *s) SBX_EXCLUDES(model_lock)
{
	char line[64];
	sbx_lock(&model_lock);
	snprintf(line, sizeof(line), "%ld %s%s\n", s->ttl, s->ttl_remove ? "remove" : "stop",
		 s->idle_stopped ? " idle" : "");
	sbx_unlock(&model_lock);
	struct sbx_err err = { 0 };
	if (write_file_in(s->spool_dir, "ttl", line, strlen(line), &err) < 0)
		log_warn("sandbox %s: keeping its ttl: %s", s->name, err.msg);
}

void sandbox_ttl_init(struct sandbox *s, long ttl, bool remove)
{
	sbx_lock(&model_lock);
	s->ttl = ttl;
	s->ttl_remove = remove;
	s->last_active = real_now();
	sbx_unlock(&model_lock);
}

void sandbox_ttl_created(struct sandbox *s)
{
	ttl_persist(s);
}

void sandbox_ttl_load(struct sandbox *s, bool running)
{
	char *text = NULL;
	size_t len = 0;
	long ttl = 0;
	char action[16] = "", idle[8] = "";
	if (read_file_in(s->spool_dir, "ttl", &text, &len, 64) == 0 && text) {
		text[len < 64 ? len : 63] = '\0';
		if (sscanf(text, "%ld %15s %7s", &ttl, action, idle) < 2 || ttl < 0)
			ttl = 0;
	}
	free(text);
	sbx_lock(&model_lock);
	s->ttl = ttl;
	s->ttl_remove = !strcmp(action, "remove");
	s->idle_stopped = !running && !strcmp(idle, "idle");
	s->last_active = real_now(); /* a restart is a fresh start of the clock */
	sbx_unlock(&model_lock);
}

int sandbox_set_ttl(struct sandbox *s, const char *buf, size_t len, struct sbx_err *err)
{
	long secs = 0;
	int rc = parse_timeout(buf, len, &secs, err);
	if (rc < 0)
		return sbx_err_wrap(err, "ttl");
	sbx_lock(&model_lock);
	s->ttl = secs;
	s->last_active = real_now();
	clock_gettime(CLOCK_REALTIME, &s->settings_changed);
	sbx_unlock(&model_lock);
	ttl_persist(s);
	return 0;
}

void sandbox_files_opened(struct sandbox *s, int delta)
{
	sbx_lock(&model_lock);
	if (delta > 0)
		s->open_files++;
	else if (s->open_files > 0)
		s->open_files--;
	s->last_active = real_now();
	sbx_unlock(&model_lock);
}

/* Seconds s has been idle, or -1 when something goes on (or no TTL). */
static double idle_for_locked(struct sandbox *s, double now) SBX_REQUIRES(model_lock)
{
	if (s->state != SBX_RUNNING || s->paused || s->stopping || s->open_files)
		return -1;
	double last = s->last_active;
	for (unsigned i = s->nruns; i > 0; i--) {
		struct run *r = s->runs[i - 1];
		if (r->phase != RUN_ENDED || (r->observer_lost && r->pgid > 1))
			return -1; /* a live run is activity, however long */
		double end = (double)r->ended.tv_sec + (double)r->ended.tv_nsec / 1e9;
		if (end > last)
			last = end;
		break; /* earlier runs ended before the latest started */
	}
	return now - last;
}

double sandbox_idle_seconds(struct sandbox *s)
{
	sbx_lock(&model_lock);
	double idle = idle_for_locked(s, real_now());
	sbx_unlock(&model_lock);
	return idle;
}

int sandbox_wake_for_run(struct sandbox *s, struct sbx_err *err)
{
	/* An idle stop in progress: let it finish, then start again. */
	for (int i = 0; i < 400; i++) {
		sbx_lock(&model_lock);
		bool stopping = s->stopping;
		if (!stopping)
			s->last_active = real_now();
		bool wake = !stopping && s->idle_stopped && s->state == SBX_STOPPED;
		sbx_unlock(&model_lock);
		if (!stopping && !wake)
			return 0;
		if (wake)
			break;
		struct timespec t = { .tv_nsec = 50 * 1000 * 1000 };
		nanosleep(&t, NULL);
	}
	char *cid = sandbox_container_dup(s);
	if (!cid)
		return sbx_err_set(err, ENOMEM, "exec: out of memory");
	int rc = workspace_start_container(s->engine, cid, err);
	free(cid);
	if (rc < 0)
		return sbx_err_wrap(err, "exec: starting the idle sandbox %s", s->name);
	sbx_lock(&model_lock);
	if (s->state == SBX_STOPPED)
		s->state = SBX_RUNNING;
	s->idle_stopped = false;
	s->last_active = real_now();
	sandbox_changed_locked(s);
	sbx_unlock(&model_lock);
	ttl_persist(s);
	log_info("sandbox %s: started again for a run after an idle stop", s->name);
	events_simple("sandbox_started", s->name, "by", "exec");
	return 0;
}

/* Stops or removes s if it has been idle past its TTL. */
static void check(struct sandbox *s)
{
	sbx_lock(&model_lock);
	double idle = s->ttl > 0 ? idle_for_locked(s, real_now()) : -1;
	bool act = idle >= (double)s->ttl && s->ttl > 0;
	bool remove = s->ttl_remove;
	long ttl = s->ttl;
	if (act)
		s->stopping = true; /* a run starting now waits for us */
	sbx_unlock(&model_lock);
	if (!act)
		return;
	cJSON *ev = events_new("sandbox_idle", s->name);
	if (ev) {
		cJSON_AddNumberToObject(ev, "ttl", (double)ttl);
		cJSON_AddStringToObject(ev, "action", remove ? "remove" : "stop");
	}
	events_emit(ev);
	struct sbx_err err = { 0 };
	int rc;
	if (remove) {
		sbx_lock(&model_lock);
		s->stopping = false;
		sbx_unlock(&model_lock);
		log_info("sandbox %s: idle for %ld s: removing it", s->name, ttl);
		rc = sandbox_remove(s->name, &err);
	} else {
		log_info("sandbox %s: idle for %ld s: stopping it", s->name, ttl);
		char *cid = sandbox_container_dup(s);
		rc = cid ? engine_stop(s->engine, cid, &err)
			 : sbx_err_set(&err, ENOMEM, "out of memory");
		free(cid);
		sbx_lock(&model_lock);
		if (rc == 0) {
			if (s->state == SBX_RUNNING)
				s->state = SBX_STOPPED;
			s->idle_stopped = true;
			s->paused = false;
			free(s->last_error);
			s->last_error = NULL;
			sandbox_changed_locked(s);
			sandbox_mark_runs_locked(s, false);
		}
		s->last_active = real_now();
		s->stopping = false;
		sbx_unlock(&model_lock);
		if (rc == 0) {
			ttl_persist(s);
			events_simple("sandbox_stopped", s->name, "by", "idle");
		}
	}
	if (rc < 0)
		log_warn("sandbox %s: idle %s failed: %s", s->name, remove ? "removal" : "stop",
			 err.msg);
}

static pthread_t checker;
static bool checker_started;
static sbx_mutex ttl_lock = SBX_MUTEX_INIT;
static pthread_cond_t ttl_cond = PTHREAD_COND_INITIALIZER;
static bool ttl_quit SBX_GUARDED_BY(ttl_lock);

static void *checker_main(void *arg) SBX_NO_TSA
{
	(void)arg;
	for (;;) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		sbx_lock(&ttl_lock);
		if (!ttl_quit)
			pthread_cond_timedwait(&ttl_cond, &ttl_lock.m, &until);
		bool quit = ttl_quit;
		sbx_unlock(&ttl_lock);
		if (quit)
			return NULL;
		struct sandbox_listing l;
		if (model_list(&l) < 0)
			continue;
		for (size_t i = 0; i < l.n; i++) {
			struct sandbox *s = model_find_id(l.ids[i]);
			if (s) {
				check(s);
				sandbox_put(s);
			}
		}
		sandbox_listing_free(&l);
	}
}

void ttl_start(void)
{
	sbx_lock(&ttl_lock);
	ttl_quit = false;
	sbx_unlock(&ttl_lock);
	checker_started = pthread_create(&checker, NULL, checker_main, NULL) == 0;
}

void ttl_stop(void)
{
	if (!checker_started)
		return;
	sbx_lock(&ttl_lock);
	ttl_quit = true;
	pthread_cond_signal(&ttl_cond);
	sbx_unlock(&ttl_lock);
	pthread_join(checker, NULL);
	checker_started = false;
}
