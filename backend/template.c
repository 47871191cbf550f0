/* Templates: parsing and validation (cJSON), matching, persistence. */
#include "events.h"
#include "template.h"

#include <ctype.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "json.h"
#include "log.h"
#include "state.h"
#include "swarm.h"
#include "workspace.h"

/* templates_lock guards everything below. */
static pthread_mutex_t templates_lock = PTHREAD_MUTEX_INITIALIZER;
static struct template **list; /* in matching order */
static size_t nlist;
static char **deleted; /* config templates deleted at runtime */
static size_t ndeleted;
static uint32_t next_id = 1;
static char *persist_path;

static const char *const known_keys[] = {
	"image",   "match", "workspace", "workdir",   "env",	     "user",   "network",
	"memory",  "cpus",  "pids",	 "read_only", "init",	     "labels", "engine",
	"cap_add", "ttl",   "on_idle",	 "placement", "constraints", "pool",
};

void template_free(struct template *t)
{
	if (!t)
		return;
	free(t->name);
	free(t->match);
	free(t->image);
	for (size_t i = 0; i < t->nworkspaces; i++)
		free(t->workspaces[i].path);
	free(t->workspaces);
	free(t->workdir);
	kv_list_free(&t->env);
	free(t->user);
	free(t->network);
	kv_list_free(&t->labels);
	for (size_t i = 0; i < t->ncap_add; i++)
		free(t->cap_add[i]);
	free(t->cap_add);
	free(t->engine);
	for (size_t i = 0; i < t->nconstraints; i++)
		free(t->constraints[i]);
	free(t->constraints);
	free(t->text);
	free(t);
}

struct template *template_dup(const struct template *t)
{
	struct template *c = NULL;
	/* Re-parsing the canonical text is the simplest deep copy there is. */
	if (template_parse(t->name, t->text, strlen(t->text), &c, NULL) < 0)
		return NULL;
	c->id = t->id;
	return c;
}

/* ---- validation ---- */

static bool chars_ok(const char *s, const char *extra, bool alnum_first)
{
	if (!*s || (alnum_first && !isalnum((unsigned char)*s)))
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr(extra, *s))
			return false;
	return true;
}

/* One workspace inside another of the same template would let the sandbox
 * move the inner one's mount point around from the outer one. */
static int check_nesting(const struct template *t, struct sbx_err *err)
{
	for (size_t i = 0; i < t->nworkspaces; i++) {
		char a[PATH_MAX], b[PATH_MAX];
		if (!realpath(t->workspaces[i].path, a))
			continue;
		for (size_t j = 0; j < t->nworkspaces; j++)
			if (j != i && realpath(t->workspaces[j].path, b) && strcmp(a, b) != 0 &&
			    workspace_path_within(a, b))
				return sbx_err_set(err, EINVAL,
						   "workspace %s: inside workspace %s of "
						   "the same template",
						   t->workspaces[i].path, t->workspaces[j].path);
	}
	return 0;
}

/* The socket path of a unix:// engine endpoint, or NULL. */
static const char *unix_socket(const char *endpoint)
{
	return endpoint && !strncmp(endpoint, "unix://", 7) ? endpoint + 7 : NULL;
}

/* Engines other than the usual sockets: the template's own, the CLI's
 * DOCKER_HOST, and every engine another template names (checked at define). */
static int check_workspace_vs_socket(const struct template *t, const char *sockpath,
				     struct sbx_err *err)
{
	char sock[PATH_MAX];
	if (!sockpath || !realpath(sockpath, sock))
		return 0;
	for (size_t i = 0; i < t->nworkspaces; i++) {
		char real[PATH_MAX];
		if (realpath(t->workspaces[i].path, real) && workspace_path_within(sock, real))
			return sbx_err_set(err, EINVAL,
					   "workspace %s: would expose the engine socket %s",
					   t->workspaces[i].path, sockpath);
	}
	return 0;
}

static int parse_size(const cJSON *v, long long *out, struct sbx_err *err)
{
	if (cJSON_IsNumber(v)) {
		if (v->valuedouble < 0 || v->valuedouble > 9e15)
			return sbx_err_set(err, EINVAL, "memory: out of range");
		*out = (long long)v->valuedouble;
		return 0;
	}
	if (!cJSON_IsString(v))
		return sbx_err_set(err, EINVAL,
				   "memory: a number of bytes or a string like \"2g\"");
	if (parse_size_suffix(v->valuestring, 1LL << 50, out) < 0)
		return sbx_err_set(err, EINVAL, "memory: cannot parse \"%.40s\"", v->valuestring);
	return 0;
}

static int string_field(const cJSON *v, const char *key, char **out, struct sbx_err *err)
{
	if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) > 4095)
		return sbx_err_set(err, EINVAL, "%s: must be a non-empty string", key);
	*out = strdup(v->valuestring);
	return *out ? 0 : sbx_err_set(err, ENOMEM, "out of memory");
}

static int parse_workspaces(struct template *t, const cJSON *v, struct sbx_err *err)
{
	size_t n = cJSON_IsArray(v) ? (size_t)cJSON_GetArraySize(v) : 1;
	if (!cJSON_IsArray(v) && !cJSON_IsString(v))
		return sbx_err_set(err, EINVAL, "workspace: a path or a list of paths");
	t->workspaces = calloc(n ? n : 1, sizeof(*t->workspaces));
	if (!t->workspaces)
		return sbx_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const cJSON *item = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, (int)i) : v;
		if (!cJSON_IsString(item))
			return sbx_err_set(err, EINVAL, "workspace: entries must be strings");
		char *p = strdup(item->valuestring);
		if (!p)
			return sbx_err_set(err, ENOMEM, "out of memory");
		t->workspaces[t->nworkspaces++].path = p;
		size_t len = strlen(p);
		if (len > 3 && (!strcmp(p + len - 3, ":ro") || !strcmp(p + len - 3, ":rw"))) {
			t->workspaces[t->nworkspaces - 1].ro = p[len - 2] == 'r' &&
							       p[len - 1] == 'o';
			p[len - 3] = '\0';
		}
		if (strchr(p, ':') || strchr(p, ','))
			return sbx_err_set(err, EINVAL, "workspace %s: ':' and ',' are not allowed",
					   p);
		int rc = workspace_check(p, err);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int parse_string_map(const cJSON *v, const char *key, bool env_names, struct kv_list *out,
			    struct sbx_err *err)
{
	if (!cJSON_IsObject(v))
		return sbx_err_set(err, EINVAL, "%s: must be an object of strings", key);
	const cJSON *item;
	cJSON_ArrayForEach(item, v)
	{
		if (!cJSON_IsString(item))
			return sbx_err_set(err, EINVAL, "%s.%s: must be a string", key,
					   item->string);
		if (env_names && parse_env_name(item->string, strlen(item->string), err) < 0)
			return sbx_err_wrap(err, "%s", key);
		/* Label keys are what docker documents (letters, digits, . _ - /),
		 * checked here so that the reason is ours; ',' and newlines in
		 * values would make `docker ps`'s "k=v,k=v" ambiguous. */
		if (!env_names &&
		    (!chars_ok(item->string, "._-/", true) || strlen(item->string) > 128 ||
		     !strncasecmp(item->string, "sandboxfs.", 10)))
			return sbx_err_set(err, EINVAL,
					   "%s: key \"%.60s\" is not allowed (letters, digits, "
					   "'.', '_', '-', '/'; not sandboxfs.*)",
					   key, item->string);
		if (strchr(item->valuestring, '\n') ||
		    (!env_names && strchr(item->valuestring, ',')))
			return sbx_err_set(err, EINVAL, "%s.%s: no newlines%s", key, item->string,
					   env_names ? "" : " or ','");
		if (kv_list_set(out, item->string, item->valuestring) < 0)
			return sbx_err_set(err, ENOMEM, "out of memory");
	}
	return 0;
}

/* Capabilities a template may give back: docker's own default set (moby
 * oci/caps/defaults.go), nothing more.  An allowlist, because docker
 * normalises names itself ("CAP_CAP_SYS_ADMIN" is SYS_ADMIN to it): a name
 * is canonicalised exactly once here and only the canonical kernel spelling
 * goes to docker. */
static const char *const allowed_caps[] = {
	"CAP_AUDIT_WRITE", "CAP_CHOWN",	  "CAP_DAC_OVERRIDE",	  "CAP_FOWNER",	    "CAP_FSETID",
	"CAP_KILL",	   "CAP_MKNOD",	  "CAP_NET_BIND_SERVICE", "CAP_NET_RAW",    "CAP_SETFCAP",
	"CAP_SETGID",	   "CAP_SETPCAP", "CAP_SETUID",		  "CAP_SYS_CHROOT",
};

/* The canonical "CAP_XXX" of a name given as XXX or CAP_XXX in any case,
 * or NULL.  Nothing is trimmed: whitespace, numbers, "ALL" and a repeated
 * prefix are simply not in the list. */
const char *template_canonical_cap(const char *name)
{
	char buf[40];
	size_t n = strlen(name);
	bool prefixed = n >= 4 && !strncasecmp(name, "CAP_", 4);
	if (n == 0 || n + (prefixed ? 0 : 4) >= sizeof(buf))
		return NULL;
	snprintf(buf, sizeof(buf), "%s%s", prefixed ? "" : "CAP_", name);
	for (char *p = buf; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(allowed_caps); i++)
		if (!strcmp(buf, allowed_caps[i]))
			return allowed_caps[i];
	return NULL;
}

static int parse_caps(struct template *t, const cJSON *v, struct sbx_err *err)
{
	if (!cJSON_IsArray(v))
		return sbx_err_set(err, EINVAL, "cap_add: a list of capability names");
	size_t n = (size_t)cJSON_GetArraySize(v);
	t->cap_add = calloc(n ? n : 1, sizeof(char *));
	if (!t->cap_add)
		return sbx_err_set(err, ENOMEM, "out of memory");
	const cJSON *item;
	cJSON_ArrayForEach(item, v)
	{
		if (!cJSON_IsString(item))
			return sbx_err_set(err, EINVAL, "cap_add: entries must be strings");
		const char *c = template_canonical_cap(item->valuestring);
		if (!c)
			return sbx_err_set(err, EINVAL,
					   "cap_add: \"%.40s\" is not one of docker's default "
					   "capabilities (docs/templates.md)",
					   item->valuestring);
		char *dup = strdup(c);
		if (!dup)
			return sbx_err_set(err, ENOMEM, "out of memory");
		t->cap_add[t->ncap_add++] = dup;
	}
	return 0;
}

/* Swarm placement constraints ("node.labels.zone==a"): passed to
 * --constraint as they are, so only a plain expression is taken. */
static int parse_constraints(struct template *t, const cJSON *v, struct sbx_err *err)
{
	int n = cJSON_GetArraySize(v);
	if (!cJSON_IsArray(v) || n > 16)
		return sbx_err_set(err, EINVAL, "constraints: an array of at most 16 strings");
	if (!(t->constraints = calloc((size_t)n + 1, sizeof(*t->constraints))))
		return sbx_err_set(err, ENOMEM, "out of memory");
	const cJSON *c;
	cJSON_ArrayForEach(c, v)
	{
		if (!cJSON_IsString(c) || !c->valuestring[0] || strlen(c->valuestring) > 200 ||
		    !strstr(c->valuestring, "=") || c->valuestring[0] == '-' ||
		    strpbrk(c->valuestring, "\n\r\t"))
			return sbx_err_set(err, EINVAL,
					   "constraints: \"KEY==VALUE\" or "
					   "\"KEY!=VALUE\" strings");
		if (!(t->constraints[t->nconstraints++] = strdup(c->valuestring)))
			return sbx_err_set(err, ENOMEM, "out of memory");
	}
	return 0;
}

static int parse_key(struct template *t, const cJSON *v, struct sbx_err *err)
{
	const char *k = v->string;
	int rc; /* not -err->code: template_dup() passes no err */
	if (!strcmp(k, "image")) {
		if ((rc = string_field(v, k, &t->image, err)) < 0)
			return rc;
		if (parse_image_name(t->image, strlen(t->image), err) < 0)
			return sbx_err_wrap(err, "image");
	} else if (!strcmp(k, "match")) {
		return string_field(v, k, &t->match, err);
	} else if (!strcmp(k, "workspace")) {
		return parse_workspaces(t, v, err);
	} else if (!strcmp(k, "workdir")) {
		if ((rc = string_field(v, k, &t->workdir, err)) < 0)
			return rc;
		if (t->workdir[0] != '/' || strchr(t->workdir, '\n'))
			return sbx_err_set(err, EINVAL, "workdir: must be an absolute path");
	} else if (!strcmp(k, "env")) {
		return parse_string_map(v, k, true, &t->env, err);
	} else if (!strcmp(k, "labels")) {
		return parse_string_map(v, k, false, &t->labels, err);
	} else if (!strcmp(k, "user")) {
		if ((rc = string_field(v, k, &t->user, err)) < 0)
			return rc;
		if (!chars_ok(t->user, "_.:-", true))
			return sbx_err_set(err, EINVAL, "user: not a user name or uid[:gid]");
	} else if (!strcmp(k, "network")) {
		if ((rc = string_field(v, k, &t->network, err)) < 0)
			return rc;
		if (!chars_ok(t->network, "_.-", true) || !strcmp(t->network, "host"))
			return sbx_err_set(
				err, EINVAL,
				"network: \"none\", \"bridge\" or a network name (not host)");
	} else if (!strcmp(k, "memory")) {
		return parse_size(v, &t->memory, err);
	} else if (!strcmp(k, "cpus")) {
		double c = cJSON_IsNumber(v)   ? v->valuedouble
			   : cJSON_IsString(v) ? strtod(v->valuestring, NULL)
					       : -1;
		if (!(c >= 0 && c <= 1024))
			return sbx_err_set(err, EINVAL, "cpus: a number from 0 to 1024");
		/* docker's smallest limit is 0.01 CPU; less would round (in our
		 * "%.3f" or in docker) to 0, which means no limit at all. */
		if (c > 0 && c < 0.01)
			return sbx_err_set(
				err, EINVAL,
				"cpus: %g is below docker's smallest limit 0.01 (0 = no limit)", c);
		t->cpus = c;
	} else if (!strcmp(k, "pids")) {
		if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 4194304 ||
		    v->valuedouble != floor(v->valuedouble))
			return sbx_err_set(err, EINVAL, "pids: a whole number (0 = no limit)");
		t->pids = (long)v->valuedouble;
	} else if (!strcmp(k, "ttl")) {
		if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 31536000 ||
		    v->valuedouble != floor(v->valuedouble))
			return sbx_err_set(err, EINVAL,
					   "ttl: whole seconds up to a year (0 = none)");
		t->ttl = (long)v->valuedouble;
	} else if (!strcmp(k, "on_idle")) {
		if (!cJSON_IsString(v) ||
		    (strcmp(v->valuestring, "stop") != 0 && strcmp(v->valuestring, "remove") != 0))
			return sbx_err_set(err, EINVAL, "on_idle: \"stop\" or \"remove\"");
		t->idle_remove = !strcmp(v->valuestring, "remove");
	} else if (!strcmp(k, "pool")) {
		if (!cJSON_IsNumber(v) || v->valuedouble < 0 ||
		    v->valuedouble > TEMPLATE_MAX_POOL || v->valuedouble != floor(v->valuedouble))
			return sbx_err_set(err, EINVAL, "pool: a whole number from 0 to %d",
					   TEMPLATE_MAX_POOL);
		t->pool = (long)v->valuedouble;
	} else if (!strcmp(k, "read_only") || !strcmp(k, "init")) {
		if (!cJSON_IsBool(v))
			return sbx_err_set(err, EINVAL, "%s: true or false", k);
		*(!strcmp(k, "init") ? &t->init : &t->read_only) = cJSON_IsTrue(v);
	} else if (!strcmp(k, "engine")) {
		if ((rc = string_field(v, k, &t->engine, err)) < 0)
			return rc;
		bool url = strstr(t->engine, "://") != NULL;
		if (url ? strpbrk(t->engine, " \n\t") != NULL : !chars_ok(t->engine, "_.+-", true))
			return sbx_err_set(err, EINVAL, "engine: a context name or a host URL");
	} else if (!strcmp(k, "cap_add")) {
		return parse_caps(t, v, err);
	} else if (!strcmp(k, "placement")) {
		if (!cJSON_IsString(v) ||
		    (strcmp(v->valuestring, "swarm") && strcmp(v->valuestring, "engine")))
			return sbx_err_set(err, EINVAL, "placement: \"engine\" or \"swarm\"");
		t->swarm = !strcmp(v->valuestring, "swarm");
	} else if (!strcmp(k, "constraints")) {
		return parse_constraints(t, v, err);
	}
	return 0;
}

int template_parse(const char *name, const char *json, size_t len, struct template **out,
		   struct sbx_err *err)
{
	if (parse_sandbox_name(name, err) < 0)
		return sbx_err_set(err, EINVAL, "template name \"%.63s\": invalid", name);
	const char *end = NULL;
	cleanup_cjson cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
	if (!root)
		return sbx_err_set(err, EINVAL, "template %s: malformed JSON", name);
	for (; end && (size_t)(end - json) < len; end++)
		if (!isspace((unsigned char)*end))
			return sbx_err_set(err, EINVAL,
					   "template %s: trailing bytes after the JSON", name);
	if (!cJSON_IsObject(root))
		return sbx_err_set(err, EINVAL, "template %s: must be a JSON object", name);

	struct template *t = calloc(1, sizeof(*t));
	if (!t)
		return sbx_err_set(err, ENOMEM, "out of memory");
	t->name = strdup(name);
	t->memory = TEMPLATE_DEFAULT_MEMORY;
	t->pids = TEMPLATE_DEFAULT_PIDS;
	t->pool = -1;
	t->init = true;
	int rc = t->name ? 0 : sbx_err_set(err, ENOMEM, "out of memory");
	const cJSON *v;
	cJSON_ArrayForEach(v, root)
	{
		if (rc < 0)
			break;
		bool known = false;
		for (size_t i = 0; i < SBX_ARRAY_SIZE(known_keys); i++)
			known |= !strcmp(v->string, known_keys[i]);
		for (const cJSON *w = root->child; w != v; w = w->next)
			if (!strcmp(w->string, v->string))
				known = false; /* a key given twice is as bad as an unknown one */
		if (!known)
			rc = sbx_err_set(err, EINVAL, "unknown or repeated key \"%.60s\"",
					 v->string);
		else
			rc = parse_key(t, v, err);
	}
	if (rc == 0)
		rc = check_nesting(t, err);
	if (rc == 0)
		rc = check_workspace_vs_socket(t, unix_socket(t->engine), err);
	if (rc == 0)
		rc = check_workspace_vs_socket(t, unix_socket(getenv("DOCKER_HOST")), err);
	if (rc == 0 && t->nconstraints && !t->swarm)
		rc = sbx_err_set(err, EINVAL, "constraints: only with \"placement\": \"swarm\"");
	if (rc == 0 && t->swarm)
		rc = swarm_check_template(t, err);
	if (rc == 0 && !t->network)
		t->network = strdup("none");
	if (rc == 0) {
		t->text = cJSON_Print(root);
		if (!t->text || !t->network)
			rc = sbx_err_set(err, ENOMEM, "out of memory");
	}
	if (rc < 0) {
		template_free(t);
		if (err && strncmp(err->msg, "template", 8) != 0)
			sbx_err_wrap(err, "template %s", name);
		return rc;
	}
	*out = t;
	return 0;
}

/* ---- the list ---- */

static ssize_t index_of(const char *name)
{
	for (size_t i = 0; i < nlist; i++)
		if (!strcmp(list[i]->name, name))
			return (ssize_t)i;
	return -1;
}

/* Replaces in place (keeping the id and the position) or appends. */
static int put_locked(struct template *t)
{
	ssize_t i = index_of(t->name);
	if (i >= 0) {
		t->id = list[i]->id;
		template_free(list[i]);
		list[i] = t;
		return 0;
	}
	struct template **v = realloc(list, (nlist + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	list = v;
	if (!t->id)
		t->id = next_id++;
	list[nlist++] = t;
	return 0;
}

static bool *runtime_flags; /* parallel to list: defined at runtime */

static void drop_locked(size_t i)
{
	template_free(list[i]);
	memmove(&list[i], &list[i + 1], (nlist - i - 1) * sizeof(*list));
	if (runtime_flags)
		memmove(&runtime_flags[i], &runtime_flags[i + 1], (nlist - i - 1) * sizeof(bool));
	nlist--;
}

static void undelete_locked(const char *name)
{
	for (size_t i = 0; i < ndeleted; i++) {
		if (!strcmp(deleted[i], name)) {
			free(deleted[i]);
			deleted[i] = deleted[--ndeleted];
			return;
		}
	}
}

/* STATE/templates.json: {"templates": [{"name", "template"}...], "deleted": [...]}
 * where "templates" are the runtime definitions in order. */

static int persist_locked(struct sbx_err *err)
{
	cleanup_cjson cJSON *root = cJSON_CreateObject();
	cJSON *arr = cJSON_AddArrayToObject(root, "templates");
	cJSON *del = cJSON_AddArrayToObject(root, "deleted");
	/* A file missing a template would lose it at the next start. */
	bool full = arr && del;
	for (size_t i = 0; full && i < nlist; i++) {
		if (!runtime_flags[i])
			continue;
		cJSON *e = cJSON_CreateObject();
		full = e && cJSON_AddStringToObject(e, "name", list[i]->name) &&
		       json_put_item(e, "template", cJSON_Parse(list[i]->text));
		full = json_put_item(arr, NULL, e) && full;
	}
	for (size_t i = 0; full && i < ndeleted; i++)
		full = json_put_item(del, NULL, cJSON_CreateString(deleted[i]));
	if (!full)
		return sbx_err_set(err, ENOMEM, "out of memory");
	cleanup_free char *text = cJSON_Print(root);
	if (!text)
		return sbx_err_set(err, ENOMEM, "out of memory");
	return write_file_atomic(persist_path, text, strlen(text), err);
}

static int set_runtime_flag_locked(const char *name, bool runtime)
{
	bool *f = realloc(runtime_flags, (nlist ? nlist : 1) * sizeof(*f));
	if (!f)
		return -ENOMEM;
	runtime_flags = f;
	ssize_t i = index_of(name);
	if (i >= 0)
		runtime_flags[i] = runtime;
	return 0;
}

/* No template's workspace may hold the socket of an engine another uses. */
static int check_against_list_locked(const struct template *t, struct sbx_err *err)
{
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < nlist; i++)
		rc = check_workspace_vs_socket(t, unix_socket(list[i]->engine), err);
	for (size_t i = 0; rc == 0 && t->engine && i < nlist; i++) {
		rc = check_workspace_vs_socket(list[i], unix_socket(t->engine), err);
		if (rc < 0)
			sbx_err_wrap(err, "template %s would expose its engine to template %s",
				     t->name, list[i]->name);
	}
	return rc;
}

static int define_locked(const char *name, const char *json, size_t len, bool runtime,
			 uint32_t want_id, struct sbx_err *err)
{
	struct template *t = NULL;
	int rc = template_parse(name, json, len, &t, err);
	if (rc < 0)
		return rc;
	rc = check_against_list_locked(t, err);
	if (rc < 0) {
		template_free(t);
		return rc;
	}
	t->id = want_id;
	if (put_locked(t) < 0) {
		template_free(t);
		return sbx_err_set(err, ENOMEM, "out of memory");
	}
	if (set_runtime_flag_locked(name, runtime) < 0)
		return sbx_err_set(err, ENOMEM, "out of memory");
	if (runtime)
		undelete_locked(name);
	return 0;
}

static int load_config(const char *path, struct sbx_err *err)
{
	cleanup_free char *text = NULL;
	size_t len;
	int rc = read_file(path, &text, &len, 16u << 20);
	if (rc < 0)
		return sbx_err_set(err, -rc, "config %s: %s", path, strerror(-rc));
	const char *end = NULL;
	cleanup_cjson cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
	if (!root) {
		/* Where the parser stopped, as an editor counts: 1-based. */
		size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
		/* cJSON points one past a character that cannot start a key
		 * (`{"a": 1,}`): back to that character. */
		if (off >= 1 && off <= len && !strchr(" \t\r\n\"", text[off - 1])) {
			size_t p = off - 1;
			while (p > 0 && strchr(" \t\r\n", text[p - 1]))
				p--;
			if (p > 0 && (text[p - 1] == ',' || text[p - 1] == '{'))
				off--;
		}
		unsigned line = 1, col = 1;
		for (size_t i = 0; i < off; i++) {
			if (text[i] == '\n') {
				line++;
				col = 1;
			} else {
				col++;
			}
		}
		return sbx_err_set(err, EINVAL, "config %s: malformed JSON at line %u column %u",
				   path, line, col);
	}
	if (!cJSON_IsObject(root))
		return sbx_err_set(err, EINVAL, "config %s: not a JSON object", path);
	const cJSON *v;
	cJSON_ArrayForEach(v, root)
	{
		if (strcmp(v->string, "templates") != 0 && strcmp(v->string, "swarm") != 0)
			return sbx_err_set(err, EINVAL, "config %s: unknown key \"%.60s\"", path,
					   v->string);
	}
	/* Before the templates: a template placed by swarm needs the section. */
	const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "swarm");
	if (sw && swarm_config_load(sw, err) < 0)
		return sbx_err_wrap(err, "config %s", path);
	const cJSON *tpls = cJSON_GetObjectItemCaseSensitive(root, "templates");
	if (tpls && !cJSON_IsObject(tpls))
		return sbx_err_set(err, EINVAL, "config %s: \"templates\" must be an object", path);
	cJSON_ArrayForEach(v, tpls)
	{
		cleanup_free char *one = cJSON_PrintUnformatted(v);
		if (!one || define_locked(v->string, one, strlen(one), false, 0, err) < 0)
			return sbx_err_wrap(err, "config %s", path);
	}
	return 0;
}

static void load_persisted(void)
{
	cleanup_free char *text = NULL;
	size_t len;
	if (read_file(persist_path, &text, &len, 16u << 20) < 0)
		return;
	cleanup_cjson cJSON *root = cJSON_ParseWithLength(text, len);
	const cJSON *v;
	cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(root, "deleted"))
	{
		ssize_t i = cJSON_IsString(v) ? index_of(v->valuestring) : -1;
		if (i >= 0)
			drop_locked((size_t)i);
		char **d = realloc(deleted, (ndeleted + 1) * sizeof(*d));
		if (d && cJSON_IsString(v)) {
			deleted = d;
			deleted[ndeleted++] = strdup(v->valuestring);
		} else if (d) {
			deleted = d;
		}
	}
	cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(root, "templates"))
	{
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(v, "name");
		cleanup_free char *one = cJSON_PrintUnformatted(
			cJSON_GetObjectItemCaseSensitive(v, "template"));
		struct sbx_err err = { 0 };
		if (!cJSON_IsString(name) || !one ||
		    define_locked(name->valuestring, one, strlen(one), true, 0, &err) < 0)
			log_warn("%s: a saved template was skipped: %s", persist_path, err.msg);
	}
}

int templates_init(const char *config_path, const char *state_dir, const char *mountpoint,
		   struct sbx_err *err)
{
	pthread_mutex_lock(&templates_lock);
	workspace_set_guarded(mountpoint, state_dir);
	int rc = asprintf(&persist_path, "%s/templates.json", state_dir) < 0 ? -ENOMEM : 0;
	if (rc == 0 && config_path)
		rc = load_config(config_path, err);
	if (rc == 0)
		load_persisted();
	pthread_mutex_unlock(&templates_lock);
	return rc;
}

void templates_shutdown(void)
{
	pthread_mutex_lock(&templates_lock);
	while (nlist)
		drop_locked(nlist - 1);
	free(list);
	free(runtime_flags);
	for (size_t i = 0; i < ndeleted; i++)
		free(deleted[i]);
	free(deleted);
	free(persist_path);
	swarm_config_free();
	list = NULL;
	runtime_flags = NULL;
	deleted = NULL;
	ndeleted = 0;
	persist_path = NULL;
	pthread_mutex_unlock(&templates_lock);
}

/* What the list held of one name, so that a change that cannot be
 * persisted is undone (a template must not live in memory only, or be
 * gone in memory only).  Everything the undo needs is allocated before
 * the change, so the undo itself cannot fail. */
struct template_undo {
	struct template *old; /* a copy of the template, or NULL */
	size_t pos;	      /* where it was in the list */
	bool runtime;	      /* its runtime flag */
	char *deleted_name;   /* the name, if it was in deleted[] */
	char *new_deleted;    /* the name, for template_delete to put in deleted[] */
};

static bool in_deleted_locked(const char *name)
{
	for (size_t i = 0; i < ndeleted; i++)
		if (!strcmp(deleted[i], name))
			return true;
	return false;
}

static int undo_save_locked(const char *name, bool deleting, struct template_undo *u)
{
	*u = (struct template_undo){ 0 };
	ssize_t i = index_of(name);
	if (i >= 0) {
		u->old = template_dup(list[i]);
		u->pos = (size_t)i;
		u->runtime = runtime_flags && runtime_flags[i];
		if (!u->old)
			return -ENOMEM;
	}
	/* Room for one more name in deleted[], whichever way it goes. */
	char **d = realloc(deleted, (ndeleted + 1) * sizeof(*d));
	if (!d)
		return -ENOMEM;
	deleted = d;
	if (in_deleted_locked(name) && !(u->deleted_name = strdup(name)))
		return -ENOMEM;
	if (deleting && !(u->new_deleted = strdup(name)))
		return -ENOMEM;
	return 0;
}

static void undo_free(struct template_undo *u)
{
	template_free(u->old);
	free(u->deleted_name);
	free(u->new_deleted);
}

static void undo_apply_locked(const char *name, struct template_undo *u)
{
	ssize_t i = index_of(name);
	if (i >= 0)
		drop_locked((size_t)i);
	if (u->old) {
		/* Back at its place: drop_locked kept the arrays' capacity. */
		memmove(&list[u->pos + 1], &list[u->pos], (nlist - u->pos) * sizeof(*list));
		if (runtime_flags)
			memmove(&runtime_flags[u->pos + 1], &runtime_flags[u->pos],
				(nlist - u->pos) * sizeof(bool));
		list[u->pos] = steal_pointer(&u->old);
		if (runtime_flags)
			runtime_flags[u->pos] = u->runtime;
		nlist++;
	}
	undelete_locked(name);
	if (u->deleted_name)
		deleted[ndeleted++] = steal_pointer(&u->deleted_name);
}

int template_define(const char *name, const char *json, size_t len, uint32_t want_id,
		    struct sbx_err *err)
{
	struct template_undo u;
	pthread_mutex_lock(&templates_lock);
	int rc = undo_save_locked(name, false, &u);
	if (rc < 0)
		rc = sbx_err_set(err, ENOMEM, "template %s: out of memory", name);
	else if ((rc = define_locked(name, json, len, true, want_id, err)) == 0 &&
		 (rc = persist_locked(err)) < 0)
		undo_apply_locked(name, &u);
	else if (rc < 0 && rc == -ENOMEM)
		undo_apply_locked(name, &u); /* define_locked may have half-done it */
	pthread_mutex_unlock(&templates_lock);
	undo_free(&u);
	if (rc == 0) {
		log_info("template %s defined", name);
		events_simple("template_changed", NULL, "template", name);
	}
	return rc;
}

int template_delete(const char *name, struct sbx_err *err)
{
	struct template_undo u;
	pthread_mutex_lock(&templates_lock);
	ssize_t i = index_of(name);
	int rc;
	if (i < 0) {
		rc = sbx_err_set(err, ENOENT, "template %s: no such template", name);
	} else if (undo_save_locked(name, true, &u) < 0) {
		rc = sbx_err_set(err, ENOMEM, "template %s: out of memory", name);
	} else {
		drop_locked((size_t)i);
		/* Remembered so that a config file's template stays deleted too. */
		undelete_locked(name);
		deleted[ndeleted++] = steal_pointer(&u.new_deleted);
		rc = persist_locked(err);
		if (rc < 0)
			undo_apply_locked(name, &u);
	}
	pthread_mutex_unlock(&templates_lock);
	if (i >= 0)
		undo_free(&u);
	if (rc == 0) {
		log_info("template %s deleted", name);
		events_simple("template_removed", NULL, "template", name);
	}
	return rc;
}

struct template *template_get(const char *name)
{
	pthread_mutex_lock(&templates_lock);
	ssize_t i = index_of(name);
	struct template *t = i >= 0 ? template_dup(list[i]) : NULL;
	pthread_mutex_unlock(&templates_lock);
	return t;
}

struct template *template_get_id(uint32_t id)
{
	struct template *t = NULL;
	pthread_mutex_lock(&templates_lock);
	for (size_t i = 0; i < nlist && !t; i++)
		if (list[i]->id == id)
			t = template_dup(list[i]);
	pthread_mutex_unlock(&templates_lock);
	return t;
}

uint32_t template_reserve_id(void)
{
	pthread_mutex_lock(&templates_lock);
	uint32_t id = next_id++;
	pthread_mutex_unlock(&templates_lock);
	return id;
}

int template_names(char ***names, uint32_t **ids, size_t *n)
{
	pthread_mutex_lock(&templates_lock);
	*names = calloc(nlist ? nlist : 1, sizeof(**names));
	*ids = calloc(nlist ? nlist : 1, sizeof(**ids));
	int rc = *names && *ids ? 0 : -ENOMEM;
	for (size_t i = 0; rc == 0 && i < nlist; i++) {
		(*names)[i] = strdup(list[i]->name);
		(*ids)[i] = list[i]->id;
		if (!(*names)[i])
			rc = -ENOMEM;
	}
	*n = rc == 0 ? nlist : 0;
	pthread_mutex_unlock(&templates_lock);
	return rc;
}

struct template *template_for(const char *sandbox_name, struct sbx_err *err)
{
	struct template *t = NULL;
	const struct template *chosen = NULL;
	int rc = 0;
	pthread_mutex_lock(&templates_lock);
	for (size_t i = 0; i < nlist && !chosen; i++)
		if (list[i]->match && fnmatch(list[i]->match, sandbox_name, 0) == 0)
			chosen = list[i];
	ssize_t d = chosen ? -1 : index_of("default");
	if (d >= 0)
		chosen = list[d];
	/* Checked again: a workspace may have gone since the template was made. */
	if (chosen)
		rc = template_parse(chosen->name, chosen->text, strlen(chosen->text), &t, err);
	pthread_mutex_unlock(&templates_lock);
	if (!chosen)
		rc = template_parse("builtin", "{}", 2, &t, err);
	return rc < 0 ? NULL : t;
}

static void add_engine(char **engines, size_t *n, const char *url)
{
	for (size_t j = 0; j < *n; j++)
		if (engines[j] && !strcmp(engines[j], url))
			return;
	engines[(*n)++] = strdup(url);
}

int template_engines(char ***engines, size_t *n)
{
	/* The swarm's engines count as named: its nodes hold sandboxes. */
	const char *sw[SWARM_MAX_NODES + 1];
	size_t nsw = swarm_endpoints(sw, SBX_ARRAY_SIZE(sw));
	pthread_mutex_lock(&templates_lock);
	*engines = calloc(nlist + nsw + 1, sizeof(**engines));
	*n = 0;
	for (size_t i = 0; *engines && i < nlist; i++)
		if (list[i]->engine)
			add_engine(*engines, n, list[i]->engine);
	for (size_t i = 0; *engines && i < nsw; i++)
		add_engine(*engines, n, sw[i]);
	pthread_mutex_unlock(&templates_lock);
	return *engines ? 0 : -ENOMEM;
}

char *template_effective_json(const struct template *t, const char *image)
{
	cleanup_cjson cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	/* All or nothing: NULL rather than a document with holes. */
	bool full = cJSON_AddStringToObject(o, "template", t->name) &&
		    cJSON_AddStringToObject(o, "image", t->image ? t->image : image) &&
		    cJSON_AddStringToObject(o, "network", t->network) &&
		    cJSON_AddNumberToObject(o, "memory", (double)t->memory) &&
		    cJSON_AddNumberToObject(o, "cpus", t->cpus) &&
		    cJSON_AddNumberToObject(o, "pids", (double)t->pids) &&
		    cJSON_AddNumberToObject(o, "ttl", (double)t->ttl) &&
		    cJSON_AddStringToObject(o, "on_idle", t->idle_remove ? "remove" : "stop") &&
		    cJSON_AddBoolToObject(o, "read_only", t->read_only) &&
		    cJSON_AddBoolToObject(o, "init", t->init) &&
		    (!t->user || cJSON_AddStringToObject(o, "user", t->user)) &&
		    (!t->workdir || cJSON_AddStringToObject(o, "workdir", t->workdir)) &&
		    (!t->engine || cJSON_AddStringToObject(o, "engine", t->engine)) &&
		    (!t->swarm || cJSON_AddStringToObject(o, "placement", "swarm"));
	cJSON *cons = t->swarm ? cJSON_AddArrayToObject(o, "constraints") : NULL;
	for (size_t i = 0; full && cons && i < t->nconstraints; i++)
		full = json_put_item(cons, NULL, cJSON_CreateString(t->constraints[i]));
	if (t->swarm && !cons)
		full = false;
	cJSON *ws = cJSON_AddArrayToObject(o, "workspace");
	for (size_t i = 0; full && i < t->nworkspaces; i++) {
		char buf[4200];
		snprintf(buf, sizeof(buf), "%s%s", t->workspaces[i].path,
			 t->workspaces[i].ro ? ":ro" : "");
		full = json_put_item(ws, NULL, cJSON_CreateString(buf));
	}
	cJSON *caps = cJSON_AddArrayToObject(o, "cap_add");
	for (size_t i = 0; full && i < t->ncap_add; i++)
		full = json_put_item(caps, NULL, cJSON_CreateString(t->cap_add[i]));
	cJSON *env = cJSON_AddObjectToObject(o, "env");
	for (size_t i = 0; full && i < t->env.n; i++)
		full = cJSON_AddStringToObject(env, t->env.keys[i], t->env.values[i]) != NULL;
	cJSON *labels = cJSON_AddObjectToObject(o, "labels");
	for (size_t i = 0; full && i < t->labels.n; i++)
		full = cJSON_AddStringToObject(labels, t->labels.keys[i], t->labels.values[i]) !=
		       NULL;
	if (!full || !ws || !caps || !env || !labels)
		return NULL;
	return cJSON_PrintUnformatted(o);
}

int template_check_complete(const char *name, const char *json, size_t len, struct sbx_err *err)
{
	cJSON *j = cJSON_ParseWithLength(json, len);
	if (!j)
		return 0; /* not complete yet, or malformed: the close will tell */
	cJSON_Delete(j);
	struct template *t = NULL;
	int rc = template_parse(name, json, len, &t, err);
	if (rc == 0) {
		pthread_mutex_lock(&templates_lock);
		rc = check_against_list_locked(t, err);
		pthread_mutex_unlock(&templates_lock);
	}
	template_free(t);
	return rc;
}

/* ---- cheap look-ups for the file system (no parsing, no realpath) ---- */

int template_id(const char *name, uint32_t *id)
{
	pthread_mutex_lock(&templates_lock);
	ssize_t i = index_of(name);
	if (i >= 0)
		*id = list[i]->id;
	pthread_mutex_unlock(&templates_lock);
	return i >= 0 ? 0 : -ENOENT;
}

int template_text_len(uint32_t id, size_t *len)
{
	int rc = -ENOENT;
	pthread_mutex_lock(&templates_lock);
	for (size_t i = 0; i < nlist && rc < 0; i++) {
		if (list[i]->id == id) {
			*len = strlen(list[i]->text);
			rc = 0;
		}
	}
	pthread_mutex_unlock(&templates_lock);
	return rc;
}

int template_text(uint32_t id, char **name, char **text)
{
	int rc = -ENOENT;
	*name = *text = NULL;
	pthread_mutex_lock(&templates_lock);
	for (size_t i = 0; i < nlist && rc < 0; i++) {
		if (list[i]->id == id) {
			*name = strdup(list[i]->name);
			*text = strdup(list[i]->text);
			rc = *name && *text ? 0 : -ENOMEM;
		}
	}
	pthread_mutex_unlock(&templates_lock);
	if (rc < 0) {
		free(*name);
		free(*text);
		*name = *text = NULL;
	}
	return rc;
}
