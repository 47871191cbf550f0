/* The sandbox object: references, the fields fs/ may see as copies, and
 * its runs.  The table of sandboxes is model.c's. */
#include <stdio.h>
#include <string.h>

#include "agent_channel.h"
#include "engines.h"
#include "model_internal.h"
#include "run.h"

struct sandbox *sandbox_new(const char *name, const struct engine *engine)
{
	const struct model_config *cfg = model_config();
	struct sandbox *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	sbx_lock(&model_lock);
	s->refs = 1;
	s->workdir = strdup("");
	sbx_unlock(&model_lock);
	s->engine = engine;
	engine_use(engine, +1);
	s->name = strdup(name);
	s->image = strdup(cfg->image);
	if (asprintf(&s->container, "sandboxfs-%s-%s", cfg->engine.instance, name) < 0)
		s->container = NULL;
	if (asprintf(&s->spool_dir, "%s/sandboxes/%s", cfg->state_dir, name) < 0)
		s->spool_dir = NULL;
	clock_gettime(CLOCK_REALTIME, &s->created);
	sbx_lock(&model_lock);
	s->settings_changed = s->created;
	bool ok = s->name && s->image && s->workdir && s->container && s->spool_dir;
	if (!ok) {
		sandbox_put_locked(s);
		s = NULL;
	}
	sbx_unlock(&model_lock);
	return s;
}

void sandbox_get_locked(struct sandbox *s)
{
	s->refs++;
}

void sandbox_ref(struct sandbox *s)
{
	sbx_lock(&model_lock);
	s->refs++;
	sbx_unlock(&model_lock);
}

void sandbox_put_locked(struct sandbox *s)
{
	if (!s || --s->refs > 0)
		return;
	engine_use(s->engine, -1);
	for (unsigned i = 0; i < s->nruns; i++)
		run_put_locked(s->runs[i]);
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
	if (s->chan) {
		agent_channel_stop(s->chan); /* a kill, no wait: fine under the lock */
		agent_channel_put(s->chan);
	}
	free(s);
}

void sandbox_put(struct sandbox *s)
{
	sbx_lock(&model_lock);
	sandbox_put_locked(s);
	sbx_unlock(&model_lock);
}

uint64_t sandbox_id(const struct sandbox *s)
{
	return s->id;
}

const char *sandbox_name(const struct sandbox *s)
{
	return s->name;
}

void sandbox_set_error_locked(struct sandbox *s, const char *msg)
{
	char *copy = strdup(msg);
	if (copy) {
		free(s->last_error);
		s->last_error = copy;
		clock_gettime(CLOCK_REALTIME, &s->last_error_at);
	}
}

char *sandbox_container_dup(struct sandbox *s)
{
	sbx_lock(&model_lock);
	char *cid = strdup(s->container_id ? s->container_id : s->container);
	sbx_unlock(&model_lock);
	return cid;
}

bool sandbox_listed_locked(const struct sandbox *s)
{
	return s->state == SBX_RUNNING || s->state == SBX_STOPPED || s->state == SBX_REMOVING;
}

void sandbox_mark_runs_locked(struct sandbox *s, bool killed)
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

void sandbox_mark_rmdir_locked(struct sandbox *s, bool on)
{
	for (unsigned i = 0; i < s->nruns; i++)
		if (s->runs[i]->phase != RUN_ENDED)
			s->runs[i]->rmdir_kill = on;
}

struct run *sandbox_killable_run_locked(struct sandbox *s)
{
	for (unsigned i = s->nruns; i > 0; i--) {
		struct run *r = s->runs[i - 1];
		if (r->phase != RUN_ENDED || (r->observer_lost && r->pgid > 1))
			return r;
	}
	return NULL;
}

void sandbox_status_line_locked(struct sandbox *s, struct run *r, char *buf, size_t len)
{
	if (s->paused && s->state == SBX_RUNNING && (!r || r->phase != RUN_ENDED))
		snprintf(buf, len, "paused\n");
	else
		run_status_line_locked(r, buf, len);
}

void sandbox_status_line(struct sandbox *s, struct run *r, char *buf, size_t len)
{
	sbx_lock(&model_lock);
	sandbox_status_line_locked(s, r, buf, len);
	sbx_unlock(&model_lock);
}

void sandbox_view(struct sandbox *s, struct sandbox_view *v)
{
	bool down = engine_down(s->engine);
	sbx_lock(&model_lock);
	*v = (struct sandbox_view){
		.created = s->created,
		.settings_changed = s->settings_changed,
		.running = s->state == SBX_RUNNING,
		.idle_stopped = s->state == SBX_STOPPED && s->idle_stopped,
		.paused = s->paused,
		.engine_down = down,
		.nruns = s->nruns,
	};
	sbx_unlock(&model_lock);
}

void sandbox_engine_recheck(struct sandbox *s)
{
	engine_recheck(s->engine);
}

struct run *sandbox_run(struct sandbox *s, unsigned number)
{
	struct run *r = NULL;
	sbx_lock(&model_lock);
	if (number == 0 && s->nruns > 0)
		r = s->runs[s->nruns - 1];
	else if (number >= 1 && number <= s->nruns)
		r = s->runs[number - 1];
	if (r)
		run_get_locked(r);
	sbx_unlock(&model_lock);
	return r;
}

/* ---- starting a run ---- */

/* What a run needs of its sandbox, copied under the lock. */
struct exec_snapshot {
	char *env;
	size_t env_len;
	char *workdir;
	long timeout;
	const char **secrets; /* point into copies held by `copies` */
	size_t nsecrets;
	struct kv_list copies;
	struct agent_channel *chan;
	bool stdin_open;
};

static void exec_snapshot_free(struct exec_snapshot *x)
{
	secret_free_n(x->env, x->env_len);
	free(x->workdir);
	free(x->secrets);
	kv_list_free(&x->copies);
	if (x->chan)
		agent_channel_put(x->chan);
}

static int exec_snapshot_take_locked(struct sandbox *s, struct exec_snapshot *x)
	SBX_REQUIRES(model_lock)
{
	const struct kv_list *lists[] = { &s->env, &s->auth };
	x->env = kv_list_text(lists, 2, true, &x->env_len);
	x->workdir = strdup(s->workdir);
	x->timeout = s->timeout;
	x->stdin_open = s->stdin_open;
	x->chan = s->chan;
	if (x->chan)
		agent_channel_ref(x->chan);
	int rc = x->env && x->workdir ? 0 : -ENOMEM;
	if (rc == 0)
		rc = kv_list_merge(&x->copies, &s->auth);
	/* File contents are keyed by path; their values are what to mask. */
	for (size_t i = 0; rc == 0 && i < s->auth_file_secrets.n; i++) {
		char key[32];
		snprintf(key, sizeof(key), "\x01file%zu", i);
		rc = kv_list_set(&x->copies, key, s->auth_file_secrets.values[i]);
	}
	x->secrets = rc == 0 ? calloc(x->copies.n + 1, sizeof(*x->secrets)) : NULL;
	if (rc == 0 && !x->secrets)
		rc = -ENOMEM;
	for (size_t i = 0; rc == 0 && i < x->copies.n; i++)
		x->secrets[x->nsecrets++] = x->copies.values[i];
	return rc;
}

/* Numbers a new run and lists it in s. */
static struct run *run_add_locked(struct sandbox *s, struct run *r) SBX_REQUIRES(model_lock)
{
	struct run **v = realloc(s->runs, (s->nruns + 1) * sizeof(*v));
	if (!v)
		return NULL;
	s->runs = v;
	s->runs[s->nruns++] = r;
	run_get_locked(r); /* the caller's */
	return r;
}

int run_start(struct sandbox *s, const struct cmd_spool *cmd, struct run **out, struct sbx_err *err)
{
	*out = NULL;
	int woke = sandbox_wake_for_run(s, err); /* idle TTL: activity, or a restart */
	if (woke < 0)
		return woke;
	cleanup_free char *cid = sandbox_container_dup(s);
	if (!cid)
		return sbx_err_set(err, ENOMEM, "exec: out of memory");

	struct exec_snapshot x = { 0 };
	if (engine_down(s->engine)) {
		engine_recheck(s->engine);
		return sbx_err_set(err, ECONNREFUSED, "exec: the engine of %s does not answer",
				   s->name);
	}
	sbx_lock(&model_lock);
	if (s->state != SBX_RUNNING) {
		sbx_unlock(&model_lock);
		return sbx_err_set(err, EHOSTDOWN, "exec: the container of %s is not running",
				   s->name);
	}
	if (s->paused) {
		sbx_unlock(&model_lock);
		return sbx_err_set(err, EBUSY, "exec: the container of %s is paused", s->name);
	}
	unsigned number = s->nruns + 1;
	int rc = exec_snapshot_take_locked(s, &x);
	sbx_unlock(&model_lock);
	/* run_new allocates outside the lock; the number stays ours because
	 * only this function appends, under the lock, and checks it. */
	struct run *r = rc == 0 ? run_new(s, number, cid) : NULL;
	sbx_lock(&model_lock);
	bool listed = r && s->nruns + 1 == number && run_add_locked(s, r);
	if (r && !listed)
		run_put_locked(r);
	sbx_unlock(&model_lock);
	if (!listed) {
		exec_snapshot_free(&x);
		if (r && rc == 0) /* another run took the number: try again */
			return run_start(s, cmd, out, err);
		return sbx_err_set(err, ENOMEM, "exec: out of memory");
	}
	*out = r;

	struct run_launch l = {
		.cmd = cmd,
		.env = x.env,
		.env_len = x.env_len,
		.workdir = x.workdir,
		.timeout = x.timeout,
		.secrets = x.secrets,
		.nsecrets = x.nsecrets,
		.chan = x.chan,
		.stdin_open = x.stdin_open,
	};
	/* Logged before the launch: a quick run could end first. */
	events_run_started(s, r, cmd);
	rc = run_launch(r, &l, err);
	exec_snapshot_free(&x);
	if (rc < 0) {
		run_fail_start(r, err);
		sbx_lock(&model_lock);
		sandbox_set_error_locked(s, err->msg);
		sbx_unlock(&model_lock);
	}
	return rc;
}

/* ---- the agent inside ---- */

/* Runs the spool showed live after a restart (through the agent): each
 * gets a reference in *out (malloc'ed). */
static unsigned orphans(struct sandbox *s, struct run ***out)
{
	*out = NULL;
	sbx_lock(&model_lock);
	unsigned n = 0;
	struct run **v = s->nruns ? calloc(s->nruns, sizeof(*v)) : NULL;
	for (unsigned i = 0; v && i < s->nruns; i++) {
		struct run *r = s->runs[i];
		if (r->phase != RUN_ENDED && !r->io && !r->chan) {
			run_get_locked(r);
			v[n++] = r;
		}
	}
	sbx_unlock(&model_lock);
	*out = v;
	return n;
}

void sandbox_agent_start(struct sandbox *s, bool running)
{
	struct run **live;
	unsigned nlive = orphans(s, &live);
	cleanup_free char *cid = sandbox_container_dup(s);
	struct agent_channel *c = cid ? agent_channel_new(s->engine, cid, s->name) : NULL;
	if (c && getenv("SANDBOXFS_NO_AGENT"))
		agent_channel_disable(c, "the agent is off (SANDBOXFS_NO_AGENT)");
	for (unsigned i = 0; i < nlive; i++) {
		struct run *r = live[i];
		sbx_lock(&model_lock);
		uint64_t out = (uint64_t)r->size[STREAM_STDOUT],
			 err = (uint64_t)r->size[STREAM_STDERR];
		sbx_unlock(&model_lock);
		/* The channel ends it (lost) if the agent cannot be reached. */
		if (!c || !running || agent_channel_resume(c, r, out, err) < 0)
			run_hook_lost(r, 0, "the daemon restarted while the run was live");
		run_put(r);
	}
	free(live);
	if (!c)
		return; /* runs take docker exec; info says why */
	sbx_lock(&model_lock);
	struct agent_channel *old = s->chan;
	s->chan = c;
	agent_channel_ref(c);
	sbx_unlock(&model_lock);
	if (old) {
		agent_channel_stop(old);
		agent_channel_put(old);
	}
	if (running)
		agent_channel_start(c);
	agent_channel_put(c);
}
