/* NAME/stats and .sandboxfs/summary: a sandbox's resource use read where
 * it is cheap.  For a local engine the container's cgroup files (v2, or
 * v1's memory/cpuacct/pids controllers) are read directly: its pid and
 * cgroup are found once with `docker inspect` and /proc/PID/cgroup and
 * cached.  Where they cannot be found (a remote engine), `docker stats
 * --no-stream` answers, slowly.
 *
 * stats_lock guards the cache (a leaf lock; no I/O under it). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "engine_internal.h"
#include "log.h"
#include "model_internal.h"
#include "state.h"
#include "subprocess.h"

struct cg {
	char id[65];
	long pid;
	bool v2;
	char mem[512], cpu[512], pids[512]; /* directories (all the same on v2) */
	double cpu_at;			    /* CLOCK_MONOTONIC s of the last sample */
	unsigned long long cpu_ns;	    /* usage then */
	double cpu_pct;			    /* the last value computed, -1 = none */
	bool used;
};

#define CG_CACHE 256
static sbx_mutex stats_lock = SBX_MUTEX_INIT;
static struct cg cache[CG_CACHE] SBX_GUARDED_BY(stats_lock);

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int read_text(const char *dir, const char *name, char *buf, size_t cap)
{
	char p[640];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, cap - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	buf[n] = '\0';
	return 0;
}

/* A number from a cgroup file; "max" (or v1's huge "unlimited") is 0. */
static long long read_num(const char *dir, const char *name)
{
	char buf[64];
	if (read_text(dir, name, buf, sizeof(buf)) < 0 || !strncmp(buf, "max", 3))
		return 0;
	unsigned long long v = strtoull(buf, NULL, 10);
	return v >= (1ULL << 62) ? 0 : (long long)v;
}

static bool dir_has(const char *dir, const char *file)
{
	char p[640];
	snprintf(p, sizeof(p), "%s/%s", dir, file);
	return access(p, R_OK) == 0;
}

/* The directory of controller ctl (NULL: v2) for the cgroup path p of the
 * container id; p is as /proc/PID/cgroup says (maybe in another cgroup
 * namespace), so the usual places of docker's cgroups are tried too. */
static bool find_dir(const char *ctl, const char *p, const char *id, const char *probe, char *out,
		     size_t cap)
{
	const char *root = "/sys/fs/cgroup";
	char base[128];
	snprintf(base, sizeof(base), "%s%s%s", root, ctl ? "/" : "", ctl ? ctl : "");
	for (size_t i = 0; i < 3; i++) {
		if (i == 0 && !p[0])
			continue;
		if (i == 0)
			snprintf(out, cap, "%s%s", base, p);
		else if (i == 1)
			snprintf(out, cap, "%s/docker/%s", base, id);
		else
			snprintf(out, cap, "%s/system.slice/docker-%s.scope", base, id);
		if (dir_has(out, probe))
			return true;
	}
	return false;
}

/* Finds the container's cgroup directories from its pid. */
static int resolve(const struct engine *e, const char *container, struct cg *c, struct sbx_err *err)
{
	long pid = 0;
	char id[65];
	int rc = engine_container_pid(e, container, &pid, id, err);
	if (rc < 0)
		return rc;
	if (pid <= 0)
		return sbx_err_set(err, EHOSTDOWN, "the container is not running");
	*c = (struct cg){ .pid = pid, .used = true, .cpu_pct = -1 };
	memcpy(c->id, id, sizeof(c->id));
	char path[64], *text = NULL;
	size_t len = 0;
	snprintf(path, sizeof(path), "/proc/%ld/cgroup", pid);
	char v2p[400] = "", memp[400] = "", cpup[400] = "", pidsp[400] = "";
	if (read_file(path, &text, &len, 65536) == 0) {
		for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
			char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
			if (!b)
				continue;
			*b = '\0';
			const char *ctls = a + 1, *p = b + 1;
			if (!ctls[0])
				snprintf(v2p, sizeof(v2p), "%s", p);
			else if (strstr(ctls, "memory"))
				snprintf(memp, sizeof(memp), "%s", p);
			else if (strstr(ctls, "cpuacct"))
				snprintf(cpup, sizeof(cpup), "%s", p);
			else if (!strcmp(ctls, "pids"))
				snprintf(pidsp, sizeof(pidsp), "%s", p);
		}
	}
	free(text);
	if (dir_has("/sys/fs/cgroup", "cgroup.controllers") &&
	    find_dir(NULL, v2p, id, "memory.current", c->mem, sizeof(c->mem))) {
		c->v2 = true;
		memcpy(c->cpu, c->mem, sizeof(c->cpu));
		memcpy(c->pids, c->mem, sizeof(c->pids));
		return 0;
	}
	if (find_dir("memory", memp, id, "memory.usage_in_bytes", c->mem, sizeof(c->mem)) &&
	    (find_dir("cpuacct", cpup, id, "cpuacct.usage", c->cpu, sizeof(c->cpu)) ||
	     find_dir("cpu,cpuacct", cpup, id, "cpuacct.usage", c->cpu, sizeof(c->cpu))) &&
	    find_dir("pids", pidsp, id, "pids.current", c->pids, sizeof(c->pids)))
		return 0;
	return sbx_err_set(err, ENOENT, "no cgroup files of container %.12s here", id);
}

static unsigned long long cpu_usage_ns(const struct cg *c)
{
	if (!c->v2)
		return (unsigned long long)read_num(c->cpu, "cpuacct.usage");
	char buf[1024];
	if (read_text(c->cpu, "cpu.stat", buf, sizeof(buf)) < 0)
		return 0;
	const char *u = strstr(buf, "usage_usec ");
	return u ? strtoull(u + 11, NULL, 10) * 1000ULL : 0;
}

/* Seconds since the container's first process started (/proc/PID/stat). */
static long long uptime_of(long pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%ld", pid);
	if (read_text(path, "stat", buf, sizeof(buf)) < 0)
		return -1;
	char *p = strrchr(buf, ')');
	unsigned long long start = 0;
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	if (!p)
		return -1;
	start = strtoull(p + 1, NULL, 10);
	struct timespec boot;
	clock_gettime(CLOCK_BOOTTIME, &boot);
	long hz = sysconf(_SC_CLK_TCK);
	long long up = (long long)boot.tv_sec -
		       (long long)(start / (unsigned long long)(hz > 0 ? hz : 100));
	return up < 0 ? 0 : up;
}

/* Bytes through the container's interfaces other than lo. */
static bool net_of(long pid, long long *rx, long long *tx)
{
	char path[64], buf[8192];
	snprintf(path, sizeof(path), "/proc/%ld/net", pid);
	if (read_text(path, "dev", buf, sizeof(buf)) < 0)
		return false;
	bool any = false;
	*rx = *tx = 0;
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		*colon = '\0';
		while (*line == ' ')
			line++;
		if (!strcmp(line, "lo"))
			continue;
		unsigned long long v[9];
		if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
			   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8]) == 9) {
			*rx += (long long)v[0];
			*tx += (long long)v[8];
			any = true;
		}
	}
	return any;
}

static bool pid_alive(long pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%ld", pid);
	return access(path, F_OK) == 0;
}

/* docker stats --no-stream: the fallback, seconds slow. */
static int stats_docker(const struct engine *e, const char *container, struct sandbox_stats *st,
			struct sbx_err *err)
{
	struct spawn_result res;
	int rc = engine_cli(e, "stats",
			    (const char *const[]){ "stats", "--no-stream", "--format", "{{json .}}",
						   container, NULL },
			    NULL, 0, &res, err);
	if (rc == 0) {
		cJSON *j = cJSON_Parse(res.out);
		const char *cpu = cJSON_GetStringValue(cJSON_GetObjectItem(j, "CPUPerc"));
		const char *pids = cJSON_GetStringValue(cJSON_GetObjectItem(j, "PIDs"));
		st->cpu_percent = cpu ? strtod(cpu, NULL) : 0;
		st->pids = pids ? strtoll(pids, NULL, 10) : 0;
		cJSON_Delete(j);
		if (!cpu)
			rc = sbx_err_set(err, EIO, "docker stats: garbage output");
	}
	spawn_result_free(&res);
	return rc;
}

int sandbox_stats(struct sandbox *s, struct sandbox_stats *st, bool fresh, struct sbx_err *err)
{
	*st = (struct sandbox_stats){ .cpu_percent = -1 };
	char *cid = sandbox_container_dup(s);
	if (!cid)
		return sbx_err_set(err, ENOMEM, "stats: out of memory");
	sbx_lock(&model_lock);
	bool running = s->state == SBX_RUNNING;
	sbx_unlock(&model_lock);
	if (!running) {
		free(cid);
		return 0; /* a stopped container uses nothing */
	}
	struct cg c = { 0 };
	size_t slot = CG_CACHE;
	sbx_lock(&stats_lock);
	for (size_t i = 0; i < CG_CACHE; i++) {
		if (cache[i].used &&
		    (!strcmp(cache[i].id, cid) || !strncmp(cache[i].id, cid, strlen(cid)))) {
			c = cache[i];
			slot = i;
			break;
		}
	}
	sbx_unlock(&stats_lock);
	int rc = 0;
	if (slot == CG_CACHE || !pid_alive(c.pid)) {
		rc = resolve(s->engine, cid, &c, err);
		if (rc < 0) {
			if (rc == -ENOENT) {
				log_debug("sandbox %s: %s; asking docker stats", s->name, err->msg);
				rc = stats_docker(s->engine, cid, st, err);
			}
			free(cid);
			return rc;
		}
	}
	free(cid);
	/* CPU: usage over the time since the last sample (a reader every
	 * second gets the last second), taken again after a short pause when
	 * that one is missing or older than 10 s. */
	unsigned long long ns = cpu_usage_ns(&c);
	double now = mono();
	if (fresh && (c.cpu_at == 0 || now - c.cpu_at > 10.0)) {
		struct timespec t = { .tv_nsec = 200 * 1000 * 1000 };
		c.cpu_ns = ns;
		c.cpu_at = now;
		nanosleep(&t, NULL);
		ns = cpu_usage_ns(&c);
		now = mono();
	}
	if (c.cpu_at > 0 && now - c.cpu_at < 0.2 && c.cpu_pct >= 0) {
		/* Too short a window to say much: the last value stands. */
		st->cpu_percent = c.cpu_pct;
	} else {
		if (c.cpu_at > 0 && now - c.cpu_at > 0.01 && ns >= c.cpu_ns)
			st->cpu_percent = (double)(ns - c.cpu_ns) / 1e9 / (now - c.cpu_at) * 100.0;
		c.cpu_pct = st->cpu_percent;
		c.cpu_ns = ns;
		c.cpu_at = now;
	}
	if (c.v2) {
		st->memory = read_num(c.mem, "memory.current");
		st->memory_limit = read_num(c.mem, "memory.max");
	} else {
		st->memory = read_num(c.mem, "memory.usage_in_bytes");
		st->memory_limit = read_num(c.mem, "memory.limit_in_bytes");
	}
	st->pids = read_num(c.pids, "pids.current");
	st->pids_limit = read_num(c.pids, "pids.max");
	st->uptime = uptime_of(c.pid);
	st->net = net_of(c.pid, &st->rx, &st->tx);
	sbx_lock(&stats_lock);
	if (slot == CG_CACHE) {
		for (size_t i = 0; i < CG_CACHE && slot == CG_CACHE; i++)
			if (!cache[i].used)
				slot = i;
		if (slot == CG_CACHE)
			slot = (size_t)c.pid % CG_CACHE; /* full: evict one */
	}
	cache[slot] = c;
	sbx_unlock(&stats_lock);
	return rc;
}

char *sandbox_stats_text(struct sandbox *s, size_t *len, struct sbx_err *err)
{
	struct sandbox_stats st;
	int rc = sandbox_stats(s, &st, true, err);
	if (rc < 0)
		return NULL;
	char *text = NULL;
	char net[96] = "";
	if (st.net)
		snprintf(net, sizeof(net), "net_rx_bytes %lld\nnet_tx_bytes %lld\n", st.rx, st.tx);
	if (asprintf(&text,
		     "cpu_percent %.1f\nmemory_bytes %lld\nmemory_limit_bytes %lld\npids %lld\n"
		     "pids_limit %lld\nuptime_s %lld\n%s",
		     st.cpu_percent < 0 ? 0.0 : st.cpu_percent, st.memory, st.memory_limit, st.pids,
		     st.pids_limit, st.uptime < 0 ? 0 : st.uptime, net) < 0) {
		sbx_err_set(err, ENOMEM, "stats: out of memory");
		return NULL;
	}
	*len = strlen(text);
	return text;
}

/* ---- .sandboxfs/summary ---- */

static void human_bytes(long long b, char *out, size_t cap)
{
	const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	int i = 0;
	while (v >= 1024 && i < 4)
		v /= 1024, i++;
	if (i == 0)
		snprintf(out, cap, "%lldB", b);
	else
		snprintf(out, cap, "%.1f%s", v, u[i]);
}

static void human_secs(double s, char *out, size_t cap)
{
	long long v = (long long)s;
	if (s < 0)
		snprintf(out, cap, "-");
	else if (v < 60)
		snprintf(out, cap, "%llds", v);
	else if (v < 3600)
		snprintf(out, cap, "%lldm%02llds", v / 60, v % 60);
	else if (v < 86400)
		snprintf(out, cap, "%lldh%02lldm", v / 3600, v % 3600 / 60);
	else
		snprintf(out, cap, "%lldd%02lldh", v / 86400, v % 86400 / 3600);
}

struct row {
	char name[64], state[16], tpl[16], runs[12], latest[32], age[32], idle[32], cpu[32],
		mem[32];
};

#define SUMMARY_FMT "%-20.20s %-14.14s %-12.12s %5.5s %-12.12s %8.8s %8.8s %6.6s %9.9s\n"

char *model_summary(size_t *len)
{
	struct sandbox_listing l;
	if (model_list(&l) < 0)
		return NULL;
	struct sandbox **sv = calloc(l.n + 1, sizeof(*sv));
	struct row *rows = calloc(l.n + 1, sizeof(*rows));
	if (!sv || !rows) {
		free(sv);
		free(rows);
		sandbox_listing_free(&l);
		return NULL;
	}
	/* Two CPU samples for all at once: one pause for the whole table. */
	bool need_pause = false;
	struct sandbox_stats st;
	struct sbx_err err = { 0 };
	for (size_t i = 0; i < l.n; i++) {
		sv[i] = model_find_id(l.ids[i]);
		if (sv[i] && sandbox_stats(sv[i], &st, false, &err) == 0 && st.cpu_percent < 0)
			need_pause = true;
	}
	if (need_pause) {
		struct timespec t = { .tv_nsec = 200 * 1000 * 1000 };
		nanosleep(&t, NULL);
	}
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	size_t cap = (l.n + 1) * 128 + 1, off = 0;
	char *out = malloc(cap);
	if (out)
		off += (size_t)snprintf(out, cap, SUMMARY_FMT, "SANDBOX", "STATE", "TEMPLATE",
					"RUNS", "LATEST", "AGE", "IDLE", "CPU%", "MEM");
	for (size_t i = 0; out && i < l.n; i++) {
		struct sandbox *s = sv[i];
		struct row *r = &rows[i];
		if (!s)
			continue;
		snprintf(r->name, sizeof(r->name), "%s", s->name);
		sbx_lock(&model_lock);
		const char *state = s->state == SBX_RUNNING ? (s->paused ? "paused" : "running")
				    : s->state == SBX_STOPPED
					    ? (s->idle_stopped ? "stopped(idle)" : "stopped")
				    : s->state == SBX_REMOVING ? "removing"
							       : "creating";
		snprintf(r->state, sizeof(r->state), "%s", state);
		snprintf(r->tpl, sizeof(r->tpl), "%s", s->template_name ? s->template_name : "-");
		snprintf(r->runs, sizeof(r->runs), "%u", s->nruns);
		struct run *latest = s->nruns ? s->runs[s->nruns - 1] : NULL;
		run_status_line_locked(latest, r->latest, sizeof(r->latest));
		r->latest[strcspn(r->latest, "\n")] = '\0';
		double age = (double)(now.tv_sec - s->created.tv_sec);
		sbx_unlock(&model_lock);
		human_secs(age, r->age, sizeof(r->age));
		human_secs(sandbox_idle_seconds(s), r->idle, sizeof(r->idle));
		if (sandbox_stats(s, &st, false, &err) == 0 && st.cpu_percent >= 0) {
			snprintf(r->cpu, sizeof(r->cpu), "%.1f", st.cpu_percent);
			human_bytes(st.memory, r->mem, sizeof(r->mem));
		} else {
			snprintf(r->cpu, sizeof(r->cpu), "-");
			snprintf(r->mem, sizeof(r->mem), "-");
		}
		off += (size_t)snprintf(out + off, cap - off, SUMMARY_FMT, r->name, r->state,
					r->tpl, r->runs, r->latest, r->age, r->idle, r->cpu,
					r->mem);
	}
	for (size_t i = 0; i < l.n; i++)
		if (sv[i])
			sandbox_put(sv[i]);
	free(sv);
	free(rows);
	sandbox_listing_free(&l);
	if (out)
		*len = off;
	return out;
}
