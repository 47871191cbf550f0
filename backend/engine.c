#include "engine.h"
#include "engine_internal.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "log.h"
#include "subprocess.h"

/* The wrapper of every run.  `$$` is the wrapper's pid, and because docker
 * exec makes it a session leader, also the process group that ctl kill
 * signals.  The wrapper then execs `sh -c CMD` in its place (same pid,
 * same group, the command's exit status), so errors read as the user's
 * shell prints them (`sh: curl: not found`, where `eval` said `sh: eval:
 * line 0:`), and nothing of the wrapper ($1, its variables) is visible to
 * the command.  `sh` by PATH names itself `sh` in messages; /bin/sh when
 * PATH has none.  The command comes on stdin when large, so its size is
 * unbounded; one too long to be an argument (the kernel's 128 KiB per
 * string) is eval'ed, whose errors say `eval`. */
#define RUN_EXEC_SH(arg)                                                                           \
	"command -v sh >/dev/null && exec sh -c \"" arg "\"; exec /bin/sh -c \"" arg "\""
#define RUN_WRAPPER                                                                                \
	"echo $$; __sbx_cmd=$(cat); if [ ${#__sbx_cmd} -lt 100000 ]; then "                        \
	"set -- \"$__sbx_cmd\"; unset __sbx_cmd; " RUN_EXEC_SH("$1") "; fi; "                      \
								     "eval \"$__sbx_cmd\""
/* The same for a command small enough to be the wrapper's $1: no stdin to
 * attach and no `cat` to fork, which is most of the cost over a plain exec. */
#define RUN_WRAPPER_ARG "echo $$; " RUN_EXEC_SH("$1")

/* Writes the content of the first positional parameter's file from stdin,
 * mode 0600 from the start (umask), "~/" meaning $HOME. */
#define PUT_FILE_SCRIPT                                                                            \
	"umask 077; p=\"$1\"; case \"$p\" in \"~/\"*) p=\"$HOME/${p#\\~/}\";; esac; "              \
	"mkdir -p \"$(dirname \"$p\")\" && cat > \"$p\" && chmod 600 \"$p\""

/* docker's --env-file is read by the CLI; fd 3 is its pipe. */
#define ENV_FILE_FD "/dev/fd/3"
#define ENV_PIPE_DEFAULT 60000

/* ---- argv building ---- */

struct strv {
	char **v;
	size_t n, cap;
	int oom;
};

static void strv_free(struct strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}
#define cleanup_strv __attribute__((cleanup(strv_free)))

static void strv_add(struct strv *s, const char *arg)
{
	if (s->oom)
		return;
	if (s->n + 2 > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		char **v = realloc(s->v, cap * sizeof(*v));
		if (!v) {
			s->oom = 1;
			return;
		}
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n] = strdup(arg);
	if (!s->v[s->n]) {
		s->oom = 1;
		return;
	}
	s->n++;
	s->v[s->n] = NULL;
}

/* Adds each string of a NULL-terminated list. */
static void strv_addn(struct strv *s, const char *const *args)
{
	for (; *args; args++)
		strv_add(s, *args);
}
#define ARGS(s, ...) strv_addn((s), (const char *const[]){ __VA_ARGS__, NULL })

static __attribute__((format(printf, 2, 3))) void strv_addf(struct strv *s, const char *fmt, ...)
{
	cleanup_free char *a = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&a, fmt, ap) < 0) {
		a = NULL;
		s->oom = 1;
	}
	va_end(ap);
	if (a)
		strv_add(s, a);
}

/* The CLI and the global options that pick the engine (templates' "engine"). */
static void cli_begin(struct strv *a, const struct engine *e)
{
	strv_add(a, e->cli);
	if (e->endpoint && strstr(e->endpoint, "://"))
		ARGS(a, "--host", e->endpoint);
	else if (e->endpoint && e->endpoint[0])
		ARGS(a, "--context", e->endpoint);
}

/* ---- reasons and errnos ---- */

static const char *cli_name(const struct engine *e)
{
	const char *slash = strrchr(e->cli, '/');
	return slash ? slash + 1 : e->cli;
}

static int has(const char *text, const char *needle)
{
	return strcasestr(text, needle) != NULL;
}

int engine_classify_error(const char *cli_stderr, int exit_code)
{
	static const char *const image_missing[] = {
		"Unable to find image",
		"No such image",
		"pull access denied",
		"manifest unknown",
		"repository does not exist",
		"image not known",
		/* podman, a short name with no search registry to pull from */
		"did not resolve to an alias",
	};
	static const char *const unreachable[] = {
		"error during connect",
		"connection refused",
		"dial unix",
	};
	const char *t = cli_stderr ? cli_stderr : "";

	(void)exit_code;
	/* The daemon being away explains everything else the CLI said. */
	if (has(t, "Cannot connect to the Docker daemon"))
		return ECONNREFUSED;
	/* Before the connection patterns: a missing image's pull fails with a
	 * registry connection error ("dial tcp ... no such host"). */
	for (size_t i = 0; i < SBX_ARRAY_SIZE(image_missing); i++)
		if (has(t, image_missing[i]))
			return ENOMEDIUM;
	if (has(t, "Conflict. The container name") || has(t, "is already in use"))
		return EEXIST;
	if (has(t, "is not running") || has(t, "container state improper"))
		return EHOSTDOWN;
	/* docker exec into a frozen container. */
	if (has(t, "is paused"))
		return EBUSY;
	/* The runtime could not enter the run's workdir (said on stdout). */
	if (has(t, "chdir to cwd")) {
		if (has(t, "not a directory"))
			return ENOTDIR;
		if (has(t, "permission denied"))
			return EACCES;
		return ENOENT;
	}
	if (has(t, "No such container") || has(t, "No such object"))
		return ENOENT;
	/* The image has no /bin/sh for the run's wrapper. */
	if (has(t, "exec failed") &&
	    (has(t, "no such file or directory") || has(t, "executable file not found")))
		return ENOENT;
	for (size_t i = 0; i < SBX_ARRAY_SIZE(unreachable); i++)
		if (has(t, unreachable[i]))
			return ECONNREFUSED;
	return EIO;
}

static int starts_with(const char *s, size_t n, const char *prefix)
{
	size_t pl = strlen(prefix);
	return n >= pl && strncasecmp(s, prefix, pl) == 0;
}

/* The most useful line of the CLI's stderr, trimmed and made printable:
 * the last "Error..."/"docker:"/"Cannot..." line, else the last non-empty
 * one ("Run 'docker run --help'" trailers come after the error). */
static void pick_line(const char *text, char *out, size_t outsz)
{
	const char *best = NULL, *last = NULL;
	size_t best_n = 0, last_n = 0;

	out[0] = '\0';
	if (!text)
		return;
	for (const char *p = text; *p;) {
		const char *eol = strchr(p, '\n');
		size_t n = eol ? (size_t)(eol - p) : strlen(p);
		const char *s = p;
		while (n && isspace((unsigned char)*s))
			s++, n--;
		while (n && isspace((unsigned char)s[n - 1]))
			n--;
		if (n) {
			last = s, last_n = n;
			if (starts_with(s, n, "Error") || starts_with(s, n, "docker:") ||
			    starts_with(s, n, "Cannot"))
				best = s, best_n = n;
		}
		p = eol ? eol + 1 : p + strlen(p);
	}
	if (!best)
		best = last, best_n = last_n;
	if (!best)
		return;
	if (best_n >= outsz)
		best_n = outsz - 1;
	for (size_t i = 0; i < best_n; i++) {
		unsigned char c = (unsigned char)best[i];
		out[i] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
	}
	out[best_n] = '\0';
}

/* The CLI itself could not be started: ENOEXEC for the reasons that say
 * "this CLI cannot run", so that start-up can tell it from a silent engine. */
static int spawn_failed(const struct engine *e, const char *what, int r, struct sbx_err *err)
{
	switch (-r) {
	case ENOENT:
	case EACCES:
	case ENOEXEC:
	case ENOTDIR:
	case ELOOP:
	case EPERM:
		return sbx_err_set(err, ENOEXEC, "%s: cannot execute %s: %s", what, e->cli,
				   strerror(-r));
	}
	return sbx_err_wrap(err, "%s", what);
}

/* Runs the CLI to completion and turns every kind of failure into an errno
 * and a one-line reason starting with `what`.  With res NULL the output is
 * dropped; else the caller frees *res, also on failure. */
static int cli_run(const struct engine *e, const char *what, struct strv *args, const void *input,
		   size_t input_len, struct spawn_result *res, struct sbx_err *err)
{
	struct spawn_result own;
	char line[SBX_ERR_MSG_MAX];
	int r = 0;

	if (!res)
		res = &own;
	memset(res, 0, sizeof(*res));
	if (args->oom)
		r = sbx_err_set(err, ENOMEM, "%s: out of memory", what);
	else if ((r = spawn_capture(args->v, NULL, input, input_len, -1, e->timeout_ms, res, err)) <
		 0)
		r = spawn_failed(e, what, r, err);
	else if (res->timed_out)
		r = sbx_err_set(err, ETIMEDOUT, "%s: no answer from %s within %d ms", what,
				cli_name(e), e->timeout_ms);
	else if (res->status != 0) {
		pick_line(res->errtext, line, sizeof(line));
		if (!line[0])
			snprintf(line, sizeof(line), "%s exited with status %d", cli_name(e),
				 res->status);
		r = sbx_err_set(err, engine_classify_error(res->errtext, res->status), "%s: %s",
				what, line);
	}
	if (res == &own)
		spawn_result_free(&own);
	return r;
}

static int check_engine(const struct engine *e, struct sbx_err *err)
{
	if (!e || !e->cli || !e->cli[0])
		return sbx_err_set(err, EINVAL, "engine: no CLI configured");
	return 0;
}

/* Container names and ids go into argv as operands: one starting with '-'
 * would be taken for an option. */
static int check_operand(const char *what, const char *s, struct sbx_err *err)
{
	if (!s || !s[0] || s[0] == '-' || strchr(s, '\n'))
		return sbx_err_set(err, EINVAL, "%s: invalid name '%s'", what, s ? s : "");
	return 0;
}

/* The first line of `text`, trimmed, into a new string. */
static char *first_line(const char *text)
{
	const char *s = text ? text : "";
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strcspn(s, "\r\n");
	while (n && isspace((unsigned char)s[n - 1]))
		n--;
	return strndup(s, n);
}

static int is_hex_id(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++)
		if (!isxdigit((unsigned char)s[n]) || isupper((unsigned char)s[n]))
			return 0;
	return n == 64;
}

/* ---- the calls ---- */

int engine_check(const struct engine *e, char **version, struct sbx_err *err)
{
	cleanup_strv struct strv a = { 0 };
	struct spawn_result res;
	char what[64];
	int r;

	*version = NULL;
	if ((r = check_engine(e, err)) < 0)
		return r;
	snprintf(what, sizeof(what), "%s version", cli_name(e));
	cli_begin(&a, e);
	ARGS(&a, "version", "--format", "{{.Server.Version}}");
	r = cli_run(e, what, &a, NULL, 0, &res, err);
	if (r < 0) {
		spawn_result_free(&res);
		return r;
	}
	cleanup_free char *v = first_line(res.out);
	spawn_result_free(&res);
	if (!v)
		return sbx_err_set(err, ENOMEM, "%s: out of memory", what);
	size_t n = strlen(v);
	if (n == 0 || n > 64 ||
	    strspn(v, "0123456789abcdefghijklmnopqrstuvwxyz"
		      "ABCDEFGHIJKLMNOPQRSTUVWXYZ.+-~_") != n)
		return sbx_err_set(err, EIO, "%s: garbage output instead of a server version",
				   what);
	*version = steal_pointer(&v);
	return 0;
}

int engine_data_root(const struct engine *e, char **dir, struct sbx_err *err)
{
	cleanup_strv struct strv a = { 0 };
	struct spawn_result res;
	*dir = NULL;
	int r = check_engine(e, err);
	if (r < 0)
		return r;
	cli_begin(&a, e);
	ARGS(&a, "info", "--format", "{{.DockerRootDir}}");
	r = cli_run(e, "info", &a, NULL, 0, &res, err);
	cleanup_free char *v = r == 0 ? first_line(res.out) : NULL;
	spawn_result_free(&res);
	if (r < 0)
		return r;
	if (!v || v[0] != '/')
		return sbx_err_set(err, EIO, "info: no data root directory");
	*dir = steal_pointer(&v);
	return 0;
}

static void remove_quietly(const struct engine *e, const char *container)
{
	struct sbx_err ign;
	if (engine_destroy(e, container, &ign) < 0)
		log_debug("cleanup after failed create: %s", ign.msg);
}

int engine_create(const struct engine *e, const struct container_spec *spec, char **container_id,
		  struct sbx_err *err)
{
	cleanup_strv struct strv a = { 0 };
	cleanup_free char *cname = NULL;
	struct spawn_result res;
	char what[SBX_ERR_MSG_MAX / 2];
	int r;

	*container_id = NULL;
	if ((r = check_engine(e, err)) < 0)
		return r;
	if (!spec || !e->instance || !e->instance[0])
		return sbx_err_set(err, EINVAL, "create: no spec or instance");
	if ((r = check_operand("create", spec->name, err)) < 0 ||
	    (r = check_operand("create: image", spec->image, err)) < 0)
		return r;
	if (asprintf(&cname, "sandboxfs-%s-%s", e->instance, spec->name) < 0) {
		cname = NULL;
		return sbx_err_set(err, ENOMEM, "create: out of memory");
	}
	snprintf(what, sizeof(what), "%s run %s", cli_name(e), spec->image);

	cli_begin(&a, e);
	ARGS(&a, "run", "-d", "--name", cname, "--label");
	strv_addf(&a, "%s=%s", SBX_LABEL_INSTANCE, e->instance);
	strv_add(&a, "--label");
	strv_addf(&a, "%s=%s", SBX_LABEL_SANDBOX, spec->name);
	strv_add(&a, "--label");
	strv_addf(&a, "%s=%s", SBX_LABEL_MOUNTPOINT, spec->mountpoint ? spec->mountpoint : "");
	if (spec->pool) {
		strv_add(&a, "--label");
		strv_addf(&a, "%s=%s", SBX_LABEL_POOL, spec->pool);
	}
	if (spec->init)
		strv_add(&a, "--init");
	ARGS(&a, "--cap-drop", "ALL", "--security-opt", "no-new-privileges");
	if (spec->pids_limit > 0) {
		strv_add(&a, "--pids-limit");
		strv_addf(&a, "%ld", spec->pids_limit);
	}
	if (spec->memory_bytes > 0) {
		strv_add(&a, "--memory");
		strv_addf(&a, "%lld", spec->memory_bytes);
	}
	ARGS(&a, "--network", spec->network && spec->network[0] ? spec->network : "none");
	if (spec->cpus > 0) {
		strv_add(&a, "--cpus");
		strv_addf(&a, "%.3f", spec->cpus);
	}
	if (spec->user && spec->user[0])
		ARGS(&a, "--user", spec->user);
	if (spec->read_only)
		ARGS(&a, "--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,mode=1777");
	/* --tmpfs, not --mount type=tmpfs: only this form may be exec.  Owned
	 * by the container's user when that is numeric (a name would need the
	 * image's passwd); else root's, and a named user falls back to exec. */
	if (spec->agent_tmpfs) {
		unsigned long uid = 0, gid = 0;
		int k = spec->user ? sscanf(spec->user, "%lu:%lu", &uid, &gid) : 0;
		size_t digits = spec->user ? strspn(spec->user, "0123456789:") : 0;
		bool numeric = k >= 1 && digits == strlen(spec->user);
		strv_add(&a, "--tmpfs");
		if (numeric && (uid || gid))
			strv_addf(&a, "/.sandboxfs:exec,mode=0700,size=64m,uid=%lu,gid=%lu", uid,
				  k == 2 ? gid : uid);
		else
			strv_add(&a, "/.sandboxfs:exec,mode=0700,size=64m");
	}
	for (size_t i = 0; i < spec->ncap_add; i++)
		ARGS(&a, "--cap-add", spec->cap_add[i]);
	for (size_t i = 0; i < spec->nworkspaces; i++) {
		/* --mount, not -v: a missing host path is an error, not a new directory. */
		strv_add(&a, "--mount");
		const struct workspace *w = &spec->workspaces[i];
		strv_addf(&a, "type=bind,source=%s,target=%s%s", w->source ? w->source : w->path,
			  w->path, w->ro ? ",readonly" : "");
	}
	for (size_t i = 0; spec->env && i < spec->env->n; i++) {
		strv_add(&a, "--env");
		strv_addf(&a, "%s=%s", spec->env->keys[i], spec->env->values[i]);
	}
	for (size_t i = 0; spec->labels && i < spec->labels->n; i++) {
		strv_add(&a, "--label");
		strv_addf(&a, "%s=%s", spec->labels->keys[i], spec->labels->values[i]);
	}
	if (spec->workdir && spec->workdir[0])
		ARGS(&a, "--workdir", spec->workdir);
	for (char *const *x = spec->extra_args; x && *x; x++)
		strv_add(&a, *x);
	ARGS(&a, spec->image, "sleep", "2147483647");

	r = cli_run(e, what, &a, NULL, 0, &res, err);
	if (r < 0) {
		spawn_result_free(&res);
		/* A timeout or an odd failure may leave a created (or even
		 * running) container behind, and so may running out of memory
		 * while reading the CLI's answer (not while building argv).
		 * EEXIST: the name is not ours to remove; the others happen
		 * before anything is created. */
		if (r == -ETIMEDOUT || r == -EIO || r == -EHOSTDOWN || (r == -ENOMEM && !a.oom))
			remove_quietly(e, cname);
		return r;
	}
	cleanup_free char *id = first_line(res.out);
	spawn_result_free(&res);
	if (!id) {
		/* The container exists: without its id nobody would remove it. */
		remove_quietly(e, cname);
		return sbx_err_set(err, ENOMEM, "%s: out of memory", what);
	}
	if (!is_hex_id(id)) {
		remove_quietly(e, cname);
		return sbx_err_set(err, EIO, "%s: garbage output instead of a container id", what);
	}
	*container_id = steal_pointer(&id);
	return 0;
}

/* CLI WORDS... CONTAINER, for calls on one container. */
static int container_call(const struct engine *e, const char *const *words, const char *container,
			  struct spawn_result *res, struct sbx_err *err)
{
	cleanup_strv struct strv a = { 0 };
	char what[SBX_ERR_MSG_MAX / 2];
	size_t off;
	int r;

	if (res)
		memset(res, 0, sizeof(*res));
	if ((r = check_engine(e, err)) < 0)
		return r;
	off = (size_t)snprintf(what, sizeof(what), "%s", cli_name(e));
	cli_begin(&a, e);
	for (const char *const *w = words; *w; w++) {
		strv_add(&a, *w);
		if (off < sizeof(what))
			off += (size_t)snprintf(what + off, sizeof(what) - off, " %s", *w);
	}
	if (off < sizeof(what))
		snprintf(what + off, sizeof(what) - off, " %s", container ? container : "");
	if ((r = check_operand(what, container, err)) < 0)
		return r;
	strv_add(&a, container);
	return cli_run(e, what, &a, NULL, 0, res, err);
}

int engine_destroy(const struct engine *e, const char *container, struct sbx_err *err)
{
	/* docker 20.10's CLI fails `rm -f` of a missing container, 28.x not. */
	int r = container_call(e, (const char *[]){ "rm", "-f", NULL }, container, NULL, err);
	if (r == -ENOENT) {
		sbx_err_clear(err);
		return 0;
	}
	return r;
}

int engine_rename(const struct engine *e, const char *container, const char *newname,
		  struct sbx_err *err)
{
	int r = check_operand("rename", newname, err);
	if (r < 0)
		return r;
	/* `docker rename OLD NEW`: the new name goes after the container. */
	cleanup_strv struct strv a = { 0 };
	char what[SBX_ERR_MSG_MAX / 2];
	if ((r = check_engine(e, err)) < 0 || (r = check_operand("rename", container, err)) < 0)
		return r;
	snprintf(what, sizeof(what), "%s rename %.80s", cli_name(e), container);
	cli_begin(&a, e);
	ARGS(&a, "rename", container, newname);
	return cli_run(e, what, &a, NULL, 0, NULL, err);
}

int engine_stop(const struct engine *e, const char *container, struct sbx_err *err)
{
	return container_call(e, (const char *[]){ "stop", "-t", "2", NULL }, container, NULL, err);
}

int engine_start(const struct engine *e, const char *container, struct sbx_err *err)
{
	return container_call(e, (const char *[]){ "start", NULL }, container, NULL, err);
}

int engine_pause(const struct engine *e, const char *container, bool pause, struct sbx_err *err)
{
	return container_call(e, (const char *[]){ pause ? "pause" : "unpause", NULL }, container,
			      NULL, err);
}

int engine_is_running(const struct engine *e, const char *container, struct sbx_err *err)
{
	struct spawn_result res;
	/* `container inspect`, not `inspect`: an image of that name must not
	 * answer. */
	int r = container_call(
		e, (const char *[]){ "container", "inspect", "-f", "{{.State.Running}}", NULL },
		container, &res, err);
	if (r < 0) {
		spawn_result_free(&res);
		return r;
	}
	const char *o = res.out;
	if (strcmp(o, "true\n") == 0 || strcmp(o, "true") == 0)
		r = 1;
	else if (strcmp(o, "false\n") == 0 || strcmp(o, "false") == 0)
		r = 0;
	else
		r = sbx_err_set(err, EIO, "%s container inspect %s: garbage output", cli_name(e),
				container);
	spawn_result_free(&res);
	return r;
}

int engine_container_pid(const struct engine *e, const char *container, long *pid, char id[65],
			 struct sbx_err *err)
{
	struct spawn_result res;
	int r = container_call(
		e, (const char *[]){ "container", "inspect", "-f", "{{.State.Pid}} {{.Id}}", NULL },
		container, &res, err);
	*pid = 0;
	id[0] = '\0';
	if (r == 0) {
		char *end;
		errno = 0;
		long v = strtol(res.out, &end, 10);
		cleanup_free char *rest = *end == ' ' ? first_line(end + 1) : NULL;
		if (errno || end == res.out || v < 0 || !rest || !is_hex_id(rest))
			r = sbx_err_set(err, EIO, "%s container inspect %s: garbage output",
					cli_name(e), container);
		else {
			*pid = v;
			memcpy(id, rest, 65);
		}
	}
	spawn_result_free(&res);
	return r;
}

int engine_container_binds(const struct engine *e, const char *container, struct engine_bind **out,
			   size_t *n, struct sbx_err *err)
{
	struct spawn_result res;
	*out = NULL;
	*n = 0;
	int r = container_call(
		e, (const char *[]){ "container", "inspect", "-f", "{{json .Mounts}}", NULL },
		container, &res, err);
	if (r == 0) {
		r = engine_parse_binds(res.out, res.out_len, out, n);
		if (r < 0)
			r = sbx_err_set(err, -r, "%s container inspect %s: %s", cli_name(e),
					container,
					r == -ENOMEM ? "out of memory" : "garbage output");
	}
	spawn_result_free(&res);
	return r;
}

/* ---- listing ---- */

int engine_list(const struct engine *e, struct engine_container **out, size_t *n,
		struct sbx_err *err)
{
	cleanup_strv struct strv a = { 0 };
	struct spawn_result res;
	struct engine_container *v = NULL;
	size_t cnt = 0, cap = 0;
	char what[64];
	int r;

	*out = NULL;
	*n = 0;
	if ((r = check_engine(e, err)) < 0)
		return r;
	if (!e->instance || !e->instance[0])
		return sbx_err_set(err, EINVAL, "list: no instance");
	snprintf(what, sizeof(what), "%s ps", cli_name(e));
	/* .Labels is "k=v,k=v" for docker, unescaped: the sandbox label is
	 * asked for exactly with .Label.  podman 4.3 has no .Label (its
	 * template fails) but gives .Labels as an object: plain {{json .}}
	 * is exact there, and once seen it is asked that way at once. */
	static _Atomic bool no_label_fn;
	for (int attempt = 0;; attempt++) {
		bool plain = no_label_fn;
		strv_free(&a);
		cli_begin(&a, e);
		ARGS(&a, "ps", "-a", "--no-trunc", "--filter");
		strv_addf(&a, "label=%s=%s", SBX_LABEL_INSTANCE, e->instance);
		if (plain)
			ARGS(&a, "--format", "{{json .}}");
		else
			ARGS(&a, "--format",
			     "{\"Sandbox\":{{json (.Label \"" SBX_LABEL_SANDBOX "\")}},"
			     "\"Pool\":{{json (.Label \"" SBX_LABEL_POOL
			     "\")}},\"Ps\":{{json .}}}");
		r = cli_run(e, what, &a, NULL, 0, &res, err);
		if (r < 0 && !plain && attempt == 0 && strstr(err->msg, "field Label")) {
			spawn_result_free(&res);
			no_label_fn = true;
			continue;
		}
		break;
	}
	if (r < 0) {
		spawn_result_free(&res);
		return r;
	}

	const char *text = res.out;
	size_t text_len = res.out_len;
	cleanup_free char *lines = NULL;
	if (res.out[strspn(res.out, " \t\r\n")] == '[') {
		lines = engine_ps_array_to_lines(res.out, res.out_len, &text_len);
		if (!lines) {
			spawn_result_free(&res);
			return sbx_err_set(err, EIO, "%s: garbage output (not a JSON array)", what);
		}
		text = lines;
	}
	for (const char *p = text; p < text + text_len;) {
		const char *eol = memchr(p, '\n', (size_t)(text + text_len - p));
		size_t len = eol ? (size_t)(eol - p) : (size_t)(text + text_len - p);
		const char *next = eol ? eol + 1 : p + len;
		struct engine_container c = { 0 };

		if (strspn(p, " \t\r") >= len) {
			p = next;
			continue;
		}
		r = engine_parse_ps_line(e->instance, p, len, &c);
		if (r == -ENOMEM) {
			r = sbx_err_set(err, ENOMEM, "%s: out of memory", what);
			goto fail;
		}
		if (r < 0) {
			r = sbx_err_set(err, EIO, "%s: garbage output (line %zu)", what, cnt + 1);
			goto fail;
		}
		if (!c.sandbox || !c.sandbox[0]) {
			/* Ours by its instance label, but it cannot be named. */
			log_warn("%s: container %.12s has no %s label; ignored", what, c.id,
				 SBX_LABEL_SANDBOX);
			engine_container_clear(&c);
			p = next;
			continue;
		}
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 8;
			struct engine_container *nv = realloc(v, nc * sizeof(*nv));
			if (!nv) {
				engine_container_clear(&c);
				r = sbx_err_set(err, ENOMEM, "%s: out of memory", what);
				goto fail;
			}
			v = nv;
			cap = nc;
		}
		v[cnt++] = c;
		p = next;
	}
	spawn_result_free(&res);
	*out = v;
	*n = cnt;
	return 0;

fail:
	spawn_result_free(&res);
	engine_containers_free(v, cnt);
	return r;
}

/* ---- runs ---- */

static long pipe_max_size(void)
{
	FILE *f = fopen("/proc/sys/fs/pipe-max-size", "re");
	long v = -1;
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* Fills a new pipe with `env` and returns its read end: the whole file is
 * in the pipe before docker starts, so nothing can block on it. */
static int env_pipe(const char *env, size_t len, struct sbx_err *err)
{
	cleanup_close int rd = -1, wr = -1;
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		return sbx_err_set(err, errno, "exec: pipe: %s", strerror(errno));
	rd = p[0];
	wr = p[1];
	if (len == 0)
		return steal_fd(&rd);

	int cap = fcntl(wr, F_GETPIPE_SZ);
	if (len > ENV_PIPE_DEFAULT || (cap > 0 && len > (size_t)cap)) {
		long max = pipe_max_size();
		if (max > 0 && len <= (size_t)max)
			cap = fcntl(wr, F_SETPIPE_SZ, (int)len);
		else
			cap = -1;
	}
	if (cap < 0 || len > (size_t)cap)
		return sbx_err_set(err, E2BIG, "exec: environment of %zu bytes does not fit a pipe",
				   len);
	/* Non-blocking as a guard: a short pipe fails instead of hanging. */
	if (fcntl(wr, F_SETFL, O_NONBLOCK) < 0)
		return sbx_err_set(err, errno, "exec: fcntl: %s", strerror(errno));
	for (size_t off = 0; off < len;) {
		ssize_t w = write(wr, env + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return sbx_err_set(err, errno == EAGAIN ? E2BIG : errno,
					   "exec: environment of %zu bytes: %s", len,
					   errno == EAGAIN ? "does not fit a pipe"
							   : strerror(errno));
		off += (size_t)w;
	}
	return steal_fd(&rd);
}

/* A pipe whose parent end is non-blocking; `parent_reads` picks the end. */
static int child_pipe(int *parent, int *child, int parent_reads, struct sbx_err *err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return sbx_err_set(err, errno, "exec: pipe: %s", strerror(errno));
	*parent = parent_reads ? p[0] : p[1];
	*child = parent_reads ? p[1] : p[0];
	if (fcntl(*parent, F_SETFL, O_NONBLOCK) < 0)
		return sbx_err_set(err, errno, "exec: fcntl: %s", strerror(errno));
	return 0;
}

int engine_exec_start(const struct engine *e, const char *container, const char *env,
		      size_t env_len, const char *workdir, const char *inline_cmd,
		      struct engine_exec *ex, struct sbx_err *err)
{
	cleanup_strv struct strv a = { 0 };
	cleanup_close int env_rd = -1, in_w = -1, in_r = -1, out_r = -1, out_w = -1;
	cleanup_close int err_r = -1, err_w = -1;
	char what[SBX_ERR_MSG_MAX / 2];
	int r;

	ex->pid = -1;
	ex->stdin_fd = ex->stdout_fd = ex->stderr_fd = -1;
	if ((r = check_engine(e, err)) < 0)
		return r;
	snprintf(what, sizeof(what), "%s exec %s", cli_name(e), container ? container : "");
	if ((r = check_operand(what, container, err)) < 0)
		return r;
	if ((r = env_pipe(env ? env : "", env ? env_len : 0, err)) < 0)
		return sbx_err_wrap(err, "%s", what);
	env_rd = r;
	if ((!inline_cmd && (r = child_pipe(&in_w, &in_r, 0, err)) < 0) ||
	    (r = child_pipe(&out_r, &out_w, 1, err)) < 0 ||
	    (r = child_pipe(&err_r, &err_w, 1, err)) < 0)
		return r;

	cli_begin(&a, e);
	ARGS(&a, "exec");
	if (!inline_cmd)
		strv_add(&a, "-i");
	ARGS(&a, "--env-file", ENV_FILE_FD);
	if (workdir && workdir[0])
		ARGS(&a, "-w", workdir);
	if (inline_cmd)
		ARGS(&a, container, "/bin/sh", "-c", RUN_WRAPPER_ARG, "sh", inline_cmd);
	else
		ARGS(&a, container, "/bin/sh", "-c", RUN_WRAPPER);
	if (a.oom)
		return sbx_err_set(err, ENOMEM, "%s: out of memory", what);

	struct spawn_fds fds = { .in = in_r, .out = out_w, .err = err_w, .fd3 = env_rd };
	pid_t pid = spawn_child(a.v, NULL, &fds, err);
	if (pid < 0)
		return spawn_failed(e, what, pid, err);
	ex->pid = pid;
	ex->stdin_fd = steal_fd(&in_w);
	ex->stdout_fd = steal_fd(&out_r);
	ex->stderr_fd = steal_fd(&err_r);
	return 0;
}

int engine_kill_group(const struct engine *e, const char *container, long pgid, int sig,
		      struct sbx_err *err)
{
	cleanup_strv struct strv a = { 0 };
	struct spawn_result res;
	char what[SBX_ERR_MSG_MAX / 2];
	int r;

	if ((r = check_engine(e, err)) < 0)
		return r;
	snprintf(what, sizeof(what), "%s exec %s kill -%d -%ld", cli_name(e),
		 container ? container : "", sig, pgid);
	if ((r = check_operand(what, container, err)) < 0)
		return r;
	/* pgid 1 or less would be "every process" or nonsense. */
	if (pgid <= 1 || sig < 0 || sig > 64)
		return sbx_err_set(err, EINVAL, "%s: invalid process group or signal", what);
	cli_begin(&a, e);
	ARGS(&a, "exec", container, "/bin/sh", "-c");
	/* Not `kill -9 -- -PG`: busybox and dash reject the "--" there. */
	strv_addf(&a, "kill -%d -%ld", sig, pgid);
	r = cli_run(e, what, &a, NULL, 0, &res, err);
	if (r < 0 && res.errtext && strstr(res.errtext, "No such process"))
		r = sbx_err_set(err, ESRCH, "%s: no such process group", what);
	spawn_result_free(&res);
	return r;
}

int engine_put_file(const struct engine *e, const char *container, const char *path,
		    const void *content, size_t len, struct sbx_err *err)
{
	cleanup_strv struct strv a = { 0 };
	char what[SBX_ERR_MSG_MAX / 2];
	int r;

	if ((r = check_engine(e, err)) < 0)
		return r;
	snprintf(what, sizeof(what), "%s exec %s: put %s", cli_name(e), container ? container : "",
		 path ? path : "");
	if ((r = check_operand(what, container, err)) < 0)
		return r;
	if (!path || !path[0] || path[0] == '-' || strchr(path, '\n'))
		return sbx_err_set(err, EINVAL, "%s: invalid path", what);
	cli_begin(&a, e);
	ARGS(&a, "exec", "-i", container, "/bin/sh", "-c", PUT_FILE_SCRIPT, "sh", path);
	return cli_run(e, what, &a, content ? content : "", content ? len : 0, NULL, err);
}

/* ---- events ---- */

#define SETPRIV "/usr/bin/setpriv"

int engine_events_start(const struct engine *e, pid_t *pid, int *fd, struct sbx_err *err)
{
	cleanup_strv struct strv a = { 0 };
	cleanup_close int rd = -1, wr = -1;
	char what[64];
	int r;

	*pid = -1;
	*fd = -1;
	if ((r = check_engine(e, err)) < 0)
		return r;
	if (!e->instance || !e->instance[0])
		return sbx_err_set(err, EINVAL, "events: no instance");
	snprintf(what, sizeof(what), "%s events", cli_name(e));
	if ((r = child_pipe(&rd, &wr, 1, err)) < 0)
		return r;
	/* The stream outlives nothing: if the daemon is killed, the kernel
	 * kills the CLI too (it would otherwise wait for its next event).
	 * The caller is the I/O thread, which lives as long as the daemon. */
	if (access(SETPRIV, X_OK) == 0)
		ARGS(&a, SETPRIV, "--pdeathsig", "KILL", "--");
	cli_begin(&a, e);
	ARGS(&a, "events", "--filter");
	strv_addf(&a, "label=%s=%s", SBX_LABEL_INSTANCE, e->instance);
	/* Only what the model acts on: every run would add three exec events.
	 * Both vocabularies: podman says `died` and `remove` where docker says
	 * `die` and `destroy` (docker accepts names it does not know). */
	ARGS(&a, "--filter", "type=container", "--filter", "event=start", "--filter", "event=die",
	     "--filter", "event=died", "--filter", "event=destroy", "--filter", "event=remove",
	     "--filter", "event=pause", "--filter", "event=unpause", "--format", "{{json .}}");
	if (a.oom)
		return sbx_err_set(err, ENOMEM, "%s: out of memory", what);

	struct spawn_fds fds = { .in = -1, .out = wr, .err = -1, .fd3 = -1 };
	pid_t p = spawn_child(a.v, NULL, &fds, err);
	if (p < 0)
		return spawn_failed(e, what, p, err);
	*pid = p;
	*fd = steal_fd(&rd);
	return 0;
}

/* Copies a string that must fit; too long is an error, never truncation
 * (a truncated label could name another sandbox). */

/* ---- for engine_image.c ---- */

char **engine_argv(const struct engine *e, const char *const *words)
{
	struct strv a = { 0 };
	cli_begin(&a, e);
	strv_addn(&a, words);
	if (a.oom) {
		strv_free(&a);
		return NULL;
	}
	return a.v;
}

void engine_argv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

int engine_cli(const struct engine *e, const char *what, const char *const *words,
	       const void *input, size_t input_len, struct spawn_result *res, struct sbx_err *err)
{
	cleanup_strv struct strv a = { 0 };
	int r = check_engine(e, err);
	if (r < 0) {
		if (res)
			memset(res, 0, sizeof(*res));
		return r;
	}
	cli_begin(&a, e);
	strv_addn(&a, words);
	return cli_run(e, what, &a, input, input_len, res, err);
}
