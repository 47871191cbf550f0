/* Operator verbs on a sandbox's container (ctl pause / resume) and the
 * hooks through which the model tells the audit log (events.c). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "events.h"
#include "log.h"
#include "agent_channel.h"
#include "model_internal.h"
#include "sha256.h"
#include "state.h"

/* Is a docker exec into s starting now (a run's, or the agent's install
 * and connect)?  Freezing a container while runc is entering it leaves
 * runc's init frozen inside, and the engine then hangs every later call on
 * that container (pause, unpause, commit, rm). */
static bool exec_starting(struct sandbox *s)
{
	sbx_lock(&model_lock);
	bool starting = false;
	for (unsigned i = s->nruns; i-- > 0 && !starting;)
		starting = s->runs[i]->phase == RUN_STARTING;
	struct agent_channel *c = s->chan;
	if (c)
		agent_channel_ref(c);
	sbx_unlock(&model_lock);
	if (c) {
		starting = starting || agent_channel_starting(c);
		agent_channel_put(c);
	}
	return starting;
}

void sandbox_wait_exec_settled(struct sandbox *s)
{
	for (int i = 0; i < 200 && exec_starting(s); i++) {
		struct timespec pause = { .tv_nsec = 50 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
}

int sandbox_pause(struct sandbox *s, const char *cid, bool pause, struct sbx_err *err)
{
	const char *verb = pause ? "pause" : "resume";
	sbx_lock(&model_lock);
	bool running = s->state == SBX_RUNNING, paused = s->paused;
	sbx_unlock(&model_lock);
	if (!running)
		return sbx_err_set(err, EHOSTDOWN, "ctl %s: the container of %s is not running",
				   verb, s->name);
	if (paused == pause)
		return 0; /* already so: nothing to do */
	if (pause)
		sandbox_wait_exec_settled(s);
	int rc = engine_pause(s->engine, cid, pause, err);
	if (rc < 0)
		return rc;
	sbx_lock(&model_lock);
	/* The engine's event says the same; setting it now means a read right
	 * after the write already sees it. */
	if (s->state == SBX_RUNNING)
		s->paused = pause;
	sbx_unlock(&model_lock);
	log_info("sandbox %s: %s by ctl", s->name, pause ? "paused" : "resumed");
	events_simple(pause ? "sandbox_paused" : "sandbox_resumed", s->name, NULL, NULL);
	return 0;
}

/* ---- audit-log hooks: what the model tells events.c ---- */

void events_auth_changed(struct sandbox *s)
{
	size_t len = 0;
	char *names = sandbox_setting_text(s, SETTING_AUTH, &len); /* names only */
	cJSON *ev = events_new("auth_changed", s->name);
	cJSON *arr = ev ? cJSON_AddArrayToObject(ev, "names") : NULL;
	for (char *p = names, *nl; arr && p && p < names + len; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(names + len - p));
		if (!nl)
			break;
		*nl = '\0';
		char *eq = strchr(p, '=');
		if (eq)
			*eq = '\0';
		cJSON_AddItemToArray(arr, cJSON_CreateString(p));
	}
	free(names);
	events_emit(ev);
}

void events_run_started(struct sandbox *s, struct run *r, const struct cmd_spool *cmd)
{
	/* A digest, never the text: a command may carry a credential. */
	char hex[65] = "";
	struct sha256 c;
	sha256_init(&c);
	unsigned long long bytes = cmd->len;
	char buf[8192];
	for (size_t off = 0; off < cmd->len;) {
		size_t n = cmd->len - off < sizeof(buf) ? cmd->len - off : sizeof(buf);
		if (cmd_spool_read(cmd, off, buf, n) < 0)
			break;
		sha256_update(&c, buf, n);
		off += n;
	}
	explicit_bzero(buf, sizeof(buf));
	sha256_hex(&c, hex);
	cJSON *ev = events_new("run_started", s->name);
	if (ev) {
		cJSON_AddNumberToObject(ev, "run", r->number);
		cJSON_AddStringToObject(ev, "cmd_sha256", hex);
		cJSON_AddNumberToObject(ev, "cmd_bytes", (double)bytes);
	}
	events_emit(ev);
}

void events_run_ended(struct run *r)
{
	char line[64];
	sbx_lock(&model_lock);
	run_status_line_locked(r, line, sizeof(line));
	double ms = (double)(r->ended.tv_sec - r->started.tv_sec) * 1e3 +
		    (double)(r->ended.tv_nsec - r->started.tv_nsec) / 1e6;
	bool started = r->started.tv_sec != 0, truncated = r->truncated;
	long long out = r->size[STREAM_STDOUT], errb = r->size[STREAM_STDERR];
	long long total = r->size[STREAM_OUTPUT];
	sbx_unlock(&model_lock);
	line[strcspn(line, "\n")] = '\0';
	cJSON *ev = events_new("run_ended", r->sandbox_name);
	if (ev) {
		cJSON_AddNumberToObject(ev, "run", r->number);
		cJSON_AddStringToObject(ev, "status", line);
		cJSON_AddNumberToObject(ev, "duration_ms",
					started && ms > 0 ? (double)(long long)ms : 0);
		cJSON_AddNumberToObject(ev, "bytes", (double)total);
		cJSON_AddNumberToObject(ev, "stdout_bytes", (double)out);
		cJSON_AddNumberToObject(ev, "stderr_bytes", (double)errb);
		cJSON_AddBoolToObject(ev, "truncated", truncated);
	}
	events_emit(ev);
}

void events_created(const char *name, const char *tpl, const char *image)
{
	cJSON *ev = events_new("sandbox_created", name);
	if (ev) {
		cJSON_AddStringToObject(ev, "template", tpl ? tpl : "");
		cJSON_AddStringToObject(ev, "image", image ? image : "");
	}
	events_emit(ev);
}

int sandbox_stop(struct sandbox *s, const char *cid, const char *by, struct sbx_err *err)
{
	sbx_lock(&model_lock);
	s->stopping = true;
	sbx_unlock(&model_lock);
	int rc = engine_stop(s->engine, cid, err);
	sbx_lock(&model_lock);
	s->stopping = false;
	bool was_idle = s->idle_stopped;
	if (rc == 0)
		s->idle_stopped = false; /* stopped by a user now: exec must not start it */
	sbx_unlock(&model_lock);
	if (rc == 0 && was_idle)
		sandbox_ttl_created(s); /* keeps the cleared flag */
	if (rc == 0)
		events_simple("sandbox_stopped", s->name, "by", by);
	return rc;
}
