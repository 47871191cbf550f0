/* .sandboxfs/templates/: one file per template.  Writing a file defines or
 * replaces a template when it is closed; unlink deletes it.  A file being
 * created has an inode before it is a template: its open handle answers
 * for it (fstat, the kernel's getattr) until then. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "fs_internal.h"
#include "log.h"
#include "model.h"
#include "template.h"

#define TEMPLATE_MODE (S_IFREG | 0644)
#define TEMPLATE_WRITE_MAX (1u << 20)

/* Ids of templates being created by an open handle, with how many. */
static sbx_mutex pending_lock = SBX_MUTEX_INIT;
static struct pending {
	uint32_t id;
	unsigned opens;
} pending[64] SBX_GUARDED_BY(pending_lock);

static void pending_add(uint32_t id)
{
	sbx_lock(&pending_lock);
	struct pending *free_slot = NULL;
	for (size_t i = 0; i < SBX_ARRAY_SIZE(pending); i++) {
		if (pending[i].opens && pending[i].id == id) {
			pending[i].opens++;
			sbx_unlock(&pending_lock);
			return;
		}
		if (!pending[i].opens && !free_slot)
			free_slot = &pending[i];
	}
	if (free_slot)
		*free_slot = (struct pending){ .id = id, .opens = 1 };
	sbx_unlock(&pending_lock);
}

static void pending_drop(uint32_t id)
{
	sbx_lock(&pending_lock);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(pending); i++)
		if (pending[i].opens && pending[i].id == id)
			pending[i].opens--;
	sbx_unlock(&pending_lock);
}

static bool is_pending(uint32_t id)
{
	bool found = false;
	sbx_lock(&pending_lock);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(pending); i++)
		if (pending[i].opens && pending[i].id == id)
			found = true;
	sbx_unlock(&pending_lock);
	return found;
}

static void base_attr(fuse_ino_t ino, struct stat *st)
{
	struct node n = { .ino = ino, .kind = K_TEMPLATE };
	node_attr(&n, st);
}

int tpl_attr(fuse_ino_t ino, struct stat *st)
{
	uint32_t id = (uint32_t)(ino - TEMPLATE_INO_BASE);
	base_attr(ino, st);
	size_t len = 0;
	if (template_text_len(id, &len) == 0)
		st->st_size = (off_t)len + 1;
	else if (!is_pending(id))
		return -ENOENT;
	return 0;
}

bool tpl_defined(fuse_ino_t ino)
{
	size_t len;
	return template_text_len((uint32_t)(ino - TEMPLATE_INO_BASE), &len) == 0;
}

static void reply_template_entry(fuse_req_t req, uint32_t id, struct fuse_file_info *fi)
{
	struct fuse_entry_param e = { .ino = TEMPLATE_INO_BASE + id };
	if (tpl_attr(e.ino, &e.attr) < 0)
		base_attr(e.ino, &e.attr);
	if (fi)
		fuse_reply_create(req, &e, fi);
	else
		fuse_reply_entry(req, &e);
}

void tpl_lookup(fuse_req_t req, const char *name)
{
	uint32_t id;
	if (template_id(name, &id) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	reply_template_entry(req, id, NULL);
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

static struct handle *tpl_handle(const char *name, uint32_t id, int flags)
{
	struct handle *h = handle_alloc(K_TEMPLATE, TEMPLATE_INO_BASE + id, flags);
	if (!h)
		return NULL;
	h->tpl_id = id;
	h->tpl_name = strdup(name);
	if (!h->tpl_name) {
		h->ops = NULL; /* nothing of it is pending yet */
		handle_free(h);
		return NULL;
	}
	pending_add(id);
	return h;
}

void tpl_create(fuse_req_t req, const char *name, struct fuse_file_info *fi)
{
	uint32_t id;
	if (template_id(name, &id) < 0)
		id = template_reserve_id();
	struct handle *h = tpl_handle(name, id, fi->flags);
	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	handle_track(h, true);
	/* Nothing is defined until the close: a bad template leaves no trace. */
	reply_template_entry(req, id, fi);
}

/* Opening an existing template's inode (fs.c made the handle). */
static int template_open(struct handle *h, int flags)
{
	uint32_t id = (uint32_t)(h->ino - TEMPLATE_INO_BASE);
	char *name = NULL, *text = NULL;
	if (template_text(id, &name, &text) < 0)
		return ENOENT;
	h->tpl_id = id;
	h->tpl_name = name;
	pending_add(id);
	if ((flags & O_ACCMODE) != O_WRONLY) {
		size_t len = strlen(text);
		h->data = malloc(len + 2);
		if (!h->data) {
			free(text);
			return ENOMEM;
		}
		memcpy(h->data, text, len);
		h->data[len] = '\n';
		h->len = len + 1;
	}
	free(text);
	return 0;
}

/* The whole document is checked at the write that completes it, so that
 * a shell's `echo ... > templates/x` sees the error (shells ignore
 * close's); an incomplete one waits for more. */
static int template_write(struct handle *h, const char *buf, size_t size)
{
	struct sbx_err err = { 0 };
	if (h->w.poisoned)
		return refusal(EINVAL, "write %s: an earlier write on this open was refused",
			       h->tpl_name);
	int e = write_buf_append(&h->w, buf, size, TEMPLATE_WRITE_MAX);
	if (e) {
		h->w.poisoned = true;
		return refusal(e, "write %s: %s", h->tpl_name,
			       e == EFBIG ? "a template is at most 1 MiB" : strerror(e));
	}
	/* Only a buffer ending in '}' can be a complete object: the parse
	 * is not repeated for every piece of a long document.  Anything
	 * that does not start as an object is checked at once. */
	size_t start = 0, end = h->w.len;
	while (start < end && strchr(" \t\r\n", h->w.data[start]))
		start++;
	while (end > start && strchr(" \t\r\n", h->w.data[end - 1]))
		end--;
	bool maybe_done = end > start && (h->w.data[start] != '{' || h->w.data[end - 1] == '}');
	if (maybe_done && template_check_complete(h->tpl_name, h->w.data, h->w.len, &err) < 0) {
		h->w.poisoned = true;
		log_error("%s", err.msg);
		return err.code;
	}
	return 0;
}

static void template_flush(fuse_req_t req, struct handle *h)
{
	struct sbx_err err = { 0 };
	if (!h->writable || h->w.len == 0) {
		fuse_reply_err(req, h->w.poisoned ? EINVAL : 0);
		return;
	}
	int rc = template_define(h->tpl_name, h->w.data, h->w.len, h->tpl_id, &err);
	write_buf_clear(&h->w);
	if (rc < 0) {
		log_error("%s", err.msg);
		fuse_reply_err(req, -rc);
		return;
	}
	model_engines_changed(); /* a replaced template may have let an engine go */
	fuse_reply_err(req, 0);
}

static void template_release(struct handle *h)
{
	pending_drop(h->tpl_id);
}

const struct file_ops template_file_ops = {
	.open = template_open,
	.write = template_write,
	.flush = template_flush,
	.release = template_release,
};

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
