/* The sandbox table: create, remove, find, settings, and what the engine
 * tells us about containers (events, reconciliation, adoption). */
#include "model.h"

#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

#include "ioloop.h"
#include "log.h"
#include "model_internal.h"
#include "state.h"
#include "template.h"

pthread_mutex_t model_lock = PTHREAD_MUTEX_INITIALIZER;

/* (L) the table of listed sandboxes (and CREATING/REMOVING ones). */
static struct sandbox **table;
static size_t ntable, captable;
static uint64_t next_id = 1; /* (L) */

static struct model_config config;
static struct engine *engine_for_locked(const char *endpoint);
static void engine_use_locked(const struct engine *e, int delta);
static void engine_answered_locked(const struct engine *e);
const struct model_callbacks *model_cb;

const struct model_config *model_config(void)
{
	return &config;
}

int model_init(const struct model_config *cfg, const struct model_callbacks *cb,
	       struct sbx_err *err)
{
	config = *cfg;
	model_cb = cb;
	return 0;
}

/* ---- table ---- */

static struct sandbox *find_locked(const char *name)
{
	for (size_t i = 0; i < ntable; i++)
		if (!strcmp(table[i]->name, name))
			return table[i];
	return NULL;
}

static struct sandbox *find_container_locked(const char *id)
{
	for (size_t i = 0; i < ntable; i++)
		if (table[i]->container_id && !strcmp(table[i]->container_id, id))
			return table[i];
	return NULL;
}

static int table_add_locked(struct sandbox *s)
{
	if (ntable == captable) {
		size_t cap = captable ? captable * 2 : 16;
		struct sandbox **t = realloc(table, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		table = t;
		captable = cap;
	}
	table[ntable++] = s;
	s->refs++;
	return 0;
}

static void table_del_locked(struct sandbox *s)
{
	for (size_t i = 0; i < ntable; i++) {
		if (table[i] == s) {
			memmove(&table[i], &table[i + 1], (ntable - i - 1) * sizeof(*table));
			ntable--;
			sandbox_put_locked(s);
			return;
		}
	}
}

struct sandbox *model_find(const char *name)
{
	pthread_mutex_lock(&model_lock);
	struct sandbox *s = find_locked(name);
	if (s && (s->state == SBX_RUNNING || s->state == SBX_STOPPED || s->state == SBX_REMOVING))
		s->refs++;
	else
		s = NULL;
	pthread_mutex_unlock(&model_lock);
	return s;
}

struct sandbox *model_find_id(uint64_t id)
{
	struct sandbox *found = NULL;
	pthread_mutex_lock(&model_lock);
	for (size_t i = 0; i < ntable; i++) {
		if (table[i]->id == id && table[i]->state != SBX_CREATING) {
			found = table[i];
			found->refs++;
			break;
		}
	}
	pthread_mutex_unlock(&model_lock);
	return found;
}

void model_foreach(void (*fn)(struct sandbox *s, void *ctx), void *ctx)
{
	pthread_mutex_lock(&model_lock);
	for (size_t i = 0; i < ntable; i++)
		if (table[i]->state == SBX_RUNNING || table[i]->state == SBX_STOPPED ||
		    table[i]->state == SBX_REMOVING)
			fn(table[i], ctx);
	pthread_mutex_unlock(&model_lock);
}

void sandbox_get(struct sandbox *s)
{
	s->refs++;
}

void sandbox_ref(struct sandbox *s)
{
	pthread_mutex_lock(&model_lock);
	s->refs++;
	pthread_mutex_unlock(&model_lock);
}

void sandbox_put_locked(struct sandbox *s)
{
	if (!s || --s->refs > 0)
		return;
	engine_use_locked(s->engine, -1);
	for (unsigned i = 0; i < s->nruns; i++)
		run_free_locked(s->runs[i]);
	free(s->runs);
	kv_list_free(&s->env);
	kv_list_free(&s->auth);
	kv_list_free(&s->auth_file_secrets);
	for (size_t i = 0; i < s->nauth_files; i++)
		free(s->auth_files[i]);
	free(s->auth_files);
	free(s->name);
	free(s->container);
	free(s->container_id);
	free(s->image);
	free(s->spool_dir);
	free(s->template_name);
	free(s->effective);
	free(s->workdir);
	free(s->last_error);
	free(s);
}

void sandbox_put(struct sandbox *s)
{
	pthread_mutex_lock(&model_lock);
	sandbox_put_locked(s);
	pthread_mutex_unlock(&model_lock);
}

void sandbox_set_error(struct sandbox *s, const char *msg)
{
	char *copy = strdup(msg);
	if (copy) {
		free(s->last_error);
		s->last_error = copy;
	}
}

static struct sandbox *sandbox_new(const char *name, const struct engine *engine)
{
	struct sandbox *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->refs = 1;
	s->engine = engine;
	engine_use_locked(engine, +1);
	s->name = strdup(name);
	s->image = strdup(config.image);
	s->workdir = strdup("");
	if (asprintf(&s->container, "sandboxfs-%s-%s", config.engine.instance, name) < 0)
		s->container = NULL;
	if (asprintf(&s->spool_dir, "%s/sandboxes/%s", config.state_dir, name) < 0)
		s->spool_dir = NULL;
	clock_gettime(CLOCK_REALTIME, &s->created);
	if (!s->name || !s->image || !s->workdir || !s->container || !s->spool_dir) {
		sandbox_put_locked(s);
		return NULL;
	}
	return s;
}

/* ---- mkdir / rmdir ---- */

int sandbox_create(const char *name, struct sandbox **out, struct sbx_err *err)
{
	int rc = parse_sandbox_name(name, err);
	if (rc < 0)
		return sbx_err_wrap(err, "mkdir %.80s", name);

	/* Before model_lock: it touches the host's file system (workspaces). */
	struct template *t = template_for(name, err);
	if (!t)
		return sbx_err_wrap(err, "mkdir %s", name);

	pthread_mutex_lock(&model_lock);
	if (find_locked(name)) {
		pthread_mutex_unlock(&model_lock);
		template_free(t);
		return sbx_err_set(err, EEXIST, "mkdir %s: the sandbox exists", name);
	}
	const struct engine *engine = engine_for_locked(t->engine);
	struct sandbox *s = engine ? sandbox_new(name, engine) : NULL;
	if (!s || table_add_locked(s) < 0) {
		sandbox_put_locked(s);
		pthread_mutex_unlock(&model_lock);
		template_free(t);
		return sbx_err_set(err, ENOMEM, "mkdir %s: out of memory, or too many engines", name);
	}
	s->id = next_id++;
	s->state = SBX_CREATING;
	s->template_name = strdup(t->name);
	s->effective = template_effective_json(t, config.image);
	if (t->image) {
		free(s->image);
		s->image = strdup(t->image);
	}
	if (t->workdir) {
		free(s->workdir);
		s->workdir = strdup(t->workdir);
	}
	pthread_mutex_unlock(&model_lock);

	/* A leftover spool of an earlier sandbox of this name is history
	 * nobody can reach any more. */
	rm_rf(s->spool_dir);
	char runs_dir[4200];
	snprintf(runs_dir, sizeof(runs_dir), "%s/runs", s->spool_dir);
	rc = mkdir_p(runs_dir, err);

	char spool[4200];
	snprintf(spool, sizeof(spool), "%s", s->spool_dir);
	char *id = NULL;
	if (rc == 0 && (!s->image || !s->workdir || !s->template_name))
		rc = sbx_err_set(err, ENOMEM, "out of memory");
	if (rc == 0) {
		struct container_spec spec = {
			.name = name,
			.image = s->image,
			.mountpoint = config.mountpoint,
			.network = t->network,
			.pids_limit = t->pids,
			.memory_bytes = t->memory,
			.init = t->init,
			.cpus = t->cpus,
			.user = t->user,
			.read_only = t->read_only,
			.workspaces = t->workspaces,
			.nworkspaces = t->nworkspaces,
			.env = &t->env,
			.labels = &t->labels,
			.cap_add = t->cap_add,
			.ncap_add = t->ncap_add,
			.workdir = t->workdir,
		};
		rc = engine_create(s->engine, &spec, &id, err);
	}
	template_free(t);

	pthread_mutex_lock(&model_lock);
	if (rc < 0) {
		table_del_locked(s);
		sandbox_put_locked(s);
		pthread_mutex_unlock(&model_lock);
		rm_rf(spool);
		return sbx_err_wrap(err, "mkdir %s", name);
	}
	s->container_id = id;
	s->state = SBX_RUNNING;
	engine_answered_locked(s->engine);
	if (out)
		*out = s;
	else
		sandbox_put_locked(s);
	pthread_mutex_unlock(&model_lock);
	log_info("mkdir %s: container %.12s", name, id);
	return 0;
}

/* Ends a sandbox's live runs as `lost` or `killed` once their docker exec
 * returns: the container they ran in is going away. */
static void mark_runs_locked(struct sandbox *s, bool killed)
{
	for (unsigned i = 0; i < s->nruns; i++) {
		struct run *r = s->runs[i];
		if (r->phase == RUN_ENDED)
			continue;
		if (killed)
			r->kill_requested = true;
		else
			r->container_died = true;
	}
}

static void drop_spool_task(void *ctx)
{
	char *dir = ctx;
	rm_rf(dir);
	free(dir);
}

int sandbox_remove(const char *name, struct sbx_err *err)
{
	pthread_mutex_lock(&model_lock);
	struct sandbox *s = find_locked(name);
	if (!s || s->state == SBX_CREATING) {
		pthread_mutex_unlock(&model_lock);
		return sbx_err_set(err, s ? EBUSY : ENOENT, "rmdir %s: %s", name,
				   s ? "still being created" : "no such sandbox");
	}
	if (s->state == SBX_REMOVING) {
		pthread_mutex_unlock(&model_lock);
		return sbx_err_set(err, EBUSY, "rmdir %s: already being removed", name);
	}
	enum sandbox_state before = s->state;
	s->state = SBX_REMOVING;
	s->refs++;
	char *cid = strdup(s->container_id ? s->container_id : s->container);
	pthread_mutex_unlock(&model_lock);

	int rc = cid ? engine_destroy(s->engine, cid, err) : -ENOMEM;
	free(cid);

	pthread_mutex_lock(&model_lock);
	if (rc < 0) {
		s->state = before;
		sandbox_set_error(s, err->msg);
		sandbox_put_locked(s);
		pthread_mutex_unlock(&model_lock);
		return sbx_err_wrap(err, "rmdir %s", name);
	}
	mark_runs_locked(s, true);
	s->state = SBX_REMOVED;
	table_del_locked(s);
	char *dir = strdup(s->spool_dir);
	sandbox_put_locked(s);
	pthread_mutex_unlock(&model_lock);
	if (dir)
		drop_spool_task(dir);
	log_info("rmdir %s: removed", name);
	return 0;
}

/* ---- engines ---- */

/* One slot per engine endpoint: the default one, and each one a template
 * names.  Each has its own events stream, reconnected with a backoff of 1 s
 * doubling up to 60 s.  A slot that no template names and no sandbox uses
 * is freed (by the I/O thread, which owns its stream); `users` counts the
 * sandboxes (and reconciliations) that point at it. */
enum engine_health { ENGINE_UNKNOWN, ENGINE_UP, ENGINE_DOWN };

#define BACKOFF_MAX 60
#define STREAM_STABLE 30 /* seconds a stream must have lived to reset the backoff */

struct engine_slot {
	struct engine engine;
	struct io_watch out, retry;
	pid_t pid;
	char line[65536];
	size_t len;
	bool overflow;
	bool outage; /* the stream broke: the engine may have restarted */
	double outage_mono;
	/* I/O thread only: */
	int backoff;            /* seconds before the next attempt */
	double next_try;        /* monotonic time of the next attempt */
	double connected_at;
	bool dead;              /* freed at the end of the I/O batch */
	/* (L): */
	unsigned users;
	enum engine_health health;
	bool kick; /* a call just worked while the stream is down: retry now */
};

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

#define MAX_ENGINES 32
static struct engine_slot *slots[MAX_ENGINES]; /* (L) */
static size_t nslots;                          /* (L) */
static bool model_started;                     /* (L) */

static void slot_start(struct engine_slot *e);

static struct engine_slot *slot_of(const struct engine *e)
{
	return (struct engine_slot *)((char *)e - offsetof(struct engine_slot, engine));
}

/* Makes the slot's timer fire now: the I/O thread then checks whether the
 * slot is still needed (and when not, frees it). */
static void slot_poke(struct engine_slot *e)
{
	struct itimerspec its = { .it_value = { .tv_nsec = 1 } };
	if (e->retry.fd >= 0)
		timerfd_settime(e->retry.fd, 0, &its, NULL);
}

static void engine_use_locked(const struct engine *e, int delta)
{
	if (!e)
		return;
	struct engine_slot *slot = slot_of(e);
	slot->users += delta;
	if (slot->users == 0 && model_started)
		slot_poke(slot);
}

/* A call just worked: an events stream waiting out its backoff retries now. */
static void engine_answered_locked(const struct engine *e)
{
	struct engine_slot *slot = slot_of(e);
	if (slot->health == ENGINE_DOWN && !slot->kick && model_started) {
		slot->kick = true;
		slot_poke(slot);
	}
}

void model_engines_changed(void)
{
	pthread_mutex_lock(&model_lock);
	for (size_t i = 1; model_started && i < nslots; i++)
		slot_poke(slots[i]);
	pthread_mutex_unlock(&model_lock);
}

static const char *slot_name(const struct engine_slot *e)
{
	return e->engine.endpoint ? e->engine.endpoint : "default";
}

/* Logs an engine's reachability once per change (not per attempt). */
static void engine_health_locked(struct engine_slot *e, bool up, const char *why)
{
	if (up && e->health == ENGINE_DOWN)
		log_info("engine %s answers again", slot_name(e));
	else if (!up && e->health != ENGINE_DOWN)
		log_warn("engine %s does not answer (%s); retrying every 1 to %d s", slot_name(e),
			 why, BACKOFF_MAX);
	e->health = up ? ENGINE_UP : ENGINE_DOWN;
}

static bool same_endpoint(const char *a, const char *b)
{
	return (!a || !a[0]) ? (!b || !b[0]) : (b && !strcmp(a, b));
}

/* Finds or makes the slot of an endpoint (NULL = the default engine). */
static struct engine *engine_for_locked(const char *endpoint)
{
	for (size_t i = 0; i < nslots; i++)
		if (same_endpoint(slots[i]->engine.endpoint, endpoint))
			return &slots[i]->engine;
	if (nslots == MAX_ENGINES)
		return NULL;
	struct engine_slot *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->engine = config.engine;
	e->engine.endpoint = endpoint && endpoint[0] ? strdup(endpoint) : NULL;
	e->out.fd = e->retry.fd = -1;
	e->backoff = 1;
	slots[nslots++] = e;
	if (model_started)
		slot_start(e);
	return &e->engine;
}

/* ---- what the engine tells us ---- */

/* Called when a container of ours is removed behind our back. */
static void forget_locked(struct sandbox *s)
{
	char *name = strdup(s->name);
	char *dir = strdup(s->spool_dir);
	mark_runs_locked(s, false);
	s->state = SBX_REMOVED;
	table_del_locked(s);
	log_warn("sandbox %s: container removed outside sandboxfs", name ? name : "?");
	if (dir)
		task_queue(drop_spool_task, dir);
	free(name);
}

void model_handle_event(const struct engine_event *ev)
{
	if (strcmp(ev->instance, config.engine.instance) != 0)
		return; /* not ours: never touched */
	pthread_mutex_lock(&model_lock);
	struct sandbox *s = find_container_locked(ev->id);
	if (!s || s->state == SBX_CREATING || s->state == SBX_REMOVED) {
		pthread_mutex_unlock(&model_lock);
		return;
	}
	switch (ev->kind) {
	case ENGINE_EV_START:
		if (s->state == SBX_STOPPED)
			s->state = SBX_RUNNING;
		break;
	case ENGINE_EV_DIE:
		s->died_at = mono_now();
		if (s->state == SBX_RUNNING) {
			s->state = SBX_STOPPED;
			sandbox_set_error(s, "the container stopped");
			log_warn("sandbox %s: container stopped (exit code %d)", s->name,
				 ev->exit_code);
		}
		mark_runs_locked(s, false);
		break;
	case ENGINE_EV_DESTROY:
		if (s->state != SBX_REMOVING)
			forget_locked(s);
		break;
	default:
		break;
	}
	pthread_mutex_unlock(&model_lock);
}

/* Brings the table in line with what one engine lists: adopts containers
 * of this instance we do not know, forgets the ones that are gone.  After
 * an outage, containers the engine stopped while it went down (they were
 * running as far as we knew) are started again. */
static void reconcile(struct engine *engine, bool after_outage, double outage_at)
{
	struct engine_container *v = NULL;
	size_t n = 0;
	struct sbx_err err = { 0 };
	char **restart = NULL;
	size_t nrestart = 0;

	if (engine_list(engine, &v, &n, &err) < 0) {
		pthread_mutex_lock(&model_lock);
		engine_health_locked(slot_of(engine), false, err.msg);
		pthread_mutex_unlock(&model_lock);
		log_debug("listing this mount's containers: %s", err.msg);
		return;
	}
	pthread_mutex_lock(&model_lock);
	engine_health_locked(slot_of(engine), true, NULL);
	for (size_t i = 0; i < ntable; i++) {
		struct sandbox *s = table[i];
		if (s->engine != engine || (s->state != SBX_RUNNING && s->state != SBX_STOPPED))
			continue;
		bool present = false;
		for (size_t j = 0; j < n; j++) {
			if (s->container_id && !strcmp(v[j].id, s->container_id)) {
				present = true;
				/* Stopped by the outage: running as far as we knew, or
				 * died while the engine was going down (it stops its
				 * containers first), and not stopped by ctl. */
				bool victim = s->state == SBX_RUNNING ||
					      (s->died_at > 0 && outage_at - s->died_at < 15 &&
					       s->died_at - outage_at < 15);
				if (!v[j].running && after_outage && victim && !s->user_stopped) {
					char **r = realloc(restart, (nrestart + 1) * sizeof(*r));
					if (r) {
						restart = r;
						restart[nrestart] = strdup(s->container_id);
						if (restart[nrestart])
							nrestart++;
					}
				}
				s->state = v[j].running ? SBX_RUNNING : SBX_STOPPED;
				if (!v[j].running)
					mark_runs_locked(s, false);
			}
		}
		if (!present) {
			forget_locked(s);
			i--;
		}
	}
	for (size_t j = 0; j < n; j++) {
		if (!v[j].sandbox || parse_sandbox_name(v[j].sandbox, NULL) < 0)
			continue;
		if (find_container_locked(v[j].id) || find_locked(v[j].sandbox))
			continue;
		struct sandbox *s = sandbox_new(v[j].sandbox, engine);
		if (!s)
			continue;
		s->id = next_id++;
		s->container_id = strdup(v[j].id);
		s->template_name = strdup("(adopted)");
		if (v[j].image) {
			free(s->image);
			s->image = strdup(v[j].image);
		}
		s->state = v[j].running ? SBX_RUNNING : SBX_STOPPED;
		if (!s->container_id || !s->image || table_add_locked(s) < 0) {
			sandbox_put_locked(s);
			continue;
		}
		runs_reload_locked(s);
		log_info("adopted sandbox %s (container %.12s, %u runs)", s->name, v[j].id,
			 s->nruns);
		sandbox_put_locked(s);
	}
	pthread_mutex_unlock(&model_lock);
	engine_containers_free(v, n);

	for (size_t i = 0; i < nrestart; i++) {
		if (engine_start(engine, restart[i], &err) < 0)
			log_warn("restarting container %.12s after the engine came back: %s",
				 restart[i], err.msg);
		else
			log_info("container %.12s started again after the engine came back",
				 restart[i]);
		/* Its start event sets the sandbox running again. */
		free(restart[i]);
	}
	free(restart);
}

struct reconcile_req {
	struct engine *engine;
	bool after_outage;
	double outage_at;
};

static void reconcile_task(void *ctx)
{
	struct reconcile_req *r = ctx;
	reconcile(r->engine, r->after_outage, r->outage_at);
	pthread_mutex_lock(&model_lock);
	engine_use_locked(r->engine, -1);
	pthread_mutex_unlock(&model_lock);
	free(r);
}

/* ---- the events streams ---- */

static void events_connect(struct engine_slot *e);

static void arm_at(struct engine_slot *e, double when)
{
	double d = when - mono_now();
	if (d < 1e-6)
		d = 1e-6;
	struct itimerspec its = { .it_value = { .tv_sec = (time_t)d,
						 .tv_nsec = (long)((d - (double)(time_t)d) * 1e9) } };
	if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
		its.it_value.tv_nsec = 1;
	timerfd_settime(e->retry.fd, 0, &its, NULL);
}

/* The I/O thread's half of freeing a slot that nothing needs any more. */
static void slot_free(struct engine_slot *e)
{
	log_info("engine %s: no template or sandbox uses it any more; its events stream is "
		 "closed", slot_name(e));
	e->dead = true;
	if (e->out.fd >= 0) {
		ioloop_del(&e->out);
		close(e->out.fd);
		e->out.fd = -1;
	}
	if (e->pid > 0)
		cleanup_pidp(&e->pid);
	ioloop_del(&e->retry);
	close(e->retry.fd);
	e->retry.fd = -1;
	free(e->engine.endpoint);
	e->engine.endpoint = NULL;
	ioloop_free_later(e);
}

/* Removes the slot from the table when nothing uses it; true if it did. */
static bool slot_collect(struct engine_slot *e)
{
	char **names = NULL;
	size_t n = 0;
	bool named = false, gone = false;
	/* Before model_lock: template locks are never taken under it. */
	if (template_engines(&names, &n) < 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		named |= e->engine.endpoint && !strcmp(names[i], e->engine.endpoint);
		free(names[i]);
	}
	free(names);
	pthread_mutex_lock(&model_lock);
	if (!named && e->users == 0 && e->engine.endpoint && slots[0] != e) {
		for (size_t i = 1; i < nslots; i++) {
			if (slots[i] == e) {
				memmove(&slots[i], &slots[i + 1], (nslots - i - 1) * sizeof(*slots));
				nslots--;
				gone = true;
				break;
			}
		}
	}
	pthread_mutex_unlock(&model_lock);
	if (gone)
		slot_free(e);
	return gone;
}

static void events_retry_fired(struct io_watch *w, uint32_t mask)
{
	struct engine_slot *e = w->ctx;
	uint64_t ticks;
	if (e->dead || (read(w->fd, &ticks, sizeof(ticks)) < 0 && errno == EAGAIN))
		return;
	if (slot_collect(e) || e->out.fd >= 0)
		return; /* freed, or a poke while the stream is up */
	pthread_mutex_lock(&model_lock);
	bool kick = e->kick;
	e->kick = false;
	pthread_mutex_unlock(&model_lock);
	if (kick)
		e->backoff = 1;
	else if (mono_now() < e->next_try) {
		arm_at(e, e->next_try); /* a poke during the backoff */
		return;
	}
	events_connect(e);
}

static void events_schedule_retry(struct engine_slot *e)
{
	e->next_try = mono_now() + e->backoff;
	arm_at(e, e->next_try);
	e->backoff = e->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : e->backoff * 2;
}

static void events_line(const char *line, size_t len)
{
	struct engine_event ev;
	if (engine_parse_event(line, len, &ev) < 0) {
		log_warn("docker events: unparsable line ignored");
		return;
	}
	model_handle_event(&ev);
}

static void events_readable(struct io_watch *w, uint32_t mask)
{
	struct engine_slot *e = w->ctx;
	char buf[16384];
	if (e->dead)
		return;
	ssize_t n = read(w->fd, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		ioloop_del(w);
		close(w->fd);
		w->fd = -1;
		cleanup_pidp(&e->pid);
		e->pid = 0;
		if (mono_now() - e->connected_at >= STREAM_STABLE)
			e->backoff = 1;
		/* Said once: until a listing tells, the engine's state is unknown. */
		pthread_mutex_lock(&model_lock);
		bool was_up = e->health == ENGINE_UP;
		if (was_up)
			e->health = ENGINE_UNKNOWN;
		pthread_mutex_unlock(&model_lock);
		if (was_up)
			log_warn("docker events stream of engine %s ended; reconnecting",
				 slot_name(e));
		e->outage = true;
		e->outage_mono = mono_now();
		events_schedule_retry(e);
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		if (buf[i] == '\n') {
			if (!e->overflow)
				events_line(e->line, e->len);
			e->len = 0;
			e->overflow = false;
		} else if (e->len < sizeof(e->line) - 1) {
			e->line[e->len++] = buf[i];
		} else {
			e->overflow = true;
		}
	}
}

static void events_connect(struct engine_slot *e)
{
	struct sbx_err err = { 0 };
	int fd;
	if (engine_events_start(&e->engine, &e->pid, &fd, &err) < 0) {
		pthread_mutex_lock(&model_lock);
		engine_health_locked(e, false, err.msg);
		pthread_mutex_unlock(&model_lock);
		events_schedule_retry(e);
		return;
	}
	e->connected_at = mono_now();
	e->out.fd = fd;
	e->out.fn = events_readable;
	e->out.ctx = e;
	e->len = 0;
	ioloop_add(&e->out, EPOLLIN);
	/* Whatever happened while we were not listening. */
	struct reconcile_req *r = calloc(1, sizeof(*r));
	if (r) {
		r->engine = &e->engine;
		r->after_outage = e->outage;
		r->outage_at = e->outage_mono;
		e->outage = false;
		pthread_mutex_lock(&model_lock);
		engine_use_locked(r->engine, +1);
		pthread_mutex_unlock(&model_lock);
		if (task_queue(reconcile_task, r) < 0) {
			pthread_mutex_lock(&model_lock);
			engine_use_locked(r->engine, -1);
			pthread_mutex_unlock(&model_lock);
			free(r);
		}
	}
}

/* Connects from the I/O thread: the retry timer fires at once. */
static void slot_start(struct engine_slot *e)
{
	e->retry.fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (e->retry.fd < 0) {
		log_error("timerfd: %s", strerror(errno));
		return;
	}
	e->retry.fn = events_retry_fired;
	e->retry.ctx = e;
	ioloop_add(&e->retry, EPOLLIN);
	struct itimerspec its = { .it_value = { .tv_nsec = 1 } };
	timerfd_settime(e->retry.fd, 0, &its, NULL);
}

int model_start(struct sbx_err *err)
{
	int rc = ioloop_start();
	if (rc < 0)
		return sbx_err_set(err, -rc, "starting the I/O thread: %s", strerror(-rc));
	char **endpoints = NULL;
	size_t n = 0;
	template_engines(&endpoints, &n);
	pthread_mutex_lock(&model_lock);
	engine_for_locked(NULL);
	/* Engines that templates name may hold sandboxes of ours from before. */
	for (size_t i = 0; i < n; i++) {
		engine_for_locked(endpoints[i]);
		free(endpoints[i]);
	}
	free(endpoints);
	size_t count = nslots;
	pthread_mutex_unlock(&model_lock);

	/* Adopt before the first request is served, so that `ls` right after
	 * a restart already lists what was there. */
	for (size_t i = 0; i < count; i++)
		reconcile(&slots[i]->engine, false, 0);

	pthread_mutex_lock(&model_lock);
	model_started = true;
	for (size_t i = 0; i < nslots; i++)
		slot_start(slots[i]);
	pthread_mutex_unlock(&model_lock);
	return 0;
}

const struct engine *model_default_engine(void)
{
	pthread_mutex_lock(&model_lock);
	const struct engine *e = engine_for_locked(NULL);
	pthread_mutex_unlock(&model_lock);
	return e;
}

void model_shutdown(void)
{
	ioloop_stop();
	pthread_mutex_lock(&model_lock);
	for (size_t i = 0; i < nslots; i++) {
		struct engine_slot *e = slots[i];
		if (e->pid > 0)
			cleanup_pidp(&e->pid);
		if (e->out.fd >= 0)
			close(e->out.fd);
		if (e->retry.fd >= 0)
			close(e->retry.fd);
		free(e->engine.endpoint);
		free(e);
	}
	nslots = 0;
	while (ntable > 0)
		table_del_locked(table[ntable - 1]);
	free(table);
	table = NULL;
	captable = 0;
	pthread_mutex_unlock(&model_lock);
}
