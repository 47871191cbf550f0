/* Parsers for everything a user writes into the tree.  Pure functions, no
 * I/O, fuzzable.  Each returns 0 or a negative errno and fills err. */
#ifndef SBX_PARSE_H
#define SBX_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

/* Docker's container-name rule [a-zA-Z0-9][a-zA-Z0-9_.-]*, 1..63 chars. */
int parse_sandbox_name(const char *name, struct sbx_err *err);

/* A list of variables: parallel arrays of malloc'ed NUL-terminated strings. */
struct kv_list {
	char **keys;
	char **values;
	size_t n;
};
/* Zeroes a credential (up to its NUL, or len bytes) and frees it: every
 * place that frees a secret goes through one of these. */
void secret_free(char *s);
void secret_free_n(char *s, size_t len);

/* Frees and zeroes l (a zeroed list is empty). */
void kv_list_free(struct kv_list *l);
#define cleanup_kv_list __attribute__((cleanup(kv_list_free)))
/* Sets key to value, replacing an existing key in place (order kept).
 * Returns 0 or -ENOMEM (l unchanged). */
int kv_list_set(struct kv_list *l, const char *key, const char *value);
/* Replaces dst (an initialized list, e.g. zeroed) by a copy of src; on
 * -ENOMEM dst is unchanged. */
int kv_list_copy(struct kv_list *dst, const struct kv_list *src);
/* Sets every variable of src in dst, all or nothing (-ENOMEM: dst unchanged). */
int kv_list_merge(struct kv_list *dst, const struct kv_list *src);
/* "KEY=VALUE\n" (values) or "KEY\n" lines of every list in turn,
 * malloc'ed and NUL-terminated; NULL on ENOMEM.  A text with values holds
 * credentials: free it with secret_free_n(). */
char *kv_list_text(const struct kv_list *const *lists, size_t nlists, bool values, size_t *len);
/* The value of key, or NULL. */
const char *kv_list_get(const struct kv_list *l, const char *key);

/* What the engine can carry (docs/interface.md, "Credentials limits"):
 * docker reads --env-file with a bufio.Scanner, whose lines end at 64 KiB,
 * and every variable of a run shares one pipe and the exec's environment. */
#define SBX_ENV_LINE_MAX 65535u	       /* one KEY=VALUE */
#define SBX_ENV_TOTAL_MAX (256u << 10) /* env and auth together, KEY=VALUE\n each */
/* Bytes of l as env-file lines. */
size_t kv_list_env_bytes(const struct kv_list *l);

/* Bytes as digits with an optional k/m/g (or b) suffix, either case, at
 * most max: 0, or -EINVAL. */
int parse_size_suffix(const char *s, long long max, long long *out);

/* Variable names: [A-Za-z_][A-Za-z0-9_]*, at most 255 chars. */
int parse_env_name(const char *s, size_t len, struct sbx_err *err);

/* KEY=VALUE lines (env and auth): blank lines and lines starting with '#'
 * are skipped; a value is everything after the first '=' up to the end of
 * the line (a trailing "\r" is dropped); values must be valid UTF-8 without
 * NUL (they travel in an env-file).  Appends to out (kv_list_set), all or
 * nothing: on error out is unchanged.  Messages name the line and the key,
 * never a value. */
int parse_kv_lines(const char *buf, size_t len, struct kv_list *out, struct sbx_err *err);

/* A file to place inside a sandbox (auth JSON "files"). */
struct auth_file {
	char *path; /* absolute, or starting with "~/" */
	char *content;
	size_t len;
};
struct auth_doc {
	struct kv_list env;
	struct auth_file *files;
	size_t nfiles;
};
/* Frees and zeroes d (a zeroed doc is empty). */
void auth_doc_free(struct auth_doc *d);
#define cleanup_auth_doc __attribute__((cleanup(auth_doc_free)))
/* The auth file: a JSON object {"env": {K: "V"}, "files": {"PATH": "CONTENT"}}
 * (both keys optional, nothing else allowed) when the first non-blank byte
 * is '{', else KEY=VALUE lines.  Merges into out (initialized, e.g. zeroed):
 * variables as kv_list_set, a file whose path is already there replaces its
 * content.  All or nothing; messages never contain a value or content. */
int parse_auth(const char *buf, size_t len, struct auth_doc *out, struct sbx_err *err);

/* A signal as a name ("TERM", "SIGTERM", case-insensitive) or number 1..64. */
int parse_signal(const char *s, size_t len, int *sig, struct sbx_err *err);

/* An image reference as docker accepts it: [HOST[:PORT]/]name[/name...][:TAG][@sha256:...]. */
int parse_image_name(const char *s, size_t len, struct sbx_err *err);

/* ctl: one action per write; trailing newline allowed. */
enum ctl_verb {
	CTL_KILL,
	CTL_STOP,
	CTL_START,
	CTL_SAVE,
	CTL_EOF,
	CTL_STDIN,
	CTL_PAUSE,
	CTL_RESUME
};
struct ctl_cmd {
	enum ctl_verb verb;
	bool stdin_open; /* CTL_STDIN: "stdin open" (else "stdin eof") */
	int signal;	 /* CTL_KILL; SIGKILL when not given */
	char image[256]; /* CTL_SAVE: IMAGE[:TAG] */
};
int parse_ctl(const char *buf, size_t len, struct ctl_cmd *out, struct sbx_err *err);

/* timeout: whole seconds, 0 = no limit, at most 31 days; trailing newline ok;
 * empty (after trimming) means 0. */
int parse_timeout(const char *buf, size_t len, long *seconds, struct sbx_err *err);

/* workdir: an absolute path without NUL or newline, at most 4095 bytes;
 * empty (after trimming one trailing newline) means the image default. */
int parse_workdir(const char *buf, size_t len, char **out, struct sbx_err *err);

#endif
