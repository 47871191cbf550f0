/* Images for ctl save: commit, look up, tag, remove, and scan an image's
 * archive for credential values (docs/security.md, "Saved images"). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"
#include "engine_internal.h"
#include "json.h"
#include "log.h"
#include "mask.h"

#define IMAGE_CALL_MS 600000 /* commit and save of a big file system take time */

static int check_ref(const char *what, const char *s, struct sbx_err *err)
{
	if (!s || !s[0] || s[0] == '-' || strpbrk(s, "\n \t"))
		return sbx_err_set(err, EINVAL, "%s: invalid image reference", what);
	return 0;
}

/* An image id as `docker commit` prints it (sha256:<64 hex>), or as
 * podman does (the last line, 64 hex, after its progress lines). */
static char *image_id_of(const char *out)
{
	const char *s = out ? out : "", *last = s;
	for (const char *p = s; *p; p++)
		if (*p == '\n' && p[1])
			last = p + 1;
	size_t n = strcspn(last, "\r\n");
	size_t hex = n == 71 && !strncmp(last, "sha256:", 7) ? 7 : 0;
	if (n - hex != 64 || strspn(last + hex, "0123456789abcdef") != 64)
		return NULL;
	return strndup(last, n);
}

int engine_commit(const struct engine *e, const char *container, char **image_id,
		  struct sbx_err *err)
{
	struct spawn_result res;
	*image_id = NULL;
	if (check_ref("commit", container, err) < 0)
		return -EINVAL;
	struct engine slow = *e;
	slow.timeout_ms = IMAGE_CALL_MS;
	/* The sandbox's labels would make a container of the image look ours. */
	int r = engine_cli(
		&slow, "commit",
		(const char *const[]){ "commit", "--change", "LABEL " SBX_LABEL_INSTANCE "=",
				       "--change", "LABEL " SBX_LABEL_SANDBOX "=", "--change",
				       "LABEL " SBX_LABEL_MOUNTPOINT "=", container, NULL },
		NULL, 0, &res, err);
	if (r == 0) {
		*image_id = image_id_of(res.out);
		if (!*image_id)
			r = sbx_err_set(err, EIO, "commit: garbage output instead of an image id");
	}
	spawn_result_free(&res);
	return r;
}

int engine_image_exists(const struct engine *e, const char *ref, struct sbx_err *err)
{
	if (check_ref("image inspect", ref, err) < 0)
		return -EINVAL;
	int r = engine_cli(
		e, "image inspect",
		(const char *const[]){ "image", "inspect", "--format", "{{.Id}}", ref, NULL }, NULL,
		0, NULL, err);
	if (r == -ENOMEDIUM || r == -ENOENT) {
		sbx_err_clear(err);
		return 0;
	}
	return r < 0 ? r : 1;
}

int engine_image_tag(const struct engine *e, const char *id, const char *ref, struct sbx_err *err)
{
	if (check_ref("tag", id, err) < 0 || check_ref("tag", ref, err) < 0)
		return -EINVAL;
	return engine_cli(e, "tag", (const char *const[]){ "tag", id, ref, NULL }, NULL, 0, NULL,
			  err);
}

int engine_image_remove(const struct engine *e, const char *id, struct sbx_err *err)
{
	struct sbx_err ign;
	if (!err)
		err = &ign;
	if (check_ref("image rm", id, err) < 0)
		return -EINVAL;
	return engine_cli(e, "image rm", (const char *const[]){ "image", "rm", "-f", id, NULL },
			  NULL, 0, NULL, err);
}

int engine_exec_script(const struct engine *e, const char *container, const char *script,
		       char *const *args, size_t nargs, struct sbx_err *err)
{
	if (check_ref("exec", container, err) < 0)
		return -EINVAL;
	const char **w = calloc(nargs + 8, sizeof(*w));
	if (!w)
		return sbx_err_set(err, ENOMEM, "exec: out of memory");
	size_t k = 0;
	w[k++] = "exec";
	w[k++] = container;
	w[k++] = "/bin/sh";
	w[k++] = "-c";
	w[k++] = script;
	w[k++] = "sh";
	for (size_t i = 0; i < nargs; i++)
		w[k++] = args[i];
	w[k] = NULL;
	int r = engine_cli(e, "exec", w, NULL, 0, NULL, err);
	free(w);
	return r;
}

/* Counts what the masker lets through: a secret of n >= 4 bytes comes out
 * as "***", so fewer bytes out than in means a secret went by. */
struct count {
	size_t out;
};

static int count_emit(void *ctx, const char *buf, size_t len)
{
	(void)buf;
	((struct count *)ctx)->out += len;
	return 0;
}

int engine_image_contains(const struct engine *e, const char *id, const struct mask_secret *values,
			  size_t n, struct sbx_err *err)
{
	struct masker m;
	struct count c = { 0 };
	size_t in = 0;
	int p[2], r = 0;

	if (check_ref("save", id, err) < 0)
		return -EINVAL;
	if (masker_init_bytes(&m, values, n) < 0)
		return sbx_err_set(err, ENOMEM, "save: out of memory");
	char **argv = engine_argv(e, (const char *const[]){ "save", id, NULL });
	if (!argv || pipe2(p, O_CLOEXEC) < 0) {
		engine_argv_free(argv);
		masker_free(&m);
		return sbx_err_set(err, argv ? errno : ENOMEM, "save: cannot start docker save");
	}
	struct spawn_fds fds = { .in = -1, .out = p[1], .err = -1, .fd3 = -1 };
	pid_t pid = spawn_child(argv, NULL, &fds, err);
	close(p[1]);
	engine_argv_free(argv);
	if (pid < 0) {
		close(p[0]);
		masker_free(&m);
		return sbx_err_wrap(err, "save");
	}
	enum { CHUNK = 1 << 16 };
	char *chunk = malloc(CHUNK);
	for (;;) {
		ssize_t got = chunk ? read(p[0], chunk, CHUNK) : -1;
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r = sbx_err_set(err, chunk ? errno : ENOMEM,
					"save: reading the archive failed");
			break;
		}
		if (got == 0)
			break;
		in += (size_t)got;
		mask_push(&m, chunk, (size_t)got, count_emit, &c);
	}
	mask_flush(&m, count_emit, &c);
	free(chunk);
	close(p[0]);
	masker_free(&m);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (r == 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
		r = sbx_err_set(err, EIO, "save: docker save %s failed (status %d)", id,
				spawn_exit_code(status));
	if (r < 0)
		return r;
	return c.out != in ? 1 : 0;
}
