/* libFuzzer target: the auth file, JSON or KEY=VALUE lines (parse_auth). */
#include <errno.h>

#include "fuzz_common.h"
#include "json.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct strings {
	char *keys; /* every object key, '\n'-separated */
	size_t klen, kcap;
	const char *values[256];
	size_t nvalues;
};

static void collect(const cJSON *j, struct strings *s)
{
	for (const cJSON *c = j; c; c = c->next) {
		if (c->string) {
			size_t l = strlen(c->string);

			if (s->klen + l + 1 > s->kcap) {
				s->kcap = (s->klen + l + 1) * 2;
				s->keys = realloc(s->keys, s->kcap);
				fuzz_assert(s->keys);
			}
			memcpy(s->keys + s->klen, c->string, l);
			s->klen += l;
			s->keys[s->klen++] = '\n';
		}
		if (cJSON_IsString(c) && c->valuestring && s->nvalues < 256)
			s->values[s->nvalues++] = c->valuestring;
		collect(c->child, s);
	}
}

/* No JSON string value appears in the message (keys may). */
static void check_no_json_leak(const char *msg, const char *buf, size_t len)
{
	cJSON *root = cJSON_ParseWithLengthOpts(buf, len, NULL, 0);
	struct strings s = { 0 };

	if (!root)
		return;
	collect(root, &s);
	for (size_t i = 0; i < s.nvalues; i++)
		fuzz_check_no_leak(msg, s.values[i], strlen(s.values[i]), s.keys, s.klen);
	free(s.keys);
	cJSON_Delete(root);
}

/* An independent statement of the path rule. */
static int path_ok(const char *p)
{
	size_t len = strlen(p);
	const char *last = strrchr(p, '/') + 1;
	char *copy, *save = NULL;
	int good = 1;

	if (len == 0 || len > 4095 || !(p[0] == '/' || (p[0] == '~' && p[1] == '/')))
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			return 0;
	if (!*last || strcmp(last, ".") == 0)
		return 0;
	copy = strdup(p);
	fuzz_assert(copy);
	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save))
		if (strcmp(c, "..") == 0)
			good = 0;
	free(copy);
	return good;
}

static void check_doc(const struct auth_doc *d)
{
	for (size_t i = 0; i < d->env.n; i++) {
		fuzz_assert(parse_env_name(d->env.keys[i], strlen(d->env.keys[i]), NULL) == 0);
		/* What docker's env-file reader takes: one line of at most 64 KiB. */
		fuzz_assert(strlen(d->env.keys[i]) + 1 + strlen(d->env.values[i]) <=
			    SBX_ENV_LINE_MAX);
	}
	for (size_t i = 0; i < d->nfiles; i++) {
		const char *p = d->files[i].path;

		fuzz_assert(path_ok(p));
		fuzz_assert(d->files[i].content[d->files[i].len] == '\0');
		for (size_t j = 0; j < i; j++)
			fuzz_assert(strcmp(d->files[j].path, p) != 0);
	}
}

#define S0 "{\"env\":{\"KEEP\":\"v\"},\"files\":{\"/keep\":\"c\"}}"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	struct auth_doc d = { 0 };
	struct sbx_err e = { 0 };
	int r;

	fuzz_assert(parse_auth(S0, strlen(S0), &d, &e) == 0);
	r = parse_auth(s, size, &d, &e);
	if (r < 0) {
		fuzz_check_err(r, &e);
		check_no_json_leak(e.msg, s, size);
		fuzz_assert(d.env.n == 1 && strcmp(d.env.values[0], "v") == 0);
		fuzz_assert(d.nfiles == 1 && strcmp(d.files[0].content, "c") == 0);
	} else {
		fuzz_assert(r == 0);
		fuzz_assert(d.env.n >= 1 && d.nfiles >= 1);
		check_doc(&d);
	}
	auth_doc_free(&d);
	return 0;
}
