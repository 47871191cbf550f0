/* Runs as objects: references, copies of their state for fs/, status
 * lines, and the spool fds of ended runs, opened only while someone reads
 * them.  The live part is run.c.  A run never calls into its sandbox. */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "model_internal.h"
#include "state.h"

const char *const stream_names[STREAM_COUNT] = { "output", "stdout", "stderr" };

static void (*listener)(struct run *r);

void runs_set_listener(void (*fn)(struct run *r))
{
	listener = fn;
}

void notify_run_changed(struct run *r)
{
	if (listener)
		listener(r);
}

struct run *run_new(const struct sandbox *s, unsigned number, const char *container)
{
	struct run *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->number = number;
	r->engine = s->engine;
	r->max_output = model_config()->max_output;
	r->sandbox_name = strdup(s->name);
	r->container = strdup(container);
	if (asprintf(&r->dir, "%s/runs/%u", s->spool_dir, number) < 0)
		r->dir = NULL;
	sbx_lock(&model_lock);
	r->refs = 1;
	r->alias = -1;
	for (int i = 0; i < STREAM_COUNT; i++)
		r->fd[i] = -1;
	r->phase = RUN_STARTING;
	clock_gettime(CLOCK_REALTIME, &r->started);
	if (!r->dir || !r->sandbox_name || !r->container) {
		run_put_locked(r);
		r = NULL;
	}
	sbx_unlock(&model_lock);
	return r;
}

/* ---- reference counting ---- */

void run_get_locked(struct run *r)
{
	r->refs++;
}

static void run_free_locked(struct run *r) SBX_REQUIRES(model_lock)
{
	for (int i = 0; i < STREAM_COUNT; i++)
		if (r->fd[i] >= 0 && (i == STREAM_OUTPUT || r->alias != i))
			close(r->fd[i]);
	free(r->dir);
	free(r->reason);
	free(r->sandbox_name);
	free(r->container);
	free(r);
}

void run_put_locked(struct run *r)
{
	if (r && --r->refs == 0)
		run_free_locked(r);
}

void run_put(struct run *r)
{
	sbx_lock(&model_lock);
	run_put_locked(r);
	sbx_unlock(&model_lock);
}

unsigned run_number(const struct run *r)
{
	return r->number;
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

void outcome_status_line(enum run_outcome outcome, int code, char *buf, size_t len)
{
	switch (outcome) {
	case OUTCOME_EXITED:
		snprintf(buf, len, "exited %d\n", code);
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

void run_status_line_locked(struct run *r, char *buf, size_t len)
{
	if (!r)
		snprintf(buf, len, "idle\n");
	else if (r->phase != RUN_ENDED)
		snprintf(buf, len, "running\n");
	else
		outcome_status_line(r->outcome, r->exit_code, buf, len);
}

void run_status_line(struct run *r, char *buf, size_t len)
{
	sbx_lock(&model_lock);
	run_status_line_locked(r, buf, len);
	sbx_unlock(&model_lock);
}

void run_view(struct run *r, struct run_view *v)
{
	sbx_lock(&model_lock);
	*v = (struct run_view){
		.started = r->phase != RUN_STARTING,
		.ended = r->phase == RUN_ENDED,
		.start_errno = r->start_errno,
		.started_at = r->started,
		.ended_at = r->ended,
		.last_output = r->last_output,
	};
	for (int i = 0; i < STREAM_COUNT; i++)
		v->size[i] = r->size[i];
	run_status_line_locked(r, v->status, sizeof(v->status));
	sbx_unlock(&model_lock);
}

/* ---- readers ---- */

/* An ended run keeps no fd open unless someone reads it: a sandbox with
 * thousands of runs must not hold thousands of files. */
void run_close_fds_locked(struct run *r)
{
	for (int i = 0; i < STREAM_COUNT; i++) {
		if (r->fd[i] >= 0 && (i == STREAM_OUTPUT || r->alias != i))
			close(r->fd[i]);
		r->fd[i] = -1;
	}
	r->alias = -1;
}

int run_reader_open(struct run *r)
{
	sbx_lock(&model_lock);
	r->readers++;
	bool need_open = r->phase == RUN_ENDED && r->fd[STREAM_OUTPUT] < 0;
	sbx_unlock(&model_lock);
	if (!need_open)
		return 0;

	/* Opened without the lock; another reader may race us to it. */
	int fds[STREAM_COUNT];
	for (int i = 0; i < STREAM_COUNT; i++) {
		fds[i] = open_in(r->dir, stream_names[i], O_RDONLY, 0);
		if (fds[i] < 0)
			fds[i] = -1;
	}
	sbx_lock(&model_lock);
	bool mine = r->fd[STREAM_OUTPUT] < 0 && r->readers > 0;
	if (mine) {
		for (int i = 0; i < STREAM_COUNT; i++)
			r->fd[i] = fds[i];
		r->alias = -1;
	}
	sbx_unlock(&model_lock);
	if (!mine)
		for (int i = 0; i < STREAM_COUNT; i++)
			if (fds[i] >= 0)
				close(fds[i]);
	return 0;
}

void run_reader_close(struct run *r)
{
	sbx_lock(&model_lock);
	if (--r->readers == 0 && r->phase == RUN_ENDED && !r->io)
		run_close_fds_locked(r);
	sbx_unlock(&model_lock);
}

void run_read_span(struct run *r, enum stream st, off_t pos, size_t max, int *fd, size_t *n)
{
	sbx_lock(&model_lock);
	*fd = (st != STREAM_OUTPUT && r->alias == (int)st) ? r->fd[STREAM_OUTPUT] : r->fd[st];
	off_t avail = r->size[st];
	*n = 0;
	if (*fd >= 0 && pos < avail)
		*n = (size_t)(avail - pos) < max ? (size_t)(avail - pos) : max;
	sbx_unlock(&model_lock);
}

int run_file_open(struct run *r, const char *name)
{
	return open_in(r->dir, name, O_RDONLY, 0);
}

char *run_file_text(struct run *r, const char *name, size_t *len)
{
	char *text = NULL;
	*len = 0;
	if (read_file_in(r->dir, name, &text, len, 64u << 20) < 0) {
		text = strdup("");
		*len = 0;
	}
	return text;
}
