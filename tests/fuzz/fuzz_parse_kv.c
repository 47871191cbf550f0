/* libFuzzer target: KEY=VALUE lines (parse_kv_lines). */
#include <errno.h>

#include "fuzz_common.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every key part, '\n'-separated: keys may legitimately be quoted. */
static char *key_parts(const char *s, size_t len, size_t *out_len)
{
	char *names = malloc(len + 1);
	size_t n = 0;

	fuzz_assert(names);
	while (len) {
		const char *nl = memchr(s, '\n', len);
		size_t l = nl ? (size_t)(nl - s) : len;
		const char *eq = memchr(s, '=', l);
		size_t k = eq ? (size_t)(eq - s) : l;

		memcpy(names + n, s, k);
		n += k;
		names[n++] = '\n';
		s += nl ? l + 1 : l;
		len -= nl ? l + 1 : l;
	}
	*out_len = n;
	return names;
}

/* No value of any line appears in the message. */
static void check_no_leak(const char *msg, const char *s, size_t len)
{
	size_t nlen;
	char *names = key_parts(s, len, &nlen);

	while (len) {
		const char *nl = memchr(s, '\n', len);
		size_t l = nl ? (size_t)(nl - s) : len;
		const char *eq = memchr(s, '=', l);

		if (eq)
			fuzz_check_no_leak(msg, eq + 1, l - (size_t)(eq + 1 - s), names, nlen);
		s += nl ? l + 1 : l;
		len -= nl ? l + 1 : l;
	}
	free(names);
}

static void check_list(const struct kv_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		const char *v = l->values[i];

		fuzz_assert(parse_env_name(l->keys[i], strlen(l->keys[i]), NULL) == 0);
		fuzz_assert(!strchr(v, '\n') && !strchr(v, '\r'));
		fuzz_assert(strlen(l->keys[i]) + 1 + strlen(v) <= SBX_ENV_LINE_MAX);
		for (size_t j = 0; j < i; j++)
			fuzz_assert(strcmp(l->keys[i], l->keys[j]) != 0);
	}
}

/* Writing the list back out as lines and parsing it gives the same list. */
static void check_round_trip(const struct kv_list *l)
{
	struct kv_list again = { 0 };
	struct sbx_err e = { 0 };
	size_t cap = 1, n = 0;
	char *buf;

	for (size_t i = 0; i < l->n; i++)
		cap += strlen(l->keys[i]) + strlen(l->values[i]) + 2;
	buf = malloc(cap);
	fuzz_assert(buf);
	for (size_t i = 0; i < l->n; i++)
		n += (size_t)sprintf(buf + n, "%s=%s\n", l->keys[i], l->values[i]);
	fuzz_assert(parse_kv_lines(buf, n, &again, &e) == 0);
	fuzz_assert(again.n == l->n);
	for (size_t i = 0; i < l->n; i++) {
		fuzz_assert(strcmp(again.keys[i], l->keys[i]) == 0);
		fuzz_assert(strcmp(again.values[i], l->values[i]) == 0);
	}
	kv_list_free(&again);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	struct kv_list l = { 0 };
	struct sbx_err e = { 0 };
	int r;

	fuzz_assert(kv_list_set(&l, "KEEP", "old") == 0);
	fuzz_assert(kv_list_set(&l, "A", "a") == 0);
	r = parse_kv_lines(s, size, &l, &e);
	if (r < 0) {
		fuzz_check_err(r, &e);
		check_no_leak(e.msg, s, size);
		/* All or nothing. */
		fuzz_assert(l.n == 2);
		fuzz_assert(strcmp(l.keys[0], "KEEP") == 0 && strcmp(l.values[0], "old") == 0);
		fuzz_assert(strcmp(l.keys[1], "A") == 0 && strcmp(l.values[1], "a") == 0);
	} else {
		fuzz_assert(r == 0);
		fuzz_assert(l.n >= 2 && strcmp(l.keys[0], "KEEP") == 0);
		check_list(&l);
		check_round_trip(&l);
	}
	kv_list_free(&l);
	return 0;
}
