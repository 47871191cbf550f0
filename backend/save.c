/* ctl save: a sandbox's file system becomes an image, without its
 * credentials and without replacing any image (docs/security.md). */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "model_internal.h"
#include "template.h"

/* Values shorter than this are not looked for in a saved image: they would
 * be found in any archive ("1", "test"). */
#define SCAN_MIN_LEN 8

/* Moves the placed auth files into the container's /dev/shm (a tmpfs, which
 * docker commit never includes) and back.  The scan that follows is the
 * real guarantee: a sandbox may copy a file anywhere, race this, or
 * rewrite it. */
#define STASH_DIR "/dev/shm/.sandboxfs-save"
#define STASH_SCRIPT                                                                               \
	"t=; while read -r _ m f _; do [ \"$m\" = /dev/shm ] && t=$f; done < /proc/mounts; "       \
	"[ \"$t\" = tmpfs ] || { echo 'no tmpfs on /dev/shm' >&2; exit 3; }; "                     \
	"umask 077; d=" STASH_DIR "; rm -rf \"$d\" && mkdir \"$d\" || exit 4; i=0; "               \
	"for p in \"$@\"; do i=$((i+1)); case \"$p\" in \"~/\"*) p=\"$HOME/${p#\\~/}\";; esac; "   \
	"if [ -e \"$p\" ] || [ -L \"$p\" ]; then mv -f \"$p\" \"$d/$i\" || exit 5; fi; done"
#define UNSTASH_SCRIPT                                                                             \
	"d=" STASH_DIR "; i=0; r=0; for p in \"$@\"; do i=$((i+1)); "                              \
	"case \"$p\" in \"~/\"*) p=\"$HOME/${p#\\~/}\";; esac; "                                   \
	"if [ -e \"$d/$i\" ]; then mv -f \"$d/$i\" \"$p\" || r=1; fi; done; rm -rf \"$d\"; exit $r"

/* docker's spelling of a reference: "docker.io/library/x:latest" is "x". */
static void normalise_ref(const char *in, char *out, size_t cap)
{
	const char *s = in;
	if (!strncmp(s, "docker.io/", 10))
		s += 10;
	else if (!strncmp(s, "index.docker.io/", 16))
		s += 16;
	if (!strncmp(s, "library/", 8))
		s += 8;
	const char *slash = strrchr(s, '/');
	const char *last = slash ? slash + 1 : s;
	bool tagged = strchr(last, ':') || strchr(last, '@');
	snprintf(out, cap, "%s%s", s, tagged ? "" : ":latest");
}

static bool same_ref(const char *a, const char *b)
{
	char x[512], y[512];
	if (!a || !b)
		return false;
	normalise_ref(a, x, sizeof(x));
	normalise_ref(b, y, sizeof(y));
	return !strcmp(x, y);
}

/* The mount's image, this sandbox's, and every template's are never a
 * save's target: each new sandbox would start from what this one planted. */
static int check_protected(struct sandbox *s, const char *image, struct sbx_err *err)
{
	sbx_lock(&model_lock);
	bool own = same_ref(image, model_config()->image) || same_ref(image, s->image);
	sbx_unlock(&model_lock);
	if (own)
		return sbx_err_set(err, EPERM,
				   "save %s: the mount's or this sandbox's image is "
				   "never replaced",
				   image);
	char **names = NULL;
	uint32_t *ids = NULL;
	size_t n = 0;
	int rc = 0;
	template_names(&names, &ids, &n);
	for (size_t i = 0; i < n; i++) {
		struct template *t = rc == 0 ? template_get(names[i]) : NULL;
		if (t && t->image && same_ref(image, t->image))
			rc = sbx_err_set(err, EPERM, "save %s: template %s uses this image", image,
					 names[i]);
		template_free(t);
		free(names[i]);
	}
	free(names);
	free(ids);
	return rc;
}

struct save_secrets {
	struct mask_secret *v;
	size_t n;
	char **paths;
	size_t npaths;
};

static void save_secrets_free(struct save_secrets *x)
{
	for (size_t i = 0; i < x->n; i++) {
		explicit_bzero(x->v[i].value, x->v[i].len);
		free(x->v[i].value);
	}
	free(x->v);
	for (size_t i = 0; i < x->npaths; i++)
		free(x->paths[i]);
	free(x->paths);
}

static int add_secret(struct save_secrets *x, const char *v)
{
	size_t len = strlen(v);
	if (len < SCAN_MIN_LEN)
		return 0;
	x->v[x->n].value = strdup(v);
	x->v[x->n].len = len;
	if (!x->v[x->n].value)
		return -ENOMEM;
	x->n++;
	return 0;
}

/* Every current credential value and placed path, copied under the lock. */
static int collect_locked(struct sandbox *s, struct save_secrets *x) SBX_REQUIRES(model_lock)
{
	size_t cap = s->auth.n + s->auth_file_secrets.n;
	x->v = calloc(cap ? cap : 1, sizeof(*x->v));
	x->paths = calloc(s->nauth_files ? s->nauth_files : 1, sizeof(*x->paths));
	if (!x->v || !x->paths)
		return -ENOMEM;
	for (size_t i = 0; i < s->auth.n; i++)
		if (add_secret(x, s->auth.values[i]) < 0)
			return -ENOMEM;
	for (size_t i = 0; i < s->auth_file_secrets.n; i++)
		if (add_secret(x, s->auth_file_secrets.values[i]) < 0)
			return -ENOMEM;
	for (size_t i = 0; i < s->nauth_files; i++) {
		x->paths[i] = strdup(s->auth_files[i]);
		if (!x->paths[i])
			return -ENOMEM;
		x->npaths++;
	}
	return 0;
}

int sandbox_save(struct sandbox *s, const char *cid, const char *image, struct sbx_err *err)
{
	const struct engine *e = s->engine;
	struct save_secrets x = { 0 };
	char *id = NULL;
	int rc = check_protected(s, image, err);
	if (rc < 0)
		return rc;
	rc = engine_image_exists(e, image, err);
	if (rc > 0)
		return sbx_err_set(err, EEXIST,
				   "save %s: the image exists; a save never "
				   "replaces an image",
				   image);
	if (rc < 0)
		return sbx_err_wrap(err, "save %s", image);

	sbx_lock(&model_lock);
	rc = collect_locked(s, &x);
	sbx_unlock(&model_lock);
	if (rc < 0) {
		save_secrets_free(&x);
		return sbx_err_set(err, ENOMEM, "save %s: out of memory", image);
	}

	if (x.npaths > 0) {
		rc = engine_exec_script(e, cid, STASH_SCRIPT, x.paths, x.npaths, err);
		if (rc < 0)
			sbx_err_wrap(err, "save %s: moving the auth files aside", image);
	}
	if (rc == 0) {
		sandbox_wait_exec_settled(s);
		rc = engine_commit(e, cid, &id, err);
	}
	if (x.npaths > 0) {
		struct sbx_err put = { 0 };
		if (engine_exec_script(e, cid, UNSTASH_SCRIPT, x.paths, x.npaths, &put) < 0)
			log_error("sandbox %s: save: putting the auth files back: %s", s->name,
				  put.msg);
	}
	if (rc == 0 && x.n > 0) {
		rc = engine_image_contains(e, id, x.v, x.n, err);
		if (rc > 0) /* the caller logs it; the image goes below */
			rc = sbx_err_set(err, EACCES,
					 "save %s: the sandbox's file system holds a "
					 "credential value; no image was saved",
					 image);
	}
	/* Checked again just before the tag: it must not replace one made
	 * meanwhile. */
	if (rc == 0 && (rc = engine_image_exists(e, image, err)) > 0)
		rc = sbx_err_set(err, EEXIST,
				 "save %s: the image exists; a save never "
				 "replaces an image",
				 image);
	if (rc == 0)
		rc = engine_image_tag(e, id, image, err);
	if (rc < 0 && id)
		engine_image_remove(e, id, NULL);
	free(id);
	save_secrets_free(&x);
	if (rc < 0 && strncmp(err->msg, "save", 4) != 0)
		sbx_err_wrap(err, "save %s", image);
	return rc;
}
