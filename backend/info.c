/* The info file: a JSON description of a sandbox, built with cJSON.  It
 * names credentials but never carries a value, nor any command output. */
#include <stdio.h>
#include <string.h>

#include "agent_channel.h"
#include "json.h"
#include "engines.h"
#include "model_internal.h"
#include "swarm.h"

static const char *state_name(enum sandbox_state st)
{
	switch (st) {
	case SBX_RUNNING:
	case SBX_REMOVING:
		return "running";
	case SBX_STOPPED:
		return "exited";
	case SBX_CREATING:
		return "creating";
	default:
		return "removed";
	}
}

static bool later(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec != b->tv_sec ? a->tv_sec > b->tv_sec : a->tv_nsec > b->tv_nsec;
}

/* The newest failure: the sandbox's own (ctl, auth, ...) or a run's
 * (lost, truncated, did not start). */
static const char *latest_error_locked(struct sandbox *s) SBX_REQUIRES(model_lock)
{
	for (unsigned i = s->nruns; i-- > 0;) {
		struct run *r = s->runs[i];
		if (!r->reason)
			continue;
		if (s->last_error && !later(&r->ended, &s->last_error_at))
			break;
		return r->reason;
	}
	return s->last_error;
}

/* Every part of the document, or no document: a cJSON call that ran out
 * of memory must not leave a silent hole in what the info file shows. */
#define PUT(x)                                                                                     \
	do {                                                                                       \
		if (!(x))                                                                          \
			full = false;                                                              \
	} while (0)

char *sandbox_info_json(struct sandbox *s)
{
	bool full = true;
	cleanup_cjson cJSON *root = cJSON_CreateObject();
	char when[40], line[64];

	if (!root)
		return NULL;
	/* Before model_lock: s->engine is fixed once the sandbox is listed. */
	const char *node = swarm_node_of(s->engine);
	bool node_down = node && engine_down(s->engine);
	sbx_lock(&model_lock);
	PUT(cJSON_AddStringToObject(root, "name", s->name));
	PUT(cJSON_AddStringToObject(root, "container", s->container));
	/* Placed by swarm: the node it runs on (null on one engine). */
	PUT(node ? cJSON_AddStringToObject(root, "node", node)
		 : cJSON_AddNullToObject(root, "node"));
	if (node)
		PUT(cJSON_AddStringToObject(root, "node_state", node_down ? "down" : "up"));
	if (s->container_id)
		PUT(cJSON_AddStringToObject(root, "id", s->container_id));
	else
		PUT(cJSON_AddNullToObject(root, "id"));
	PUT(cJSON_AddStringToObject(root, "image", s->image));
	PUT(cJSON_AddStringToObject(root, "template", s->template_name ? s->template_name : ""));
	PUT(cJSON_AddBoolToObject(root, "pool", s->from_pool));
	if (s->effective)
		PUT(json_put_item(root, "effective", cJSON_Parse(s->effective)));
	else
		PUT(cJSON_AddNullToObject(root, "effective"));
	PUT(cJSON_AddStringToObject(root, "state",
				    s->paused && s->state == SBX_RUNNING ? "paused"
				    : s->idle_stopped && s->state == SBX_STOPPED
					    ? "stopped (idle)"
					    : state_name(s->state)));
	format_time(&s->created, when, sizeof(when));
	PUT(cJSON_AddStringToObject(root, "created", when));
	PUT(cJSON_AddNumberToObject(root, "runs", s->nruns));

	struct run *r = s->nruns ? s->runs[s->nruns - 1] : NULL;
	if (r) {
		cJSON *latest = cJSON_AddObjectToObject(root, "latest");
		PUT(latest);
		sandbox_status_line_locked(s, r, line, sizeof(line));
		line[strcspn(line, "\n")] = '\0';
		PUT(cJSON_AddNumberToObject(latest, "run", r->number));
		PUT(cJSON_AddStringToObject(latest, "status", line));
		format_time(&r->started, when, sizeof(when));
		PUT(cJSON_AddStringToObject(latest, "started", when));
		if (r->phase == RUN_ENDED) {
			format_time(&r->ended, when, sizeof(when));
			PUT(cJSON_AddStringToObject(latest, "ended", when));
		}
		PUT(cJSON_AddBoolToObject(latest, "truncated", r->truncated));
		if (r->reason)
			PUT(cJSON_AddStringToObject(latest, "reason", r->reason));
	} else {
		PUT(cJSON_AddNullToObject(root, "latest"));
	}

	cJSON *settings = cJSON_AddObjectToObject(root, "settings");
	cJSON *env = cJSON_AddObjectToObject(settings, "env");
	PUT(env);
	for (size_t i = 0; i < s->env.n; i++)
		PUT(cJSON_AddStringToObject(env, s->env.keys[i], s->env.values[i]));
	PUT(cJSON_AddStringToObject(settings, "workdir", s->workdir));
	PUT(cJSON_AddNumberToObject(settings, "timeout", (double)s->timeout));
	PUT(cJSON_AddStringToObject(settings, "stdin", s->stdin_open ? "open" : "eof"));

	cJSON *auth = cJSON_AddObjectToObject(root, "auth");
	cJSON *names = cJSON_AddArrayToObject(auth, "env");
	PUT(names);
	for (size_t i = 0; i < s->auth.n; i++)
		PUT(json_put_item(names, NULL, cJSON_CreateString(s->auth.keys[i])));
	cJSON *files = cJSON_AddArrayToObject(auth, "files");
	PUT(files);
	for (size_t i = 0; i < s->nauth_files; i++)
		PUT(json_put_item(files, NULL, cJSON_CreateString(s->auth_files[i])));

	/* How runs reach the sandbox: its agent, or one docker exec each. */
	char why[240] = "no agent";
	const char *transport = "exec";
	if (s->chan)
		agent_channel_describe(s->chan, why, sizeof(why), &transport);
	cJSON_AddStringToObject(root, "transport", transport);
	if (strcmp(transport, "agent") != 0)
		cJSON_AddStringToObject(root, "transport_reason", why);

	const char *error = latest_error_locked(s);
	char node_error[128];
	if (node_down) {
		/* Says more than any run's reason: the whole node is away. */
		snprintf(node_error, sizeof(node_error),
			 "swarm node %s does not answer: runs there end lost", node);
		error = node_error;
	}
	if (error)
		PUT(cJSON_AddStringToObject(root, "error", error));
	else
		PUT(cJSON_AddNullToObject(root, "error"));
	sbx_unlock(&model_lock);

	char *text = full ? cJSON_Print(root) : NULL;
	if (!text)
		return NULL;
	size_t n = strlen(text);
	char *out = realloc(text, n + 2);
	if (!out) {
		free(text);
		return NULL;
	}
	out[n] = '\n';
	out[n + 1] = '\0';
	return out;
}
