/* .sandboxfs/templates/: one file per template.  Writing a file defines or
 * replaces a template when it is closed; unlink deletes it. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "handle.h"
#include "log.h"
#include "model.h"
#include "template.h"

#define TEMPLATE_MODE (S_IFREG | 0644)

bool tpl_owns(fuse_ino_t ino)
{
	return ino == INO_TEMPLATES || (ino >= TEMPLATE_INO_BASE && ino < (1ull << 32));
}

void tpl_fill_attr(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_blksize = 4096;
	if (ino == INO_TEMPLATES) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		return;
	}
	st->st_mode = TEMPLATE_MODE;
	st->st_nlink = 1;
	struct template *t = template_get_id((uint32_t)(ino - TEMPLATE_INO_BASE));
	if (t)
		st->st_size = (off_t)strlen(t->text) + 1;
	template_free(t);
}

static void reply_template_entry(fuse_req_t req, uint32_t id, struct fuse_file_info *fi)
{
	struct fuse_entry_param e = { .ino = TEMPLATE_INO_BASE + id };
	tpl_fill_attr(e.ino, &e.attr);
	if (fi)
		fuse_reply_create(req, &e, fi);
	else
		fuse_reply_entry(req, &e);
}

void tpl_lookup(fuse_req_t req, const char *name)
{
	struct template *t = template_get(name);
	if (!t) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	uint32_t id = t->id;
	template_free(t);
	reply_template_entry(req, id, NULL);
}

void tpl_getattr(fuse_req_t req, fuse_ino_t ino)
{
	struct stat st;
	if (ino != INO_TEMPLATES) {
		struct template *t = template_get_id((uint32_t)(ino - TEMPLATE_INO_BASE));
		if (!t) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		template_free(t);
	}
	tpl_fill_attr(ino, &st);
	fuse_reply_attr(req, &st, 0);
}

void tpl_list(void (*add)(void *ctx, const char *name, fuse_ino_t ino, mode_t mode), void *ctx)
{
	char **names = NULL;
	uint32_t *ids = NULL;
	size_t n = 0;
	template_names(&names, &ids, &n);
	for (size_t i = 0; i < n; i++) {
		add(ctx, names[i], TEMPLATE_INO_BASE + ids[i], TEMPLATE_MODE);
		free(names[i]);
	}
	free(names);
	free(ids);
}

static struct handle *tpl_handle(const char *name, uint32_t id, struct fuse_file_info *fi)
{
	struct handle *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	pthread_mutex_init(&h->exec_lock, NULL);
	h->kind = K_TEMPLATE;
	h->ino = TEMPLATE_INO_BASE + id;
	h->tpl_id = id;
	h->tpl_name = strdup(name);
	h->writable = (fi->flags & O_ACCMODE) != O_RDONLY;
	if (!h->tpl_name) {
		free(h);
		return NULL;
	}
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	return h;
}

void tpl_create(fuse_req_t req, const char *name, struct fuse_file_info *fi)
{
	struct template *existing = template_get(name);
	uint32_t id = existing ? existing->id : template_reserve_id();
	template_free(existing);
	if (!tpl_handle(name, id, fi)) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* Nothing is defined until the close: a bad template leaves no trace. */
	reply_template_entry(req, id, fi);
}

void tpl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct template *t = template_get_id((uint32_t)(ino - TEMPLATE_INO_BASE));
	if (!t) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct handle *h = tpl_handle(t->name, t->id, fi);
	if (h && (fi->flags & O_ACCMODE) != O_WRONLY) {
		size_t len = strlen(t->text);
		h->data = malloc(len + 2);
		if (h->data) {
			memcpy(h->data, t->text, len);
			h->data[len] = '\n';
			h->len = len + 1;
		}
	}
	template_free(t);
	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fuse_reply_open(req, fi);
}

void tpl_flush(fuse_req_t req, struct handle *h)
{
	struct sbx_err err = { 0 };
	if (!h->writable || h->wlen == 0) {
		fuse_reply_err(req, h->poisoned ? EINVAL : 0);
		return;
	}
	int rc = template_define(h->tpl_name, h->wbuf, h->wlen, h->tpl_id, &err);
	h->wlen = 0;
	if (rc < 0) {
		log_error("%s", err.msg);
		fuse_reply_err(req, -rc);
		return;
	}
	model_engines_changed(); /* a replaced template may have let an engine go */
	fuse_reply_err(req, 0);
}

void tpl_unlink(fuse_req_t req, const char *name)
{
	struct sbx_err err = { 0 };
	int rc = template_delete(name, &err);
	if (rc < 0)
		log_error("%s", err.msg);
	else
		model_engines_changed();
	fuse_reply_err(req, rc < 0 ? -rc : 0);
}
