/* The FUSE glue: every low-level request is decoded here and handed to the
 * kind of file it is for (handle.h's table) or to the model.  Nothing here
 * knows about docker, and nothing here reads a sandbox's fields. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "fs_internal.h"
#include "log.h"

struct fs_options opts;

/* ---- names ---- */

static void reply_entry(fuse_req_t req, const struct node *n, double timeout)
{
	struct fuse_entry_param e = { .ino = n->ino, .attr_timeout = 0, .entry_timeout = timeout };
	node_attr(n, &e.attr);
	fuse_reply_entry(req, &e);
}

/* The child `name` of a resolved directory p, as a node (ino 0: none). */
static struct node child_of(const struct node *p, const char *name, double *timeout)
{
	struct node n = { 0 };
	*timeout = 1;
	if (p->kind == K_ROOT) {
		*timeout = 0; /* sandboxes come and go behind the kernel's back */
		if (!strcmp(name, ".sandboxfs")) {
			n = (struct node){ .ino = INO_META, .kind = K_META_DIR };
		} else {
			struct sandbox *s = model_find(name);
			if (s)
				n = (struct node){ .ino = ino_make(sandbox_id(s), 0, K_DIR),
						   .kind = K_DIR,
						   .sbx = s };
		}
	} else if (p->kind == K_META_DIR) {
		for (unsigned i = INO_META_VERSION; i <= INO_META_LAST; i++)
			if (!strcmp(name, meta_names[i]))
				n = (struct node){ .ino = i, .kind = meta_kind(i) };
	} else if (p->kind == K_DIR || p->kind == K_RUN_DIR) {
		enum kind first = p->kind == K_DIR ? K_SANDBOX_FIRST : K_RUN_FIRST;
		enum kind last = p->kind == K_DIR ? K_SANDBOX_LAST : K_RUN_LAST;
		for (enum kind k = first; k <= last; k++) {
			if (!strcmp(name, kind_info(k)->name)) {
				n = (struct node){ .ino = ino_make(sandbox_id(p->sbx), p->run, k),
						   .kind = k,
						   .sbx = p->sbx,
						   .run = p->run };
				sandbox_ref(p->sbx);
			}
		}
	} else if (p->kind == K_RUNS && !strcmp(name, "latest")) {
		struct sandbox_view v;
		sandbox_view(p->sbx, &v);
		if (v.nruns > 0) {
			*timeout = 0; /* it changes with every run */
			n = (struct node){ .ino = ino_make(sandbox_id(p->sbx), 0, K_RUNS_LATEST),
					   .kind = K_RUNS_LATEST,
					   .sbx = p->sbx };
			sandbox_ref(p->sbx);
		}
	} else if (p->kind == K_RUNS) {
		char *end;
		unsigned long num = strtoul(name, &end, 10);
		struct run *r = NULL;
		if (*end == '\0' && name[0] >= '1' && name[0] <= '9' && num < (1ul << 24))
			r = sandbox_run(p->sbx, (unsigned)num);
		if (r) {
			run_put(r);
			n = (struct node){ .ino = ino_make(sandbox_id(p->sbx), (unsigned)num,
							   K_RUN_DIR),
					   .kind = K_RUN_DIR,
					   .sbx = p->sbx,
					   .run = (unsigned)num };
			sandbox_ref(p->sbx);
		}
	}
	return n;
}

static void sfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node p;
	if (parent == INO_TEMPLATES) {
		tpl_lookup(req, name);
		return;
	}
	if (node_resolve(parent, &p) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	double timeout;
	struct node n = child_of(&p, name, &timeout);
	if (n.ino)
		reply_entry(req, &n, timeout);
	else
		fuse_reply_err(req, ENOENT);
	node_release(&n);
	node_release(&p);
}

static void sfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node n;
	struct stat st;
	if (node_resolve(ino, &n) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	int rc = 0;
	if (n.kind == K_TEMPLATE)
		rc = tpl_attr(ino, &st);
	else
		node_attr(&n, &st);
	node_release(&n);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, 0);
}

static struct handle *fh(struct fuse_file_info *fi)
{
	return (struct handle *)(uintptr_t)fi->fh;
}

/* ---- setattr: only what changes nothing, and truncation to 0 ---- */

static bool same_time(const struct timespec *want, const struct timespec *have)
{
	return want->tv_sec == have->tv_sec && want->tv_nsec == have->tv_nsec;
}

/* Whether the attributes asked for are what the file already has. */
static int setattr_check(const struct stat *want, int to_set, const struct stat *have)
{
	if ((to_set & FUSE_SET_ATTR_MODE) && (want->st_mode & 07777) != (have->st_mode & 07777))
		return EPERM;
	if ((to_set & FUSE_SET_ATTR_UID) && want->st_uid != have->st_uid)
		return EPERM;
	if ((to_set & FUSE_SET_ATTR_GID) && want->st_gid != have->st_gid)
		return EPERM;
	/* Times are the daemon's to tell. */
	if (to_set & (FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW))
		return EPERM;
	if ((to_set & FUSE_SET_ATTR_ATIME) && !same_time(&want->st_atim, &have->st_atim))
		return EPERM;
	if ((to_set & FUSE_SET_ATTR_MTIME) && !same_time(&want->st_mtim, &have->st_mtim))
		return EPERM;
	return 0;
}

static int setattr_size(const struct node *n, off_t size, struct handle *h)
{
	const struct kind_info *ki = kind_info(n->kind);
	if (n->kind == K_TEMPLATE)
		return size == 0 ? 0 : EINVAL; /* the write that follows defines it */
	if (!n->sbx || !kind_writable(n->kind) || n->kind == K_CTL)
		return EACCES;
	if (n->kind == K_STDIN || n->kind == K_RUN_STDIN)
		return size == 0 ? 0 : EINVAL; /* `>` truncates: a stream has nothing to cut */
	if (size != 0)
		return EINVAL;
	if (!ki->ops->truncate)
		return 0; /* exec: a command is what is written after the open */
	/* truncate(2) and ftruncate(2) clear at once, like `: > FILE`; what
	 * this open had written so far is dropped with it. */
	if (h && h->kind == n->kind && h->sbx == n->sbx)
		write_buf_clear(&h->w);
	struct sbx_err err = { 0 };
	if (ki->ops->truncate(n->sbx, n->kind, &err) < 0) {
		log_error("%s", err.msg);
		return err.code;
	}
	return 0;
}

static void sfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			struct fuse_file_info *fi)
{
	struct node n;
	struct stat st;
	if (node_resolve(ino, &n) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	int e = 0;
	if (n.kind == K_TEMPLATE)
		e = -tpl_attr(ino, &st);
	else
		node_attr(&n, &st);
	if (!e && n.kind == K_TEMPLATE && !tpl_defined(ino) &&
	    (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
		       FUSE_SET_ATTR_MTIME_NOW))) {
		/* `touch templates/NEW`: a template exists only once its JSON
		 * is written and the file closed. */
		node_release(&n);
		refuse(req, EINVAL,
		       "templates: a template is defined by writing its JSON, "
		       "not by touch");
		return;
	}
	if (!e)
		e = setattr_check(attr, to_set & ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_CTIME), &st);
	if (!e && (to_set & FUSE_SET_ATTR_SIZE))
		e = setattr_size(&n, attr->st_size, fi ? fh(fi) : NULL);
	if (!e && (to_set & FUSE_SET_ATTR_SIZE)) {
		if (n.kind == K_TEMPLATE)
			e = -tpl_attr(ino, &st);
		else
			node_attr(&n, &st);
	}
	node_release(&n);
	if (e) {
		refuse(req, e, "setattr on inode %llu refused", (unsigned long long)ino);
		return;
	}
	fuse_reply_attr(req, &st, 0);
}

/* ---- directories ---- */

struct dirlist {
	char *buf;
	size_t len, cap;
	size_t *ends; /* where each entry ends: the offsets readdir resumes at */
	size_t nents;
	int error;		     /* an entry could not be added */
	struct dirlist *prev, *next; /* (open_lock) on the list of open ones */
};

/* What is open: a session that ends (unmount) while the kernel still holds
 * directories or files open never sees their release, so fs_cleanup()
 * frees what is left. */
static sbx_mutex open_lock = SBX_MUTEX_INIT;
static struct dirlist *open_dirs SBX_GUARDED_BY(open_lock);

static void dir_track(struct dirlist *d, bool add)
{
	sbx_lock(&open_lock);
	if (add) {
		d->next = open_dirs;
		if (open_dirs)
			open_dirs->prev = d;
		open_dirs = d;
	} else {
		if (d->prev)
			d->prev->next = d->next;
		else
			open_dirs = d->next;
		if (d->next)
			d->next->prev = d->prev;
	}
	sbx_unlock(&open_lock);
}

static void dir_add(fuse_req_t req, struct dirlist *d, const char *name, fuse_ino_t ino,
		    mode_t mode)
{
	struct stat st = { .st_ino = ino, .st_mode = mode };
	size_t need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
	if (d->error)
		return;
	if (d->len + need > d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 4096;
		while (cap < d->len + need)
			cap *= 2;
		char *b = realloc(d->buf, cap);
		if (!b) {
			d->error = ENOMEM;
			return;
		}
		d->buf = b;
		d->cap = cap;
	}
	size_t *e = realloc(d->ends, (d->nents + 1) * sizeof(*e));
	if (!e) {
		d->error = ENOMEM;
		return;
	}
	d->ends = e;
	d->len += fuse_add_direntry(req, d->buf + d->len, need, name, &st, (off_t)(d->len + need));
	d->ends[d->nents++] = d->len;
}

static void dirlist_free(struct dirlist *d)
{
	if (!d)
		return;
	free(d->buf);
	free(d->ends);
	free(d);
}

struct list_ctx {
	fuse_req_t req;
	struct dirlist *d;
};

static void add_template(void *ctx, const char *name, fuse_ino_t ino, mode_t mode)
{
	struct list_ctx *c = ctx;
	dir_add(c->req, c->d, name, ino, mode);
}

static void list_root(fuse_req_t req, struct dirlist *d)
{
	struct sandbox_listing l;
	dir_add(req, d, ".sandboxfs", INO_META, DIR_MODE);
	if (model_list(&l) < 0) {
		d->error = ENOMEM;
		return;
	}
	for (size_t i = 0; i < l.n; i++)
		dir_add(req, d, l.names[i], ino_make(l.ids[i], 0, K_DIR), kind_info(K_DIR)->mode);
	sandbox_listing_free(&l);
}

static void list_dir(fuse_req_t req, struct dirlist *d, const struct node *n)
{
	if (n->kind == K_ROOT) {
		list_root(req, d);
	} else if (n->kind == K_META_DIR) {
		for (unsigned i = INO_META_VERSION; i <= INO_META_LOG; i++)
			dir_add(req, d, meta_names[i], i, RO_MODE);
		for (unsigned i = INO_TEMPLATES; i <= INO_META_LAST; i++)
			dir_add(req, d, meta_names[i], i, kind_info(meta_kind(i))->mode);
	} else if (n->kind == K_TEMPLATES) {
		struct list_ctx c = { req, d };
		tpl_list(add_template, &c);
	} else if (n->kind == K_DIR || n->kind == K_RUN_DIR) {
		enum kind first = n->kind == K_DIR ? K_SANDBOX_FIRST : K_RUN_FIRST;
		enum kind last = n->kind == K_DIR ? K_SANDBOX_LAST : K_RUN_LAST;
		for (enum kind k = first; k <= last; k++)
			dir_add(req, d, kind_info(k)->name, ino_make(sandbox_id(n->sbx), n->run, k),
				kind_info(k)->mode);
	} else if (n->kind == K_RUNS) {
		struct sandbox_view v;
		sandbox_view(n->sbx, &v);
		for (unsigned i = 1; i <= v.nruns; i++) {
			char name[16];
			snprintf(name, sizeof(name), "%u", i);
			dir_add(req, d, name, ino_make(sandbox_id(n->sbx), i, K_RUN_DIR), DIR_MODE);
		}
		/* Numeric order, as `ls -U` shows it (`ls` sorts names itself;
		 * `ls -v` sorts numerically).  `latest` is looked up, never
		 * listed: a glob of runs/ stays a list of numbers. */
	}
}

/* runs/latest → "N", the newest run's directory. */
static void sfs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct node n;
	if (node_resolve(ino, &n) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct sandbox_view v = { 0 };
	if (n.kind == K_RUNS_LATEST)
		sandbox_view(n.sbx, &v);
	node_release(&n);
	if (v.nruns == 0) {
		fuse_reply_err(req, n.kind == K_RUNS_LATEST ? ENOENT : EINVAL);
		return;
	}
	char target[16];
	snprintf(target, sizeof(target), "%u", v.nruns);
	fuse_reply_readlink(req, target);
}

static void sfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node n;
	if (node_resolve(ino, &n) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (!node_is_dir(&n)) {
		node_release(&n);
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	struct dirlist *d = calloc(1, sizeof(*d));
	if (!d) {
		node_release(&n);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	dir_add(req, d, ".", ino, DIR_MODE);
	dir_add(req, d, "..", INO_ROOT, DIR_MODE);
	list_dir(req, d, &n);
	node_release(&n);
	if (d->error) {
		int e = d->error;
		dirlist_free(d);
		refuse(req, e, "opendir %llu: listing failed", (unsigned long long)ino);
		return;
	}
	fi->fh = (uintptr_t)d;
	dir_track(d, true);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		dir_track(d, false); /* the opener went away */
		dirlist_free(d);
	}
}

static void sfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	struct dirlist *d = (struct dirlist *)(uintptr_t)fi->fh;
	if (!d || off < 0 || (size_t)off >= d->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	/* Entries are whole: cut at the last one that fits. */
	size_t end = (size_t)off;
	for (size_t i = 0; i < d->nents; i++) {
		if (d->ends[i] <= (size_t)off)
			continue;
		if (d->ends[i] - (size_t)off > size)
			break;
		end = d->ends[i];
	}
	reply_buf_at(req, d->buf, end, size, off);
}

static void sfs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dirlist *d = (struct dirlist *)(uintptr_t)fi->fh;
	if (d)
		dir_track(d, false);
	dirlist_free(d);
	fuse_reply_err(req, 0);
}

static void sfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct sbx_err err = { 0 };
	struct sandbox *s = NULL;
	if (parent != INO_ROOT) {
		refuse(req, EPERM, "mkdir %s: sandboxes are made at the top of the mount only",
		       name);
		return;
	}
	int rc = sandbox_create(name, &s, &err);
	if (rc < 0) {
		log_error("%s", err.msg);
		fuse_reply_err(req, -rc);
		return;
	}
	struct node n = { .ino = ino_make(sandbox_id(s), 0, K_DIR), .kind = K_DIR, .sbx = s };
	reply_entry(req, &n, 0);
	node_release(&n);
}

static void sfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct sbx_err err = { 0 };
	if (parent != INO_ROOT || !strcmp(name, ".sandboxfs")) {
		refuse(req, EPERM, "rmdir %s: only sandboxes can be removed", name);
		return;
	}
	int rc = sandbox_remove(name, &err);
	if (rc < 0) {
		log_error("%s", err.msg);
		fuse_reply_err(req, -rc);
		return;
	}
	fuse_reply_err(req, 0);
}

/* ---- files: open, then the kind's functions ---- */

static int open_check(const struct node *n, int flags)
{
	int acc = flags & O_ACCMODE;
	const char *fname = kind_info(n->kind)->name;
	if (n->kind == K_META_FILE)
		fname = meta_names[n->ino];
	if (node_is_dir(n))
		return EISDIR;
	if (acc != O_RDONLY && !kind_writable(n->kind))
		return refusal(EACCES, "open %s for writing: the file is read-only",
			       fname ? fname : "file");
	if (acc != O_WRONLY && n->kind == K_CTL)
		return refusal(EACCES, "open ctl for reading: ctl is write-only");
	if (acc != O_WRONLY && (n->kind == K_STDIN || n->kind == K_RUN_STDIN))
		return refusal(EACCES, "open stdin for reading: stdin is write-only");
	return 0;
}

/* A handle for a resolved node; takes the node's sandbox reference. */
static struct handle *handle_new(struct node *n, int flags)
{
	struct handle *h = handle_alloc(n->kind, n->ino, flags);
	if (!h)
		return NULL;
	h->run = node_run(n);
	h->sbx = steal_pointer(&n->sbx);
	return h;
}

static void sfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node n;
	if (node_resolve(ino, &n) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	int e = open_check(&n, fi->flags);
	struct handle *h = e ? NULL : handle_new(&n, fi->flags);
	node_release(&n);
	if (!e && !h)
		e = ENOMEM;
	if (!e && h->ops->open)
		e = h->ops->open(h, fi->flags);
	if (e) {
		handle_free(h);
		fuse_reply_err(req, e);
		return;
	}
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	fi->nonseekable = h->nonseekable;
	handle_track(h, true);
	/* An open file is activity for the idle TTL (stats, read by monitors, is not). */
	if (h->sbx && h->kind != K_STATS) {
		sandbox_files_opened(h->sbx, +1);
		h->counted = true;
	}
	if (fuse_reply_open(req, fi) == -ENOENT)
		handle_free(h); /* the opener went away */
}

static void sfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct handle *h = fh(fi);
	if (h->ops->read)
		h->ops->read(req, h, size, off);
	else
		reply_buf_at(req, h->data, h->len, size, off);
}

static void sfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	struct handle *h = fh(fi);
	int e = h->ops->write ? h->ops->write(h, buf, size) : EACCES;
	if (e)
		fuse_reply_err(req, e);
	else
		fuse_reply_write(req, size);
}

static void sfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = fh(fi);
	if (h->ops->flush)
		h->ops->flush(req, h);
	else
		fuse_reply_err(req, 0);
}

static void sfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	handle_free(fh(fi));
	fuse_reply_err(req, 0);
}

static void sfs_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct fuse_pollhandle *ph)
{
	struct handle *h = fh(fi);
	if (h->ops->poll) {
		h->ops->poll(req, h, ph);
		return;
	}
	if (ph)
		fuse_pollhandle_destroy(ph);
	fuse_reply_poll(req, POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM);
}

static void sfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		       struct fuse_file_info *fi)
{
	if (parent == INO_TEMPLATES) {
		tpl_create(req, name, fi);
		return;
	}
	refuse(req, EPERM, "create %s: sandboxfs has no plain files", name);
}

/* ---- everything a control filesystem refuses ---- */

static void sfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	refuse(req, EPERM, "mknod %s: sandboxfs has no plain files", name);
}
static void sfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (parent == INO_TEMPLATES) {
		tpl_unlink(req, name);
		return;
	}
	refuse(req, EPERM, "unlink %s: control files cannot be removed", name);
}
static void sfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	refuse(req, EPERM, "symlink %s: not supported", name);
}
static void sfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char *name)
{
	refuse(req, EPERM, "link %s: not supported", name);
}
static void sfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		       const char *newname, unsigned int flags)
{
	refuse(req, EPERM, "rename %s: not supported", name);
}

static void sfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st = { .f_bsize = 4096, .f_frsize = 4096, .f_namemax = 63 };
	fuse_reply_statfs(req, &st);
}

static void sfs_init(void *userdata, struct fuse_conn_info *conn)
{
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	/* Replies to waiting reads come from the I/O thread, in any order. */
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
}

static const struct fuse_lowlevel_ops ops = {
	.init = sfs_init,
	.lookup = sfs_lookup,
	.getattr = sfs_getattr,
	.readlink = sfs_readlink,
	.setattr = sfs_setattr,
	.opendir = sfs_opendir,
	.readdir = sfs_readdir,
	.releasedir = sfs_releasedir,
	.mkdir = sfs_mkdir,
	.rmdir = sfs_rmdir,
	.open = sfs_open,
	.create = sfs_create,
	.read = sfs_read,
	.write = sfs_write,
	.flush = sfs_flush,
	.release = sfs_release,
	.poll = sfs_poll,
	.mknod = sfs_mknod,
	.unlink = sfs_unlink,
	.symlink = sfs_symlink,
	.link = sfs_link,
	.rename = sfs_rename,
	.statfs = sfs_statfs,
};

void fs_cleanup(void)
{
	stream_cleanup();
	for (;;) {
		sbx_lock(&open_lock);
		struct dirlist *d = open_dirs;
		sbx_unlock(&open_lock);
		struct handle *h = d ? NULL : handle_first_open();
		if (d) {
			dir_track(d, false);
			dirlist_free(d);
		} else if (h) {
			handle_free(h);
		} else {
			break;
		}
	}
}

const struct fuse_lowlevel_ops *fs_ops(const struct fs_options *o)
{
	opts = *o;
	node_init();
	return &ops;
}

const struct model_callbacks fs_model_callbacks = {
	.run_changed = stream_run_changed,
	.events_changed = stream_events_changed,
};
