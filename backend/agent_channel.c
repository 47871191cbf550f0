/* The daemon's half of the agent channel (agent_channel.h).
 *
 * The channel's lock guards its state, its outgoing queue and its table of
 * runs.  The I/O thread owns the incoming buffer and the watches; it
 * parses frames, finds their run under the lock, and spools with no lock
 * held (the spool of a live run is the I/O thread's, docs/locking.md). */
#include "agent_channel.h"

#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <poll.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "agent_proto.h"
#include "ioloop.h"
#include "log.h"
#include "mask.h"
#include "run.h"
#include "subprocess.h"
#include "transport.h"

#define OUTQ_MAX (64u << 20)
#define HANDSHAKE_MS 5000
#define RETRY_S 2

/* One lock for every channel (C's thread-safety analysis cannot name a
 * member's lock): it guards the fields marked so, and is never held while
 * calling into the runs or the model. */
static sbx_mutex chan_lock = SBX_MUTEX_INIT;

enum ch_state { CH_NEW, CH_STARTING, CH_UP, CH_DOWN };

struct agent_run {
	struct agent_run *next;
	struct run *run; /* a reference until the run ends */
	uint32_t id;
	struct masker mask[STREAM_COUNT]; /* one per file, as run.c does */
	uint64_t got[2];		  /* bytes received per stream (before masking) */
	int spool_errno;
	bool dirty;	 /* got grew: an ACK is due */
	bool resumed;	 /* found live in the spool after a restart */
	bool stdin_open; /* started with stdin open, not yet closed (chan_lock) */
};

struct agent_channel {
	atomic_uint refs;
	/* (chan_lock) on the list of channels the I/O thread holds. */
	struct agent_channel *io_next;
	bool io_held;
	const struct engine *engine;
	char *container, *name;

	enum ch_state state SBX_GUARDED_BY(chan_lock);
	bool hostile SBX_GUARDED_BY(chan_lock); /* a protocol error: no more attempts */
	char why[240] SBX_GUARDED_BY(chan_lock);
	time_t down_at SBX_GUARDED_BY(chan_lock);
	struct agent_run *runs SBX_GUARDED_BY(chan_lock);
	uint8_t *outq SBX_GUARDED_BY(chan_lock);
	size_t outq_len SBX_GUARDED_BY(chan_lock), outq_cap SBX_GUARDED_BY(chan_lock);
	bool want_out SBX_GUARDED_BY(chan_lock);
	pid_t pid SBX_GUARDED_BY(chan_lock);

	/* The I/O thread's. */
	bool fuzz; /* the fuzzer's: every id is fuzz_run, no hooks */
	struct agent_run fuzz_run;
	struct io_watch rd, wr, pidw;
	uint8_t *inq;
	size_t inq_len, inq_cap;
};

struct agent_channel *agent_channel_new(const struct engine *e, const char *container,
					const char *sandbox_name)
{
	struct agent_channel *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	atomic_init(&c->refs, 1);
	c->engine = e;
	c->container = strdup(container);
	c->name = strdup(sandbox_name);
	c->rd.fd = c->wr.fd = c->pidw.fd = -1;
	if (!c->container || !c->name) {
		agent_channel_put(c);
		return NULL;
	}
	sbx_lock(&chan_lock);
	snprintf(c->why, sizeof(c->why), "the agent is starting");
	sbx_unlock(&chan_lock);
	return c;
}

/* The channels whose transport the I/O thread watches (and holds a
 * reference of): what is left of them when it has stopped is released by
 * agent_channels_shutdown(). */
static struct agent_channel *io_held SBX_GUARDED_BY(chan_lock);

static void io_hold_locked(struct agent_channel *c, bool hold) SBX_REQUIRES(chan_lock)
{
	if (hold && !c->io_held) {
		c->io_next = io_held;
		io_held = c;
		c->io_held = true;
	} else if (!hold && c->io_held) {
		for (struct agent_channel **p = &io_held; *p; p = &(*p)->io_next) {
			if (*p == c) {
				*p = c->io_next;
				break;
			}
		}
		c->io_held = false;
	}
}

void agent_channel_ref(struct agent_channel *c)
{
	atomic_fetch_add(&c->refs, 1);
}

void agent_channel_put(struct agent_channel *c) SBX_NO_TSA
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	secret_free_n((char *)c->outq, c->outq_cap);
	free(c->inq);
	free(c->container);
	free(c->name);
	free(c);
}

/* ---- the outgoing queue ---- */

/* Writes what the pipe takes; the rest waits for EPOLLOUT.  Written bytes
 * are zeroed: spawn frames carry credentials. */
static void flush_locked(struct agent_channel *c) SBX_REQUIRES(chan_lock)
{
	size_t off = 0;
	while (off < c->outq_len && c->wr.fd >= 0) {
		ssize_t n = spawn_write_nosigpipe(c->wr.fd, c->outq + off, c->outq_len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break; /* EAGAIN, or EPIPE: the read side reports the end */
		}
		off += (size_t)n;
	}
	if (off) {
		memmove(c->outq, c->outq + off, c->outq_len - off);
		explicit_bzero(c->outq + c->outq_len - off, off);
		c->outq_len -= off;
	}
	bool want = c->outq_len > 0;
	if (want != c->want_out && c->wr.fd >= 0 && ioloop_mod(&c->wr, want ? EPOLLOUT : 0) == 0)
		c->want_out = want;
}

static int send_locked(struct agent_channel *c, uint32_t id, uint8_t type, const void *a,
		       size_t alen, const void *b, size_t blen) SBX_REQUIRES(chan_lock)
{
	size_t need = AGENT_HDR + alen + blen;
	if (c->state != CH_UP || c->wr.fd < 0)
		return -EPIPE;
	if (c->outq_len + need > OUTQ_MAX)
		return -ENOBUFS;
	if (c->outq_cap - c->outq_len < need) {
		size_t cap = c->outq_cap ? c->outq_cap : 4096;
		while (cap - c->outq_len < need)
			cap *= 2;
		/* Not realloc: the old block may hold credentials to zero. */
		uint8_t *q = malloc(cap);
		if (!q)
			return -ENOMEM;
		if (c->outq_len)
			memcpy(q, c->outq, c->outq_len);
		secret_free_n((char *)c->outq, c->outq_cap);
		c->outq = q;
		c->outq_cap = cap;
	}
	uint8_t *p = c->outq + c->outq_len;
	agent_put_header(p, id, type, (uint32_t)(alen + blen));
	if (alen)
		memcpy(p + AGENT_HDR, a, alen);
	if (blen)
		memcpy(p + AGENT_HDR + alen, b, blen);
	c->outq_len += need;
	flush_locked(c);
	return 0;
}

static void writable(struct io_watch *w, uint32_t events)
{
	struct agent_channel *c = w->ctx;
	sbx_lock(&chan_lock);
	flush_locked(c);
	sbx_unlock(&chan_lock);
}

/* ---- runs of the channel ---- */

static struct agent_run *find_locked(struct agent_channel *c, uint32_t id) SBX_REQUIRES(chan_lock)
{
	for (struct agent_run *a = c->runs; a; a = a->next)
		if (a->id == id)
			return a;
	return NULL;
}

static void unlink_locked(struct agent_channel *c, struct agent_run *a) SBX_REQUIRES(chan_lock)
{
	for (struct agent_run **p = &c->runs; *p; p = &(*p)->next) {
		if (*p == a) {
			*p = a->next;
			return;
		}
	}
}

static void maskers_free(struct agent_run *a)
{
	for (int i = 0; i < STREAM_COUNT; i++)
		masker_free(&a->mask[i]);
}

static int maskers_init(struct agent_run *a, const char *const *secrets, size_t n)
{
	for (int i = 0; i < STREAM_COUNT; i++) {
		if (masker_init(&a->mask[i], secrets, n) < 0) {
			maskers_free(a);
			return -ENOMEM;
		}
	}
	return 0;
}

static void agent_run_free(struct agent_run *a)
{
	maskers_free(a);
	run_put(a->run);
	free(a);
}

static void flush_masks(struct agent_run *a)
{
	run_hook_flush(a->run, a->mask, &a->spool_errno);
}

/* ---- failure: the channel is closed, its runs end ---- */

static void close_watch(struct io_watch *w)
{
	if (w->fd >= 0) {
		ioloop_del(w);
		close(w->fd);
		w->fd = -1;
	}
}

static void end_runs(struct agent_run *runs, const char *why)
{
	char reason[260];
	snprintf(reason, sizeof(reason), "the agent channel failed: %s", why);
	while (runs) {
		struct agent_run *a = runs;
		runs = a->next;
		flush_masks(a);
		run_hook_lost(a->run, 0,
			      a->resumed ? "the daemon restarted while the run was live, and its "
					   "agent is gone"
					 : reason);
		agent_run_free(a);
	}
}

/* I/O thread.  Every run of the channel ends `lost` with the reason
 * (`killed` when it was being killed anyway). */
static void channel_fail(struct agent_channel *c, bool hostile, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void channel_fail(struct agent_channel *c, bool hostile, const char *fmt, ...)
{
	char why[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);

	sbx_lock(&chan_lock);
	bool was_up = c->state == CH_UP;
	struct agent_run *runs = c->runs;
	c->runs = NULL;
	c->state = CH_DOWN;
	c->hostile = c->hostile || hostile;
	c->down_at = time(NULL);
	snprintf(c->why, sizeof(c->why), "%s", why);
	if (c->pid > 0)
		kill(c->pid, SIGKILL);
	close_watch(&c->wr);
	c->outq_len = 0;
	sbx_unlock(&chan_lock);
	close_watch(&c->rd);
	free(c->inq);
	c->inq = NULL;
	c->inq_len = c->inq_cap = 0;
	if (was_up)
		log_warn("sandbox %s: agent channel closed: %s; runs use docker exec", c->name,
			 why);
	end_runs(runs, why);
}

static void transport_exited(struct io_watch *w, uint32_t events)
{
	struct agent_channel *c = w->ctx;
	sbx_lock(&chan_lock);
	pid_t pid = c->pid;
	sbx_unlock(&chan_lock);
	if (waitpid(pid, NULL, WNOHANG) == 0)
		return;
	close_watch(&c->pidw);
	sbx_lock(&chan_lock);
	c->pid = 0;
	bool up = c->state == CH_UP;
	sbx_unlock(&chan_lock);
	/* The pipe may still hold the agent's last frames: drain them first. */
	if (up && c->rd.fd >= 0)
		c->rd.fn(&c->rd, EPOLLIN);
	sbx_lock(&chan_lock);
	up = c->state == CH_UP;
	sbx_unlock(&chan_lock);
	if (up)
		channel_fail(c, false, "the agent's transport exited");
	sbx_lock(&chan_lock);
	io_hold_locked(c, false);
	sbx_unlock(&chan_lock);
	agent_channel_put(c); /* the I/O thread's */
}

void agent_channels_shutdown(void)
{
	for (;;) {
		sbx_lock(&chan_lock);
		struct agent_channel *c = io_held;
		if (c)
			io_hold_locked(c, false);
		pid_t pid = c ? c->pid : 0;
		if (c) {
			c->pid = 0;
			close_watch(&c->wr);
		}
		sbx_unlock(&chan_lock);
		if (!c)
			break;
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
		close_watch(&c->rd);
		close_watch(&c->pidw);
		agent_channel_put(c); /* the stopped I/O thread's */
	}
}

/* ---- frames from the agent (hostile input) ---- */

static void ack_dirty(struct agent_channel *c)
{
	sbx_lock(&chan_lock);
	for (struct agent_run *a = c->runs; a; a = a->next) {
		if (!a->dirty)
			continue;
		uint8_t p[16];
		agent_put_u64(p, a->got[0]);
		agent_put_u64(p + 8, a->got[1]);
		send_locked(c, a->id, AG_ACK, p, 16, NULL, 0);
		a->dirty = false;
	}
	sbx_unlock(&chan_lock);
}

static void printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			*s = ' ';
}

/* One frame: 0, or -EPROTO with why filled. */
static int frame(struct agent_channel *c, const struct agent_frame *f, char *why, size_t wlen)
{
	sbx_lock(&chan_lock);
	struct agent_run *a = c->fuzz ? &c->fuzz_run : find_locked(c, f->id);
	if (a && !c->fuzz && (f->type == AG_EXIT || f->type == AG_FAIL))
		unlink_locked(c, a); /* ending: nothing else reaches it */
	sbx_unlock(&chan_lock);
	bool hooks = !c->fuzz;

	if (f->type == AG_PONG)
		return 0;
	if (!a) {
		snprintf(why, wlen, "frame type %u for unknown run %u", f->type, f->id);
		return -EPROTO;
	}
	switch (f->type) {
	case AG_STARTED: {
		uint32_t pid;
		if (agent_decode_u32(f, &pid) < 0 || pid <= 1 || pid > (1u << 22))
			break;
		if (hooks)
			run_hook_live(a->run, (long)pid);
		return 0;
	}
	case AG_DATA: {
		struct agent_data d;
		if (agent_decode_data(f, &d) < 0)
			break;
		int s = d.stream - 1;
		if (d.offset > a->got[s]) {
			snprintf(why, wlen, "run %u: data at %llu, expected %llu", f->id,
				 (unsigned long long)d.offset, (unsigned long long)a->got[s]);
			return -EPROTO;
		}
		/* A resend after a reconnect repeats what was spooled: skip it. */
		uint64_t skip = a->got[s] - d.offset;
		if (skip >= d.len)
			return 0;
		enum stream st = s ? STREAM_STDERR : STREAM_STDOUT;
		if (hooks)
			run_hook_push(a->run, a->mask, st, (const char *)d.bytes + skip,
				      d.len - skip, &a->spool_errno);
		a->got[s] += d.len - skip;
		a->dirty = true;
		if (hooks)
			run_hook_changed(a->run);
		return 0;
	}
	case AG_EXIT: {
		struct agent_exit e;
		if (agent_decode_exit(f, &e) < 0 || e.out != a->got[0] || e.err != a->got[1]) {
			snprintf(why, wlen, "run %u: malformed exit", f->id);
			if (hooks)
				agent_run_free(a);
			return -EPROTO;
		}
		if (!hooks)
			return 0;
		flush_masks(a);
		run_hook_exited(a->run, e.signaled ? 128 + e.code : e.code, e.timed_out);
		sbx_lock(&chan_lock);
		send_locked(c, a->id, AG_FORGET, NULL, 0, NULL, 0);
		sbx_unlock(&chan_lock);
		agent_run_free(a);
		return 0;
	}
	case AG_FAIL: {
		int32_t e;
		const char *msg;
		uint32_t n;
		if (agent_decode_fail(f, &e, &msg, &n) < 0) {
			snprintf(why, wlen, "run %u: malformed failure", f->id);
			if (hooks)
				agent_run_free(a);
			return -EPROTO;
		}
		char reason[600];
		snprintf(reason, sizeof(reason), "the run did not start: %.*s", (int)n, msg);
		printable(reason);
		if (!hooks)
			return 0;
		/* The agent's errno is its word only: a run that cannot start
		 * fails close with EIO, as docs/interface.md says. */
		(void)e;
		run_hook_lost(a->run, EIO, reason);
		agent_run_free(a);
		return 0;
	}
	default:
		break;
	}
	snprintf(why, wlen, "malformed frame type %u for run %u", f->type, f->id);
	return -EPROTO;
}

/* Parses every complete frame of the buffer; keeps the rest. */
static int parse_frames(struct agent_channel *c, char *why, size_t wlen)
{
	size_t off = 0;
	int rc = 0;
	while (rc == 0) {
		struct agent_frame f;
		size_t used;
		int p = agent_frame_parse(c->inq + off, c->inq_len - off, &f, &used);
		if (p < 0) {
			snprintf(why, wlen, "bad frame header");
			rc = -EPROTO;
		} else if (p == 0) {
			break;
		} else {
			rc = frame(c, &f, why, wlen);
			off += used;
		}
	}
	if (off) {
		memmove(c->inq, c->inq + off, c->inq_len - off);
		c->inq_len -= off;
	}
	return rc;
}

static void readable(struct io_watch *w, uint32_t events)
{
	struct agent_channel *c = w->ctx;
	char why[160];
	for (int round = 0; round < 16 && c->rd.fd >= 0; round++) {
		if (c->inq_cap - c->inq_len < 65536) {
			size_t cap = c->inq_cap ? c->inq_cap * 2 : 262144;
			if (cap > AGENT_HDR + AGENT_MAX_PAYLOAD + 262144)
				cap = AGENT_HDR + AGENT_MAX_PAYLOAD + 262144;
			uint8_t *q = cap > c->inq_cap ? realloc(c->inq, cap) : NULL;
			if (!q) {
				channel_fail(c, false, "out of memory");
				return;
			}
			c->inq = q;
			c->inq_cap = cap;
		}
		ssize_t n = read(c->rd.fd, c->inq + c->inq_len, c->inq_cap - c->inq_len);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			channel_fail(c, false, "the agent closed the channel");
			return;
		}
		c->inq_len += (size_t)n;
		if (parse_frames(c, why, sizeof(why)) < 0) {
			log_warn("sandbox %s: agent protocol error: %s", c->name, why);
			channel_fail(c, true, "protocol error: %s", why);
			return;
		}
	}
	ack_dirty(c);
	/* Give a burst's memory back when idle: 100 channels stay small. */
	if (c->inq_len == 0 && c->inq_cap > 262144) {
		free(c->inq);
		c->inq = NULL;
		c->inq_cap = 0;
	}
}

/* ---- starting (a starter thread) ---- */

static int handshake(struct agent_channel *c, const struct transport_proc *p, char *why,
		     size_t wlen)
{
	uint8_t hello[AGENT_HDR + 4];
	agent_put_header(hello, 0, AG_HELLO, 4);
	agent_put_u32(hello + AGENT_HDR, AGENT_PROTO_VERSION);
	if (spawn_write_nosigpipe(p->to_agent, hello, sizeof(hello)) != (ssize_t)sizeof(hello)) {
		snprintf(why, wlen, "the agent's transport did not take the handshake");
		return -EPIPE;
	}
	uint8_t buf[64];
	size_t len = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct agent_frame f;
		size_t used;
		int rc = agent_frame_parse(buf, len, &f, &used);
		if (rc == 1) {
			uint32_t ver, pid;
			if (f.type != AG_WELCOME || f.id != 0 ||
			    agent_decode_pair(&f, &ver, &pid) < 0 || ver != AGENT_PROTO_VERSION ||
			    used != len) {
				snprintf(why, wlen, "no valid welcome from the agent");
				return -EPROTO;
			}
			return 0;
		}
		if (rc < 0 || len == sizeof(buf)) {
			snprintf(why, wlen, "no valid welcome from the agent");
			return -EPROTO;
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		long left = HANDSHAKE_MS -
			    ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
		struct pollfd pfd = { .fd = p->from_agent, .events = POLLIN };
		if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
			snprintf(why, wlen, "the agent did not answer within %d ms", HANDSHAKE_MS);
			return -ETIMEDOUT;
		}
		ssize_t n = read(p->from_agent, buf + len, sizeof(buf) - len);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			snprintf(why, wlen, "the agent is not serving");
			return -ECONNREFUSED;
		}
		if (n > 0)
			len += (size_t)n;
	}
}

static void set_down(struct agent_channel *c, bool hostile, const char *why)
{
	sbx_lock(&chan_lock);
	struct agent_run *runs = c->runs; /* only runs waiting to be resumed */
	c->runs = NULL;
	c->state = CH_DOWN;
	c->hostile = c->hostile || hostile;
	c->down_at = time(NULL);
	snprintf(c->why, sizeof(c->why), "%s", why);
	sbx_unlock(&chan_lock);
	log_info("sandbox %s: runs use docker exec: %s", c->name, why);
	end_runs(runs, why);
}

static int try_connect(struct agent_channel *c, struct transport_proc *p, char *why, size_t wlen)
{
	struct sbx_err err = { 0 };
	if (transport_connect(c->engine, c->container, p, &err) < 0) {
		snprintf(why, wlen, "%.150s", err.msg);
		return -err.code;
	}
	int rc = handshake(c, p, why, wlen);
	if (rc < 0) {
		kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
		close(p->to_agent);
		close(p->from_agent);
	}
	return rc;
}

static void start_task(void *ctx)
{
	struct agent_channel *c = ctx;
	struct transport_proc p;
	struct sbx_err err = { 0 };
	char why[200];

	/* A serving agent (a daemon restart) is reused; else (nothing there,
	 * or the CLI's complaint about a missing binary on stdout) install it. */
	int rc = try_connect(c, &p, why, sizeof(why));
	if (rc < 0) {
		if (transport_install(c->engine, c->container, &err) < 0) {
			snprintf(why, sizeof(why), "the agent could not start: %.150s", err.msg);
			set_down(c, false, why);
			agent_channel_put(c);
			return;
		}
		rc = try_connect(c, &p, why, sizeof(why));
	}
	if (rc < 0) {
		set_down(c, rc == -EPROTO, why);
		agent_channel_put(c);
		return;
	}
	int pidfd = (int)syscall(SYS_pidfd_open, p.pid, 0);
	c->rd = (struct io_watch){ .fd = p.from_agent, .fn = readable, .ctx = c };
	c->pidw = (struct io_watch){ .fd = pidfd, .fn = transport_exited, .ctx = c };
	sbx_lock(&chan_lock);
	c->wr = (struct io_watch){ .fd = p.to_agent, .fn = writable, .ctx = c };
	c->pid = p.pid;
	c->state = CH_UP;
	c->why[0] = '\0';
	c->want_out = false;
	sbx_unlock(&chan_lock);
	/* The pidfd watch holds the I/O thread's reference (ctx's, passed on). */
	if (pidfd < 0 || ioloop_add(&c->pidw, EPOLLIN) < 0) {
		kill(p.pid, SIGKILL);
		waitpid(p.pid, NULL, 0);
		if (pidfd >= 0)
			close(pidfd);
		sbx_lock(&chan_lock);
		close(c->wr.fd);
		c->wr.fd = -1;
		sbx_unlock(&chan_lock);
		close(c->rd.fd);
		c->rd.fd = -1;
		set_down(c, false, "cannot watch the agent's transport");
		agent_channel_put(c);
		return;
	}
	sbx_lock(&chan_lock);
	io_hold_locked(c, true);
	int wrc = ioloop_add(&c->wr, 0);
	sbx_unlock(&chan_lock);
	if (wrc < 0 || ioloop_add(&c->rd, EPOLLIN) < 0) {
		sbx_lock(&chan_lock);
		kill(c->pid, SIGKILL); /* the pidfd watch ends the channel */
		sbx_unlock(&chan_lock);
	}
	/* Runs that were live when a previous daemon died: the agent sends
	 * what it has past the spooled byte counts, and their exits. */
	sbx_lock(&chan_lock);
	for (struct agent_run *a = c->runs; a; a = a->next) {
		uint8_t pos[16];
		agent_put_u64(pos, a->got[0]);
		agent_put_u64(pos + 8, a->got[1]);
		send_locked(c, a->id, AG_RESUME, pos, 16, NULL, 0);
	}
	sbx_unlock(&chan_lock);
	log_info("sandbox %s: agent connected", c->name);
}

/* Starting a channel takes docker calls of up to seconds: it gets threads
 * of its own, so the task thread's kills and inspections never wait behind
 * an install.  They live as long as the daemon (the transport dies with the
 * thread that spawned it: pdeathsig). */
#define STARTERS 2
static pthread_mutex_t starter_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t starter_cond = PTHREAD_COND_INITIALIZER;
static struct starter_item {
	struct starter_item *next;
	struct agent_channel *c;
} * starter_head, **starter_tail = &starter_head;
static int starters;
static int starters_busy;      /* starting a channel now */
static bool starters_stopping; /* shutdown: nothing new is started */

static void *starter_main(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&starter_lock);
		while (!starter_head)
			pthread_cond_wait(&starter_cond, &starter_lock);
		struct starter_item *it = starter_head;
		starter_head = it->next;
		if (!starter_head)
			starter_tail = &starter_head;
		starters_busy++;
		pthread_mutex_unlock(&starter_lock);
		start_task(it->c);
		free(it);
		pthread_mutex_lock(&starter_lock);
		starters_busy--;
		pthread_cond_broadcast(&starter_cond);
		pthread_mutex_unlock(&starter_lock);
	}
	return NULL;
}

static int starter_queue(struct agent_channel *c)
{
	struct starter_item *it = calloc(1, sizeof(*it));
	if (!it)
		return -ENOMEM;
	it->c = c;
	pthread_mutex_lock(&starter_lock);
	while (starters < STARTERS) {
		pthread_t t;
		if (pthread_create(&t, NULL, starter_main, NULL) != 0)
			break;
		pthread_detach(t);
		starters++;
	}
	int rc = starters && !starters_stopping ? 0 : -EAGAIN;
	if (rc == 0) {
		*starter_tail = it;
		starter_tail = &it->next;
		pthread_cond_signal(&starter_cond);
	}
	pthread_mutex_unlock(&starter_lock);
	if (rc < 0)
		free(it);
	return rc;
}

bool agent_channel_starting(struct agent_channel *c)
{
	sbx_lock(&chan_lock);
	bool starting = c->state == CH_STARTING;
	sbx_unlock(&chan_lock);
	return starting;
}

void agent_channels_drain(void)
{
	pthread_mutex_lock(&starter_lock);
	starters_stopping = true;
	/* What is queued is not started: its channel stays down. */
	while (starter_head) {
		struct starter_item *it = starter_head;
		starter_head = it->next;
		pthread_mutex_unlock(&starter_lock);
		set_down(it->c, false, "the daemon is shutting down");
		agent_channel_put(it->c);
		free(it);
		pthread_mutex_lock(&starter_lock);
	}
	starter_tail = &starter_head;
	while (starters_busy > 0)
		pthread_cond_wait(&starter_cond, &starter_lock);
	pthread_mutex_unlock(&starter_lock);
}

void agent_channel_start(struct agent_channel *c)
{
	sbx_lock(&chan_lock);
	bool go = c->state == CH_NEW || (c->state == CH_DOWN && !c->hostile);
	if (go)
		c->state = CH_STARTING;
	sbx_unlock(&chan_lock);
	if (!go)
		return;
	agent_channel_ref(c);
	if (starter_queue(c) < 0) {
		set_down(c, false, "cannot start the agent's starter thread");
		agent_channel_put(c);
	}
}

void agent_channel_disable(struct agent_channel *c, const char *why)
{
	sbx_lock(&chan_lock);
	c->state = CH_DOWN;
	c->hostile = true;
	snprintf(c->why, sizeof(c->why), "%s", why);
	sbx_unlock(&chan_lock);
}

int agent_channel_resume(struct agent_channel *c, struct run *r, uint64_t out, uint64_t err)
{
	struct agent_run *a = calloc(1, sizeof(*a));
	if (!a || maskers_init(a, NULL, 0) < 0) {
		free(a);
		return -ENOMEM;
	}
	a->id = run_number(r);
	a->got[0] = out;
	a->got[1] = err;
	a->resumed = true;
	run_hook_attach(r, c);
	a->run = r;
	sbx_lock(&chan_lock);
	a->next = c->runs;
	c->runs = a;
	sbx_unlock(&chan_lock);
	return 0;
}

void agent_channel_stop(struct agent_channel *c)
{
	sbx_lock(&chan_lock);
	c->hostile = true; /* never again */
	if (c->state != CH_UP)
		c->state = CH_DOWN;
	if (c->pid > 0)
		kill(c->pid, SIGKILL);
	sbx_unlock(&chan_lock);
}

/* ---- runs through the channel ---- */

#define AGENT_MAX_CMD (100 * 1000)

int agent_channel_spawn(struct agent_channel *c, struct run *r, const struct run_launch *l,
			struct sbx_err *err)
{
	sbx_lock(&chan_lock);
	enum ch_state st = c->state;
	bool retry = st == CH_DOWN && !c->hostile && time(NULL) - c->down_at >= RETRY_S;
	sbx_unlock(&chan_lock);
	if (retry)
		agent_channel_start(c); /* this run still takes docker exec */
	size_t wd = strlen(l->workdir ? l->workdir : "");
	size_t cmd_len = l->cmd->len;
	/* The agent runs `sh -c CMD`: one argument is at most 128 KiB
	 * (MAX_ARG_STRLEN); larger commands take docker exec, which feeds
	 * them on stdin. */
	if (st != CH_UP || cmd_len > AGENT_MAX_CMD ||
	    cmd_len + l->env_len + wd + 64 > AGENT_MAX_PAYLOAD)
		return -EAGAIN;

	struct agent_run *a = calloc(1, sizeof(*a));
	if (!a)
		return sbx_err_set(err, ENOMEM, "exec: out of memory");
	a->id = run_number(r);
	a->stdin_open = l->stdin_open;
	if (maskers_init(a, l->secrets, l->nsecrets) < 0) {
		free(a);
		return sbx_err_set(err, ENOMEM, "exec: out of memory");
	}
	size_t plen = 8 + 4 + cmd_len + 4 + l->env_len + 4 + wd;
	uint8_t *p = malloc(plen);
	if (!p) {
		maskers_free(a);
		free(a);
		return sbx_err_set(err, ENOMEM, "exec: out of memory");
	}
	long long ms = l->timeout > 0 ? (long long)l->timeout * 1000 : 0;
	agent_put_u32(p, l->stdin_open ? AG_SPAWN_STDIN_OPEN : 0);
	agent_put_u32(p + 4, ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms);
	/* The command comes from its spool (memory or file); a NUL in it
	 * takes the docker exec path, which feeds it on stdin. */
	agent_put_u32(p + 8, (uint32_t)cmd_len);
	if (cmd_spool_read(l->cmd, 0, (char *)p + 12, cmd_len) < 0 ||
	    memchr(p + 12, '\0', cmd_len)) {
		secret_free_n((char *)p, plen);
		maskers_free(a);
		free(a);
		return -EAGAIN;
	}
	size_t o = 12 + cmd_len;
	const char *strs[] = { l->env ? l->env : "", l->workdir ? l->workdir : "" };
	size_t lens[] = { l->env ? l->env_len : 0, wd };
	for (int i = 0; i < 2; i++) {
		agent_put_u32(p + o, (uint32_t)lens[i]);
		memcpy(p + o + 4, strs[i], lens[i]);
		o += 4 + lens[i];
	}

	/* A restarted daemon resumes the runs the spool marks so. */
	run_hook_mark_agent(r);
	run_hook_attach(r, c);
	a->run = r; /* the reference run_hook_attach took */
	sbx_lock(&chan_lock);
	int rc = c->state == CH_UP && !find_locked(c, a->id) ? 0 : -EAGAIN;
	if (rc == 0) {
		a->next = c->runs;
		c->runs = a;
		rc = send_locked(c, a->id, AG_SPAWN, p, plen, NULL, 0);
		if (rc < 0)
			unlink_locked(c, a);
	}
	sbx_unlock(&chan_lock);
	secret_free_n((char *)p, plen);
	if (rc < 0) {
		run_hook_detach(r);
		agent_run_free(a);
		return -EAGAIN;
	}
	log_debug("sandbox %s run %u: started through the agent", c->name, a->id);
	return 0;
}

int agent_channel_stdin(struct agent_channel *c, struct run *r, const char *buf, size_t len,
			bool close_it, struct sbx_err *err)
{
	uint32_t id = run_number(r);
	int rc = 0;
	sbx_lock(&chan_lock);
	struct agent_run *a = find_locked(c, id);
	if (!a)
		rc = -EPIPE;
	else if (!a->stdin_open)
		rc = a->resumed ? -EPIPE : -EOPNOTSUPP;
	for (size_t off = 0; rc == 0 && off < len;) {
		size_t n = len - off > AGENT_MAX_DATA ? AGENT_MAX_DATA : len - off;
		rc = send_locked(c, id, AG_STDIN, buf + off, n, NULL, 0);
		off += n;
	}
	if (rc == 0 && close_it) {
		rc = send_locked(c, id, AG_STDIN_CLOSE, NULL, 0, NULL, 0);
		a->stdin_open = false;
	}
	sbx_unlock(&chan_lock);
	if (rc == -EOPNOTSUPP)
		return sbx_err_set(
			err, EOPNOTSUPP,
			"stdin: run %u was started with stdin at end-of-file (ctl stdin open)", id);
	if (rc < 0)
		return sbx_err_set(err, -rc, "stdin: run %u: %s", id, strerror(-rc));
	return 0;
}

int agent_channel_signal(struct agent_channel *c, struct run *r, int sig, struct sbx_err *err)
{
	uint8_t p[4];
	agent_put_u32(p, (uint32_t)sig);
	sbx_lock(&chan_lock);
	uint32_t id = run_number(r);
	int rc = find_locked(c, id) ? send_locked(c, id, AG_SIGNAL, p, 4, NULL, 0) : -ESRCH;
	sbx_unlock(&chan_lock);
	if (rc < 0)
		return sbx_err_set(err, -rc, "kill: run %u: %s", id, strerror(-rc));
	return 0;
}

void agent_channel_describe(struct agent_channel *c, char *why, size_t len, const char **transport)
{
	sbx_lock(&chan_lock);
	*transport = c->state == CH_UP ? "agent" : "exec";
	snprintf(why, len, "%s", c->state == CH_UP ? "" : c->why);
	sbx_unlock(&chan_lock);
}

/* ---- the fuzzer's entry: the parser with no transport ---- */

int agent_channel_fuzz(const unsigned char *buf, size_t len)
{
	struct agent_channel *c = agent_channel_new(NULL, "fuzz", "fuzz");
	if (!c)
		return 0;
	char why[160];
	int rc = 0;
	c->fuzz = true;
	c->inq = malloc(len ? len : 1);
	if (c->inq) {
		memcpy(c->inq, buf, len);
		c->inq_len = c->inq_cap = len;
		rc = parse_frames(c, why, sizeof(why));
	}
	agent_channel_put(c);
	return rc;
}
