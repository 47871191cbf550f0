/* The sandbox table: create, remove, find, list, and what the engine tells
 * us about containers (events, reconciliation, adoption). */
#include <fcntl.h>
#include <inttypes.h>
#include <unistd.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "events.h"
#include "engine_internal.h"
#include "agent_channel.h"
#include "engines.h"
#include "ioloop.h"
#include "log.h"
#include "pool.h"
#include "model_internal.h"
#include "state.h"
#include "swarm.h"
#include "template.h"
#include "workspace.h"

/* The table of listed sandboxes (and CREATING/REMOVING ones). */
static struct sandbox **table SBX_GUARDED_BY(model_lock);
static size_t ntable SBX_GUARDED_BY(model_lock);
static size_t captable SBX_GUARDED_BY(model_lock);
static uint64_t next_id SBX_GUARDED_BY(model_lock) = 1;
/* Counts our changes to containers (sandbox_changed_locked), so that
 * reconcile can tell a listing taken before a change from one after. */
static uint64_t generation SBX_GUARDED_BY(model_lock);

void sandbox_changed_locked(struct sandbox *s)
{
	s->changed_gen = ++generation;
}

static void resync(const struct engine *engine, bool after_outage, double outage_at);
static void handle_event(const struct engine *engine, const struct engine_event *ev);
static const struct engine_sink sink = { .event = handle_event, .resync = resync };

int model_init(const struct model_config *cfg, const struct model_callbacks *cb,
	       struct sbx_err *err)
{
	model_config_set(cfg);
	cmd_spool_set_dir(cfg->state_dir);
	runs_set_listener(cb ? cb->run_changed : NULL);
	events_set_listener(cb ? cb->events_changed : NULL);
	if (events_init(cfg->state_dir) < 0)
		return sbx_err_set(err, ENOMEM, "starting the audit log: out of memory");
	engines_init(&cfg->engine, &sink);
	return 0;
}

/* ---- table ---- */

static struct sandbox *find_locked(const char *name) SBX_REQUIRES(model_lock)
{
	for (size_t i = 0; i < ntable; i++)
		if (!strcmp(table[i]->name, name))
			return table[i];
	return NULL;
}

static struct sandbox *find_container_locked(const char *id) SBX_REQUIRES(model_lock)
{
	for (size_t i = 0; i < ntable; i++)
		if (table[i]->container_id && !strcmp(table[i]->container_id, id))
			return table[i];
	return NULL;
}

static int table_add_locked(struct sandbox *s) SBX_REQUIRES(model_lock)
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

static void table_del_locked(struct sandbox *s) SBX_REQUIRES(model_lock)
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
	sbx_lock(&model_lock);
	struct sandbox *s = find_locked(name);
	if (s && sandbox_listed_locked(s))
		s->refs++;
	else
		s = NULL;
	sbx_unlock(&model_lock);
	return s;
}

struct sandbox *model_find_id(uint64_t id)
{
	struct sandbox *found = NULL;
	sbx_lock(&model_lock);
	for (size_t i = 0; i < ntable; i++) {
		if (table[i]->id == id && table[i]->state != SBX_CREATING) {
			found = table[i];
			found->refs++;
			break;
		}
	}
	sbx_unlock(&model_lock);
	return found;
}

void sandbox_listing_free(struct sandbox_listing *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->names[i]);
	free(l->names);
	free(l->ids);
	*l = (struct sandbox_listing){ 0 };
}

int model_list(struct sandbox_listing *out)
{
	*out = (struct sandbox_listing){ 0 };
	sbx_lock(&model_lock);
	size_t cap = ntable ? ntable : 1;
	out->names = calloc(cap, sizeof(*out->names));
	out->ids = calloc(cap, sizeof(*out->ids));
	int rc = out->names && out->ids ? 0 : -ENOMEM;
	for (size_t i = 0; rc == 0 && i < ntable; i++) {
		if (!sandbox_listed_locked(table[i]))
			continue;
		out->names[out->n] = strdup(table[i]->name);
		if (!out->names[out->n])
			rc = -ENOMEM;
		else
			out->ids[out->n++] = table[i]->id;
	}
	sbx_unlock(&model_lock);
	if (rc < 0)
		sandbox_listing_free(out);
	return rc;
}

/* ---- mkdir ---- */

/* Reserves name in the table (not listed while SBX_CREATING). */
static int reserve_locked(const char *name, const struct template *t, struct sandbox *s,
			  struct sbx_err *err) SBX_REQUIRES(model_lock)
{
	if (find_locked(name))
		return sbx_err_set(err, EEXIST, "the sandbox exists");
	if (table_add_locked(s) < 0)
		return sbx_err_set(err, ENOMEM, "out of memory");
	s->id = next_id++;
	s->state = SBX_CREATING;
	if (t->workdir) {
		free(s->workdir);
		s->workdir = strdup(t->workdir);
	}
	return s->workdir ? 0 : sbx_err_set(err, ENOMEM, "out of memory");
}

/* Fields fixed at creation, filled before the sandbox is published. */
static int take_template(struct sandbox *s, const struct template *t, struct sbx_err *err)
{
	s->template_name = strdup(t->name);
	s->effective = template_effective_json(t, model_config()->image);
	if (t->image) {
		free(s->image);
		s->image = strdup(t->image);
	}
	if (!s->template_name || !s->image || !s->effective)
		return sbx_err_set(err, ENOMEM, "out of memory");
	sandbox_ttl_init(s, t->ttl, t->idle_remove); /* not yet published */
	return 0;
}

/* A fresh spool: a leftover of an earlier sandbox of this name is history
 * nobody can reach any more. */
static int spool_fresh(const struct sandbox *s, struct sbx_err *err)
{
	char runs_dir[PATH_MAX];
	rm_rf(s->spool_dir);
	if (path_join(runs_dir, sizeof(runs_dir), s->spool_dir, "runs") < 0)
		return sbx_err_set(err, ENAMETOOLONG, "spool path too long");
	return mkdir_p(runs_dir, err);
}

static int engine_create_spec(const struct sandbox *s, const struct template *t, const char *pool,
			      char **id, struct sbx_err *err);

struct ws_hold {
	int fd;
	char canon[PATH_MAX];
};

/* The container must mount the directories that were checked; it is
 * removed when it does not (a path was changed between check and mount). */
static int verify_workspaces(const struct engine *engine, const char *id, const struct template *t,
			     const struct ws_hold *held, struct sbx_err *err)
{
	long pid = 0;
	char full[65];
	int rc = engine_container_pid(engine, id, &pid, full, err);
	for (size_t i = 0; rc == 0 && i < t->nworkspaces; i++)
		rc = workspace_verify((pid_t)pid, full, t->workspaces[i].path, held[i].fd, err);
	if (rc < 0) {
		struct sbx_err ign = { 0 };
		log_warn("container %.12s removed: %s", id, err->msg);
		if (engine_destroy(engine, id, &ign) < 0)
			log_warn("removing container %.12s: %s", id, ign.msg);
	}
	return rc;
}

static void ws_holds_free(struct ws_hold *held, size_t n)
{
	for (size_t i = 0; held && i < n; i++)
		if (held[i].fd >= 0)
			close(held[i].fd);
	free(held);
}

/* Swarm picks the node: the sandbox, not yet published, moves to that
 * node's engine (no workspaces here: swarm_check_template refuses them). */
static int place_by_swarm(struct sandbox *s, const struct template *t, char **id,
			  struct sbx_err *err)
{
	const struct engine *node = NULL;
	int rc = swarm_create(s->name, s->image, model_config()->mountpoint, t, &node, id, err);
	if (rc == 0 && node != s->engine) {
		engine_use(node, +1);
		sbx_lock(&model_lock);
		const struct engine *old = s->engine;
		s->engine = node;
		sbx_unlock(&model_lock);
		engine_use(old, -1);
	}
	return rc;
}

/* Each workspace is held open from its check until the container has been
 * verified to mount that very directory (docs/security.md). */
static int create_container(struct sandbox *s, struct template *t, const char *pool, char **id,
			    struct sbx_err *err)
{
	struct ws_hold *held = calloc(t->nworkspaces ? t->nworkspaces : 1, sizeof(*held));
	if (!held)
		return sbx_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < t->nworkspaces; i++)
		held[i].fd = -1;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < t->nworkspaces; i++) {
		rc = workspace_open(t->workspaces[i].path, &held[i].fd, held[i].canon, err);
		t->workspaces[i].source = held[i].canon;
	}
	if (rc == 0 && t->swarm)
		rc = place_by_swarm(s, t, id, err);
	else if (rc == 0)
		rc = engine_create_spec(s, t, pool, id, err);
	if (rc == 0 && t->nworkspaces &&
	    (rc = verify_workspaces(s->engine, *id, t, held, err)) < 0) {
		free(*id);
		*id = NULL;
	}
	ws_holds_free(held, t->nworkspaces);
	return rc;
}

static int engine_create_spec(const struct sandbox *s, const struct template *t, const char *pool,
			      char **id, struct sbx_err *err)
{
	struct container_spec spec = {
		.name = s->name,
		.image = s->image,
		.mountpoint = model_config()->mountpoint,
		.network = t->network,
		.pids_limit = t->pids,
		.memory_bytes = t->memory,
		.init = t->init,
		.cpus = t->cpus,
		.user = t->user,
		.read_only = t->read_only,
		.agent_tmpfs = 1,
		.workspaces = t->workspaces,
		.nworkspaces = t->nworkspaces,
		.env = &t->env,
		.labels = &t->labels,
		.cap_add = t->cap_add,
		.ncap_add = t->ncap_add,
		.workdir = t->workdir,
		.pool = pool,
	};
	return engine_create(s->engine, &spec, id, err);
}

int model_pool_container(const char *slot, struct template *t, const struct engine *e, char **id,
			 struct sbx_err *err)
{
	struct sandbox *s = sandbox_new(slot, e);
	if (!s)
		return sbx_err_set(err, ENOMEM, "out of memory");
	int rc = take_template(s, t, err);
	if (rc == 0)
		rc = create_container(s, t, pool_key(t), id, err);
	sandbox_put(s);
	return rc;
}

static void destroy_task(void *ctx)
{
	char **v = ctx; /* engine pointer, container */
	struct sbx_err err = { 0 };
	if (engine_destroy((const struct engine *)v[0], v[1], &err) < 0)
		log_warn("removing container %.12s: %s", v[1], err.msg);
	engine_use((const struct engine *)v[0], -1);
	free(v[1]);
	free(v);
}

/* docker rm -f on the task thread (rmdir's second half, leftovers). */
static void destroy_later(const struct engine *e, const char *container)
{
	char **v = calloc(2, sizeof(*v));
	if (v && (v[1] = strdup(container))) {
		v[0] = (char *)e;
		engine_use(e, +1);
		if (task_queue(destroy_task, v) == 0)
			return;
		engine_use(e, -1);
	}
	if (v)
		free(v[1]);
	free(v);
	struct sbx_err err = { 0 };
	if (engine_destroy(e, container, &err) < 0)
		log_warn("removing container %.12s: %s", container, err.msg);
}

/* A ready pool container renamed to the sandbox's name: from then on the
 * name says whose it is (pool.h).  0, or -ENOENT: none ready or the rename
 * failed; create normally. */
static int claim_from_pool(const struct sandbox *s, const struct template *t, char **id)
{
	char *slot = NULL;
	if (pool_claim(pool_key(t), s->effective, s->engine, id, &slot) < 0)
		return -ENOENT;
	struct sbx_err err = { 0 };
	int rc = engine_rename(s->engine, *id, s->container, &err);
	if (rc < 0) {
		log_warn("mkdir %s: claiming pool container %.12s: %s; creating one", s->name, *id,
			 err.msg);
		destroy_later(s->engine, *id);
		free(*id);
		*id = NULL;
	}
	pool_claim_done(slot);
	free(slot);
	return rc < 0 ? -ENOENT : 0;
}

static void cleanup_templatep(struct template **t)
{
	template_free(*t);
}

int sandbox_create(const char *name, struct sandbox **out, struct sbx_err *err)
{
	int rc = parse_sandbox_name(name, err);
	if (rc < 0)
		return sbx_err_wrap(err, "mkdir %.80s", name);

	/* Before any lock: it touches the host's file system (workspaces). */
	__attribute__((cleanup(cleanup_templatep))) struct template *t = template_for(name, err);
	if (!t)
		return sbx_err_wrap(err, "mkdir %s", name);
	const struct engine *engine = engine_for(t->engine);
	struct sandbox *s = engine ? sandbox_new(name, engine) : NULL;
	if (!s)
		return sbx_err_set(err, ENOMEM, "mkdir %s: out of memory, or too many engines",
				   name);
	rc = take_template(s, t, err);

	sbx_lock(&model_lock);
	if (rc == 0)
		rc = reserve_locked(name, t, s, err);
	/* The container of a removed NAME gives its name up within a rename. */
	if (rc == 0)
		removal_wait_name_locked(name);
	sbx_unlock(&model_lock);
	if (rc < 0) {
		sandbox_put(s);
		return sbx_err_wrap(err, "mkdir %s", name);
	}

	char *id = NULL;
	rc = spool_fresh(s, err);
	if (rc == 0)
		sandbox_ttl_created(s);
	bool pooled = rc == 0 && !t->swarm && claim_from_pool(s, t, &id) == 0;
	if (rc == 0 && !pooled)
		rc = create_container(s, t, NULL, &id, err);

	if (rc == -ECONNREFUSED) /* rmdir then knows not to promise a removal */
		engine_health(s->engine, false, err->msg);
	sbx_lock(&model_lock);
	if (rc < 0) {
		table_del_locked(s);
		sandbox_put_locked(s);
		sbx_unlock(&model_lock);
		return sbx_err_wrap(err, "mkdir %s", name);
	}
	s->container_id = id;
	s->from_pool = pooled;
	s->state = SBX_RUNNING;
	events_created(name, s->template_name, s->image);
	engine_answered(s->engine);
	sandbox_changed_locked(s);
	struct sandbox *s_agent = s;
	sandbox_get_locked(s_agent);
	if (out)
		*out = s;
	else
		sandbox_put_locked(s);
	sbx_unlock(&model_lock);
	log_info("mkdir %s: container %.12s%s", name, id, pooled ? " (from the pool)" : "");
	sandbox_agent_start(s_agent, true);
	sandbox_put(s_agent);
	return 0;
}

/* ---- rmdir ---- */

static void drop_spool_task(void *ctx)
{
	char *dir = ctx;
	rm_rf(dir);
	free(dir);
}

/* The spool moves to STATE/trash (a crash mid-delete leaves nothing under
 * the name; the start empties trash) and is deleted. */
static void trash_spool(const char *dir, uint64_t id)
{
	char trash[PATH_MAX], to[PATH_MAX + 32];
	struct sbx_err ign = { 0 };
	if (path_join(trash, sizeof(trash), model_config()->state_dir, "trash") < 0 ||
	    mkdir_p(trash, &ign) < 0)
		return (void)rm_rf(dir);
	snprintf(to, sizeof(to), "%s/%" PRIu64 "-%ld", trash, id, (long)getpid());
	char *moved = strdup(to);
	if (!moved || rename(dir, to) < 0) {
		free(moved);
		if (errno != ENOENT)
			rm_rf(dir);
		return;
	}
	/* Here, not later: an rmdir frees the space of a full state dir. */
	drop_spool_task(moved);
}

/* rmdir journals the removal and returns: the container is renamed and
 * removed in the background (removal.c). */
int sandbox_remove(const char *name, struct sbx_err *err)
{
	sbx_lock(&model_lock);
	struct sandbox *s = find_locked(name);
	if (!s || s->state == SBX_CREATING || s->state == SBX_REMOVING) {
		int e = !s ? ENOENT : EBUSY;
		const char *why = !s			     ? "no such sandbox"
				  : s->state == SBX_CREATING ? "still being created"
							     : "already being removed";
		sbx_unlock(&model_lock);
		return sbx_err_set(err, e, "rmdir %s: %s", name, why);
	}
	enum sandbox_state before = s->state;
	s->state = SBX_REMOVING;
	sandbox_mark_rmdir_locked(s, true);
	s->refs++;
	char *cid = strdup(s->container_id ? s->container_id : s->container);
	sbx_unlock(&model_lock);

	int rc = cid ? 0 : sbx_err_set(err, ENOMEM, "out of memory");
	/* An engine known to be down: the rename is tried here, so that the
	 * rmdir fails fast and changes nothing rather than succeed with a
	 * container that cannot go.  So too when the journal cannot be
	 * written (a full state directory): once renamed, the name says it. */
	bool here = rc == 0 && engine_down(s->engine);
	if (rc == 0 && !here) {
		rc = removal_begin(s->engine, name, cid, false, err);
		if (rc < 0 && rc != -ENOMEM) {
			log_debug("rmdir %s: journal: %s; renaming now", name, err->msg);
			sbx_err_clear(err);
			here = true;
			rc = 0;
		}
	}
	if (rc == 0 && here) {
		char tomb[128];
		snprintf(tomb, sizeof(tomb), "sandboxfs-%s-" TOMB_PREFIX "%.24s",
			 model_config()->engine.instance, cid);
		rc = engine_rename(s->engine, cid, tomb, err);
		if (rc == -ENOENT) {
			sbx_err_clear(err);
			rc = 0;
		}
		if (rc == 0)
			rc = removal_begin(s->engine, name, cid, true, err);
	}
	free(cid);
	struct sbx_err serr = { 0 };
	if (rc == 0 && swarm_remove(s->engine, s->name, &serr) < 0)
		log_warn("rmdir %s: removing its swarm service: %s", name, serr.msg);

	sbx_lock(&model_lock);
	if (rc < 0) {
		s->state = before;
		sandbox_mark_rmdir_locked(s, false);
		sandbox_set_error_locked(s, err->msg);
		sandbox_put_locked(s);
		sbx_unlock(&model_lock);
		return sbx_err_wrap(err, "rmdir %s", name);
	}
	sandbox_mark_runs_locked(s, true);
	s->state = SBX_REMOVED;
	table_del_locked(s);
	uint64_t id = s->id;
	sbx_unlock(&model_lock);
	trash_spool(s->spool_dir, id);
	sandbox_put(s);
	log_info("rmdir %s: removed (the container goes in the background)", name);
	events_simple("sandbox_removed", name, NULL, NULL);
	return 0;
}

/* ---- what the engine tells us ---- */

/* A container of ours removed behind our back. */
static void forget_locked(struct sandbox *s) SBX_REQUIRES(model_lock)
{
	char *dir = strdup(s->spool_dir);
	sandbox_mark_runs_locked(s, false);
	s->state = SBX_REMOVED;
	log_warn("sandbox %s: container removed outside sandboxfs", s->name);
	events_simple("sandbox_lost", s->name, "reason", "container removed outside sandboxfs");
	table_del_locked(s);
	if (dir && task_queue(drop_spool_task, dir) < 0)
		free(dir);
}

static void handle_event(const struct engine *engine, const struct engine_event *ev)
{
	if (strcmp(ev->instance, model_config()->engine.instance) != 0)
		return; /* not ours: never touched */
	/* A pool container an earlier daemon's CLI finished making after our
	 * start: reconcile removes it. */
	if (ev->kind == ENGINE_EV_START &&
	    !strncmp(ev->sandbox, POOL_SLOT_PREFIX, strlen(POOL_SLOT_PREFIX)) &&
	    !pool_owns(ev->sandbox)) {
		resync(engine, false, 0);
		return;
	}
	sbx_lock(&model_lock);
	struct sandbox *s = find_container_locked(ev->id);
	if (!s && ev->kind == ENGINE_EV_START && parse_sandbox_name(ev->sandbox, NULL) == 0 &&
	    !find_locked(ev->sandbox)) {
		/* A container of ours that we do not know started (e.g. one an
		 * earlier daemon made): adopt it, off this thread. */
		sbx_unlock(&model_lock);
		resync(engine, false, 0);
		return;
	}
	if (!s || s->state == SBX_CREATING || s->state == SBX_REMOVED) {
		sbx_unlock(&model_lock);
		return;
	}
	switch (ev->kind) {
	case ENGINE_EV_START:
		if (s->state == SBX_STOPPED)
			s->state = SBX_RUNNING;
		s->paused = false;
		s->idle_stopped = false;
		break;
	case ENGINE_EV_PAUSE:
		if (!s->paused)
			log_info("sandbox %s: container paused", s->name);
		s->paused = true;
		break;
	case ENGINE_EV_UNPAUSE:
		if (s->paused)
			log_info("sandbox %s: container unpaused", s->name);
		s->paused = false;
		break;
	case ENGINE_EV_DIE:
		s->paused = false;
		s->died_at = mono_now();
		if (s->state == SBX_RUNNING) {
			s->state = SBX_STOPPED;
			sandbox_set_error_locked(s, "the container stopped");
			log_warn("sandbox %s: container stopped (exit code %d)", s->name,
				 ev->exit_code);
			if (!s->stopping)
				events_simple("sandbox_stopped", s->name, "by", "engine");
		}
		sandbox_mark_runs_locked(s, false);
		break;
	case ENGINE_EV_DESTROY:
		if (s->state != SBX_REMOVING)
			forget_locked(s);
		break;
	default:
		break;
	}
	sbx_unlock(&model_lock);
}

/* Was s stopped by an engine outage (and not by ctl stop)?  Running as far
 * as we knew, or died while the engine was going down (it stops its
 * containers first). */
static bool outage_victim_locked(struct sandbox *s, double outage_at) SBX_REQUIRES(model_lock)
{
	bool victim = s->state == SBX_RUNNING || (s->died_at > 0 && outage_at - s->died_at < 15 &&
						  s->died_at - outage_at < 15);
	return victim && !s->user_stopped;
}

struct string_list {
	char **v;
	size_t n;
};

static void string_list_add(struct string_list *l, const char *s)
{
	char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
	if (!v)
		return;
	l->v = v;
	if ((l->v[l->n] = strdup(s)))
		l->n++;
}

/* Updates the known sandboxes of `engine` from the engine's list, taken at
 * generation listed_at; returns in *restart the containers an outage
 * stopped. */
static void update_known_locked(const struct engine *engine, const struct engine_container *v,
				size_t n, uint64_t listed_at, bool after_outage, double outage_at,
				struct string_list *restart) SBX_REQUIRES(model_lock)
{
	for (size_t i = 0; i < ntable; i++) {
		struct sandbox *s = table[i];
		if (s->engine != engine || (s->state != SBX_RUNNING && s->state != SBX_STOPPED))
			continue;
		/* Made (or started, stopped) while the engine was listing: the
		 * listing may predate it, and would forget a live sandbox. */
		if (s->changed_gen > listed_at)
			continue;
		const struct engine_container *c = NULL;
		for (size_t j = 0; j < n && !c; j++)
			if (s->container_id && !strcmp(v[j].id, s->container_id))
				c = &v[j];
		if (!c) {
			forget_locked(s);
			i--;
			continue;
		}
		if (!c->running && after_outage && outage_victim_locked(s, outage_at))
			string_list_add(restart, s->container_id);
		s->state = c->running ? SBX_RUNNING : SBX_STOPPED;
		s->paused = c->paused;
		if (!c->running)
			sandbox_mark_runs_locked(s, false);
	}
}

static bool known_locked(const struct engine_container *c) SBX_REQUIRES(model_lock)
{
	return find_container_locked(c->id) || find_locked(c->sandbox);
}

/* The name is the truth (pool.h): a tombstone, or a pool container the
 * pool does not own (an earlier daemon's), is removed; a claimed pool
 * container is the sandbox its name says.  True if c is a sandbox's. */
static bool sort_container(const struct engine *engine, struct engine_container *c)
{
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "sandboxfs-%s-", model_config()->engine.instance);
	size_t pl = strlen(prefix);
	if (strncmp(c->name, prefix, pl) != 0)
		return !c->pool[0];
	const char *rest = c->name + pl;
	if (!strncmp(rest, TOMB_PREFIX, strlen(TOMB_PREFIX))) {
		log_info("removing container %.12s (%s) left by an rmdir", c->id, c->name);
		destroy_later(engine, c->id);
		return false;
	}
	if (!strncmp(rest, POOL_SLOT_PREFIX, strlen(POOL_SLOT_PREFIX))) {
		if (!pool_owns(rest)) {
			log_info("removing pool container %.12s left by an earlier daemon", c->id);
			destroy_later(engine, c->id);
		}
		return false;
	}
	/* Only a claimed pool container is renamed into its sandbox; others
	 * (a swarm task is SERVICE.SLOT.TASK) keep their label's name. */
	if (c->pool[0] && parse_sandbox_name(rest, NULL) == 0 && strcmp(rest, c->sandbox) != 0) {
		char *n = strdup(rest);
		if (!n)
			return false;
		free(c->sandbox);
		c->sandbox = n;
	}
	return true;
}

/* Adopts a container of this instance that the table does not know.  Its
 * history is read from disk before the lock is taken. */
static void adopt(const struct engine *engine, const struct engine_container *c)
{
	struct sandbox *s = sandbox_new(c->sandbox, engine);
	if (!s)
		return;
	s->template_name = strdup("(adopted)");
	s->from_pool = c->pool && c->pool[0];
	if (c->image) {
		free(s->image);
		s->image = strdup(c->image);
	}
	struct run **runs = NULL;
	unsigned nruns = 0;
	bool ok = s->template_name && s->image && runs_load(s, c->id, &runs, &nruns) == 0;
	sandbox_ttl_load(s, c->running);

	sbx_lock(&model_lock);
	s->container_id = strdup(c->id);
	ok = ok && s->container_id && !known_locked(c) && table_add_locked(s) == 0;
	struct sandbox *s_agent = ok ? s : NULL;
	if (s_agent)
		sandbox_get_locked(s_agent);
	if (ok) {
		s->id = next_id++;
		s->state = c->running ? SBX_RUNNING : SBX_STOPPED;
		s->paused = c->paused;
		s->runs = runs;
		s->nruns = nruns;
		runs = NULL;
	}
	for (unsigned i = 0; runs && i < nruns; i++)
		run_put_locked(runs[i]);
	sandbox_put_locked(s);
	sbx_unlock(&model_lock);
	free(runs);
	if (ok) {
		log_info("adopted sandbox %s (container %.12s, %u runs)", c->sandbox, c->id, nruns);
		events_simple("sandbox_adopted", c->sandbox, NULL, NULL);
	}
	if (s_agent) {
		sandbox_agent_start(s_agent, c->running);
		sandbox_put(s_agent);
	}
}

/* Brings the table in line with what one engine lists: adopts containers
 * of this instance we do not know, forgets the ones that are gone.  After
 * an outage, containers the engine stopped while it went down are started
 * again. */
static void reconcile(const struct engine *engine, bool after_outage, double outage_at)
{
	struct engine_container *v = NULL;
	size_t n = 0;
	struct sbx_err err = { 0 };
	struct string_list restart = { 0 };

	sbx_lock(&model_lock);
	uint64_t listed_at = generation;
	sbx_unlock(&model_lock);
	if (engine_list(engine, &v, &n, &err) < 0) {
		engine_health(engine, false, err.msg);
		log_debug("listing this mount's containers: %s", err.msg);
		return;
	}
	engine_health(engine, true, NULL);
	size_t kept = 0;
	for (size_t j = 0; j < n; j++) {
		if (sort_container(engine, &v[j]))
			v[kept++] = v[j];
		else
			engine_container_clear(&v[j]);
	}
	n = kept;
	sbx_lock(&model_lock);
	update_known_locked(engine, v, n, listed_at, after_outage, outage_at, &restart);
	bool *unknown = calloc(n ? n : 1, sizeof(*unknown));
	for (size_t j = 0; unknown && j < n; j++)
		unknown[j] = v[j].sandbox && parse_sandbox_name(v[j].sandbox, NULL) == 0 &&
			     !known_locked(&v[j]) && !removal_pending_id_locked(v[j].id);
	sbx_unlock(&model_lock);

	for (size_t j = 0; unknown && j < n; j++)
		if (unknown[j])
			adopt(engine, &v[j]);
	free(unknown);
	engine_containers_free(v, n);

	for (size_t i = 0; i < restart.n; i++) {
		if (workspace_start_container(engine, restart.v[i], &err) < 0)
			log_warn("restarting container %.12s after the engine came back: %s",
				 restart.v[i], err.msg);
		else
			log_info("container %.12s started again after the engine came back",
				 restart.v[i]);
		/* Its start event sets the sandbox running again. */
		free(restart.v[i]);
	}
	free(restart.v);
}

struct reconcile_req {
	const struct engine *engine;
	bool after_outage;
	double outage_at;
};

static void reconcile_task(void *ctx)
{
	struct reconcile_req *r = ctx;
	reconcile(r->engine, r->after_outage, r->outage_at);
	engine_use(r->engine, -1);
	free(r);
}

/* From the I/O thread: the work is the task thread's. */
static void resync(const struct engine *engine, bool after_outage, double outage_at)
{
	struct reconcile_req *r = calloc(1, sizeof(*r));
	if (!r)
		return;
	*r = (struct reconcile_req){ engine, after_outage, outage_at };
	engine_use(engine, +1);
	if (task_queue(reconcile_task, r) < 0) {
		engine_use(engine, -1);
		free(r);
	}
}

/* ---- start and shutdown ---- */

int model_start(struct sbx_err *err)
{
	int rc = ioloop_start();
	if (rc < 0)
		return sbx_err_set(err, -rc, "starting the I/O thread: %s", strerror(-rc));
	char **endpoints = NULL;
	size_t n = 0;
	template_engines(&endpoints, &n);
	engine_for(NULL);
	swarm_touch_engines();
	/* Engines that templates name may hold sandboxes of ours from before. */
	for (size_t i = 0; i < n; i++) {
		engine_for(endpoints[i]);
		free(endpoints[i]);
	}
	free(endpoints);

	/* Adopt before the first request is served, so that `ls` right after
	 * a restart already lists what was there. */
	removal_recover();
	const struct engine *engines[64];
	size_t count = engines_list(engines, SBX_ARRAY_SIZE(engines));
	for (size_t i = 0; i < count; i++)
		reconcile(engines[i], false, 0);
	engines_start();
	ttl_start();
	char trash[PATH_MAX];
	if (path_join(trash, sizeof(trash), model_config()->state_dir, "trash") == 0) {
		char *dir = strdup(trash);
		if (dir && task_queue(drop_spool_task, dir) < 0)
			free(dir);
	}
	rc = pool_start(model_config()->pool);
	if (rc < 0)
		return sbx_err_set(err, -rc, "starting the pool thread: %s", strerror(-rc));
	return 0;
}

void model_resync_all(void)
{
	const struct engine *engines[64];
	size_t count = engines_list(engines, SBX_ARRAY_SIZE(engines));
	for (size_t i = 0; i < count; i++)
		resync(engines[i], false, 0);
}

void model_engines_changed(void)
{
	engines_poke_all();
}

const struct engine *model_default_engine(void)
{
	return engine_for(NULL);
}

void model_shutdown(void)
{
	ttl_stop();
	removal_drain();
	pool_stop();
	agent_channels_drain();
	ioloop_stop();
	agent_channels_shutdown();
	sbx_lock(&model_lock);
	struct sandbox **gone = table;
	size_t n = ntable;
	table = NULL;
	ntable = captable = 0;
	sbx_unlock(&model_lock);
	/* Dropping the table's references closes spool fds: no child to
	 * wait for, but not under the lock all the same. */
	for (size_t i = 0; i < n; i++)
		sandbox_put(gone[i]);
	free(gone);
	engines_shutdown();
	events_shutdown();
}
