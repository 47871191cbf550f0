/* Runs: start a docker exec, spool what it prints (masked), learn how it
 * ended.  The live part (struct run_io) belongs to the I/O thread. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

#include "ioloop.h"
#include "log.h"
#include "model_internal.h"
#include "subprocess.h"
#include "state.h"

static const char *const stream_names[STREAM_COUNT] = { "output", "stdout", "stderr" };

/* Commands up to this size go to the container as an argument, larger
 * ones on stdin (the kernel refuses single arguments over 128 KiB). */
#define INLINE_CMD_MAX (64 * 1024)

struct run_io {
	struct run *run;  /* holds a reference until the run ends */
	struct io_watch in, out, err, pid, timer;
	pid_t child;
	int cmd_fd;       /* the run's cmd file, fed to stdin when large */
	size_t cmd_len, cmd_off;
	bool out_open, err_open, exited;
	int exit_code;
	int cli_signal;   /* the signal that ended the local docker exec, or 0 */
	bool marker_done;
	bool not_started; /* stdout began with something else than the marker */
	char marker[24];
	size_t marker_len;
	char early_err[512]; /* docker's own complaint, before the wrapper ran */
	size_t early_err_len;
	/* stderr that arrived before the wrapper's marker: output once the
	 * marker shows the run started, docker's complaint if it never does. */
	char *pre_err;
	size_t pre_err_len;
	bool pre_err_spilled; /* too much to hold: pushed as it comes */
	/* One masker per file: output masks the merged bytes in arrival
	 * order (a secret split across stdout and stderr is masked there). */
	struct masker mask[STREAM_COUNT];
	int spool_errno;
};

/* ---- the spool ---- */

static int open_stream_file(struct run *r, enum stream st, int flags)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", r->dir, stream_names[st]);
	return open(path, flags | O_CLOEXEC, 0600);
}

static void write_small(struct run *r, const char *name, const char *text)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", r->dir, name);
	write_file_atomic(path, text, strlen(text), NULL);
}

static int pwrite_all(int fd, const char *buf, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, buf, len, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* The first stream to speak shares output's file (a hard link); when the
 * other one speaks too, it gets a copy of its own. */
static int materialize(struct run *r, enum stream st)
{
	char path[4200], tmp[4300];
	snprintf(path, sizeof(path), "%s/%s", r->dir, stream_names[st]);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	pthread_mutex_lock(&model_lock);
	off_t len = r->size[st];
	pthread_mutex_unlock(&model_lock);
	off_t in = 0, out = 0;
	while (in < len) {
		ssize_t n = copy_file_range(r->fd[STREAM_OUTPUT], &in, fd, &out, (size_t)(len - in), 0);
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			close(fd);
			unlink(tmp);
			return -e;
		}
	}
	if (rename(tmp, path) < 0) {
		int e = errno;
		close(fd);
		unlink(tmp);
		return -e;
	}
	pthread_mutex_lock(&model_lock);
	r->fd[st] = fd;
	r->alias = -1;
	pthread_mutex_unlock(&model_lock);
	return 0;
}

/* Before stream st's bytes go anywhere: the first stream to speak shares
 * output's file; when the other one speaks, the first gets its own copy. */
static int spool_prepare(struct run *r, enum stream st)
{
	enum stream other = st == STREAM_STDOUT ? STREAM_STDERR : STREAM_STDOUT;
	int rc;

	/* Only the I/O thread changes alias and fd[], so reading them here
	 * without the lock is safe. */
	if (r->alias < 0 && r->fd[st] < 0 && r->fd[other] < 0) {
		char out[4200], link_path[4200];
		snprintf(out, sizeof(out), "%s/output", r->dir);
		snprintf(link_path, sizeof(link_path), "%s/%s", r->dir, stream_names[st]);
		if (link(out, link_path) < 0 && errno != EEXIST)
			return -errno;
		pthread_mutex_lock(&model_lock);
		r->alias = st;
		pthread_mutex_unlock(&model_lock);
	} else if (r->alias == (int)other) {
		rc = materialize(r, other);
		if (rc < 0)
			return rc;
	}
	if (r->alias != (int)st && r->fd[st] < 0) {
		int fd = open_stream_file(r, st, O_RDWR | O_CREAT | O_TRUNC);
		if (fd < 0)
			return -errno;
		pthread_mutex_lock(&model_lock);
		r->fd[st] = fd;
		pthread_mutex_unlock(&model_lock);
	}
	return 0;
}

/* Masked bytes of one file.  While a stream is output's alias, its own
 * masker saw exactly what output's saw: output's bytes count for both. */
static int spool_append(struct run *r, enum stream st, const char *buf, size_t len)
{
	if (st != STREAM_OUTPUT && r->alias == (int)st)
		return 0;
	int rc = pwrite_all(r->fd[st], buf, len, r->size[st]);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&model_lock);
	r->size[st] += (off_t)len;
	if (st == STREAM_OUTPUT && r->alias >= 0)
		r->size[r->alias] += (off_t)len;
	pthread_mutex_unlock(&model_lock);
	return 0;
}

struct emit_ctx {
	struct run_io *io;
	enum stream st;
};

/* The spool takes no more of this run: the disk is full, or the run hit
 * max_output.  The pipes keep being drained so the command is not blocked;
 * the run is marked truncated. */
static void spool_stop(struct run_io *io, int e)
{
	struct run *r = io->run;
	char msg[160];
	io->spool_errno = e;
	if (e == EFBIG)
		snprintf(msg, sizeof(msg), "output truncated at %lld bytes (max_output)",
			 (long long)model_config()->max_output);
	else
		snprintf(msg, sizeof(msg), "output truncated: %s", strerror(e));
	pthread_mutex_lock(&model_lock);
	r->truncated = true;
	if (!r->reason)
		r->reason = strdup(msg);
	pthread_mutex_unlock(&model_lock);
	log_error("sandbox %s run %u: %s", r->sbx->name, r->number, msg);
}

/* How many of len bytes the cap still lets into file st. */
static size_t cap_room(struct run *r, enum stream st, size_t len)
{
	long long max = model_config()->max_output;
	if (max <= 0)
		return len;
	long long room = max - (long long)r->size[st];
	return room <= 0 ? 0 : (size_t)room < len ? (size_t)room : len;
}

static int emit_masked(void *ctx, const char *buf, size_t len)
{
	struct emit_ctx *e = ctx;
	if (e->io->spool_errno)
		return 0; /* keep draining the pipe; the run is marked truncated */
	size_t room = cap_room(e->io->run, e->st, len);
	int rc = room ? spool_append(e->io->run, e->st, buf, room) : 0;
	if (rc < 0)
		spool_stop(e->io, -rc);
	else if (room < len)
		spool_stop(e->io, EFBIG);
	return 0;
}

/* ---- the live run (I/O thread) ---- */

static void finish(struct run_io *io);

static void set_live(struct run_io *io, long pgid)
{
	struct run *r = io->run;
	pthread_mutex_lock(&model_lock);
	r->pgid = pgid;
	if (r->phase == RUN_STARTING)
		r->phase = RUN_LIVE;
	pthread_mutex_unlock(&model_lock);
	notify_run_changed(r);
}

static void push(struct run_io *io, enum stream st, const char *buf, size_t len)
{
	struct emit_ctx e = { io, st }, o = { io, STREAM_OUTPUT };
	if (!io->spool_errno) {
		int rc = spool_prepare(io->run, st);
		if (rc < 0)
			spool_stop(io, -rc);
	}
	mask_push(&io->mask[st], buf, len, emit_masked, &e);
	mask_push(&io->mask[STREAM_OUTPUT], buf, len, emit_masked, &o);
}

/* Keeps what docker said before the wrapper ran, bounded. */
static void early_complaint(struct run_io *io, const char *buf, size_t len)
{
	size_t room = sizeof(io->early_err) - 1 - io->early_err_len;
	size_t k = len < room ? len : room;
	memcpy(io->early_err + io->early_err_len, buf, k);
	io->early_err_len += k;
	io->early_err[io->early_err_len] = '\0';
}

#define PRE_ERR_MAX (64 * 1024)

/* Held stderr becomes output (the marker arrived, or there is too much). */
static void release_pre_err(struct run_io *io)
{
	if (io->pre_err_len)
		push(io, STREAM_STDERR, io->pre_err, io->pre_err_len);
	free(io->pre_err);
	io->pre_err = NULL;
	io->pre_err_len = 0;
	io->pre_err_spilled = true;
}

/* Returns true when buf was held back. */
static bool hold_pre_err(struct run_io *io, const char *buf, size_t len)
{
	if (io->pre_err_spilled)
		return false;
	if (!io->pre_err)
		io->pre_err = malloc(PRE_ERR_MAX);
	if (!io->pre_err || io->pre_err_len + len > PRE_ERR_MAX) {
		release_pre_err(io);
		return false;
	}
	memcpy(io->pre_err + io->pre_err_len, buf, len);
	io->pre_err_len += len;
	return true;
}

/* The wrapper's first line on stdout is its pid (= the process group). */
static size_t take_marker(struct run_io *io, const char *buf, size_t len)
{
	size_t used = 0;
	while (used < len && !io->marker_done) {
		char c = buf[used++];
		if (c == '\n') {
			io->marker[io->marker_len] = '\0';
			io->marker_done = true;
			char *end;
			long pid = strtol(io->marker, &end, 10);
			set_live(io, (*end == '\0' && pid > 1) ? pid : 0);
			release_pre_err(io);
			return used;
		}
		if (c < '0' || c > '9' || io->marker_len + 1 >= sizeof(io->marker)) {
			/* The wrapper speaks first, so this is docker or the
			 * runtime saying why the run did not start (e.g. "OCI
			 * runtime exec failed: ... chdir to cwd"): a reason,
			 * not output. */
			io->not_started = true;
			early_complaint(io, io->marker, io->marker_len);
			early_complaint(io, buf + used - 1, len - (used - 1));
			return len;
		}
		io->marker[io->marker_len++] = c;
	}
	return used;
}

static void close_watch(struct io_watch *w)
{
	if (w->fd >= 0) {
		ioloop_del(w);
		close(w->fd);
		w->fd = -1;
	}
}

/* The common case — nothing to mask, only one stream speaking — moves the
 * bytes pipe → spool in the kernel (splice), never through user space.
 * Returns bytes moved, 0 at end-of-file, -EAGAIN, -ENOTSUP to take the
 * copying path, or another -errno when the spool cannot be written. */
static ssize_t splice_to_spool(struct run_io *io, enum stream st, int fd)
{
	struct run *r = io->run;
	/* Only this thread changes alias, fd[] and size[]: no lock to read them. */
	if (io->mask[st].nsecrets || io->spool_errno || io->not_started || r->alias != (int)st ||
	    (st == STREAM_STDOUT && !io->marker_done))
		return -ENOTSUP;
	loff_t off = r->size[STREAM_OUTPUT];
	size_t room = cap_room(r, STREAM_OUTPUT, 1 << 20);
	if (room == 0)
		return -ENOTSUP; /* the copying path discards and marks truncated */
	ssize_t n = splice(fd, NULL, r->fd[STREAM_OUTPUT], &off, room,
			   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	if (n < 0)
		return errno == EINVAL ? -ENOTSUP : -errno;
	pthread_mutex_lock(&model_lock);
	r->size[STREAM_OUTPUT] += n;
	r->size[st] += n;
	pthread_mutex_unlock(&model_lock);
	return n;
}

static void stream_readable(struct io_watch *w, uint32_t events)
{
	static char buf[256 * 1024]; /* the I/O thread is the only reader */
	struct run_io *io = w->ctx;
	enum stream st = w == &io->out ? STREAM_STDOUT : STREAM_STDERR;

	ssize_t moved = splice_to_spool(io, st, w->fd);
	if (moved > 0) {
		notify_run_changed(io->run);
		return;
	}
	if (moved == -EAGAIN || moved == -EINTR)
		return;
	if (moved < 0 && moved != -ENOTSUP)
		spool_stop(io, (int)-moved);

	ssize_t n = moved == 0 ? 0 : read(w->fd, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		struct emit_ctx e = { io, st };
		close_watch(w);
		if (st == STREAM_STDOUT) {
			io->out_open = false;
			if (!io->marker_done && !io->not_started && io->marker_len) {
				io->marker_done = true;
				release_pre_err(io);
				push(io, STREAM_STDOUT, io->marker, io->marker_len);
			}
		} else {
			io->err_open = false;
		}
		mask_flush(&io->mask[st], emit_masked, &e);
		if (!io->out_open && !io->err_open) {
			struct emit_ctx o = { io, STREAM_OUTPUT };
			mask_flush(&io->mask[STREAM_OUTPUT], emit_masked, &o);
		}
		notify_run_changed(io->run);
		if (io->exited && !io->out_open && !io->err_open)
			finish(io);
		return;
	}
	size_t off = 0;
	if (io->not_started) {
		early_complaint(io, buf, (size_t)n);
		return;
	}
	if (st == STREAM_STDOUT && !io->marker_done)
		off = take_marker(io, buf, (size_t)n);
	if (io->not_started)
		return;
	if (st == STREAM_STDERR && !io->marker_done) {
		early_complaint(io, buf, (size_t)n);
		if (hold_pre_err(io, buf, (size_t)n))
			return;
	}
	if ((size_t)n > off) {
		push(io, st, buf + off, (size_t)n - off);
		notify_run_changed(io->run);
	}
}

static void stdin_writable(struct io_watch *w, uint32_t events)
{
	static char buf[64 * 1024]; /* the I/O thread is the only user */
	struct run_io *io = w->ctx;
	while (io->cmd_off < io->cmd_len) {
		size_t want = io->cmd_len - io->cmd_off;
		ssize_t got = pread(io->cmd_fd, buf, want < sizeof(buf) ? want : sizeof(buf),
				    (off_t)io->cmd_off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break; /* the spool went bad: the wrapper gets a short script */
		ssize_t n = write(w->fd, buf, (size_t)got);
		if (n < 0) {
			if (errno == EAGAIN)
				return;
			if (errno == EINTR)
				continue;
			break; /* EPIPE: docker exec is gone; its exit tells why */
		}
		io->cmd_off += (size_t)n;
	}
	close_watch(w);
	if (io->cmd_fd >= 0)
		close(io->cmd_fd);
	io->cmd_fd = -1;
}

static void child_exited(struct io_watch *w, uint32_t events)
{
	struct run_io *io = w->ctx;
	int status;
	pid_t p = waitpid(io->child, &status, WNOHANG);
	if (p == 0 || (p < 0 && errno == EINTR))
		return;
	io->exit_code = p < 0 ? 255 : spawn_exit_code(status);
	io->cli_signal = p > 0 && WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	io->exited = true;
	close_watch(w);
	pthread_mutex_lock(&model_lock);
	io->run->local_pid = 0;
	pthread_mutex_unlock(&model_lock);
	if (!io->out_open && !io->err_open)
		finish(io);
}

struct kill_req {
	struct run *run;
	int sig;
};

static void kill_task(void *ctx)
{
	struct kill_req *k = ctx;
	struct sbx_err err = { 0 };
	if (run_kill(k->run, k->sig, &err) < 0 && err.code != ESRCH)
		log_warn("sandbox %s run %u: %s", k->run->sbx->name, k->run->number, err.msg);
	run_put(k->run);
	free(k);
}

static void timer_fired(struct io_watch *w, uint32_t events)
{
	struct run_io *io = w->ctx;
	uint64_t ticks;
	if (read(w->fd, &ticks, sizeof(ticks)) < 0 && errno == EAGAIN)
		return;
	close_watch(w);
	struct kill_req *k = calloc(1, sizeof(*k));
	pthread_mutex_lock(&model_lock);
	io->run->timed_out = true;
	if (k) {
		k->run = io->run;
		k->sig = SIGKILL;
		run_get(io->run);
	}
	pthread_mutex_unlock(&model_lock);
	log_info("sandbox %s run %u: timeout expired, killing it", io->run->sbx->name,
		 io->run->number);
	if (k && task_queue(kill_task, k) < 0) {
		run_put(k->run);
		free(k);
	}
}

/* ---- the end of a run ---- */

static void conclude(struct run *r, enum run_outcome outcome, int code, int start_errno,
		     const char *reason)
{
	char line[64], when[40];
	pthread_mutex_lock(&model_lock);
	r->outcome = outcome;
	r->exit_code = code;
	if (start_errno)
		r->start_errno = start_errno;
	if (reason && !r->reason)
		r->reason = strdup(reason);
	clock_gettime(CLOCK_REALTIME, &r->ended);
	r->phase = RUN_ENDED;
	r->local_pid = 0;
	run_status_line(r, line, sizeof(line));
	format_time(&r->ended, when, sizeof(when));
	if (reason)
		sandbox_set_error(r->sbx, reason);
	/* A stream that never spoke still gets its (empty) file. */
	bool need_files[STREAM_COUNT] = { false };
	for (int st = STREAM_STDOUT; st < STREAM_COUNT; st++)
		need_files[st] = r->fd[st] < 0 && r->alias != st;
	pthread_mutex_unlock(&model_lock);

	for (int st = STREAM_STDOUT; st < STREAM_COUNT; st++) {
		if (!need_files[st])
			continue;
		int fd = open_stream_file(r, st, O_RDWR | O_CREAT);
		pthread_mutex_lock(&model_lock);
		r->fd[st] = fd;
		pthread_mutex_unlock(&model_lock);
	}
	pthread_mutex_lock(&model_lock);
	if (r->readers == 0)
		run_close_fds_locked(r);
	pthread_mutex_unlock(&model_lock);

	char when_line[48];
	snprintf(when_line, sizeof(when_line), "%s\n", when);
	write_small(r, "ended", when_line);
	pthread_mutex_lock(&model_lock);
	char *why = r->reason ? strdup(r->reason) : NULL;
	pthread_mutex_unlock(&model_lock);
	if (why) {
		char reason_line[760];
		snprintf(reason_line, sizeof(reason_line), "%.750s\n", why);
		write_small(r, "reason", reason_line);
		free(why);
	}
	write_small(r, "status", line);
	if (reason)
		log_warn("sandbox %s run %u: %s", r->sbx->name, r->number, reason);
	notify_run_changed(r);
}

struct verdict_req {
	struct run *run;
	int code;
};

/* An exit code that docker itself uses when the container went away:
 * ask the engine whether the container still runs before believing it. */
static void verdict_task(void *ctx)
{
	struct verdict_req *v = ctx;
	struct sbx_err err = { 0 };
	pthread_mutex_lock(&model_lock);
	char *cid = strdup(v->run->sbx->container_id ? v->run->sbx->container_id : "");
	bool died = v->run->container_died;
	pthread_mutex_unlock(&model_lock);
	int running = died ? 0 : engine_is_running(v->run->sbx->engine, cid, &err);
	free(cid);
	if (running == 1)
		conclude(v->run, OUTCOME_EXITED, v->code, 0, NULL);
	else
		conclude(v->run, OUTCOME_LOST, v->code, 0,
			 "the container stopped or was removed under the run");
	run_put(v->run);
	free(v);
}

static void finish(struct run_io *io)
{
	struct run *r = io->run;
	int code = io->exit_code;

	close_watch(&io->timer);
	close_watch(&io->in);
	free(io->pre_err);
	for (int i = 0; i < STREAM_COUNT; i++)
		masker_free(&io->mask[i]);
	if (io->cmd_fd >= 0)
		close(io->cmd_fd);

	pthread_mutex_lock(&model_lock);
	r->io = NULL;
	bool timed_out = r->timed_out, killed = r->kill_requested, died = r->container_died;
	/* Our own kills go through the group inside (docker exec then exits
	 * 137 by itself); a local docker exec dying of a signal was killed by
	 * someone else, and says nothing about the command. */
	bool observer_lost = io->marker_done && io->cli_signal && r->pgid > 1 && !died &&
			     !timed_out;
	if (observer_lost)
		r->observer_lost = true;
	pthread_mutex_unlock(&model_lock);

	if (!io->marker_done) {
		int e = engine_classify_error(io->early_err, code);
		char reason[700];
		const char *msg = io->early_err_len ? io->early_err : "no output";
		if (io->cli_signal && !io->not_started)
			/* Killed before the marker came through: the command may
			 * run inside, but its process group is unknown. */
			snprintf(reason, sizeof(reason),
				 "the docker exec observing the run died (signal %d) before the run "
				 "reported its start; the command may run inside", io->cli_signal);
		else
			snprintf(reason, sizeof(reason),
				 "the run did not start: docker exec exited %d: %.500s", code, msg);
		for (char *p = reason; *p; p++)
			if (*p == '\n' || *p == '\r')
				*p = ' ';
		conclude(r, OUTCOME_LOST, code, e == EIO && died ? EHOSTDOWN : e, reason);
	} else if (observer_lost) {
		char reason[200];
		snprintf(reason, sizeof(reason),
			 "the docker exec observing the run died (signal %d); the command may "
			 "still run inside (process group %ld): ctl kill reaches it",
			 io->cli_signal, r->pgid);
		conclude(r, OUTCOME_LOST, code, 0, reason);
	} else if (timed_out) {
		conclude(r, OUTCOME_TIMEOUT, code, 0, NULL);
	} else if (killed && code > 128) {
		conclude(r, OUTCOME_KILLED, code, 0, NULL);
	} else if (died) {
		conclude(r, OUTCOME_LOST, code, 0, "the container stopped or was removed under the run");
	} else if (code == 137 || code == 255 || code == 125 || code == 126) {
		struct verdict_req *v = calloc(1, sizeof(*v));
		if (v) {
			v->run = r;
			v->code = code;
			free(io);
			if (task_queue(verdict_task, v) == 0)
				return;
			free(v);
		}
		conclude(r, OUTCOME_EXITED, code, 0, NULL);
		run_put(r);
		return;
	} else {
		conclude(r, OUTCOME_EXITED, code, 0, NULL);
	}
	free(io);
	run_put(r);
}

/* ---- starting ---- */

/* Appends "KEY=VALUE\n" for each pair. */
static int env_text(const struct kv_list *a, const struct kv_list *b, char **out, size_t *len)
{
	size_t cap = 1, n = 0;
	const struct kv_list *lists[2] = { a, b };
	for (int l = 0; l < 2; l++)
		for (size_t i = 0; i < lists[l]->n; i++)
			cap += strlen(lists[l]->keys[i]) + strlen(lists[l]->values[i]) + 2;
	char *t = malloc(cap);
	if (!t)
		return -ENOMEM;
	for (int l = 0; l < 2; l++)
		for (size_t i = 0; i < lists[l]->n; i++)
			n += (size_t)sprintf(t + n, "%s=%s\n", lists[l]->keys[i], lists[l]->values[i]);
	*out = t;
	*len = n;
	return 0;
}

static struct run *run_new_locked(struct sandbox *s)
{
	struct run *r = calloc(1, sizeof(*r));
	struct run **v = realloc(s->runs, (s->nruns + 1) * sizeof(*v));
	if (v)
		s->runs = v;
	if (!r || !v) {
		free(r);
		return NULL;
	}
	r->refs = 1; /* the sandbox's runs[] */
	r->sbx = s;
	r->number = s->nruns + 1;
	r->alias = -1;
	for (int i = 0; i < STREAM_COUNT; i++)
		r->fd[i] = -1;
	if (asprintf(&r->dir, "%s/runs/%u", s->spool_dir, r->number) < 0) {
		free(r);
		return NULL;
	}
	clock_gettime(CLOCK_REALTIME, &r->started);
	r->phase = RUN_STARTING;
	s->runs[s->nruns++] = r;
	return r;
}

static int start_failed(struct run *r, struct sbx_err *err)
{
	conclude(r, OUTCOME_LOST, -1, err->code, err->msg);
	return -err->code;
}

/* The command as the run's cmd file: written from memory, or copied in the
 * kernel from the spool file. */
static int write_cmd_file(struct run *r, const struct cmd_spool *cmd, struct sbx_err *err)
{
	char path[4200], tmp[4300];
	snprintf(path, sizeof(path), "%s/cmd", r->dir);
	if (cmd->fd < 0)
		return write_file_atomic(path, cmd->mem ? cmd->mem : "", cmd->len, err);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return sbx_err_set(err, errno, "create %s: %s", tmp, strerror(errno));
	loff_t in = 0;
	while ((size_t)in < cmd->len) {
		ssize_t n = copy_file_range(cmd->fd, &in, fd, NULL, cmd->len - (size_t)in, 0);
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			unlink(tmp);
			return sbx_err_set(err, e, "write %s: %s", tmp, strerror(e));
		}
	}
	if (rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		return sbx_err_set(err, e, "rename %s: %s", path, strerror(e));
	}
	return 0;
}

int run_start(struct sandbox *s, const struct cmd_spool *cmd, struct run **out,
	      struct sbx_err *err)
{
	size_t len = cmd->len;
	cleanup_free char *env = NULL;
	size_t env_len = 0;
	cleanup_free char *workdir = NULL;
	cleanup_free char *cid = NULL;
	const char **secrets = NULL;
	size_t nsecrets = 0;
	long timeout;

	*out = NULL;
	pthread_mutex_lock(&model_lock);
	if (s->state != SBX_RUNNING) {
		pthread_mutex_unlock(&model_lock);
		return sbx_err_set(err, EHOSTDOWN, "exec: the container of %s is not running", s->name);
	}
	if (s->paused) {
		pthread_mutex_unlock(&model_lock);
		return sbx_err_set(err, EBUSY, "exec: the container of %s is paused", s->name);
	}
	struct run *r = run_new_locked(s);
	int rc = r ? env_text(&s->env, &s->auth, &env, &env_len) : -ENOMEM;
	workdir = strdup(s->workdir);
	cid = strdup(s->container_id ? s->container_id : s->container);
	secrets = calloc(s->auth.n + s->auth_file_secrets.n + 1, sizeof(*secrets));
	if (rc == 0 && (!workdir || !cid || !secrets))
		rc = -ENOMEM;
	for (size_t i = 0; rc == 0 && i < s->auth.n; i++)
		secrets[nsecrets++] = s->auth.values[i];
	for (size_t i = 0; rc == 0 && i < s->auth_file_secrets.n; i++)
		secrets[nsecrets++] = s->auth_file_secrets.values[i];
	timeout = s->timeout;
	if (r)
		run_get(r); /* the caller's */
	struct run_io *io = calloc(1, sizeof(*io));
	if (rc == 0 && !io)
		rc = -ENOMEM;
	if (rc == 0) {
		/* Secrets are copied while the lock keeps them alive. */
		for (int i = 0; rc == 0 && i < STREAM_COUNT; i++)
			rc = masker_init(&io->mask[i], secrets, nsecrets);
	}
	pthread_mutex_unlock(&model_lock);
	free(secrets);
	if (!r)
		return sbx_err_set(err, ENOMEM, "exec: out of memory");
	*out = r;
	if (rc < 0) {
		free(io);
		sbx_err_set(err, -rc, "exec: %s", strerror(-rc));
		return start_failed(r, err);
	}

	struct sbx_err ignored = { 0 };
	char path[4200], when[40], line[48];
	io->cmd_fd = -1;
	rc = mkdir_p(r->dir, err);
	if (rc == 0)
		rc = write_cmd_file(r, cmd, err);
	if (rc == 0) {
		int fd = open_stream_file(r, STREAM_OUTPUT, O_RDWR | O_CREAT | O_TRUNC);
		if (fd < 0)
			rc = sbx_err_set(err, errno, "creating the output spool: %s", strerror(errno));
		pthread_mutex_lock(&model_lock);
		r->fd[STREAM_OUTPUT] = fd;
		pthread_mutex_unlock(&model_lock);
	}
	if (rc == 0) {
		format_time(&r->started, when, sizeof(when));
		snprintf(line, sizeof(line), "%s\n", when);
		snprintf(path, sizeof(path), "%s/started", r->dir);
		rc = write_file_atomic(path, line, strlen(line), err);
	}
	if (rc == 0) {
		snprintf(path, sizeof(path), "%s/ended", r->dir);
		write_file_atomic(path, "", 0, &ignored);
		snprintf(path, sizeof(path), "%s/status", r->dir);
		write_file_atomic(path, "running\n", 8, &ignored);
	}
	if (rc < 0) {
		masker_free(&io->mask[0]);
		masker_free(&io->mask[1]);
		free(io);
		sbx_err_wrap(err, "exec in %s", s->name);
		return start_failed(r, err);
	}

	struct engine_exec ex;
	/* Small commands ride as an argument (cheaper); large ones on stdin. */
	cleanup_free char *cmd_arg = len <= INLINE_CMD_MAX ? malloc(len + 1) : NULL;
	if (cmd_arg) {
		if (cmd_spool_read(cmd, 0, cmd_arg, len) < 0 || memchr(cmd_arg, '\0', len)) {
			free(cmd_arg);
			cmd_arg = NULL;
		} else {
			cmd_arg[len] = '\0';
		}
	}
	if (!cmd_arg) {
		/* Fed to stdin from the run's own copy, never from memory. */
		snprintf(path, sizeof(path), "%s/cmd", r->dir);
		io->cmd_fd = open(path, O_RDONLY | O_CLOEXEC);
		if (io->cmd_fd < 0)
			rc = sbx_err_set(err, errno, "reopening %s: %s", path, strerror(errno));
	}
	if (rc == 0)
		rc = engine_exec_start(s->engine, cid, env, env_len, workdir, cmd_arg, &ex, err);
	if (env)
		explicit_bzero(env, env_len);
	if (rc < 0) {
		masker_free(&io->mask[0]);
		masker_free(&io->mask[1]);
		if (io->cmd_fd >= 0)
			close(io->cmd_fd);
		free(io);
		return start_failed(r, err);
	}

	io->run = r;
	pthread_mutex_lock(&model_lock);
	run_get(r); /* the I/O thread's */
	r->io = io;
	r->local_pid = ex.pid;
	pthread_mutex_unlock(&model_lock);

	io->child = ex.pid;
	if (ex.stdin_fd >= 0)
		io->cmd_len = io->cmd_fd >= 0 ? len : 0;
	io->out_open = io->err_open = true;
	io->in = (struct io_watch){ .fd = ex.stdin_fd, .fn = stdin_writable, .ctx = io };
	io->out = (struct io_watch){ .fd = ex.stdout_fd, .fn = stream_readable, .ctx = io };
	io->err = (struct io_watch){ .fd = ex.stderr_fd, .fn = stream_readable, .ctx = io };
	io->pid = (struct io_watch){ .fd = (int)syscall(SYS_pidfd_open, ex.pid, 0),
				     .fn = child_exited, .ctx = io };
	io->timer = (struct io_watch){ .fd = -1, .fn = timer_fired, .ctx = io };
	fcntl(ex.stdout_fd, F_SETPIPE_SZ, 1 << 20);
	fcntl(ex.stderr_fd, F_SETPIPE_SZ, 1 << 20);
	if (timeout > 0) {
		io->timer.fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		struct itimerspec its = { .it_value = { .tv_sec = timeout } };
		if (io->timer.fd >= 0)
			timerfd_settime(io->timer.fd, 0, &its, NULL);
	}
	if (io->pid.fd < 0) {
		log_error("pidfd_open: %s", strerror(errno));
		io->pid.fd = -1;
	}
	/* Everything is in place before the I/O thread can see any of it. */
	if (io->timer.fd >= 0)
		ioloop_add(&io->timer, EPOLLIN);
	ioloop_add(&io->out, EPOLLIN);
	ioloop_add(&io->err, EPOLLIN);
	if (io->pid.fd >= 0)
		ioloop_add(&io->pid, EPOLLIN);
	if (io->in.fd >= 0)
		ioloop_add(&io->in, EPOLLOUT);
	log_debug("sandbox %s run %u: started (%zu bytes)", s->name, r->number, len);
	return 0;
}

int run_kill(struct run *r, int sig, struct sbx_err *err)
{
	pthread_mutex_lock(&model_lock);
	bool orphan = r->phase == RUN_ENDED && r->observer_lost && r->pgid > 1;
	if (r->phase == RUN_ENDED && !orphan) {
		pthread_mutex_unlock(&model_lock);
		return sbx_err_set(err, ESRCH, "kill: run %u has ended", r->number);
	}
	r->kill_requested = true;
	long pgid = r->pgid;
	pid_t local = r->local_pid;
	char *cid = strdup(r->sbx->container_id ? r->sbx->container_id : r->sbx->container);
	pthread_mutex_unlock(&model_lock);
	int rc = 0;
	if (pgid > 0 && cid)
		rc = engine_kill_group(r->sbx->engine, cid, pgid, sig, err);
	else if (local > 0 && kill(local, sig) < 0)
		rc = sbx_err_set(err, errno, "kill: %s", strerror(errno));
	else if (!cid)
		rc = sbx_err_set(err, ENOMEM, "kill: out of memory");
	free(cid);
	if (orphan) {
		/* Nobody will see this group end: once it is gone (or took
		 * SIGKILL), the run is no longer reachable by ctl kill. */
		if ((rc == 0 && sig == SIGKILL) || (rc < 0 && err->code == ESRCH)) {
			pthread_mutex_lock(&model_lock);
			r->observer_lost = false;
			pthread_mutex_unlock(&model_lock);
		}
		if (rc == 0)
			log_info("sandbox %s run %u: signal %d sent to process group %ld, "
				 "whose observer was lost", r->sbx->name, r->number, sig, pgid);
	}
	return rc;
}
