/* sandboxfs-agent: the sandbox-side half of the backend (docs/agent-protocol.md).
 *
 *   agent serve     detach into its own session, listen on SOCK, run commands
 *   agent connect   relay stdin/stdout to the serving agent (the channel)
 *
 * Linked statically, single-threaded, no allocation per byte: every fd is
 * O_CLOEXEC so a run inherits only its own three.  Secrets reach it only in
 * spawn frames; they are put in the environment of the run's child and
 * zeroed here, never in the agent's own environ, argv or tmpfs. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_proto.h"

#define DIR_PATH "/.sandboxfs"
#define SOCK_PATH DIR_PATH "/sock"
#define UNACKED_MAX (4u << 20) /* per stream: a run past this waits, like a full pipe */
#define OUTQ_MAX (256u << 10)  /* frames queued to the daemon before runs wait */
#define INQ_MAX (AGENT_HDR + AGENT_MAX_PAYLOAD)

extern char **environ;

struct buf {
	uint8_t *p;
	size_t len, cap;
};

struct arun {
	uint32_t id;
	pid_t pid;
	int fd[3]; /* stdin (write end), stdout, stderr; -1 when closed */
	struct buf pending_in;
	bool close_in; /* close stdin once pending_in is written */
	struct buf out[2];
	uint64_t base[2]; /* stream offset of out[i].p[0] (acknowledged below) */
	uint64_t sent[2]; /* stream offset sent on this connection */
	bool exited, timed_out, attached, exit_sent;
	int wstatus;
	uint64_t deadline; /* ms on CLOCK_MONOTONIC, 0 = none */
};

static struct arun *runs[AGENT_MAX_RUNS];
static size_t nruns;
static int conn = -1;
static struct buf inq, outq;

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int buf_reserve(struct buf *b, size_t more)
{
	if (b->cap - b->len >= more)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - b->len < more)
		cap *= 2;
	uint8_t *p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

static void buf_drop(struct buf *b, size_t n)
{
	memmove(b->p, b->p + n, b->len - n);
	b->len -= n;
	/* Give memory back once a burst has drained: RSS stays small. */
	if (b->len == 0 && b->cap > 65536) {
		free(b->p);
		*b = (struct buf){ 0 };
	}
}

static void buf_free(struct buf *b)
{
	free(b->p);
	*b = (struct buf){ 0 };
}

/* ---- frames to the daemon ---- */

static void send_frame(uint32_t id, uint8_t type, const void *a, size_t alen, const void *b,
		       size_t blen)
{
	if (conn < 0 || buf_reserve(&outq, AGENT_HDR + alen + blen) < 0)
		return;
	agent_put_header(outq.p + outq.len, id, type, (uint32_t)(alen + blen));
	outq.len += AGENT_HDR;
	if (alen)
		memcpy(outq.p + outq.len, a, alen);
	outq.len += alen;
	if (blen)
		memcpy(outq.p + outq.len, b, blen);
	outq.len += blen;
}

static void send_fail(uint32_t id, int e, const char *msg)
{
	uint8_t p[4];
	agent_put_u32(p, (uint32_t)e);
	size_t n = strlen(msg);
	send_frame(id, AG_FAIL, p, 4, msg, n > 500 ? 500 : n);
}

static void drop_conn(void)
{
	if (conn >= 0)
		close(conn);
	conn = -1;
	buf_free(&inq);
	buf_free(&outq);
	for (size_t i = 0; i < nruns; i++)
		runs[i]->attached = false;
}

/* ---- runs ---- */

static struct arun *find_run(uint32_t id)
{
	for (size_t i = 0; i < nruns; i++)
		if (runs[i]->id == id)
			return runs[i];
	return NULL;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void forget(struct arun *r)
{
	for (size_t i = 0; i < nruns; i++) {
		if (runs[i] != r)
			continue;
		runs[i] = runs[--nruns];
		break;
	}
	for (int i = 0; i < 3; i++)
		close_fd(&r->fd[i]);
	if (r->pid > 0 && !r->exited)
		kill(-r->pid, SIGKILL);
	buf_free(&r->out[0]);
	buf_free(&r->out[1]);
	explicit_bzero(r->pending_in.p, r->pending_in.cap);
	buf_free(&r->pending_in);
	free(r);
}

/* In the child: the run's environment is the agent's plus the spawn's
 * KEY=VALUE lines (later keys win, as with docker exec --env-file). */
static char **child_env(char *env, uint32_t len)
{
	size_t n = 0, extra = 0;
	for (char **e = environ; *e; e++)
		n++;
	for (uint32_t i = 0; i < len; i++)
		extra += env[i] == '\n';
	char **v = calloc(n + extra + 2, sizeof(*v));
	if (!v)
		return environ;
	size_t k = 0;
	for (char **e = environ; *e; e++)
		v[k++] = *e;
	char *p = env, *end = env + len;
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			nl = end;
		*nl = '\0';
		char *eq = strchr(p, '=');
		if (eq && eq != p) {
			size_t klen = (size_t)(eq - p) + 1;
			size_t j;
			for (j = 0; j < k; j++)
				if (strncmp(v[j], p, klen) == 0)
					break;
			v[j] = p;
			if (j == k)
				k++;
		}
		p = nl + 1;
	}
	v[k] = NULL;
	return v;
}

static void child(const struct agent_spawn *s, int in, int out, int err, int report)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	setsid(); /* its own session and process group: kills reach all of it */
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		goto fail;
	char cwd[4096];
	if (s->cwd_len) {
		if (s->cwd_len >= sizeof(cwd)) {
			errno = ENAMETOOLONG;
			goto fail;
		}
		memcpy(cwd, s->cwd, s->cwd_len);
		cwd[s->cwd_len] = '\0';
		if (chdir(cwd) < 0)
			goto fail;
	}
	char *cmd = malloc(s->cmd_len + 1);
	char *env = malloc(s->env_len + 1);
	if (!cmd || !env) {
		errno = ENOMEM;
		goto fail;
	}
	memcpy(cmd, s->cmd, s->cmd_len);
	cmd[s->cmd_len] = '\0';
	memcpy(env, s->env, s->env_len);
	env[s->env_len] = '\0';
	char *argv[] = { "sh", "-c", cmd, NULL };
	execve("/bin/sh", argv, child_env(env, s->env_len));
fail:;
	int e = errno;
	if (write(report, &e, sizeof(e)) < 0)
		_exit(127);
	_exit(127);
}

static int pipe_pair(int p[2])
{
	return pipe2(p, O_CLOEXEC);
}

static void spawn(uint32_t id, const struct agent_frame *f)
{
	struct agent_spawn s;
	if (agent_decode_spawn(f, &s) < 0 || id == 0) {
		send_fail(id, EPROTO, "malformed spawn");
		return;
	}
	if (find_run(id)) {
		send_fail(id, EEXIST, "run id in use");
		return;
	}
	if (nruns >= AGENT_MAX_RUNS) {
		send_fail(id, EAGAIN, "too many runs");
		return;
	}
	struct arun *r = calloc(1, sizeof(*r));
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 }, rep[2] = { -1, -1 };
	if (!r || (s.flags & AG_SPAWN_STDIN_OPEN ? pipe_pair(in) : 0) < 0 || pipe_pair(out) < 0 ||
	    pipe_pair(err) < 0 || pipe_pair(rep) < 0) {
		send_fail(id, errno ? errno : ENOMEM, strerror(errno ? errno : ENOMEM));
		goto out;
	}
	int devnull = -1;
	if (in[0] < 0 && (devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
		send_fail(id, errno, "open /dev/null");
		goto out;
	}
	pid_t pid = fork();
	if (pid == 0)
		child(&s, in[0] >= 0 ? in[0] : devnull, out[1], err[1], rep[1]);
	if (devnull >= 0)
		close(devnull);
	if (pid < 0) {
		send_fail(id, errno, "fork failed");
		goto out;
	}
	close_fd(&rep[1]);
	int e = 0;
	ssize_t n;
	do
		n = read(rep[0], &e, sizeof(e));
	while (n < 0 && errno == EINTR);
	if (n == sizeof(e)) {
		char msg[600];
		if (s.cwd_len && e != ENOMEM && e != ENAMETOOLONG)
			snprintf(msg, sizeof(msg), "chdir to %.*s or exec /bin/sh: %s",
				 (int)(s.cwd_len > 400 ? 400 : s.cwd_len), s.cwd, strerror(e));
		else
			snprintf(msg, sizeof(msg), "exec /bin/sh: %s", strerror(e));
		waitpid(pid, NULL, 0);
		send_fail(id, e, msg);
		goto out;
	}
	r->id = id;
	r->pid = pid;
	r->fd[0] = in[1];
	in[1] = -1;
	r->fd[1] = out[0];
	out[0] = -1;
	r->fd[2] = err[0];
	err[0] = -1;
	if (r->fd[0] >= 0)
		fcntl(r->fd[0], F_SETFL, O_NONBLOCK);
	fcntl(r->fd[1], F_SETFL, O_NONBLOCK);
	fcntl(r->fd[2], F_SETFL, O_NONBLOCK);
	fcntl(r->fd[1], F_SETPIPE_SZ, 1 << 20); /* fewer wake-ups on big output */
	r->attached = true;
	if (s.timeout_ms)
		r->deadline = now_ms() + s.timeout_ms;
	runs[nruns++] = r;
	r = NULL;
	uint8_t p[4];
	agent_put_u32(p, (uint32_t)pid);
	send_frame(id, AG_STARTED, p, 4, NULL, 0);
out:
	free(r);
	int *fds[] = { &in[0], &in[1], &out[0], &out[1], &err[0], &err[1], &rep[0], &rep[1] };
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		close_fd(fds[i]);
}

/* Acknowledged bytes leave the buffer. */
static void ack(struct arun *r, uint64_t upto[2])
{
	for (int i = 0; i < 2; i++) {
		uint64_t end = r->base[i] + r->out[i].len;
		uint64_t a = upto[i] > end ? end : upto[i];
		if (a > r->base[i]) {
			buf_drop(&r->out[i], (size_t)(a - r->base[i]));
			r->base[i] = a;
		}
	}
}

static void frame_in(const struct agent_frame *f)
{
	struct arun *r = f->type == AG_SPAWN || f->type == AG_HELLO || f->type == AG_PING
				 ? NULL
				 : find_run(f->id);
	uint32_t v;
	uint64_t pos[2];

	switch (f->type) {
	case AG_HELLO: {
		uint8_t p[8];
		agent_put_u32(p, AGENT_PROTO_VERSION);
		agent_put_u32(p + 4, (uint32_t)getpid());
		send_frame(0, AG_WELCOME, p, 8, NULL, 0);
		return;
	}
	case AG_PING:
		send_frame(f->id, AG_PONG, NULL, 0, NULL, 0);
		return;
	case AG_SPAWN:
		spawn(f->id, f);
		return;
	default:
		break;
	}
	if (!r) {
		if (f->type == AG_RESUME)
			send_fail(f->id, ESRCH, "no such run");
		return;
	}
	switch (f->type) {
	case AG_STDIN:
		if (r->fd[0] >= 0 && !r->close_in && buf_reserve(&r->pending_in, f->len) == 0) {
			memcpy(r->pending_in.p + r->pending_in.len, f->payload, f->len);
			r->pending_in.len += f->len;
		}
		break;
	case AG_STDIN_CLOSE:
		r->close_in = true;
		break;
	case AG_SIGNAL:
		if (agent_decode_u32(f, &v) == 0 && v >= 1 && v <= 64 && !r->exited)
			kill(-r->pid, (int)v);
		break;
	case AG_ACK:
		if (agent_decode_u64x2(f, &pos[0], &pos[1]) == 0)
			ack(r, pos);
		break;
	case AG_RESUME:
		if (agent_decode_u64x2(f, &pos[0], &pos[1]) < 0)
			break;
		ack(r, pos);
		for (int i = 0; i < 2; i++)
			r->sent[i] = r->base[i];
		r->attached = true;
		r->exit_sent = false;
		break;
	case AG_FORGET:
		forget(r);
		break;
	}
}

static bool send_chunk(struct arun *r, int s)
{
	if (r->sent[s] >= r->base[s] + r->out[s].len)
		return false;
	size_t off = (size_t)(r->sent[s] - r->base[s]);
	size_t n = r->out[s].len - off;
	if (n > AGENT_MAX_DATA)
		n = AGENT_MAX_DATA;
	uint8_t h[9];
	h[0] = (uint8_t)(s + 1);
	agent_put_u64(h + 1, r->sent[s]);
	send_frame(r->id, AG_DATA, h, 9, r->out[s].p + off, n);
	r->sent[s] += n;
	return true;
}

static void send_exit(struct arun *r)
{
	bool drained = r->sent[0] == r->base[0] + r->out[0].len &&
		       r->sent[1] == r->base[1] + r->out[1].len;
	if (!r->exited || r->fd[1] >= 0 || r->fd[2] >= 0 || !drained || r->exit_sent)
		return;
	uint8_t p[22];
	bool sig = WIFSIGNALED(r->wstatus);
	p[0] = sig;
	p[1] = r->timed_out;
	agent_put_u32(p + 2, (uint32_t)(sig ? WTERMSIG(r->wstatus) : WEXITSTATUS(r->wstatus)));
	agent_put_u64(p + 6, r->sent[0]);
	agent_put_u64(p + 14, r->sent[1]);
	send_frame(r->id, AG_EXIT, p, sizeof(p), NULL, 0);
	r->exit_sent = true;
}

/* Queues what the connection can take, one 64 KiB chunk per run and
 * stream in turn: a run printing a lot cannot hold back a small one.  The
 * exit follows once both pipes are at end-of-file and all was sent. */
static void pump(void)
{
	bool more = true;
	while (more && conn >= 0 && outq.len < OUTQ_MAX) {
		more = false;
		for (size_t i = 0; i < nruns && outq.len < OUTQ_MAX; i++) {
			struct arun *r = runs[i];
			if (!r->attached)
				continue;
			for (int s = 0; s < 2; s++)
				more |= send_chunk(r, s);
		}
	}
	for (size_t i = 0; i < nruns && conn >= 0; i++)
		if (runs[i]->attached)
			send_exit(runs[i]);
}

static void read_stream(struct arun *r, int s)
{
	struct buf *b = &r->out[s];
	size_t room = UNACKED_MAX - b->len;
	if (room > (256u << 10))
		room = 256u << 10;
	if (buf_reserve(b, room) < 0)
		return;
	ssize_t n = read(r->fd[s + 1], b->p + b->len, room);
	if (n > 0) {
		b->len += (size_t)n;
		/* Queued at once while nothing older waits: frames leave in the
		 * order the pipes were read, across both streams. */
		int o = !s;
		if (r->attached && conn >= 0 && r->sent[o] == r->base[o] + r->out[o].len)
			while (outq.len < OUTQ_MAX && send_chunk(r, s))
				;
	} else if (n == 0 || (errno != EAGAIN && errno != EINTR))
		close_fd(&r->fd[s + 1]);
}

static void write_stdin(struct arun *r)
{
	while (r->pending_in.len) {
		ssize_t n = write(r->fd[0], r->pending_in.p, r->pending_in.len);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			r->pending_in.len = 0; /* the run closed its stdin */
			r->close_in = true;
			break;
		}
		buf_drop(&r->pending_in, (size_t)n);
	}
	if (r->close_in)
		close_fd(&r->fd[0]);
}

static void reap(void)
{
	int st;
	pid_t p;
	while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
		for (size_t i = 0; i < nruns; i++) {
			if (runs[i]->pid == p) {
				runs[i]->exited = true;
				runs[i]->wstatus = st;
				/* Leftovers of its group go with it: nothing lingers in ps. */
				kill(-p, SIGKILL);
				close_fd(&runs[i]->fd[0]);
			}
		}
	}
}

static void conn_read(void)
{
	if (buf_reserve(&inq, 65536) < 0) {
		drop_conn();
		return;
	}
	ssize_t n = read(conn, inq.p + inq.len, inq.cap - inq.len);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		drop_conn();
		return;
	}
	inq.len += (size_t)n;
	size_t off = 0;
	for (;;) {
		struct agent_frame f;
		size_t used;
		int rc = agent_frame_parse(inq.p + off, inq.len - off, &f, &used);
		if (rc < 0) {
			drop_conn();
			return;
		}
		if (rc == 0)
			break;
		frame_in(&f);
		/* Spawn frames carry secrets: gone from memory once handled. */
		explicit_bzero(inq.p + off, used);
		off += used;
		if (conn < 0)
			return;
	}
	buf_drop(&inq, off);
	if (inq.cap - inq.len < 65536 && inq.cap >= INQ_MAX + 65536)
		drop_conn();
}

static void conn_write(void)
{
	while (outq.len) {
		ssize_t n = write(conn, outq.p, outq.len);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				drop_conn();
			return;
		}
		buf_drop(&outq, (size_t)n);
	}
}

static void check_deadlines(void)
{
	uint64_t now = now_ms();
	for (size_t i = 0; i < nruns; i++) {
		struct arun *r = runs[i];
		if (r->deadline && !r->exited && now >= r->deadline) {
			r->timed_out = true;
			r->deadline = 0;
			kill(-r->pid, SIGKILL);
		}
	}
}

static int next_timeout(void)
{
	uint64_t now = now_ms(), best = 0;
	for (size_t i = 0; i < nruns; i++)
		if (runs[i]->deadline && !runs[i]->exited && (!best || runs[i]->deadline < best))
			best = runs[i]->deadline;
	if (!best)
		return -1;
	return best <= now ? 0 : (int)(best - now > 60000 ? 60000 : best - now);
}

static int serve_loop(int lfd, int sfd)
{
	struct pollfd pfd[2 + 3 * AGENT_MAX_RUNS];
	struct {
		struct arun *r;
		int s;
	} who[3 * AGENT_MAX_RUNS];
	for (;;) {
		pump();
		size_t n = 0;
		pfd[n++] = (struct pollfd){ .fd = lfd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		size_t cidx = n;
		if (conn >= 0)
			pfd[n++] = (struct pollfd){ .fd = conn,
						    .events = POLLIN | (outq.len ? POLLOUT : 0) };
		size_t first = n;
		for (size_t i = 0; i < nruns; i++) {
			struct arun *r = runs[i];
			if (r->fd[0] >= 0 && (r->pending_in.len || r->close_in)) {
				who[n - first].r = r, who[n - first].s = -1;
				pfd[n++] = (struct pollfd){ .fd = r->fd[0], .events = POLLOUT };
			}
			for (int s = 0; s < 2; s++) {
				if (r->fd[s + 1] < 0 || r->out[s].len >= UNACKED_MAX)
					continue;
				who[n - first].r = r, who[n - first].s = s;
				pfd[n++] = (struct pollfd){ .fd = r->fd[s + 1], .events = POLLIN };
			}
		}
		int rc = poll(pfd, n, next_timeout());
		if (rc < 0 && errno != EINTR)
			return 1;
		check_deadlines();
		if (pfd[1].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == sizeof(si))
				;
			reap();
		}
		/* Runs first, in the order they were polled: what a command wrote
		 * is queued before its exit. */
		for (size_t i = first; i < n; i++) {
			if (!pfd[i].revents)
				continue;
			struct arun *r = who[i - first].r;
			if (who[i - first].s < 0)
				write_stdin(r);
			else if (r->fd[who[i - first].s + 1] >= 0)
				read_stream(r, who[i - first].s);
		}
		if (conn >= 0 && cidx < first &&
		    (pfd[cidx].revents & (POLLOUT | POLLERR | POLLHUP)))
			conn_write();
		if (conn >= 0 && cidx < first && (pfd[cidx].revents & (POLLIN | POLLHUP | POLLERR)))
			conn_read();
		if (pfd[0].revents & POLLIN) {
			int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (c >= 0) {
				/* A new daemon (after a restart) takes the channel over. */
				drop_conn();
				conn = c;
			}
		}
		if (conn >= 0 && outq.len)
			conn_write();
	}
}

static int sock_addr(struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	memcpy(a->sun_path, SOCK_PATH, sizeof(SOCK_PATH));
	return 0;
}

static int serve(void)
{
	struct sockaddr_un a;
	sock_addr(&a);
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *)&a, sizeof(a)) == 0)
		return 0; /* already serving */
	if (probe >= 0)
		close(probe);
	unlink(SOCK_PATH);
	umask(077);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 4) < 0) {
		fprintf(stderr, "agent: %s: %s\n", SOCK_PATH, strerror(errno));
		return 1;
	}
	pid_t pid = fork();
	if (pid < 0)
		return 1;
	if (pid > 0)
		return 0; /* the socket listens already: connect can follow at once */
	setsid();
	int null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (null > 2)
			close(null);
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return 1;
	return serve_loop(lfd, sfd);
}

/* The channel: stdin → socket, socket → stdout, until either side ends. */
static int connect_relay(void)
{
	struct sockaddr_un a;
	sock_addr(&a);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		fprintf(stderr, "agent: not serving: %s\n", strerror(errno));
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	static char buf[256 << 10];
	struct pollfd p[2] = { { .fd = 0, .events = POLLIN }, { .fd = s, .events = POLLIN } };
	int outs[2] = { s, 1 };
	for (;;) {
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			return 1;
		for (int i = 0; i < 2; i++) {
			if (!p[i].revents)
				continue;
			ssize_t n = read(p[i].fd, buf, sizeof(buf));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return 0;
			for (ssize_t off = 0; off < n;) {
				ssize_t w = write(outs[i], buf + off, (size_t)(n - off));
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					return 0;
				off += w;
			}
		}
	}
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "serve") == 0)
		return serve();
	if (argc == 2 && strcmp(argv[1], "connect") == 0)
		return connect_relay();
	if (argc == 2 && strcmp(argv[1], "version") == 0) {
		printf("sandboxfs-agent protocol %d\n", AGENT_PROTO_VERSION);
		return 0;
	}
	fprintf(stderr, "usage: agent serve|connect|version\n");
	return 2;
}
