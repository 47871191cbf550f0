/* Placement by Docker Swarm: see swarm.h and docs/scale-out.md. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine_internal.h"
#include "engines.h"
#include "json.h"
#include "log.h"
#include "swarm.h"

/* Set once at start-up (templates_init), read-only afterwards. */
static char *manager; /* NULL: the mount's default engine */
static char **node_ids;
static char **node_urls;
static size_t nnodes;
static bool configured;

/* How long a task may take from service create to a running container. */
#define PLACE_TIMEOUT_S 60

static bool url_ok(const char *u)
{
	return (!strncmp(u, "unix:///", 8) || !strncmp(u, "tcp://", 6) ||
		!strncmp(u, "ssh://", 6)) &&
	       !strpbrk(u, " \t\n\r") && strlen(u) < 512;
}

static bool node_id_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
			return false;
	return true;
}

void swarm_config_free(void)
{
	for (size_t i = 0; i < nnodes; i++) {
		free(node_ids[i]);
		free(node_urls[i]);
	}
	free(node_ids);
	free(node_urls);
	free(manager);
	node_ids = node_urls = NULL;
	manager = NULL;
	nnodes = 0;
	configured = false;
}

int swarm_config_load(const cJSON *section, struct sbx_err *err)
{
	if (!cJSON_IsObject(section))
		return sbx_err_set(err, EINVAL, "swarm: must be an object");
	const cJSON *v;
	cJSON_ArrayForEach(v, section)
	{
		if (strcmp(v->string, "manager") && strcmp(v->string, "nodes"))
			return sbx_err_set(err, EINVAL, "swarm: unknown key \"%.60s\"", v->string);
	}
	swarm_config_free();
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(section, "manager");
	if (m && !cJSON_IsNull(m)) {
		if (!cJSON_IsString(m) || !url_ok(m->valuestring))
			return sbx_err_set(err, EINVAL,
					   "swarm: manager: a unix://, tcp:// or ssh:// URL");
		if (!(manager = strdup(m->valuestring)))
			return sbx_err_set(err, ENOMEM, "swarm: out of memory");
	}
	const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(section, "nodes");
	if (!cJSON_IsObject(nodes) || !nodes->child)
		return sbx_err_set(err, EINVAL,
				   "swarm: nodes: an object of NODE_ID: ENGINE_URL, "
				   "one at least");
	size_t n = (size_t)cJSON_GetArraySize(nodes);
	if (n > SWARM_MAX_NODES)
		return sbx_err_set(err, EINVAL, "swarm: nodes: at most %d", SWARM_MAX_NODES);
	node_ids = calloc(n, sizeof(*node_ids));
	node_urls = calloc(n, sizeof(*node_urls));
	if (!node_ids || !node_urls)
		return sbx_err_set(err, ENOMEM, "swarm: out of memory");
	cJSON_ArrayForEach(v, nodes)
	{
		if (!node_id_ok(v->string))
			return sbx_err_set(err, EINVAL,
					   "swarm: nodes: \"%.70s\" is not a node id "
					   "(docker node ls -q)",
					   v->string);
		if (!cJSON_IsString(v) || !url_ok(v->valuestring))
			return sbx_err_set(err, EINVAL,
					   "swarm: nodes: %s: a unix://, tcp:// or "
					   "ssh:// URL",
					   v->string);
		node_ids[nnodes] = strdup(v->string);
		node_urls[nnodes] = strdup(v->valuestring);
		nnodes++;
		if (!node_ids[nnodes - 1] || !node_urls[nnodes - 1])
			return sbx_err_set(err, ENOMEM, "swarm: out of memory");
	}
	configured = true;
	return 0;
}

bool swarm_configured(void)
{
	return configured;
}

int swarm_check_template(const struct template *t, struct sbx_err *err)
{
	/* Each refusal is a setting a service spec cannot carry as the
	 * template means it: never placed with less than was asked. */
	if (!configured)
		return sbx_err_set(err, EINVAL,
				   "placement: swarm needs a \"swarm\" section in "
				   "the config file");
	if (t->engine)
		return sbx_err_set(err, EINVAL, "placement: swarm picks the node: no \"engine\"");
	if (t->nworkspaces)
		return sbx_err_set(err, EINVAL,
				   "placement: swarm: workspaces are host "
				   "directories, which another node does not have");
	if (t->network && strcmp(t->network, "none") &&
	    (!strcmp(t->network, "host") || !strcmp(t->network, "bridge") ||
	     !strcmp(t->network, "default") || !strncmp(t->network, "container:", 10)))
		return sbx_err_set(err, EINVAL,
				   "placement: swarm: network \"%s\" does not exist "
				   "in a swarm (name an overlay network, or none)",
				   t->network);
	return 0;
}

static const struct engine *manager_engine(void)
{
	return engine_for(manager);
}

size_t swarm_endpoints(const char **out, size_t max)
{
	size_t n = 0;
	if (manager && n < max)
		out[n++] = manager;
	for (size_t i = 0; i < nnodes && n < max; i++)
		out[n++] = node_urls[i];
	return n;
}

void swarm_touch_engines(void)
{
	if (!configured)
		return;
	manager_engine();
	for (size_t i = 0; i < nnodes; i++)
		engine_for(node_urls[i]);
}

const char *swarm_node_of(const struct engine *e)
{
	for (size_t i = 0; e && i < nnodes; i++)
		if (e->endpoint && !strcmp(e->endpoint, node_urls[i]))
			return node_ids[i];
	return NULL;
}

/* ---- argv of a CLI call ---- */

struct words {
	char **v;
	size_t n, cap;
	bool oom;
};

static void add(struct words *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct words *w, const char *fmt, ...)
{
	if (w->oom)
		return;
	if (w->n + 2 > w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 64;
		char **v = realloc(w->v, cap * sizeof(*v));
		if (!v) {
			w->oom = true;
			return;
		}
		w->v = v;
		w->cap = cap;
	}
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&w->v[w->n], fmt, ap) < 0)
		w->oom = true;
	else
		w->v[++w->n] = NULL;
	va_end(ap);
}

static void words_free(struct words *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->v[i]);
	free(w->v);
}
#define cleanup_words __attribute__((cleanup(words_free)))

static int run(const struct engine *e, const char *what, struct words *w, struct spawn_result *res,
	       struct sbx_err *err)
{
	if (w->oom) {
		if (res)
			memset(res, 0, sizeof(*res));
		return sbx_err_set(err, ENOMEM, "%s: out of memory", what);
	}
	return engine_cli(e, what, (const char *const *)w->v, NULL, 0, res, err);
}

/* The internal overlay network of this mount's sandboxes without a
 * network: swarm has no "none", and an internal network has no gateway,
 * so nothing leaves it (docs/scale-out.md). */
static int ensure_none_network(const struct engine *m, char **name, struct sbx_err *err)
{
	if (asprintf(name, "sandboxfs-%s-none", m->instance) < 0) {
		*name = NULL;
		return sbx_err_set(err, ENOMEM, "out of memory");
	}
	cleanup_words struct words w = { 0 };
	add(&w, "network");
	add(&w, "inspect");
	add(&w, "--format");
	add(&w, "{{.Driver}} {{.Internal}}");
	add(&w, "%s", *name);
	struct spawn_result res;
	struct sbx_err ign = { 0 };
	int rc = run(m, "network inspect", &w, &res, &ign);
	if (rc == 0) {
		bool ok = res.out && !strncmp(res.out, "overlay true", 12);
		spawn_result_free(&res);
		return ok ? 0
			  : sbx_err_set(err, EPERM,
					"network %s exists but is not an internal "
					"overlay network",
					*name);
	}
	spawn_result_free(&res);
	cleanup_words struct words c = { 0 };
	add(&c, "network");
	add(&c, "create");
	add(&c, "--driver");
	add(&c, "overlay");
	add(&c, "--internal");
	add(&c, "--label");
	add(&c, "%s=%s", SBX_LABEL_INSTANCE, m->instance);
	add(&c, "%s", *name);
	rc = run(m, "network create", &c, NULL, err);
	/* Another mkdir made it meanwhile. */
	return rc < 0 && strstr(err->msg, "already exists") ? 0 : rc;
}

static int service_rm(const struct engine *m, const char *service, struct sbx_err *err)
{
	cleanup_words struct words w = { 0 };
	add(&w, "service");
	add(&w, "rm");
	add(&w, "%s", service);
	int rc = run(m, "service rm", &w, NULL, err);
	return rc < 0 && (rc == -ENOENT || strstr(err->msg, "not found") ||
			  strstr(err->msg, "No such service"))
		       ? 0
		       : rc;
}

static int service_create(const struct engine *m, const char *service, const char *name,
			  const char *image, const char *mountpoint, const struct template *t,
			  const char *network, struct sbx_err *err)
{
	cleanup_words struct words w = { 0 };
	add(&w, "service");
	add(&w, "create");
	add(&w, "--detach");
	add(&w, "--quiet");
	add(&w, "--name");
	add(&w, "%s", service);
	add(&w, "--replicas");
	add(&w, "1");
	add(&w, "--restart-condition");
	add(&w, "none");
	add(&w, "--no-resolve-image");
	const char *labels[][2] = { { SBX_LABEL_INSTANCE, m->instance },
				    { SBX_LABEL_SANDBOX, name },
				    { SBX_LABEL_MOUNTPOINT, mountpoint ? mountpoint : "" } };
	for (size_t i = 0; i < 3; i++) {
		add(&w, "--label");
		add(&w, "%s=%s", labels[i][0], labels[i][1]);
		add(&w, "--container-label");
		add(&w, "%s=%s", labels[i][0], labels[i][1]);
	}
	for (size_t i = 0; i < t->labels.n; i++) {
		add(&w, "--container-label");
		add(&w, "%s=%s", t->labels.keys[i], t->labels.values[i]);
	}
	add(&w, "--cap-drop");
	add(&w, "ALL");
	for (size_t i = 0; i < t->ncap_add; i++) {
		add(&w, "--cap-add");
		add(&w, "%s", t->cap_add[i]);
	}
	if (t->pids > 0) {
		add(&w, "--limit-pids");
		add(&w, "%ld", t->pids);
	}
	if (t->memory > 0) {
		add(&w, "--limit-memory");
		add(&w, "%lld", t->memory);
	}
	if (t->cpus > 0) {
		add(&w, "--limit-cpu");
		add(&w, "%.3f", t->cpus);
	}
	if (t->init)
		add(&w, "--init");
	if (t->user && t->user[0]) {
		add(&w, "--user");
		add(&w, "%s", t->user);
	}
	if (t->read_only) {
		add(&w, "--read-only");
		add(&w, "--mount");
		add(&w, "type=tmpfs,destination=/tmp,tmpfs-mode=1777");
	}
	for (size_t i = 0; i < t->env.n; i++) {
		add(&w, "--env");
		add(&w, "%s=%s", t->env.keys[i], t->env.values[i]);
	}
	if (t->workdir && t->workdir[0]) {
		add(&w, "--workdir");
		add(&w, "%s", t->workdir);
	}
	add(&w, "--network");
	add(&w, "%s", network);
	for (size_t i = 0; i < t->nconstraints; i++) {
		add(&w, "--constraint");
		add(&w, "%s", t->constraints[i]);
	}
	add(&w, "%s", image);
	add(&w, "sleep");
	add(&w, "2147483647");
	return run(m, "service create", &w, NULL, err);
}

/* One look at the service's task: 1 with node and container when it
 * runs, 0 while it is on its way, or -errno when it failed. */
static int task_state(const struct engine *m, const char *service, char **node, char **cid,
		      char *why, size_t whylen, struct sbx_err *err)
{
	cleanup_words struct words w = { 0 };
	add(&w, "service");
	add(&w, "ps");
	add(&w, "--quiet");
	add(&w, "--no-trunc");
	add(&w, "%s", service);
	struct spawn_result res;
	int rc = run(m, "service ps", &w, &res, err);
	cleanup_free char *task = NULL;
	if (rc == 0 && res.out && res.out[0]) {
		task = strndup(res.out, strcspn(res.out, "\n"));
	}
	spawn_result_free(&res);
	if (rc < 0 || !task)
		return rc;
	cleanup_words struct words i = { 0 };
	add(&i, "inspect");
	add(&i, "--type");
	add(&i, "task");
	add(&i, "%s", task);
	if ((rc = run(m, "inspect task", &i, &res, err)) < 0) {
		spawn_result_free(&res);
		return rc == -ENOENT ? 0 : rc;
	}
	/* A new task has no NodeID yet: read it as JSON, fields may be absent. */
	cleanup_cjson cJSON *root = cJSON_ParseWithLength(res.out ? res.out : "", res.out_len);
	spawn_result_free(&res);
	const cJSON *tk = cJSON_GetArrayItem(root, 0);
	const cJSON *st = cJSON_GetObjectItemCaseSensitive(tk, "Status");
	const char *nid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(tk, "NodeID"));
	const char *state = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "State"));
	const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "Err"));
	const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(st, "ContainerStatus"), "ContainerID"));
	if (!msg)
		msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "Message"));
	if (msg && msg[0])
		snprintf(why, whylen, "%s", msg);
	if (!state)
		return 0;
	if (!strcmp(state, "running") && c && strlen(c) == 64 && nid && nid[0]) {
		*node = strdup(nid);
		*cid = strdup(c);
		return *node && *cid ? 1 : sbx_err_set(err, ENOMEM, "out of memory");
	}
	static const char *const over[] = { "failed",	"rejected", "shutdown",
					    "complete", "orphaned", "remove" };
	for (size_t k = 0; k < SBX_ARRAY_SIZE(over); k++)
		if (!strcmp(state, over[k]))
			return sbx_err_set(err, EIO, "the task of service %s is %s: %s", service,
					   state, why[0] ? why : "no reason given");
	return 0;
}

static const struct engine *node_engine(const char *node_id)
{
	for (size_t i = 0; i < nnodes; i++)
		if (!strcmp(node_ids[i], node_id))
			return engine_for(node_urls[i]);
	return NULL;
}

/* swarm cannot ask for no-new-privileges (docker 20.10's service spec has
 * no such field): the node's daemon must set it, and it is checked. */
static int verify_hardening(const struct engine *e, const char *cid, const char *node_id,
			    struct sbx_err *err)
{
	static const char script[] =
		"grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status || exit 3; "
		"grep -q '^CapBnd:[[:space:]]*0*$' /proc/self/status && exit 0; exit 4";
	struct sbx_err e2 = { 0 };
	if (engine_exec_script(e, cid, script, NULL, 0, &e2) == 0)
		return 0;
	return sbx_err_set(err, EPERM,
			   "node %s does not hold the sandbox to no-new-privileges "
			   "with no capabilities (set \"no-new-privileges\": true in its "
			   "daemon.json; docs/scale-out.md): %s",
			   node_id, e2.msg);
}

int swarm_create(const char *name, const char *image, const char *mountpoint,
		 const struct template *t, const struct engine **node, char **id,
		 struct sbx_err *err)
{
	*node = NULL;
	*id = NULL;
	const struct engine *m = manager_engine();
	if (!m)
		return sbx_err_set(err, ENOMEM, "out of memory, or too many engines");
	cleanup_free char *service = NULL, *network = NULL;
	if (asprintf(&service, "sandboxfs-%s-%s", m->instance, name) < 0) {
		service = NULL;
		return sbx_err_set(err, ENOMEM, "out of memory");
	}
	int rc = 0;
	if (!t->network || !strcmp(t->network, "none"))
		rc = ensure_none_network(m, &network, err);
	else if (!(network = strdup(t->network)))
		rc = sbx_err_set(err, ENOMEM, "out of memory");
	if (rc == 0)
		rc = service_create(m, service, name, image, mountpoint, t, network, err);
	if (rc < 0 && (strstr(err->msg, "AlreadyExists") || strstr(err->msg, "already exists")))
		return sbx_err_set(err, EEXIST, "service %s exists", service);
	if (rc == -ETIMEDOUT || rc == -EIO) {
		/* The manager may have made it all the same: not left behind. */
		struct sbx_err ign = { 0 };
		service_rm(m, service, &ign);
	}
	if (rc < 0)
		return rc;

	cleanup_free char *node_id = NULL, *cid = NULL;
	char why[256] = "";
	time_t deadline = time(NULL) + PLACE_TIMEOUT_S;
	while ((rc = task_state(m, service, &node_id, &cid, why, sizeof(why), err)) == 0) {
		if (time(NULL) > deadline) {
			rc = sbx_err_set(err, ETIMEDOUT, "swarm placed no task within %ds: %s",
					 PLACE_TIMEOUT_S, why[0] ? why : "no reason given");
			break;
		}
		usleep(100 * 1000);
	}
	const struct engine *e = NULL;
	if (rc > 0 && !(e = node_engine(node_id)))
		rc = sbx_err_set(err, EINVAL,
				 "swarm placed it on node %s, which the swarm "
				 "section does not name",
				 node_id);
	if (rc > 0)
		rc = verify_hardening(e, cid, node_id, err);
	if (rc < 0) {
		struct sbx_err ign = { 0 };
		if (service_rm(m, service, &ign) < 0)
			log_warn("removing service %s: %s", service, ign.msg);
		return rc;
	}
	*node = e;
	*id = steal_pointer(&cid);
	log_info("sandbox %s: placed by swarm on node %s", name, node_id);
	return 0;
}

int swarm_remove(const struct engine *e, const char *name, struct sbx_err *err)
{
	if (!swarm_node_of(e))
		return 0;
	const struct engine *m = manager_engine();
	cleanup_free char *service = NULL;
	if (!m || asprintf(&service, "sandboxfs-%s-%s", m->instance, name) < 0) {
		service = NULL;
		return sbx_err_set(err, ENOMEM, "out of memory");
	}
	return service_rm(m, service, err);
}
