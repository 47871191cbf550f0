/* Live runs: launch a docker exec, spool what it prints (masked), learn how
 * it ended.  The live part (struct run_io) belongs to the I/O thread; a run
 * knows nothing of its sandbox beyond what run_new() copied in. */
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

#include "agent_channel.h"
#include "ioloop.h"
#include "log.h"
#include "run.h"
#include "state.h"
#include "subprocess.h"

/* Commands up to this size go to the container as an argument, larger
 * ones on stdin (the kernel refuses single arguments over 128 KiB). */
#define INLINE_CMD_MAX (64 * 1024)

struct run_io {
	struct run *run; /* holds a reference until the run ends */
	struct io_watch in, out, err, pid, timer;
	pid_t child;
	int cmd_fd; /* the run's cmd file, fed to stdin when large */
	size_t cmd_len, cmd_off;
	bool out_open, err_open, exited;
	int exit_code;
	int cli_signal; /* the signal that ended the local docker exec, or 0 */
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

/* ---- the spool (I/O thread) ----
 *
 * Only the I/O thread changes a live run's alias, fd[] and size[]; it reads
 * them without the lock and takes it to publish a change.  The analysis
 * cannot see that ownership, hence SBX_NO_TSA on these few functions. */

static void grew_locked(struct run *r, enum stream st, off_t n) SBX_REQUIRES(model_lock)
{
	r->size[STREAM_OUTPUT] += n;
	r->size[st] += n;
	clock_gettime(CLOCK_REALTIME, &r->last_output);
}

/* The first stream to speak shares output's file (a hard link); when the
 * other one speaks too, it gets a copy of its own. */
static int materialize(struct run *r, enum stream st) SBX_NO_TSA
{
	char path[PATH_MAX], tmp[PATH_MAX];
	if (path_join(path, sizeof(path), r->dir, stream_names[st]) < 0 ||
	    snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	cleanup_close int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	off_t len = r->size[st];
	off_t in = 0, out = 0;
	while (in < len) {
		ssize_t n = copy_file_range(r->fd[STREAM_OUTPUT], &in, fd, &out, (size_t)(len - in),
					    0);
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			unlink(tmp);
			return -e;
		}
	}
	if (rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		return -e;
	}
	sbx_lock(&model_lock);
	r->fd[st] = steal_fd(&fd);
	r->alias = -1;
	sbx_unlock(&model_lock);
	return 0;
}

/* Before stream st's bytes go anywhere: the first stream to speak shares
 * output's file; when the other one speaks, the first gets its own copy. */
static int spool_prepare(struct run *r, enum stream st) SBX_NO_TSA
{
	enum stream other = st == STREAM_STDOUT ? STREAM_STDERR : STREAM_STDOUT;
	int rc;

	if (r->alias < 0 && r->fd[st] < 0 && r->fd[other] < 0) {
		char out[PATH_MAX], link_path[PATH_MAX];
		if (path_join(out, sizeof(out), r->dir, "output") < 0 ||
		    path_join(link_path, sizeof(link_path), r->dir, stream_names[st]) < 0)
			return -ENAMETOOLONG;
		if (link(out, link_path) < 0 && errno != EEXIST)
			return -errno;
		sbx_lock(&model_lock);
		r->alias = st;
		sbx_unlock(&model_lock);
	} else if (r->alias == (int)other) {
		rc = materialize(r, other);
		if (rc < 0)
			return rc;
	}
	if (r->alias != (int)st && r->fd[st] < 0) {
		int fd = open_in(r->dir, stream_names[st], O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0)
			return fd;
		sbx_lock(&model_lock);
		r->fd[st] = fd;
		sbx_unlock(&model_lock);
	}
	return 0;
}

/* Masked bytes of one file.  While a stream is output's alias, its own
 * masker saw exactly what output's saw: output's bytes count for both. */
static int spool_append(struct run *r, enum stream st, const char *buf, size_t len) SBX_NO_TSA
{
	if (st != STREAM_OUTPUT && r->alias == (int)st)
		return 0;
	int rc = pwrite_all(r->fd[st], buf, len, r->size[st]);
	if (rc < 0)
		return rc;
	sbx_lock(&model_lock);
	r->size[st] += (off_t)len;
	if (st == STREAM_OUTPUT && r->alias >= 0)
		r->size[r->alias] += (off_t)len;
	clock_gettime(CLOCK_REALTIME, &r->last_output);
	sbx_unlock(&model_lock);
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
			 r->max_output);
	else
		snprintf(msg, sizeof(msg), "output truncated: %s", strerror(e));
	sbx_lock(&model_lock);
	r->truncated = true;
	if (!r->reason)
		r->reason = strdup(msg);
	sbx_unlock(&model_lock);
	log_error("sandbox %s run %u: %s", r->sandbox_name, r->number, msg);
}

/* How many of len bytes the cap still lets into file st. */
static size_t cap_room(struct run *r, enum stream st, size_t len) SBX_NO_TSA
{
	long long max = r->max_output;
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
	sbx_lock(&model_lock);
	r->pgid = pgid;
	if (r->phase == RUN_STARTING)
		r->phase = RUN_LIVE;
	sbx_unlock(&model_lock);
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
static ssize_t splice_to_spool(struct run_io *io, enum stream st, int fd) SBX_NO_TSA
{
	struct run *r = io->run;
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
	sbx_lock(&model_lock);
	grew_locked(r, st, n);
	sbx_unlock(&model_lock);
	return n;
}

static void stream_closed(struct run_io *io, struct io_watch *w, enum stream st)
{
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
		stream_closed(io, w, st);
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
	sbx_lock(&model_lock);
	io->run->local_pid = 0;
	sbx_unlock(&model_lock);
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
		log_warn("sandbox %s run %u: %s", k->run->sandbox_name, k->run->number, err.msg);
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
	sbx_lock(&model_lock);
	io->run->timed_out = true;
	if (k) {
		k->run = io->run;
		k->sig = SIGKILL;
		run_get_locked(io->run);
	}
	sbx_unlock(&model_lock);
	log_info("sandbox %s run %u: timeout expired, killing it", io->run->sandbox_name,
		 io->run->number);
	if (k && task_queue(kill_task, k) < 0) {
		run_put(k->run);
		free(k);
	}
}

/* ---- the end of a run ---- */

/* Ends r: the spool's files first, then the model, so that whoever sees
 * the run ended (status, run_changed) finds its ended, status and reason
 * files written.  The run's I/O is over: nobody else changes its fds. */
static void conclude(struct run *r, enum run_outcome outcome, int code, int start_errno,
		     const char *reason)
{
	struct timespec ended;
	char line[64], when[40], when_line[48];
	int fds[STREAM_COUNT];
	bool need[STREAM_COUNT];

	clock_gettime(CLOCK_REALTIME, &ended);
	outcome_status_line(outcome, code, line, sizeof(line));
	sbx_lock(&model_lock);
	char *why = r->reason ? strdup(r->reason) : reason ? strdup(reason) : NULL;
	for (int st = STREAM_OUTPUT; st < STREAM_COUNT; st++)
		need[st] = r->fd[st] < 0 && r->alias != st;
	sbx_unlock(&model_lock);

	/* A stream that never spoke still gets its (empty) file. */
	for (int st = STREAM_OUTPUT; st < STREAM_COUNT; st++) {
		fds[st] = -1;
		if (need[st]) {
			int fd = open_in(r->dir, stream_names[st], O_RDWR | O_CREAT, 0600);
			fds[st] = fd < 0 ? -1 : fd;
		}
	}
	format_time(&ended, when, sizeof(when));
	snprintf(when_line, sizeof(when_line), "%s\n", when);
	write_file_in(r->dir, "ended", when_line, strlen(when_line), NULL);
	if (why) {
		char reason_line[760];
		snprintf(reason_line, sizeof(reason_line), "%.750s\n", why);
		write_file_in(r->dir, "reason", reason_line, strlen(reason_line), NULL);
		free(why);
	}
	write_file_in(r->dir, "status", line, strlen(line), NULL);

	sbx_lock(&model_lock);
	for (int st = STREAM_OUTPUT; st < STREAM_COUNT; st++)
		if (fds[st] >= 0)
			r->fd[st] = fds[st];
	r->outcome = outcome;
	r->exit_code = code;
	if (start_errno)
		r->start_errno = start_errno;
	if (reason && !r->reason)
		r->reason = strdup(reason);
	r->ended = ended;
	r->phase = RUN_ENDED;
	r->local_pid = 0;
	if (r->readers == 0)
		run_close_fds_locked(r);
	sbx_unlock(&model_lock);
	if (reason)
		log_warn("sandbox %s run %u: %s", r->sandbox_name, r->number, reason);
	events_run_ended(r);
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
	int running = 0;
	/* docker exec can end (137) a moment before the engine reports the
	 * container dead: a container that still looks alive is asked again
	 * briefly, and its die event counts as soon as it arrives. */
	for (int round = 0; round < 4; round++) {
		sbx_lock(&model_lock);
		bool died = v->run->container_died;
		sbx_unlock(&model_lock);
		running = died ? 0 : engine_is_running(v->run->engine, v->run->container, &err);
		if (running != 1)
			break;
		struct timespec pause = { .tv_nsec = 150 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
	if (running == 1)
		conclude(v->run, OUTCOME_EXITED, v->code, 0, NULL);
	else
		conclude(v->run, OUTCOME_LOST, v->code, 0,
			 "the container stopped or was removed under the run");
	run_put(v->run);
	free(v);
}

static void conclude_not_started(struct run_io *io, bool died)
{
	int e = engine_classify_error(io->early_err, io->exit_code);
	char reason[700];
	const char *msg = io->early_err_len ? io->early_err : "no output";
	if (io->cli_signal && !io->not_started)
		/* Killed before the marker came through: the command may run
		 * inside, but its process group is unknown. */
		snprintf(reason, sizeof(reason),
			 "the docker exec observing the run died (signal %d) before the run "
			 "reported its start; the command may run inside",
			 io->cli_signal);
	else
		snprintf(reason, sizeof(reason),
			 "the run did not start: docker exec exited %d: %.500s", io->exit_code,
			 msg);
	for (char *p = reason; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	conclude(io->run, OUTCOME_LOST, io->exit_code, e == EIO && died ? EHOSTDOWN : e, reason);
}

static void finish(struct run_io *io)
{
	struct run *r = io->run;
	int code = io->exit_code;

	close_watch(&io->timer);
	close_watch(&io->in);
	free(io->pre_err);
	io->pre_err = NULL;
	for (int i = 0; i < STREAM_COUNT; i++)
		masker_free(&io->mask[i]);
	if (io->cmd_fd >= 0)
		close(io->cmd_fd);
	io->cmd_fd = -1;

	sbx_lock(&model_lock);
	r->io = NULL;
	bool timed_out = r->timed_out, killed = r->kill_requested, died = r->container_died;
	bool removed = r->rmdir_kill;
	/* Our own kills go through the group inside (docker exec then exits
	 * 137 by itself); a local docker exec dying of a signal nobody here
	 * asked for was killed by someone else, and says nothing about the
	 * command. */
	bool observer_lost = io->marker_done && io->cli_signal && r->pgid > 1 && !died &&
			     !timed_out && !killed && !removed;
	if (observer_lost)
		r->observer_lost = true;
	long pgid = r->pgid;
	sbx_unlock(&model_lock);

	if (removed) {
		/* rmdir ended it, however docker exec reported that. */
		conclude(r, OUTCOME_KILLED, code, 0, NULL);
	} else if (!io->marker_done) {
		conclude_not_started(io, died);
	} else if (observer_lost) {
		char reason[200];
		snprintf(reason, sizeof(reason),
			 "the docker exec observing the run died (signal %d); the command may "
			 "still run inside (process group %ld): ctl kill reaches it",
			 io->cli_signal, pgid);
		conclude(r, OUTCOME_LOST, code, 0, reason);
	} else if (timed_out) {
		conclude(r, OUTCOME_TIMEOUT, code, 0, NULL);
	} else if (killed && code > 128) {
		conclude(r, OUTCOME_KILLED, code, 0, NULL);
	} else if (died) {
		conclude(r, OUTCOME_LOST, code, 0,
			 "the container stopped or was removed under the run");
	} else if (code == 137 || code == 255 || code == 125 || code == 126) {
		struct verdict_req *v = calloc(1, sizeof(*v));
		free(io);
		if (v) {
			*v = (struct verdict_req){ .run = r, .code = code };
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

/* ---- launching: spool → spawn → attach ---- */

void run_fail_start(struct run *r, const struct sbx_err *err)
{
	conclude(r, OUTCOME_LOST, -1, err->code, err->msg);
}

/* The command as the run's cmd file: written from memory, or copied in the
 * kernel from the spool file. */
static int write_cmd_file(struct run *r, const struct cmd_spool *cmd, struct sbx_err *err)
{
	if (cmd->fd < 0)
		return write_file_in(r->dir, "cmd", cmd->mem ? cmd->mem : "", cmd->len, err);
	cleanup_close int fd = open_in(r->dir, "cmd.tmp", O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return sbx_err_set(err, -fd, "creating the cmd spool: %s", strerror(-fd));
	loff_t in = 0;
	while ((size_t)in < cmd->len) {
		ssize_t n = copy_file_range(cmd->fd, &in, fd, NULL, cmd->len - (size_t)in, 0);
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			return sbx_err_set(err, e, "writing the cmd spool: %s", strerror(e));
		}
	}
	char tmp[PATH_MAX], path[PATH_MAX];
	if (path_join(tmp, sizeof(tmp), r->dir, "cmd.tmp") < 0 ||
	    path_join(path, sizeof(path), r->dir, "cmd") < 0)
		return sbx_err_set(err, ENAMETOOLONG, "the cmd spool's path is too long");
	if (rename(tmp, path) < 0)
		return sbx_err_set(err, errno, "renaming the cmd spool: %s", strerror(errno));
	return 0;
}

/* The run's spool directory with cmd, started, and an empty output. */
static int spool_create(struct run *r, const struct cmd_spool *cmd, struct sbx_err *err)
{
	char when[40], line[48];
	int rc = mkdir_p(r->dir, err);
	if (rc == 0)
		rc = write_cmd_file(r, cmd, err);
	if (rc < 0)
		return rc;
	int fd = open_in(r->dir, "output", O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return sbx_err_set(err, -fd, "creating the output spool: %s", strerror(-fd));
	sbx_lock(&model_lock);
	r->fd[STREAM_OUTPUT] = fd;
	format_time(&r->started, when, sizeof(when));
	sbx_unlock(&model_lock);
	snprintf(line, sizeof(line), "%s\n", when);
	rc = write_file_in(r->dir, "started", line, strlen(line), err);
	if (rc == 0)
		rc = write_file_in(r->dir, "ended", "", 0, err);
	if (rc == 0)
		rc = write_file_in(r->dir, "status", "running\n", 8, err);
	return rc;
}

static void run_io_free(struct run_io *io)
{
	if (!io)
		return;
	for (int i = 0; i < STREAM_COUNT; i++)
		masker_free(&io->mask[i]);
	free(io->pre_err);
	if (io->cmd_fd >= 0)
		close(io->cmd_fd);
	free(io);
}
#define cleanup_run_io __attribute__((cleanup(run_io_freep)))
static void run_io_freep(struct run_io **io)
{
	run_io_free(*io);
}

/* Small commands ride as an argument (cheaper); large ones (and any with a
 * NUL) are fed to stdin from the run's own cmd file, never from memory. */
static int spawn_exec(struct run *r, struct run_io *io, const struct run_launch *l,
		      struct engine_exec *ex, struct sbx_err *err)
{
	size_t len = l->cmd->len;
	cleanup_free char *cmd_arg = len <= INLINE_CMD_MAX ? malloc(len + 1) : NULL;
	if (cmd_arg) {
		if (cmd_spool_read(l->cmd, 0, cmd_arg, len) < 0 || memchr(cmd_arg, '\0', len)) {
			free(cmd_arg);
			cmd_arg = NULL;
		} else {
			cmd_arg[len] = '\0';
		}
	}
	if (!cmd_arg) {
		io->cmd_fd = open_in(r->dir, "cmd", O_RDONLY, 0);
		if (io->cmd_fd < 0)
			return sbx_err_set(err, -io->cmd_fd, "reopening the cmd spool: %s",
					   strerror(-io->cmd_fd));
		io->cmd_len = len;
	}
	return engine_exec_start(r->engine, r->container, l->env, l->env_len, l->workdir, cmd_arg,
				 ex, err);
}

/* Gives io to the I/O thread: from here on it owns it. */
static int publish(struct run *r, struct run_io *io, pid_t child, struct sbx_err *err)
{
	sbx_lock(&model_lock);
	run_get_locked(r); /* the I/O thread's */
	r->io = io;
	r->local_pid = child;
	sbx_unlock(&model_lock);
	/* The pidfd first: once it is watched, the run always ends.  If it
	 * cannot be, nothing is published yet and the start fails whole. */
	int rc = ioloop_add(&io->pid, EPOLLIN);
	if (rc < 0) {
		sbx_lock(&model_lock);
		r->io = NULL;
		r->local_pid = 0;
		run_put_locked(r);
		sbx_unlock(&model_lock);
		return sbx_err_set(err, -rc, "exec: epoll: %s", strerror(-rc));
	}
	/* A stream that cannot be watched is closed (ENOMEM from epoll):
	 * the command is killed and its end reported like any other. */
	struct io_watch *watches[] = { &io->timer, &io->in, &io->out, &io->err };
	uint32_t events[] = { EPOLLIN, EPOLLOUT, EPOLLIN, EPOLLIN };
	for (size_t i = 0; i < SBX_ARRAY_SIZE(watches); i++) {
		if (watches[i]->fd < 0 || (rc = ioloop_add(watches[i], events[i])) == 0)
			continue;
		log_error("sandbox %s run %u: epoll: %s; killing it", r->sandbox_name, r->number,
			  strerror(-rc));
		close(watches[i]->fd);
		watches[i]->fd = -1;
		if (watches[i] == &io->out)
			io->out_open = false;
		if (watches[i] == &io->err)
			io->err_open = false;
		kill(child, SIGKILL);
	}
	return 0;
}

/* Hands the spawned exec to the I/O thread.  Everything is in place
 * before the I/O thread can see any of it. */
static int attach(struct run *r, struct run_io *io, const struct run_launch *l,
		  const struct engine_exec *ex, struct sbx_err *err)
{
	io->run = r;
	io->child = ex->pid;
	if (ex->stdin_fd < 0)
		io->cmd_len = 0;
	io->out_open = io->err_open = true;
	io->in = (struct io_watch){ .fd = ex->stdin_fd, .fn = stdin_writable, .ctx = io };
	io->out = (struct io_watch){ .fd = ex->stdout_fd, .fn = stream_readable, .ctx = io };
	io->err = (struct io_watch){ .fd = ex->stderr_fd, .fn = stream_readable, .ctx = io };
	io->pid = (struct io_watch){ .fd = (int)syscall(SYS_pidfd_open, ex->pid, 0),
				     .fn = child_exited,
				     .ctx = io };
	io->timer = (struct io_watch){ .fd = -1, .fn = timer_fired, .ctx = io };
	if (io->pid.fd < 0)
		return sbx_err_set(err, errno, "exec: pidfd_open: %s", strerror(errno));
	fcntl(ex->stdout_fd, F_SETPIPE_SZ, 1 << 20);
	fcntl(ex->stderr_fd, F_SETPIPE_SZ, 1 << 20);
	if (l->timeout > 0) {
		io->timer.fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		struct itimerspec its = { .it_value = { .tv_sec = l->timeout } };
		if (io->timer.fd < 0 || timerfd_settime(io->timer.fd, 0, &its, NULL) < 0)
			return sbx_err_set(err, errno, "exec: timer: %s", strerror(errno));
	}

	return publish(r, io, ex->pid, err);
}

int run_launch(struct run *r, const struct run_launch *l, struct sbx_err *err)
{
	cleanup_run_io struct run_io *io = calloc(1, sizeof(*io));
	if (!io)
		return sbx_err_set(err, ENOMEM, "exec: out of memory");
	io->cmd_fd = -1;
	int rc = 0;
	for (int i = 0; rc == 0 && i < STREAM_COUNT; i++)
		rc = masker_init(&io->mask[i], l->secrets, l->nsecrets);
	if (rc < 0)
		return sbx_err_set(err, -rc, "exec: %s", strerror(-rc));
	rc = spool_create(r, l->cmd, err);
	if (rc < 0)
		return sbx_err_wrap(err, "exec in %s", r->sandbox_name);
	/* Through the sandbox's agent when its channel is up; -EAGAIN: not up,
	 * the per-run docker exec below is the fallback. */
	if (l->chan && (rc = agent_channel_spawn(l->chan, r, l, err)) != -EAGAIN)
		return rc;

	struct engine_exec ex = { .pid = 0, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1 };
	rc = spawn_exec(r, io, l, &ex, err);
	if (rc < 0)
		return rc;
	rc = attach(r, io, l, &ex, err);
	if (rc < 0) {
		pid_t child = ex.pid;
		cleanup_pidp(&child);
		int fds[] = { ex.stdin_fd, ex.stdout_fd, ex.stderr_fd, io->pid.fd, io->timer.fd };
		for (size_t i = 0; i < SBX_ARRAY_SIZE(fds); i++)
			if (fds[i] >= 0)
				close(fds[i]);
		return rc;
	}
	io = NULL; /* the I/O thread's now */
	log_debug("sandbox %s run %u: started (%zu bytes)", r->sandbox_name, r->number,
		  l->cmd->len);
	return 0;
}

int run_kill(struct run *r, int sig, struct sbx_err *err)
{
	sbx_lock(&model_lock);
	bool orphan = r->phase == RUN_ENDED && r->observer_lost && r->pgid > 1;
	if (r->phase == RUN_ENDED && !orphan) {
		sbx_unlock(&model_lock);
		return sbx_err_set(err, ESRCH, "kill: run %u has ended", r->number);
	}
	r->kill_requested = true;
	long pgid = r->pgid;
	pid_t local = r->local_pid;
	struct agent_channel *chan = r->chan;
	if (chan)
		agent_channel_ref(chan);
	sbx_unlock(&model_lock);
	if (chan) {
		int rc = agent_channel_signal(chan, r, sig, err);
		agent_channel_put(chan);
		return rc;
	}
	int rc = 0;
	if (pgid > 0)
		rc = engine_kill_group(r->engine, r->container, pgid, sig, err);
	else if (local > 0 && kill(local, sig) < 0)
		rc = sbx_err_set(err, errno, "kill: %s", strerror(errno));
	if (orphan) {
		/* Nobody will see this group end: once it is gone (or took
		 * SIGKILL), the run is no longer reachable by ctl kill. */
		if ((rc == 0 && sig == SIGKILL) || (rc < 0 && err->code == ESRCH)) {
			sbx_lock(&model_lock);
			r->observer_lost = false;
			sbx_unlock(&model_lock);
		}
		if (rc == 0)
			log_info("sandbox %s run %u: signal %d sent to process group %ld, "
				 "whose observer was lost",
				 r->sandbox_name, r->number, sig, pgid);
	}
	return rc;
}

/* ---- stdin (through the agent only) ---- */

static int stdin_op(struct run *r, const char *buf, size_t len, bool close_it, struct sbx_err *err)
{
	sbx_lock(&model_lock);
	bool ended = r->phase == RUN_ENDED;
	struct agent_channel *c = r->chan;
	if (c)
		agent_channel_ref(c);
	sbx_unlock(&model_lock);
	if (ended)
		return sbx_err_set(err, EPIPE, "stdin: run %u has ended", r->number);
	if (!c)
		return sbx_err_set(
			err, EOPNOTSUPP,
			"stdin: run %u runs through docker exec: its stdin is at end-of-file",
			r->number);
	int rc = agent_channel_stdin(c, r, buf, len, close_it, err);
	agent_channel_put(c);
	return rc;
}

int run_stdin_write(struct run *r, const char *buf, size_t len, struct sbx_err *err)
{
	return stdin_op(r, buf, len, false, err);
}

int run_stdin_close(struct run *r, struct sbx_err *err)
{
	return stdin_op(r, NULL, 0, true, err);
}

/* ---- hooks for the agent transport (run.h) ---- */

void run_hook_attach(struct run *r, struct agent_channel *c)
{
	agent_channel_ref(c);
	sbx_lock(&model_lock);
	run_get_locked(r);
	r->chan = c;
	sbx_unlock(&model_lock);
}

static void drop_chan(struct run *r)
{
	sbx_lock(&model_lock);
	struct agent_channel *c = r->chan;
	r->chan = NULL;
	sbx_unlock(&model_lock);
	if (c)
		agent_channel_put(c);
}

void run_hook_detach(struct run *r)
{
	drop_chan(r);
}

void run_hook_live(struct run *r, long pgid)
{
	struct run_io io = { .run = r };
	set_live(&io, pgid);
}

void run_hook_mark_agent(struct run *r)
{
	write_file_in(r->dir, "agent", "1\n", 2, NULL);
}

void run_hook_changed(struct run *r)
{
	notify_run_changed(r);
}

/* The agent's runs spool exactly like docker exec's: a run_io on loan
 * around the same push (its maskers are the caller's). */
void run_hook_push(struct run *r, struct masker mask[STREAM_COUNT], enum stream st, const char *buf,
		   size_t len, int *spool_errno)
{
	struct run_io io = { .run = r, .spool_errno = *spool_errno };
	memcpy(io.mask, mask, sizeof(io.mask));
	push(&io, st, buf, len);
	memcpy(mask, io.mask, sizeof(io.mask));
	*spool_errno = io.spool_errno;
}

void run_hook_flush(struct run *r, struct masker mask[STREAM_COUNT], int *spool_errno)
{
	struct run_io io = { .run = r, .spool_errno = *spool_errno };
	memcpy(io.mask, mask, sizeof(io.mask));
	for (int st = STREAM_STDOUT; st < STREAM_COUNT; st++) {
		struct emit_ctx e = { &io, st };
		mask_flush(&io.mask[st], emit_masked, &e);
	}
	struct emit_ctx o = { &io, STREAM_OUTPUT };
	mask_flush(&io.mask[STREAM_OUTPUT], emit_masked, &o);
	memcpy(mask, io.mask, sizeof(io.mask));
	*spool_errno = io.spool_errno;
}

void run_hook_exited(struct run *r, int code, bool timed_out)
{
	drop_chan(r);
	sbx_lock(&model_lock);
	r->timed_out = r->timed_out || timed_out;
	bool to = r->timed_out, killed = r->kill_requested;
	sbx_unlock(&model_lock);
	if (to)
		conclude(r, OUTCOME_TIMEOUT, code, 0, NULL);
	else if (killed && code > 128)
		conclude(r, OUTCOME_KILLED, code, 0, NULL);
	else
		conclude(r, OUTCOME_EXITED, code, 0, NULL);
}

void run_hook_lost(struct run *r, int start_errno, const char *reason)
{
	drop_chan(r);
	sbx_lock(&model_lock);
	bool killed = r->kill_requested && !start_errno;
	sbx_unlock(&model_lock);
	if (killed)
		conclude(r, OUTCOME_KILLED, 137, 0, NULL);
	else
		conclude(r, OUTCOME_LOST, -1, start_errno, reason);
}
