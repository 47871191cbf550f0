#include "subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

#define CAPTURE_CAP (16u << 20)
#define CHUNK 65536
/* Per poll round, so that stdin and the clock get their turn. */
#define DRAIN_STEP (1u << 20)
/* After the child has gone: more than any pipe buffer can hold. */
#define DRAIN_LAST (2u << 20)

int spawn_exit_code(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return 255;
}

void spawn_result_free(struct spawn_result *r)
{
	if (!r)
		return;
	free(r->out);
	free(r->errtext);
	r->out = r->errtext = NULL;
	r->out_len = r->err_len = 0;
}

static void close_fd(int *fd)
{
	cleanup_closep(fd);
	*fd = -1;
}

static void close_all(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close_fd(&fds[i]);
}

/* Parent-side copies of sources that sit on a target number, so that no
 * dup2 in the child clobbers a source another dup2 still needs. */
static int move_sources(int src[4], int tmp[4], const char *what, struct sbx_err *err)
{
	for (int t = 0; t < 4; t++) {
		if (src[t] >= 0 && src[t] < 4 && src[t] != t) {
			tmp[t] = fcntl(src[t], F_DUPFD_CLOEXEC, 10);
			if (tmp[t] < 0)
				return sbx_err_set(err, errno, "spawn %s: dup: %s", what,
						   strerror(errno));
			src[t] = tmp[t];
		}
	}
	return 0;
}

/* fds 0-3 from src (or /dev/null), nothing else, and "/" as the cwd. */
static int child_fds(posix_spawn_file_actions_t *fa, const int src[4])
{
	int r = 0;
	for (int t = 0; t < 4 && !r; t++) {
		if (src[t] >= 0)
			/* src == t clears FD_CLOEXEC in the child (glibc, POSIX 2017). */
			r = posix_spawn_file_actions_adddup2(fa, src[t], t);
		else if (t < 3)
			r = posix_spawn_file_actions_addopen(fa, t, "/dev/null",
							     t == 0 ? O_RDONLY : O_WRONLY, 0);
	}
	/* Nothing of ours (the FUSE fd above all) may reach the child. */
	if (!r)
		r = posix_spawn_file_actions_addclosefrom_np(fa, src[3] >= 0 ? 4 : 3);
	if (!r)
		r = posix_spawn_file_actions_addchdir_np(fa, "/");
	return r;
}

/* Default signal dispositions, an empty mask, and a session of its own:
 * terminal signals aimed at the daemon (Ctrl-C) don't hit children, and a
 * timeout can kill the child's whole group. */
static int child_attrs(posix_spawnattr_t *attr)
{
	sigset_t all, none;
	sigfillset(&all);
	sigemptyset(&none);
	int r = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK |
						       POSIX_SPAWN_SETSID);
	if (!r)
		r = posix_spawnattr_setsigdefault(attr, &all);
	if (!r)
		r = posix_spawnattr_setsigmask(attr, &none);
	return r;
}

pid_t spawn_child(char *const argv[], char *const envp[], const struct spawn_fds *fds,
		  struct sbx_err *err)
{
	int src[4] = { fds ? fds->in : -1, fds ? fds->out : -1, fds ? fds->err : -1,
		       fds ? fds->fd3 : -1 };
	int tmp[4] = { -1, -1, -1, -1 };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	pid_t pid = -1;

	if (!argv || !argv[0] || !argv[0][0])
		return sbx_err_set(err, EINVAL, "spawn: empty command");
	int r = move_sources(src, tmp, argv[0], err);
	if (r < 0) {
		close_all(tmp, 4);
		return r;
	}
	r = posix_spawn_file_actions_init(&fa);
	if (r) {
		close_all(tmp, 4);
		return sbx_err_set(err, r, "spawn %s: %s", argv[0], strerror(r));
	}
	r = posix_spawnattr_init(&attr);
	if (!r) {
		r = child_fds(&fa, src);
		if (!r)
			r = child_attrs(&attr);
		if (!r) {
			char *const *env = envp ? envp : environ;
			r = strchr(argv[0], '/')
				    ? posix_spawn(&pid, argv[0], &fa, &attr, argv, env)
				    : posix_spawnp(&pid, argv[0], &fa, &attr, argv, env);
		}
		posix_spawnattr_destroy(&attr);
	}
	posix_spawn_file_actions_destroy(&fa);
	close_all(tmp, 4);
	if (r)
		return sbx_err_set(err, r, "cannot execute %s: %s", argv[0], strerror(r));
	return pid;
}

ssize_t spawn_write_nosigpipe(int fd, const void *buf, size_t n)
{
	sigset_t pipe_set, old, pending;
	ssize_t w;
	int saved, was_pending;

	/* SIGPIPE of a pipe write goes to the writing thread: block it here only,
	 * and swallow the one we caused. */
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	sigpending(&pending);
	was_pending = sigismember(&pending, SIGPIPE);
	do
		w = write(fd, buf, n);
	while (w < 0 && errno == EINTR);
	saved = errno;
	if (w < 0 && saved == EPIPE && !was_pending) {
		const struct timespec zero = { 0, 0 };
		while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = saved;
	return w;
}

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_append(struct buf *b, const char *s, size_t n)
{
	if (b->len >= CAPTURE_CAP)
		return 0; /* over the cap: drop, but keep draining the pipe */
	if (n > CAPTURE_CAP - b->len)
		n = CAPTURE_CAP - b->len;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static int buf_finish(struct buf *b, char **out, size_t *len)
{
	if (!b->p) {
		b->p = calloc(1, 1);
		if (!b->p)
			return -ENOMEM;
	}
	*out = steal_pointer(&b->p);
	*len = b->len;
	return 0;
}

/* Reads what is there, at most about `limit` bytes so that a writer faster
 * than us cannot keep us here; closes *fd at end-of-file or error. */
static int drain(int *fd, struct buf *b, size_t limit)
{
	char chunk[CHUNK];
	size_t got = 0;

	while (*fd >= 0 && got < limit) {
		ssize_t n = read(*fd, chunk, sizeof(chunk));
		if (n > 0) {
			if (buf_append(b, chunk, (size_t)n) < 0)
				return -ENOMEM;
			got += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		close_fd(fd);
	}
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static int make_pipe(int p[2], struct sbx_err *err)
{
	if (pipe2(p, O_CLOEXEC) < 0)
		return sbx_err_set(err, errno, "pipe: %s", strerror(errno));
	return 0;
}

/* Returns the pid when it has been reaped (status in *st), 0 if still
 * running, or a negative errno. */
static pid_t try_reap(pid_t pid, int *st)
{
	pid_t w;
	do
		w = waitpid(pid, st, WNOHANG);
	while (w < 0 && errno == EINTR);
	return w < 0 ? -errno : w;
}

/* One captured child: its pipes, what it wrote, and its input left. */
struct capture {
	int in_w, out_r, err_r, pidfd;
	pid_t pid; /* -1 once reaped */
	int status;
	struct buf out, err;
	const char *in_p;
	size_t in_left;
	int64_t deadline; /* -1: none */
	const char *what;
};

static void capture_close(struct capture *c)
{
	close_fd(&c->in_w);
	close_fd(&c->out_r);
	close_fd(&c->err_r);
	close_fd(&c->pidfd);
	if (c->pid > 0)
		cleanup_pidp(&c->pid);
	free(c->out.p);
	free(c->err.p);
}

/* Pipes for stdin (when there is input), stdout and stderr; the child's
 * ends in child_fds, ours non-blocking in c. */
static int capture_pipes(struct capture *c, bool input, int fd3, struct spawn_fds *child,
			 struct sbx_err *err)
{
	int p[2], r;
	*child = (struct spawn_fds){ .in = -1, .out = -1, .err = -1, .fd3 = fd3 };
	if (input) {
		if ((r = make_pipe(p, err)) < 0)
			return r;
		child->in = p[0];
		c->in_w = p[1];
	}
	if ((r = make_pipe(p, err)) < 0)
		return r;
	c->out_r = p[0];
	child->out = p[1];
	if ((r = make_pipe(p, err)) < 0)
		return r;
	c->err_r = p[0];
	child->err = p[1];
	if ((c->in_w >= 0 && set_nonblock(c->in_w) < 0) || set_nonblock(c->out_r) < 0 ||
	    set_nonblock(c->err_r) < 0)
		return sbx_err_set(err, errno, "fcntl: %s", strerror(errno));
	return 0;
}

static void feed_input(struct capture *c)
{
	size_t want = c->in_left < CHUNK ? c->in_left : CHUNK;
	ssize_t w = spawn_write_nosigpipe(c->in_w, c->in_p, want);
	if (w > 0) {
		c->in_p += w;
		c->in_left -= (size_t)w;
	}
	/* EPIPE: the child did not want (all of) its input. */
	if (c->in_left == 0 || (w < 0 && errno != EAGAIN))
		close_fd(&c->in_w);
}

/* After the child has gone, all it wrote is in the pipes; what comes later
 * is from grandchildren, which we don't wait for. */
static int drain_last(struct capture *c, struct sbx_err *err)
{
	if (drain(&c->out_r, &c->out, DRAIN_LAST) < 0 || drain(&c->err_r, &c->err, DRAIN_LAST) < 0)
		return sbx_err_set(err, ENOMEM, "spawn %s: out of memory", c->what);
	return 0;
}

/* The time is up: the group first, so that a shell child's own children
 * die too. */
static int capture_kill(struct capture *c, struct spawn_result *res, struct sbx_err *err)
{
	kill(-c->pid, SIGKILL);
	kill(c->pid, SIGKILL);
	pid_t w;
	while ((w = waitpid(c->pid, &c->status, 0)) < 0 && errno == EINTR)
		;
	c->pid = -1;
	if (w < 0)
		return sbx_err_set(err, errno, "waitpid %s: %s", c->what, strerror(errno));
	drain(&c->out_r, &c->out, DRAIN_LAST);
	drain(&c->err_r, &c->err, DRAIN_LAST);
	res->timed_out = 1;
	return 1;
}

/* One poll round: returns 1 when the child is done, 0 to go on, or
 * -errno.  A pidfd tells us when the child exits even if a grandchild
 * keeps the pipes open; without one (old kernel) we poll every 50 ms. */
static int capture_round(struct capture *c, struct spawn_result *res, struct sbx_err *err)
{
	struct pollfd pfd[4];
	int n = 0, i_in = -1, i_out = -1, i_err = -1, i_pid = -1, wait_ms = -1;
	if (c->in_w >= 0)
		i_in = n, pfd[n++] = (struct pollfd){ .fd = c->in_w, .events = POLLOUT };
	if (c->out_r >= 0)
		i_out = n, pfd[n++] = (struct pollfd){ .fd = c->out_r, .events = POLLIN };
	if (c->err_r >= 0)
		i_err = n, pfd[n++] = (struct pollfd){ .fd = c->err_r, .events = POLLIN };
	if (c->pidfd >= 0)
		i_pid = n, pfd[n++] = (struct pollfd){ .fd = c->pidfd, .events = POLLIN };
	else
		wait_ms = 50;
	if (c->deadline >= 0) {
		int64_t left = c->deadline - now_ms();
		left = left < 0 ? 0 : left;
		if (wait_ms < 0 || left < wait_ms)
			wait_ms = (int)left;
	}

	int pr = poll(pfd, (nfds_t)n, wait_ms);
	if (pr < 0 && errno != EINTR)
		return sbx_err_set(err, errno, "poll: %s", strerror(errno));
	if (pr > 0) {
		if (i_in >= 0 && pfd[i_in].revents)
			feed_input(c);
		if ((i_out >= 0 && pfd[i_out].revents &&
		     drain(&c->out_r, &c->out, DRAIN_STEP) < 0) ||
		    (i_err >= 0 && pfd[i_err].revents && drain(&c->err_r, &c->err, DRAIN_STEP) < 0))
			return sbx_err_set(err, ENOMEM, "spawn %s: out of memory", c->what);
	}
	if (i_pid < 0 || (pr > 0 && pfd[i_pid].revents)) {
		pid_t w = try_reap(c->pid, &c->status);
		if (w < 0)
			return sbx_err_set(err, -w, "waitpid %s: %s", c->what, strerror(-w));
		if (w == c->pid) {
			c->pid = -1;
			int r = drain_last(c, err);
			return r < 0 ? r : 1;
		}
	}
	if (c->deadline >= 0 && now_ms() >= c->deadline)
		return capture_kill(c, res, err);
	return 0;
}

int spawn_capture(char *const argv[], char *const envp[], const void *input, size_t input_len,
		  int fd3, int timeout_ms, struct spawn_result *res, struct sbx_err *err)
{
	struct capture c = {
		.in_w = -1,
		.out_r = -1,
		.err_r = -1,
		.pidfd = -1,
		.pid = -1,
		.in_p = input,
		.in_left = input ? input_len : 0,
		.deadline = timeout_ms > 0 ? now_ms() + timeout_ms : -1,
		.what = argv && argv[0] ? argv[0] : "",
	};
	struct spawn_fds child;
	memset(res, 0, sizeof(*res));

	int r = capture_pipes(&c, input != NULL, fd3, &child, err);
	if (r == 0) {
		c.pid = spawn_child(argv, envp, &child, err);
		r = c.pid < 0 ? (int)c.pid : 0;
	}
	close_fd(&child.in);
	close_fd(&child.out);
	close_fd(&child.err);
	if (r == 0) {
		if (c.in_w >= 0 && c.in_left == 0)
			close_fd(&c.in_w);
		c.pidfd = (int)syscall(SYS_pidfd_open, c.pid, 0);
		while ((r = capture_round(&c, res, err)) == 0)
			;
	}
	if (r > 0) {
		res->status = spawn_exit_code(c.status);
		if (buf_finish(&c.out, &res->out, &res->out_len) < 0 ||
		    buf_finish(&c.err, &res->errtext, &res->err_len) < 0)
			r = sbx_err_set(err, ENOMEM, "spawn %s: out of memory", c.what);
		else
			r = 0;
	}
	if (r < 0)
		spawn_result_free(res);
	capture_close(&c);
	return r;
}
