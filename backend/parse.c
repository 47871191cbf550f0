/* Parsers for what users write into the tree.  Error messages may quote
 * names (variables, verbs, signals) but never a value or file content:
 * they end up in the log, which must stay free of credentials. */
#include "parse.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

#include "json.h"

#define NAME_RULE "[A-Za-z_][A-Za-z0-9_]*"
#define PATH_MAX_LEN 4095
#define TIMEOUT_MAX 2678400L /* 31 days */

/* ASCII only: the C locale's ctype would be locale-dependent. */
static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_alnum(char c)
{
	return is_alpha(c) || is_digit(c);
}

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static int is_space(char c)
{
	return is_blank(c) || c == '\n' || c == '\r';
}

static int is_ctrl(char c)
{
	return (unsigned char)c < 0x20 || c == 0x7f;
}

static char ascii_upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* Copies s for quoting in a message: non-printable bytes become '?', long
 * input is cut short with "...".  Only for input that is not a secret. */
static const char *quoted(char *dst, size_t cap, const char *s, size_t len)
{
	size_t n = len < cap - 1 ? len : cap - 4;

	for (size_t i = 0; i < n; i++)
		dst[i] = is_ctrl(s[i]) || (unsigned char)s[i] >= 0x80 ? '?' : s[i];
	if (n < len) {
		memcpy(dst + n, "...", 3);
		n += 3;
	}
	dst[n] = '\0';
	return dst;
}

static int utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i], cp, min;
		size_t n;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2, cp = c & 0x0f, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return 0;
		}
		if (len - i <= n)
			return 0;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

/* Why a variable's value cannot go into an env-file, or NULL.  docker's
 * env-file reader (bufio.Scanner) fails every run on a line over 64 KiB. */
static const char *value_problem(size_t klen, const char *v, size_t len)
{
	if (klen + 1 + len > SBX_ENV_LINE_MAX)
		return "is too long: KEY=VALUE must fit in 65535 bytes";
	if (memchr(v, '\0', len))
		return "contains a NUL byte";
	if (memchr(v, '\n', len))
		return "contains a newline";
	if (memchr(v, '\r', len))
		return "contains a carriage return";
	if (!utf8_valid(v, len))
		return "is not valid UTF-8";
	return NULL;
}

int parse_sandbox_name(const char *name, struct sbx_err *err)
{
	size_t len = name ? strlen(name) : 0;
	int good = len >= 1 && len <= 63 && is_alnum(name[0]);

	for (size_t i = 1; good && i < len; i++)
		good = is_alnum(name[i]) || name[i] == '_' || name[i] == '.' || name[i] == '-';
	if (good)
		return 0;
	return sbx_err_set(err, EINVAL,
			   "invalid sandbox name: must match [a-zA-Z0-9][a-zA-Z0-9_.-]* "
			   "and be at most 63 bytes");
}

/* ---- sizes ---- */

int parse_size_suffix(const char *s, long long max, long long *out)
{
	char *end;
	errno = 0;
	long long n = strtoll(s, &end, 10);
	long long mult = 1;
	switch (*end) {
	case 'k':
	case 'K':
		mult = 1LL << 10;
		end++;
		break;
	case 'm':
	case 'M':
		mult = 1LL << 20;
		end++;
		break;
	case 'g':
	case 'G':
		mult = 1LL << 30;
		end++;
		break;
	case 'b':
	case 'B':
		end++;
		break;
	default:
		break;
	}
	if (errno || end == s || !is_digit(s[0]) || *end || n < 0 || n > max / mult)
		return -EINVAL;
	*out = n * mult;
	return 0;
}

/* ---- kv_list ---- */

void secret_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

void secret_free_n(char *s, size_t len)
{
	if (s) {
		explicit_bzero(s, len);
		free(s);
	}
}

void kv_list_free(struct kv_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->keys[i]);
		/* Values may be credentials: they must not linger in freed memory. */
		secret_free(l->values[i]);
	}
	free(l->keys);
	free(l->values);
	memset(l, 0, sizeof(*l));
}

const char *kv_list_get(const struct kv_list *l, const char *key)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->keys[i], key) == 0)
			return l->values[i];
	return NULL;
}

static char *memdup0(const char *s, size_t len)
{
	char *d = malloc(len + 1);

	if (d) {
		memcpy(d, s, len);
		d[len] = '\0';
	}
	return d;
}

/* Appends without looking for the key; takes key and value on success. */
static int kv_append(struct kv_list *l, char *key, char *value)
{
	char **k = realloc(l->keys, (l->n + 1) * sizeof(*k));

	if (!k)
		return -ENOMEM;
	l->keys = k;
	k = realloc(l->values, (l->n + 1) * sizeof(*k));
	if (!k)
		return -ENOMEM;
	l->values = k;
	l->keys[l->n] = key;
	l->values[l->n] = value;
	l->n++;
	return 0;
}

static int kv_set_n(struct kv_list *l, const char *key, size_t klen, const char *value, size_t vlen)
{
	char *v = memdup0(value, vlen), *k;

	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < l->n; i++) {
		if (strlen(l->keys[i]) == klen && memcmp(l->keys[i], key, klen) == 0) {
			secret_free(l->values[i]);
			l->values[i] = v;
			return 0;
		}
	}
	k = memdup0(key, klen);
	if (!k || kv_append(l, k, v) < 0) {
		free(k);
		secret_free(v);
		return -ENOMEM;
	}
	return 0;
}

int kv_list_set(struct kv_list *l, const char *key, const char *value)
{
	return kv_set_n(l, key, strlen(key), value, strlen(value));
}

size_t kv_list_env_bytes(const struct kv_list *l)
{
	size_t n = 0;
	for (size_t i = 0; l && i < l->n; i++)
		n += strlen(l->keys[i]) + strlen(l->values[i]) + 2;
	return n;
}

int kv_list_copy(struct kv_list *dst, const struct kv_list *src)
{
	cleanup_kv_list struct kv_list tmp = { 0 };

	for (size_t i = 0; i < src->n; i++) {
		char *k = strdup(src->keys[i]), *v = strdup(src->values[i]);

		if (!k || !v || kv_append(&tmp, k, v) < 0) {
			free(k);
			secret_free(v);
			return -ENOMEM;
		}
	}
	kv_list_free(dst);
	*dst = tmp;
	memset(&tmp, 0, sizeof(tmp));
	return 0;
}

int kv_list_merge(struct kv_list *dst, const struct kv_list *src)
{
	cleanup_kv_list struct kv_list tmp = { 0 };
	int r = kv_list_copy(&tmp, dst);

	for (size_t i = 0; r == 0 && i < src->n; i++)
		r = kv_list_set(&tmp, src->keys[i], src->values[i]);
	if (r < 0)
		return r;
	kv_list_free(dst);
	*dst = tmp;
	memset(&tmp, 0, sizeof(tmp));
	return 0;
}

char *kv_list_text(const struct kv_list *const *lists, size_t nlists, bool values, size_t *len)
{
	size_t cap = 1, n = 0;
	for (size_t l = 0; l < nlists; l++)
		for (size_t i = 0; i < lists[l]->n; i++)
			cap += strlen(lists[l]->keys[i]) + 1 +
			       (values ? strlen(lists[l]->values[i]) + 1 : 0);
	char *t = malloc(cap);
	if (!t)
		return NULL;
	for (size_t l = 0; l < nlists; l++) {
		for (size_t i = 0; i < lists[l]->n; i++) {
			size_t k = strlen(lists[l]->keys[i]);
			memcpy(t + n, lists[l]->keys[i], k);
			n += k;
			if (values) {
				size_t v = strlen(lists[l]->values[i]);
				t[n++] = '=';
				memcpy(t + n, lists[l]->values[i], v);
				n += v;
			}
			t[n++] = '\n';
		}
	}
	t[n] = '\0';
	*len = n;
	return t;
}

/* ---- KEY=VALUE lines ---- */

/* A key is quoted in messages only when it looks like a name: a line that
 * is really a pasted token (base64 "abc-def==") must not reach the log. */
static int name_like(const char *s, size_t len)
{
	if (len > 64)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!is_alnum(s[i]) && s[i] != '_')
			return 0;
	return 1;
}

int parse_env_name(const char *s, size_t len, struct sbx_err *err)
{
	int good = len >= 1 && len <= 255 && (is_alpha(s[0]) || s[0] == '_');

	for (size_t i = 1; good && i < len; i++)
		good = is_alnum(s[i]) || s[i] == '_';
	if (good)
		return 0;
	if (!len)
		return sbx_err_set(err, EINVAL, "empty variable name");
	if (name_like(s, len))
		return sbx_err_set(err, EINVAL,
				   "invalid variable name '%.*s': must match " NAME_RULE
				   " and be at most 255 bytes",
				   (int)len, s);
	return sbx_err_set(err, EINVAL,
			   "invalid variable name: must match " NAME_RULE
			   " and be at most 255 bytes");
}

static int kv_line(const char *line, size_t len, size_t lineno, struct kv_list *l,
		   struct sbx_err *err)
{
	struct sbx_err sub;
	const char *eq, *why;
	size_t klen;

	if (len && line[len - 1] == '\r')
		len--;
	while (len && is_blank(*line))
		line++, len--;
	if (!len || *line == '#')
		return 0;
	eq = memchr(line, '=', len);
	if (!eq)
		return sbx_err_set(err, EINVAL, "line %zu: expected KEY=VALUE", lineno);
	klen = (size_t)(eq - line);
	if (parse_env_name(line, klen, &sub) < 0)
		return sbx_err_set(err, EINVAL, "line %zu: %s", lineno, sub.msg);
	why = value_problem(klen, eq + 1, len - klen - 1);
	if (why)
		return sbx_err_set(err, EINVAL, "line %zu: the value of %.*s %s", lineno, (int)klen,
				   line, why);
	if (kv_set_n(l, line, klen, eq + 1, len - klen - 1) < 0)
		return sbx_err_set(err, ENOMEM, "out of memory");
	return 0;
}

int parse_kv_lines(const char *buf, size_t len, struct kv_list *out, struct sbx_err *err)
{
	cleanup_kv_list struct kv_list tmp = { 0 };
	size_t lineno = 0;
	int r;

	while (len) {
		const char *nl = memchr(buf, '\n', len);
		size_t llen = nl ? (size_t)(nl - buf) : len;

		if ((r = kv_line(buf, llen, ++lineno, &tmp, err)) < 0)
			return r;
		buf += nl ? llen + 1 : llen;
		len -= nl ? llen + 1 : llen;
	}
	if (kv_list_merge(out, &tmp) < 0)
		return sbx_err_set(err, ENOMEM, "out of memory");
	return 0;
}

/* ---- auth ---- */

void auth_doc_free(struct auth_doc *d)
{
	kv_list_free(&d->env);
	for (size_t i = 0; i < d->nfiles; i++) {
		free(d->files[i].path);
		secret_free_n(d->files[i].content, d->files[i].len);
	}
	free(d->files);
	memset(d, 0, sizeof(*d));
}

/* Adds a file or replaces the content of the same path; copies both. */
static int auth_file_set(struct auth_doc *d, const char *path, const char *content, size_t len)
{
	char *c = memdup0(content, len), *p;
	struct auth_file *f;

	if (!c)
		return -ENOMEM;
	for (size_t i = 0; i < d->nfiles; i++) {
		if (strcmp(d->files[i].path, path) == 0) {
			secret_free_n(d->files[i].content, d->files[i].len);
			d->files[i].content = c;
			d->files[i].len = len;
			return 0;
		}
	}
	p = strdup(path);
	f = p ? realloc(d->files, (d->nfiles + 1) * sizeof(*f)) : NULL;
	if (!f) {
		free(p);
		secret_free_n(c, len);
		return -ENOMEM;
	}
	d->files = f;
	d->files[d->nfiles++] = (struct auth_file){ .path = p, .content = c, .len = len };
	return 0;
}

static int auth_merge(struct auth_doc *dst, const struct auth_doc *src)
{
	cleanup_auth_doc struct auth_doc tmp = { 0 };
	int r = kv_list_copy(&tmp.env, &dst->env);

	if (r == 0)
		r = kv_list_merge(&tmp.env, &src->env);
	for (size_t i = 0; r == 0 && i < dst->nfiles; i++)
		r = auth_file_set(&tmp, dst->files[i].path, dst->files[i].content,
				  dst->files[i].len);
	for (size_t i = 0; r == 0 && i < src->nfiles; i++)
		r = auth_file_set(&tmp, src->files[i].path, src->files[i].content,
				  src->files[i].len);
	if (r < 0)
		return r;
	auth_doc_free(dst);
	*dst = tmp;
	memset(&tmp, 0, sizeof(tmp));
	return 0;
}

/* cJSON strings end at the first NUL, so a raw NUL or a \u0000 escape
 * would silently cut a value or a path short: refuse both up front. */
static int json_prescan(const char *buf, size_t len, struct sbx_err *err)
{
	int in_string = 0;

	if (memchr(buf, '\0', len))
		return sbx_err_set(err, EINVAL, "JSON contains a NUL byte");
	for (size_t i = 0; i < len; i++) {
		if (!in_string) {
			in_string = buf[i] == '"';
		} else if (buf[i] == '"') {
			in_string = 0;
		} else if (buf[i] == '\\' && i + 1 < len) {
			if (len - i >= 6 && memcmp(buf + i + 1, "u0000", 5) == 0)
				return sbx_err_set(err, EINVAL,
						   "JSON strings must not contain \\u0000");
			i++;
		}
	}
	return 0;
}

static int json_env(const cJSON *obj, struct kv_list *env, struct sbx_err *err)
{
	struct sbx_err sub;
	const cJSON *c;

	if (!cJSON_IsObject(obj))
		return sbx_err_set(err, EINVAL, "\"env\" must be an object of strings");
	cJSON_ArrayForEach(c, obj)
	{
		const char *k = c->string, *why;

		if (parse_env_name(k, strlen(k), &sub) < 0)
			return sbx_err_set(err, EINVAL, "env: %s", sub.msg);
		if (!cJSON_IsString(c) || !c->valuestring)
			return sbx_err_set(err, EINVAL, "env: the value of %s is not a string", k);
		why = value_problem(strlen(k), c->valuestring, strlen(c->valuestring));
		if (why)
			return sbx_err_set(err, EINVAL, "env: the value of %s %s", k, why);
		if (kv_list_set(env, k, c->valuestring) < 0)
			return sbx_err_set(err, ENOMEM, "out of memory");
	}
	return 0;
}

/* Why a path cannot name a file to place, or NULL.  Paths are listed one
 * per line when auth is read, so control characters are refused too. */
static const char *path_problem(const char *p, size_t len)
{
	const char *comp, *end = p + len;

	if (len > PATH_MAX_LEN)
		return "is longer than 4095 bytes";
	if (!(len >= 1 && p[0] == '/') && !(len >= 2 && p[0] == '~' && p[1] == '/'))
		return "must be absolute or start with ~/";
	for (size_t i = 0; i < len; i++)
		if (is_ctrl(p[i]))
			return "contains a control character";
	for (comp = strchr(p, '/') + 1;; comp++) {
		const char *slash = memchr(comp, '/', (size_t)(end - comp));
		size_t clen = slash ? (size_t)(slash - comp) : (size_t)(end - comp);

		if (clen == 2 && comp[0] == '.' && comp[1] == '.')
			return "contains a .. component";
		if (!slash)
			return clen == 0 || (clen == 1 && comp[0] == '.') ? "does not name a file"
									  : NULL;
		comp = slash;
	}
}

static int json_files(const cJSON *obj, struct auth_doc *d, struct sbx_err *err)
{
	const cJSON *c;
	size_t idx = 0;

	if (!cJSON_IsObject(obj))
		return sbx_err_set(err, EINVAL, "\"files\" must be an object of strings");
	/* Entries are named by index: a path may be a swapped-in content. */
	cJSON_ArrayForEach(c, obj)
	{
		const char *why = path_problem(c->string, strlen(c->string));

		idx++;
		if (why)
			return sbx_err_set(err, EINVAL, "files entry %zu: the path %s", idx, why);
		if (!cJSON_IsString(c) || !c->valuestring)
			return sbx_err_set(err, EINVAL,
					   "files entry %zu: the content is not a string", idx);
		if (auth_file_set(d, c->string, c->valuestring, strlen(c->valuestring)) < 0)
			return sbx_err_set(err, ENOMEM, "out of memory");
	}
	return 0;
}

static int auth_json(const char *buf, size_t len, struct auth_doc *d, struct sbx_err *err)
{
	const char *end = NULL;
	const cJSON *c;
	int r;

	if ((r = json_prescan(buf, len, err)) < 0)
		return r;
	cleanup_cjson cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
	if (!root)
		return sbx_err_set(err, EINVAL, "invalid JSON at byte %zu",
				   end && end >= buf && end <= buf + len ? (size_t)(end - buf)
									 : len);
	for (const char *p = end; p < buf + len; p++)
		if (!is_space(*p))
			return sbx_err_set(err, EINVAL, "trailing data after JSON at byte %zu",
					   (size_t)(p - buf));
	if (!cJSON_IsObject(root))
		return sbx_err_set(err, EINVAL, "JSON auth must be an object");
	cJSON_ArrayForEach(c, root)
	{
		if (strcmp(c->string, "env") == 0)
			r = json_env(c, &d->env, err);
		else if (strcmp(c->string, "files") == 0)
			r = json_files(c, d, err);
		else
			r = sbx_err_set(
				err, EINVAL,
				"unknown key in JSON auth: only \"env\" and \"files\" are allowed");
		if (r < 0)
			return r;
	}
	return 0;
}

int parse_auth(const char *buf, size_t len, struct auth_doc *out, struct sbx_err *err)
{
	cleanup_auth_doc struct auth_doc tmp = { 0 };
	size_t i = 0;
	int r;

	while (i < len && is_space(buf[i]))
		i++;
	if (i < len && buf[i] == '{')
		r = auth_json(buf, len, &tmp, err);
	else
		r = parse_kv_lines(buf, len, &tmp.env, err);
	if (r < 0)
		return r;
	if (auth_merge(out, &tmp) < 0)
		return sbx_err_set(err, ENOMEM, "out of memory");
	return 0;
}

/* ---- signals and ctl ---- */

static const struct {
	const char *name;
	int sig;
} signals[] = {
	{ "HUP", SIGHUP },   { "INT", SIGINT },	      { "QUIT", SIGQUIT }, { "ILL", SIGILL },
	{ "TRAP", SIGTRAP }, { "ABRT", SIGABRT },     { "BUS", SIGBUS },   { "FPE", SIGFPE },
	{ "KILL", SIGKILL }, { "USR1", SIGUSR1 },     { "SEGV", SIGSEGV }, { "USR2", SIGUSR2 },
	{ "PIPE", SIGPIPE }, { "ALRM", SIGALRM },     { "TERM", SIGTERM }, { "STKFLT", SIGSTKFLT },
	{ "CHLD", SIGCHLD }, { "CONT", SIGCONT },     { "STOP", SIGSTOP }, { "TSTP", SIGTSTP },
	{ "TTIN", SIGTTIN }, { "TTOU", SIGTTOU },     { "URG", SIGURG },   { "XCPU", SIGXCPU },
	{ "XFSZ", SIGXFSZ }, { "VTALRM", SIGVTALRM }, { "PROF", SIGPROF }, { "WINCH", SIGWINCH },
	{ "IO", SIGIO },     { "PWR", SIGPWR },	      { "SYS", SIGSYS },
};

static int ascii_case_eq(const char *a, size_t len, const char *b)
{
	size_t i;

	for (i = 0; i < len && b[i]; i++)
		if (ascii_upper(a[i]) != b[i])
			return 0;
	return i == len && !b[i];
}

static int signal_by_name(const char *s, size_t len)
{
	if (len > 3 && ascii_case_eq(s, 3, "SIG"))
		s += 3, len -= 3;
	for (size_t i = 0; i < SBX_ARRAY_SIZE(signals); i++)
		if (ascii_case_eq(s, len, signals[i].name))
			return signals[i].sig;
	/* SIGRTMIN/SIGRTMAX are glibc functions, not constants. */
	if (ascii_case_eq(s, len, "RTMIN"))
		return SIGRTMIN;
	if (ascii_case_eq(s, len, "RTMAX"))
		return SIGRTMAX;
	return 0;
}

int parse_signal(const char *s, size_t len, int *sig, struct sbx_err *err)
{
	char q[40];
	long n = 0;
	size_t i;

	for (i = 0; i < len && is_digit(s[i]) && n <= 64; i++)
		n = n * 10 + (s[i] - '0');
	if (len && i == len && n >= 1 && n <= 64) {
		*sig = (int)n;
		return 0;
	}
	n = len ? signal_by_name(s, len) : 0;
	if (n) {
		*sig = (int)n;
		return 0;
	}
	return sbx_err_set(err, EINVAL, "unknown signal '%s': use a name (TERM, SIGTERM) or 1..64",
			   quoted(q, sizeof(q), s, len));
}

struct token {
	const char *s;
	size_t len;
};

/* Splits at runs of blanks; returns the number of words (at most max are stored). */
static size_t split_words(const char *s, size_t len, struct token *t, size_t max)
{
	size_t n = 0, i = 0;

	while (i < len) {
		size_t start;

		while (i < len && is_blank(s[i]))
			i++;
		if (i == len)
			break;
		start = i;
		while (i < len && !is_blank(s[i]))
			i++;
		if (n < max)
			t[n] = (struct token){ s + start, i - start };
		n++;
	}
	return n;
}

static int word_is(const struct token *t, const char *w)
{
	return t->len == strlen(w) && memcmp(t->s, w, t->len) == 0;
}

/* docker's reference grammar, without regexes:
 *   [domain[:port]/]component(/component)*[:tag][@sha256:hex64]
 * component [a-z0-9]+ joined by '.', '_', '__' or runs of '-'. */
static bool lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool image_component_ok(const char *s, size_t len)
{
	size_t i = 0;
	for (;;) {
		size_t run = i;
		while (i < len && lower_alnum(s[i]))
			i++;
		if (i == run)
			return false; /* empty, or a separator not between alphanumerics */
		if (i == len)
			return true;
		if (s[i] == '.')
			i++;
		else if (s[i] == '_')
			i += (i + 1 < len && s[i + 1] == '_') ? 2 : 1;
		else if (s[i] == '-')
			while (i < len && s[i] == '-')
				i++;
		else
			return false;
	}
}

static bool image_domain_ok(const char *s, size_t len)
{
	const char *colon = memchr(s, ':', len);
	size_t host = colon ? (size_t)(colon - s) : len;
	if (host == 0 || !is_alnum(s[0]) || !is_alnum(s[host - 1]))
		return false;
	for (size_t i = 0; i < host; i++)
		if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '-')
			return false;
	if (colon) {
		size_t port = len - host - 1;
		if (port == 0 || port > 5)
			return false;
		for (size_t i = host + 1; i < len; i++)
			if (s[i] < '0' || s[i] > '9')
				return false;
	}
	return true;
}

int parse_image_name(const char *s, size_t len, struct sbx_err *err)
{
	const char *at = memchr(s, '@', len);
	size_t name_len = at ? (size_t)(at - s) : len;
	if (len == 0 || len > 255)
		goto bad;
	if (at) {
		size_t d = len - name_len - 1;
		if (d != 71 || strncmp(at + 1, "sha256:", 7) != 0)
			goto bad;
		for (size_t i = 8; i <= 71; i++)
			if (!strchr("0123456789abcdef", at[i]) || !at[i])
				goto bad;
	}
	/* A ':' after the last '/' starts the tag. */
	const char *slash = memrchr(s, '/', name_len);
	const char *colon = memchr(slash ? slash : s, ':',
				   name_len - (size_t)((slash ? slash : s) - s));
	if (colon) {
		size_t tlen = name_len - (size_t)(colon - s) - 1;
		if (tlen == 0 || tlen > 128 || !(is_alnum(colon[1]) || colon[1] == '_'))
			goto bad;
		for (size_t i = 1; i <= tlen; i++)
			if (!is_alnum(colon[i]) && !strchr("_.-", colon[i]))
				goto bad;
		name_len = (size_t)(colon - s);
	}
	size_t start = 0;
	bool first = true;
	while (start <= name_len) {
		const char *end = memchr(s + start, '/', name_len - start);
		size_t clen = end ? (size_t)(end - (s + start)) : name_len - start;
		const char *c = s + start;
		bool domain = first && end &&
			      (memchr(c, '.', clen) || memchr(c, ':', clen) ||
			       (clen == 9 && !strncmp(c, "localhost", 9)));
		if (domain ? !image_domain_ok(c, clen) : !image_component_ok(c, clen))
			goto bad;
		first = false;
		if (!end)
			break;
		start += clen + 1;
	}
	return 0;
bad:
	return sbx_err_set(
		err, EINVAL,
		"invalid image reference: expected [HOST[:PORT]/]name[/name...][:TAG], names "
		"in lower case, at most 255 bytes");
}

static int parse_image_ref(const struct token *t, char *out, size_t cap, struct sbx_err *err)
{
	if (t->len >= cap)
		return parse_image_name(t->s, 256, err);
	int r = parse_image_name(t->s, t->len, err);
	if (r < 0)
		return r;
	memcpy(out, t->s, t->len);
	out[t->len] = '\0';
	return 0;
}

static int ctl_words(const struct token *w, size_t n, struct ctl_cmd *c, struct sbx_err *err)
{
	char q[40];

	if (word_is(&w[0], "kill")) {
		c->verb = CTL_KILL;
		c->signal = SIGKILL;
		if (n > 2)
			return sbx_err_set(err, EINVAL,
					   "kill takes at most one argument: a signal");
		return n == 2 ? parse_signal(w[1].s, w[1].len, &c->signal, err) : 0;
	}
	if (word_is(&w[0], "stop") || word_is(&w[0], "start")) {
		c->verb = word_is(&w[0], "stop") ? CTL_STOP : CTL_START;
		if (n > 1)
			return sbx_err_set(err, EINVAL, "%s takes no argument",
					   c->verb == CTL_STOP ? "stop" : "start");
		return 0;
	}
	if (word_is(&w[0], "pause") || word_is(&w[0], "resume")) {
		c->verb = word_is(&w[0], "pause") ? CTL_PAUSE : CTL_RESUME;
		if (n > 1)
			return sbx_err_set(err, EINVAL, "%s takes no argument",
					   c->verb == CTL_PAUSE ? "pause" : "resume");
		return 0;
	}
	if (word_is(&w[0], "save")) {
		c->verb = CTL_SAVE;
		if (n != 2)
			return sbx_err_set(err, EINVAL, "save takes one argument: IMAGE[:TAG]");
		return parse_image_ref(&w[1], c->image, sizeof(c->image), err);
	}
	if (word_is(&w[0], "eof")) {
		c->verb = CTL_EOF;
		if (n > 1)
			return sbx_err_set(err, EINVAL, "eof takes no argument");
		return 0;
	}
	if (word_is(&w[0], "stdin")) {
		c->verb = CTL_STDIN;
		if (n != 2 || !(word_is(&w[1], "open") || word_is(&w[1], "eof")))
			return sbx_err_set(err, EINVAL, "stdin takes one argument: open or eof");
		c->stdin_open = word_is(&w[1], "open");
		return 0;
	}
	return sbx_err_set(err, EINVAL,
			   "unknown ctl action '%s': expected kill [SIGNAL], stop, start, "
			   "pause, resume, save IMAGE[:TAG], eof or stdin open|eof",
			   quoted(q, sizeof(q), w[0].s, w[0].len));
}

int parse_ctl(const char *buf, size_t len, struct ctl_cmd *out, struct sbx_err *err)
{
	struct ctl_cmd c = { .verb = CTL_KILL, .signal = SIGKILL };
	struct token w[3];
	size_t n;
	int r;

	while (len && is_blank(buf[len - 1]))
		len--;
	if (len && buf[len - 1] == '\n')
		len--;
	while (len && is_blank(buf[len - 1]))
		len--;
	while (len && is_blank(*buf))
		buf++, len--;
	if (!len)
		return sbx_err_set(err, EINVAL, "empty ctl action");
	if (memchr(buf, '\n', len))
		return sbx_err_set(err, EINVAL, "one ctl action per write");
	for (size_t i = 0; i < len; i++)
		if (is_ctrl(buf[i]) && buf[i] != '\t')
			return sbx_err_set(err, EINVAL, "ctl action contains a control character");
	n = split_words(buf, len, w, SBX_ARRAY_SIZE(w));
	if ((r = ctl_words(w, n, &c, err)) < 0)
		return r;
	*out = c;
	return 0;
}

/* ---- timeout and workdir ---- */

int parse_timeout(const char *buf, size_t len, long *seconds, struct sbx_err *err)
{
	long n = 0;
	size_t i;

	while (len && is_space(buf[len - 1]))
		len--;
	while (len && is_space(*buf))
		buf++, len--;
	for (i = 0; i < len && is_digit(buf[i]); i++) {
		n = n * 10 + (buf[i] - '0');
		if (n > TIMEOUT_MAX)
			break;
	}
	if (i < len || n > TIMEOUT_MAX)
		return sbx_err_set(err, EINVAL,
				   "invalid timeout: whole seconds from 0 to 2678400 (31 days)");
	*seconds = n;
	return 0;
}

int parse_workdir(const char *buf, size_t len, char **out, struct sbx_err *err)
{
	char *p;

	if (len && buf[len - 1] == '\n')
		len--;
	if (!len)
		buf = "";
	else if (buf[0] != '/')
		return sbx_err_set(err, EINVAL, "workdir must be an absolute path");
	if (memchr(buf, '\0', len))
		return sbx_err_set(err, EINVAL, "workdir contains a NUL byte");
	if (memchr(buf, '\n', len))
		return sbx_err_set(err, EINVAL, "workdir must be one line");
	if (len > PATH_MAX_LEN)
		return sbx_err_set(err, EINVAL, "workdir is longer than 4095 bytes");
	p = memdup0(buf, len);
	if (!p)
		return sbx_err_set(err, ENOMEM, "out of memory");
	*out = p;
	return 0;
}
