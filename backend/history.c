/* Run history that outlives the daemon: a sandbox adopted after a restart
 * gets its ended runs back from the spool. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "model_internal.h"
#include "state.h"

static void parse_time(const char *dir, const char *name, struct timespec *ts)
{
	char path[4200];
	cleanup_free char *text = NULL;
	struct tm tm = { 0 };
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (read_file(path, &text, NULL, 256) < 0)
		return;
	char *rest = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!rest)
		return;
	ts->tv_sec = timegm(&tm);
	if (*rest == '.')
		ts->tv_nsec = strtol(rest + 1, NULL, 10) * 1000000L;
}

static void write_small_file(const char *dir, const char *name, const char *text)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	write_file_atomic(path, text, strlen(text), NULL);
}

static void parse_status(struct run *r)
{
	char path[4200];
	cleanup_free char *text = NULL;
	snprintf(path, sizeof(path), "%s/status", r->dir);
	r->outcome = OUTCOME_LOST;
	if (read_file(path, &text, NULL, 256) < 0)
		return;
	int code;
	if (sscanf(text, "exited %d", &code) == 1) {
		r->outcome = OUTCOME_EXITED;
		r->exit_code = code;
	} else if (!strcmp(text, "timeout\n")) {
		r->outcome = OUTCOME_TIMEOUT;
	} else if (!strcmp(text, "killed\n")) {
		r->outcome = OUTCOME_KILLED;
	} else {
		/* "running": the daemon died under it; its end is unknown. */
		r->reason = strdup("the daemon restarted while the run was live");
	}
}

static struct run *reload_one(struct sandbox *s, unsigned number)
{
	struct run *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->refs = 1;
	r->sbx = s;
	r->number = number;
	r->alias = -1;
	r->phase = RUN_ENDED;
	if (asprintf(&r->dir, "%s/runs/%u", s->spool_dir, number) < 0) {
		free(r);
		return NULL;
	}
	static const char *const names[STREAM_COUNT] = { "output", "stdout", "stderr" };
	for (int st = 0; st < STREAM_COUNT; st++) {
		char path[4200];
		struct stat sb;
		snprintf(path, sizeof(path), "%s/%s", r->dir, names[st]);
		r->fd[st] = -1; /* opened when a reader comes */
		if (stat(path, &sb) == 0)
			r->size[st] = sb.st_size;
	}
	parse_status(r);
	parse_time(r->dir, "ended", &r->ended);
	if (r->outcome == OUTCOME_LOST && r->ended.tv_sec == 0) {
		/* It was live when the daemon died: it ends now, as far as
		 * anyone can tell, and the spool says so from now on. */
		char when[40], line[48];
		clock_gettime(CLOCK_REALTIME, &r->ended);
		format_time(&r->ended, when, sizeof(when));
		snprintf(line, sizeof(line), "%s\n", when);
		write_small_file(r->dir, "ended", line);
		write_small_file(r->dir, "status", "lost\n");
		write_small_file(r->dir, "reason", "the daemon restarted while the run was live\n");
	}
	char path[4200];
	char *reason = NULL;
	snprintf(path, sizeof(path), "%s/reason", r->dir);
	if (!r->reason && read_file(path, &reason, NULL, 4096) == 0) {
		reason[strcspn(reason, "\n")] = '\0';
		r->reason = reason;
	}
	parse_time(r->dir, "started", &r->started);
	return r;
}

void runs_reload_locked(struct sandbox *s)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/runs", s->spool_dir);
	DIR *d = opendir(path);
	if (!d)
		return;
	unsigned max = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		char *end;
		unsigned long n = strtoul(de->d_name, &end, 10);
		if (*end == '\0' && n > max && n < (1u << 24))
			max = (unsigned)n;
	}
	closedir(d);
	if (!max)
		return;
	struct run **v = calloc(max, sizeof(*v));
	if (!v)
		return;
	for (unsigned i = 0; i < max; i++) {
		v[i] = reload_one(s, i + 1);
		if (!v[i]) {
			while (i-- > 0)
				run_free_locked(v[i]);
			free(v);
			return;
		}
	}
	free(s->runs);
	s->runs = v;
	s->nruns = max;
}
