/* Run history that outlives the daemon: a sandbox adopted after a restart
 * gets its ended runs back from the spool.  All of it is disk I/O, done
 * before the sandbox is published and never under the model lock. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_internal.h"
#include "state.h"

#define LOST_AT_RESTART "the daemon restarted while the run was live"

static void parse_time(const char *dir, const char *name, struct timespec *ts)
{
	cleanup_free char *text = NULL;
	struct tm tm = { 0 };
	if (read_file_in(dir, name, &text, NULL, 256) < 0)
		return;
	char *rest = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!rest)
		return;
	ts->tv_sec = timegm(&tm);
	if (*rest == '.')
		ts->tv_nsec = strtol(rest + 1, NULL, 10) * 1000000L;
}

/* What the spool says of one ended run. */
struct loaded {
	enum run_outcome outcome;
	int exit_code;
	char *reason;
	struct timespec started, ended;
	off_t size[STREAM_COUNT];
	bool live; /* ran through the agent: a restart resumes it */
};

static void parse_status(const char *dir, struct loaded *l)
{
	cleanup_free char *text = NULL;
	l->outcome = OUTCOME_LOST;
	if (read_file_in(dir, "status", &text, NULL, 256) < 0)
		return;
	int code;
	if (sscanf(text, "exited %d", &code) == 1) {
		l->outcome = OUTCOME_EXITED;
		l->exit_code = code;
	} else if (!strcmp(text, "timeout\n")) {
		l->outcome = OUTCOME_TIMEOUT;
	} else if (!strcmp(text, "killed\n")) {
		l->outcome = OUTCOME_KILLED;
	} else if (!strcmp(text, "running\n")) {
		/* The daemon died under it; its end is unknown. */
		l->reason = strdup(LOST_AT_RESTART);
	}
}

static void load_one(const char *dir, struct loaded *l)
{
	for (int st = 0; st < STREAM_COUNT; st++) {
		char path[PATH_MAX];
		struct stat sb;
		if (path_join(path, sizeof(path), dir, stream_names[st]) == 0 &&
		    lstat(path, &sb) == 0 && S_ISREG(sb.st_mode))
			l->size[st] = sb.st_size;
	}
	parse_status(dir, l);
	parse_time(dir, "ended", &l->ended);
	char marker[PATH_MAX];
	struct stat msb;
	if (l->outcome == OUTCOME_LOST && l->ended.tv_sec == 0 && l->reason &&
	    path_join(marker, sizeof(marker), dir, "agent") == 0 && lstat(marker, &msb) == 0) {
		/* Live through the agent, which outlives us: resumed, not lost. */
		free(l->reason);
		l->reason = NULL;
		l->live = true;
	} else if (l->outcome == OUTCOME_LOST && l->ended.tv_sec == 0) {
		/* It was live when the daemon died: it ends now, as far as
		 * anyone can tell, and the spool says so from now on. */
		char when[40], line[48];
		clock_gettime(CLOCK_REALTIME, &l->ended);
		format_time(&l->ended, when, sizeof(when));
		snprintf(line, sizeof(line), "%s\n", when);
		write_file_in(dir, "ended", line, strlen(line), NULL);
		write_file_in(dir, "status", "lost\n", 5, NULL);
		write_file_in(dir, "reason", LOST_AT_RESTART "\n", strlen(LOST_AT_RESTART) + 1,
			      NULL);
	}
	char *reason = NULL;
	if (!l->reason && read_file_in(dir, "reason", &reason, NULL, 4096) == 0) {
		reason[strcspn(reason, "\n")] = '\0';
		l->reason = reason;
	}
	parse_time(dir, "started", &l->started);
}

/* A live run's spool, open again for appending: output, and each stream
 * that has its own file (one that is a hard link of output is its alias). */
static int reopen_spool(const char *dir, int fds[STREAM_COUNT], int *alias)
{
	struct stat out, sb;
	fds[STREAM_OUTPUT] = open_in(dir, "output", O_RDWR, 0600);
	if (fds[STREAM_OUTPUT] < 0 || fstat(fds[STREAM_OUTPUT], &out) < 0)
		return -EIO;
	for (int st = STREAM_STDOUT; st < STREAM_COUNT; st++) {
		int fd = open_in(dir, stream_names[st], O_RDWR, 0600);
		if (fd < 0)
			continue;
		if (fstat(fd, &sb) == 0 && sb.st_ino == out.st_ino && sb.st_dev == out.st_dev) {
			*alias = st;
			close(fd);
		} else {
			fds[st] = fd;
		}
	}
	return 0;
}

static unsigned highest_run(const char *runs_dir)
{
	DIR *d = opendir(runs_dir);
	if (!d)
		return 0;
	unsigned max = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		char *end;
		unsigned long n = strtoul(de->d_name, &end, 10);
		if (de->d_name[0] >= '1' && de->d_name[0] <= '9' && *end == '\0' && n > max &&
		    n < (1u << 24))
			max = (unsigned)n;
	}
	closedir(d);
	return max;
}

int runs_load(const struct sandbox *s, const char *container, struct run ***out, unsigned *n)
{
	char runs_dir[PATH_MAX];
	*out = NULL;
	*n = 0;
	if (path_join(runs_dir, sizeof(runs_dir), s->spool_dir, "runs") < 0)
		return -ENAMETOOLONG;
	unsigned max = highest_run(runs_dir);
	if (!max)
		return 0;
	struct run **v = calloc(max, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (unsigned i = 0; i < max; i++) {
		struct run *r = run_new(s, i + 1, container);
		if (!r) {
			sbx_lock(&model_lock);
			while (i-- > 0)
				run_put_locked(v[i]);
			sbx_unlock(&model_lock);
			free(v);
			return -ENOMEM;
		}
		struct loaded l = { 0 };
		load_one(r->dir, &l);
		int fds[STREAM_COUNT] = { -1, -1, -1 }, alias = -1;
		if (l.live && reopen_spool(r->dir, fds, &alias) < 0)
			l.live = false; /* cannot append: it ends lost at resume */
		sbx_lock(&model_lock);
		r->phase = l.live ? RUN_LIVE : RUN_ENDED;
		for (int st = 0; st < STREAM_COUNT; st++)
			r->fd[st] = fds[st];
		r->alias = alias;
		r->outcome = l.outcome;
		r->exit_code = l.exit_code;
		r->reason = l.reason;
		r->started = l.started;
		r->ended = l.ended;
		r->last_output = l.ended;
		for (int st = 0; st < STREAM_COUNT; st++)
			r->size[st] = l.size[st];
		sbx_unlock(&model_lock);
		v[i] = r;
	}
	*out = v;
	*n = max;
	return 0;
}
