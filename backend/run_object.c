/* Runs as objects: references, status lines, and the spool fds of ended
 * runs, opened only while someone reads them.  The live part is run.c. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "model_internal.h"

/* ---- reference counting ---- */

/* The sandbox's runs[] holds one reference that does not pin the sandbox;
 * every other reference (handles, the I/O thread, tasks) pins it too, so
 * r->sbx is valid for whoever holds a run. */
void run_get(struct run *r)
{
	r->refs++;
	r->sbx->refs++;
}

void run_free_locked(struct run *r)
{
	for (int i = 0; i < STREAM_COUNT; i++)
		if (r->fd[i] >= 0 && (i == STREAM_OUTPUT || r->alias != i))
			close(r->fd[i]);
	free(r->dir);
	free(r->reason);
	free(r);
}

void run_put_locked(struct run *r)
{
	if (!r)
		return;
	struct sandbox *s = r->sbx;
	if (--r->refs == 0)
		run_free_locked(r);
	sandbox_put_locked(s);
}

void run_put(struct run *r)
{
	pthread_mutex_lock(&model_lock);
	run_put_locked(r);
	pthread_mutex_unlock(&model_lock);
}

struct run *sandbox_latest_run(struct sandbox *s)
{
	return s->nruns ? s->runs[s->nruns - 1] : NULL;
}

struct run *sandbox_killable_run(struct sandbox *s)
{
	for (unsigned i = s->nruns; i > 0; i--) {
		struct run *r = s->runs[i - 1];
		if (r->phase != RUN_ENDED || (r->observer_lost && r->pgid > 1))
			return r;
	}
	return NULL;
}

struct run *sandbox_run(struct sandbox *s, unsigned number)
{
	return number >= 1 && number <= s->nruns ? s->runs[number - 1] : NULL;
}

void notify_run_changed(struct run *r)
{
	if (model_cb && model_cb->run_changed)
		model_cb->run_changed(r);
}

/* ---- status ---- */

void format_time(const struct timespec *ts, char *buf, size_t len)
{
	struct tm tm;
	char base[32];
	gmtime_r(&ts->tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03ldZ", base, ts->tv_nsec / 1000000);
}

void run_status_line(struct run *r, char *buf, size_t len)
{
	if (!r) {
		snprintf(buf, len, "idle\n");
		return;
	}
	if (r->phase != RUN_ENDED) {
		snprintf(buf, len, "running\n");
		return;
	}
	switch (r->outcome) {
	case OUTCOME_EXITED:
		snprintf(buf, len, "exited %d\n", r->exit_code);
		break;
	case OUTCOME_TIMEOUT:
		snprintf(buf, len, "timeout\n");
		break;
	case OUTCOME_KILLED:
		snprintf(buf, len, "killed\n");
		break;
	default:
		snprintf(buf, len, "lost\n");
		break;
	}
}

void sandbox_status_line(struct sandbox *s, struct run *r, char *buf, size_t len)
{
	if (s->paused && s->state == SBX_RUNNING && (!r || r->phase != RUN_ENDED))
		snprintf(buf, len, "paused\n");
	else
		run_status_line(r, buf, len);
}

/* An ended run keeps no fd open unless someone reads it: a sandbox with
 * thousands of runs must not hold thousands of files. */
void run_close_fds_locked(struct run *r)
{
	for (int i = 0; i < STREAM_COUNT; i++) {
		if (r->fd[i] >= 0)
			close(r->fd[i]);
		r->fd[i] = -1;
	}
	r->alias = -1;
}

void run_reader_get_locked(struct run *r)
{
	static const char *const names[STREAM_COUNT] = { "output", "stdout", "stderr" };
	r->readers++;
	if (r->phase != RUN_ENDED || r->fd[STREAM_OUTPUT] >= 0)
		return;
	for (int i = 0; i < STREAM_COUNT; i++) {
		char path[4200];
		snprintf(path, sizeof(path), "%s/%s", r->dir, names[i]);
		r->fd[i] = open(path, O_RDONLY | O_CLOEXEC);
	}
	r->alias = -1;
}

void run_reader_put(struct run *r)
{
	pthread_mutex_lock(&model_lock);
	if (--r->readers == 0 && r->phase == RUN_ENDED && !r->io)
		run_close_fds_locked(r);
	pthread_mutex_unlock(&model_lock);
}

int run_stream_fd(struct run *r, enum stream st)
{
	if (st != STREAM_OUTPUT && r->alias == (int)st)
		return r->fd[STREAM_OUTPUT];
	return r->fd[st];
}

