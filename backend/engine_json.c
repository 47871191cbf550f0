/* The engine's JSON, parsed with cJSON: `ps` lines and `events` lines. */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "engine_internal.h"
#include "json.h"
#include "log.h"

void engine_container_clear(struct engine_container *c)
{
	free(c->id);
	free(c->sandbox);
	free(c->image);
	free(c->name);
	free(c->pool);
	memset(c, 0, sizeof(*c));
}

void engine_containers_free(struct engine_container *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		engine_container_clear(&v[i]);
	free(v);
}

static const char *json_str(const cJSON *o, const char *key)
{
	const cJSON *i = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(i) ? i->valuestring : NULL;
}

/* Nothing but whitespace may follow a JSON object on its line. */
static int only_space(const char *p, const char *end)
{
	for (; p && p < end; p++)
		if (!isspace((unsigned char)*p))
			return 0;
	return 1;
}

/* docker prints Labels as "k=v,k=v" without escaping, so a value holding
 * ",sandboxfs.sandbox=x" fakes a second label.  engine_list() asks for the
 * label exactly (the "Sandbox" of its line); this is the fallback for a CLI
 * that printed the plain shape: a candidate counts only if the container's
 * name is exactly the one made from it, and only one may. */
static int label_from_string(const char *labels, const char *key, const char *names,
			     const char *instance, char **out)
{
	size_t kl = strlen(key);
	char *pick = NULL;
	int npick = 0;

	for (const char *p = labels; p && *p;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
			cleanup_free char *cand = strndup(p + kl + 1, n - kl - 1);
			char expect[256];
			if (!cand) {
				/* Not "unlabelled": that would forget the sandbox. */
				free(pick);
				return -ENOMEM;
			}
			snprintf(expect, sizeof(expect), "sandboxfs-%s-%s", instance, cand);
			bool named = false;
			for (const char *q = names; q && *q;) {
				const char *e2 = strchr(q, ',');
				size_t m = e2 ? (size_t)(e2 - q) : strlen(q);
				if (*q == '/')
					q++, m--;
				named |= m == strlen(expect) && !strncmp(q, expect, m);
				q = e2 ? e2 + 1 : q + m;
			}
			if (named) {
				npick++;
				free(pick);
				pick = steal_pointer(&cand);
			}
		}
		p = end ? end + 1 : p + n;
	}
	*out = NULL;
	if (npick != 1)
		free(pick);
	else
		*out = pick;
	return 0;
}

int engine_parse_ps_line(const char *instance, const char *line, size_t len,
			 struct engine_container *c)
{
	const char *endp = NULL;
	cleanup_cjson cJSON *whole = cJSON_ParseWithLengthOpts(line, len, &endp, 0);

	if (!cJSON_IsObject(whole) || !only_space(endp, line + len))
		return -EINVAL;
	/* engine_list()'s shape: {"Sandbox": exact label value, "Ps": {{json .}}}. */
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(whole, "Ps");
	const cJSON *exact = cJSON_GetObjectItemCaseSensitive(whole, "Sandbox");
	if (!o)
		o = whole;
	else if (!cJSON_IsObject(o) || !cJSON_IsString(exact))
		return -EINVAL;
	const char *id = json_str(o, "ID");
	if (!id)
		id = json_str(o, "Id");
	if (!id || !id[0])
		return -EINVAL;
	const char *image = json_str(o, "Image");
	const char *state = json_str(o, "State");
	const char *status = json_str(o, "Status");
	const cJSON *labels = cJSON_GetObjectItemCaseSensitive(o, "Labels");
	char *sandbox = NULL;

	if (o != whole) {
		if (exact->valuestring[0] && !(sandbox = strdup(exact->valuestring)))
			return -ENOMEM;
	} else if (cJSON_IsString(labels)) {
		if (label_from_string(labels->valuestring, SBX_LABEL_SANDBOX, json_str(o, "Names"),
				      instance, &sandbox) < 0)
			return -ENOMEM;
	} else if (cJSON_IsObject(labels) && json_str(labels, SBX_LABEL_SANDBOX)) {
		sandbox = strdup(json_str(labels, SBX_LABEL_SANDBOX));
		if (!sandbox)
			return -ENOMEM;
	} else if (!cJSON_IsNull(labels) && labels) {
		return -EINVAL;
	}

	/* The name is the truth for pool and removed containers (pool.c). */
	const cJSON *names = cJSON_GetObjectItemCaseSensitive(o, "Names");
	const char *nm = cJSON_IsString(names) ? names->valuestring
			 : cJSON_IsArray(names) && cJSON_IsString(cJSON_GetArrayItem(names, 0))
				 ? cJSON_GetArrayItem(names, 0)->valuestring
				 : "";
	nm += *nm == '/';
	const cJSON *pool = o != whole ? cJSON_GetObjectItemCaseSensitive(whole, "Pool") : NULL;
	c->name = strndup(nm, strcspn(nm, ","));
	c->pool = strdup(cJSON_IsString(pool) ? pool->valuestring : "");
	c->id = strdup(id);
	c->image = strdup(image ? image : "");
	c->sandbox = sandbox;
	if (state) {
		/* A paused container is still running: its runs live on. */
		c->paused = strcasecmp(state, "paused") == 0;
		c->running = strcasecmp(state, "running") == 0 || c->paused;
	} else {
		c->running = status && strncmp(status, "Up", 2) == 0;
		c->paused = c->running && strstr(status, "(Paused)") != NULL;
	}
	if (!c->id || !c->image || !c->name || !c->pool) {
		engine_container_clear(c);
		return -ENOMEM;
	}
	return 0;
}

char *engine_ps_array_to_lines(const char *text, size_t len, size_t *out_len)
{
	cleanup_cjson cJSON *arr = cJSON_ParseWithLength(text, len);
	if (!cJSON_IsArray(arr))
		return NULL;
	size_t cap = 1, n = 0;
	char *out = malloc(cap);
	const cJSON *item;
	cJSON_ArrayForEach(item, arr)
	{
		cleanup_free char *one = cJSON_PrintUnformatted(item);
		size_t l = one ? strlen(one) : 0;
		char *grown = one ? realloc(out, cap + l + 1) : NULL;
		if (!grown) {
			free(out);
			return NULL;
		}
		out = grown;
		cap += l + 1;
		memcpy(out + n, one, l);
		n += l;
		out[n++] = '\n';
	}
	if (out)
		out[n] = '\0';
	*out_len = n;
	return out;
}

static int copy_bounded(char *dst, size_t dstsz, const char *src)
{
	size_t n = strlen(src);
	if (n >= dstsz)
		return -EINVAL;
	memcpy(dst, src, n + 1);
	return 0;
}

static int parse_exit_code(const cJSON *v)
{
	if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 255)
		return (int)v->valuedouble;
	if (cJSON_IsString(v) && v->valuestring[0]) {
		char *end;
		errno = 0;
		long c = strtol(v->valuestring, &end, 10);
		if (!errno && !*end && c >= 0 && c <= 255)
			return (int)c;
	}
	return -1;
}

int engine_parse_event(const char *line, size_t len, struct engine_event *ev)
{
	const char *endp = NULL;

	memset(ev, 0, sizeof(*ev));
	ev->kind = ENGINE_EV_OTHER;
	ev->exit_code = -1;
	if (!line || !len)
		return -EINVAL;
	cleanup_cjson cJSON *o = cJSON_ParseWithLengthOpts(line, len, &endp, 0);
	if (!cJSON_IsObject(o) || !only_space(endp, line + len))
		return -EINVAL;

	/* docker: Actor.{ID,Attributes}, Action (older: id, status);
	 * podman: ID, Status, Attributes, ContainerExitCode. */
	const cJSON *actor = cJSON_GetObjectItemCaseSensitive(o, "Actor");
	const cJSON *attrs = cJSON_GetObjectItemCaseSensitive(actor, "Attributes");
	if (!attrs)
		attrs = cJSON_GetObjectItemCaseSensitive(o, "Attributes");
	const char *id = json_str(actor, "ID");
	if (!id)
		id = json_str(o, "id");
	if (!id)
		id = json_str(o, "ID");
	if (!id || !id[0] || copy_bounded(ev->id, sizeof(ev->id), id) < 0)
		return -EINVAL;

	if (cJSON_IsObject(attrs)) {
		const char *sb = json_str(attrs, SBX_LABEL_SANDBOX);
		const char *in = json_str(attrs, SBX_LABEL_INSTANCE);
		if ((sb && copy_bounded(ev->sandbox, sizeof(ev->sandbox), sb) < 0) ||
		    (in && copy_bounded(ev->instance, sizeof(ev->instance), in) < 0))
			return -EINVAL;
	}

	const char *type = json_str(o, "Type");
	const char *action = json_str(o, "Action");
	if (!action)
		action = json_str(o, "status");
	if (!action)
		action = json_str(o, "Status");
	if ((type && strcmp(type, "container") != 0) || !action)
		return 0;

	if (strcmp(action, "start") == 0) {
		ev->kind = ENGINE_EV_START;
	} else if (strcmp(action, "die") == 0 || strcmp(action, "died") == 0) {
		ev->kind = ENGINE_EV_DIE;
		if (cJSON_IsObject(attrs))
			ev->exit_code = parse_exit_code(
				cJSON_GetObjectItemCaseSensitive(attrs, "exitCode"));
		if (ev->exit_code < 0)
			ev->exit_code = parse_exit_code(
				cJSON_GetObjectItemCaseSensitive(o, "ContainerExitCode"));
	} else if (strcmp(action, "destroy") == 0 || strcmp(action, "remove") == 0) {
		ev->kind = ENGINE_EV_DESTROY;
	} else if (strcmp(action, "pause") == 0) {
		ev->kind = ENGINE_EV_PAUSE;
	} else if (strcmp(action, "unpause") == 0) {
		ev->kind = ENGINE_EV_UNPAUSE;
	}
	return 0;
}

void engine_binds_free(struct engine_bind *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		free(v[i].source);
		free(v[i].target);
	}
	free(v);
}

int engine_parse_binds(const char *text, size_t len, struct engine_bind **out, size_t *n)
{
	const char *endp = NULL;
	*out = NULL;
	*n = 0;
	/* The common answer, without a parse (that could only fail for want
	 * of memory, and would read as garbage). */
	while (len > 0 && strchr(" \t\r\n", text[len - 1]))
		len--;
	if ((len == 2 && !memcmp(text, "[]", 2)) || (len == 4 && !memcmp(text, "null", 4)))
		return 0;
	cleanup_cjson cJSON *arr = cJSON_ParseWithLengthOpts(text, len, &endp, 0);
	if (cJSON_IsNull(arr) && only_space(endp, text + len))
		return 0; /* no mounts at all */
	if (!cJSON_IsArray(arr) || !only_space(endp, text + len))
		return -EINVAL;
	size_t cnt = (size_t)cJSON_GetArraySize(arr), k = 0;
	struct engine_bind *v = calloc(cnt ? cnt : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	const cJSON *m;
	cJSON_ArrayForEach(m, arr)
	{
		const char *type = json_str(m, "Type");
		const char *src = json_str(m, "Source");
		const char *dst = json_str(m, "Destination");
		if (!dst)
			dst = json_str(m, "Target");
		if (!cJSON_IsObject(m) || !type) {
			engine_binds_free(v, k);
			return -EINVAL;
		}
		if (strcmp(type, "bind") != 0)
			continue;
		if (!src || !dst || src[0] != '/' || dst[0] != '/') {
			engine_binds_free(v, k);
			return -EINVAL;
		}
		v[k].source = strdup(src);
		v[k].target = strdup(dst);
		v[k].ro = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "ReadOnly")) ||
			  cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(m, "RW"));
		k++;
		if (!v[k - 1].source || !v[k - 1].target) {
			engine_binds_free(v, k);
			return -ENOMEM;
		}
	}
	*out = v;
	*n = k;
	return 0;
}
