/* The FUSE glue: every low-level request is decoded here and handed to the
 * model.  Nothing here knows about docker. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/statvfs.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_internal.h"
#include "log.h"
#include "state.h"
#include "template.h"


const struct kind_info kinds[K_MAX] = {
	[K_DIR] = { NULL, S_IFDIR | 0755 },
	[K_EXEC] = { "exec", S_IFREG | 0666 },
	[K_OUTPUT] = { "output", RO_MODE },
	[K_STDOUT] = { "stdout", RO_MODE },
	[K_STDERR] = { "stderr", RO_MODE },
	[K_STATUS] = { "status", RO_MODE },
	[K_WAIT] = { "wait", RO_MODE },
	[K_AUTH] = { "auth", S_IFREG | 0600 },
	[K_ENV] = { "env", S_IFREG | 0644 },
	[K_WORKDIR] = { "workdir", S_IFREG | 0644 },
	[K_TIMEOUT] = { "timeout", S_IFREG | 0644 },
	[K_CTL] = { "ctl", S_IFREG | 0222 },
	[K_INFO] = { "info", RO_MODE },
	[K_RUNS] = { "runs", DIR_MODE },
	[K_RUN_DIR] = { NULL, DIR_MODE },
	[K_RUN_CMD] = { "cmd", RO_MODE },
	[K_RUN_OUTPUT] = { "output", RO_MODE },
	[K_RUN_STDOUT] = { "stdout", RO_MODE },
	[K_RUN_STDERR] = { "stderr", RO_MODE },
	[K_RUN_STATUS] = { "status", RO_MODE },
	[K_RUN_STARTED] = { "started", RO_MODE },
	[K_RUN_ENDED] = { "ended", RO_MODE },
};

const char *const meta_names[] = {
	[INO_META_VERSION] = "version",
	[INO_META_BACKEND] = "backend",
	[INO_META_LOG] = "log",
	[INO_TEMPLATES] = "templates",
};

struct fs_options opts;

enum stream kind_stream(enum kind k)
{
	switch (k) {
	case K_STDOUT:
	case K_RUN_STDOUT:
		return STREAM_STDOUT;
	case K_STDERR:
	case K_RUN_STDERR:
		return STREAM_STDERR;
	default:
		return STREAM_OUTPUT;
	}
}

bool is_stream(enum kind k)
{
	return k == K_OUTPUT || k == K_STDOUT || k == K_STDERR || k == K_RUN_OUTPUT ||
	       k == K_RUN_STDOUT || k == K_RUN_STDERR;
}

/* ---- resolving inodes ---- */

void node_release(struct node *n)
{
	if (n->sbx)
		sandbox_put(n->sbx);
	n->sbx = NULL;
}

int node_resolve(fuse_ino_t ino, struct node *n)
{
	*n = (struct node){ .ino = ino };
	if (ino == INO_ROOT || ino == INO_META || (ino >= INO_META_VERSION && ino <= INO_META_LOG))
		return 0;
	n->kind = ino_kind(ino);
	n->run = ino_run(ino);
	if (n->kind == K_NONE || ino_sbx(ino) == 0)
		return -ENOENT;
	if ((n->run == 0) != (n->kind <= K_RUNS))
		return -ENOENT;
	n->sbx = model_find_id(ino_sbx(ino));
	if (!n->sbx)
		return -ENOENT;
	if (n->run) {
		pthread_mutex_lock(&model_lock);
		bool exists = sandbox_run(n->sbx, n->run) != NULL;
		pthread_mutex_unlock(&model_lock);
		if (!exists) {
			node_release(n);
			return -ENOENT;
		}
	}
	return 0;
}

static void fill_attr(const struct node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_nlink = 1;
	st->st_blksize = 4096;
	if (n->ino == INO_ROOT || n->ino == INO_META) {
		st->st_mode = DIR_MODE;
		st->st_nlink = 2;
		return;
	}
	if (!n->sbx) {
		st->st_mode = RO_MODE;
		return;
	}
	st->st_mode = kinds[n->kind].mode;
	if (S_ISDIR(st->st_mode))
		st->st_nlink = 2;
	pthread_mutex_lock(&model_lock);
	st->st_mtim = n->sbx->created;
	struct run *r = n->run ? sandbox_run(n->sbx, n->run) :
		(is_stream(n->kind) || n->kind == K_STATUS || n->kind == K_WAIT) ?
		sandbox_latest_run(n->sbx) : NULL;
	if (r) {
		st->st_mtim = r->phase == RUN_ENDED ? r->ended : r->started;
		if (is_stream(n->kind))
			st->st_size = r->size[kind_stream(n->kind)];
	}
	pthread_mutex_unlock(&model_lock);
	st->st_atim = st->st_ctim = st->st_mtim;
	st->st_blocks = (st->st_size + 511) / 512;
}

static void reply_entry(fuse_req_t req, const struct node *n, double timeout)
{
	struct fuse_entry_param e = { .ino = n->ino, .attr_timeout = 0, .entry_timeout = timeout };
	fill_attr(n, &e.attr);
	fuse_reply_entry(req, &e);
}

/* Logs why a request was refused and answers it. */
void refuse(fuse_req_t req, int e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int refusal(int e, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warn("%s (%s)", msg, strerror(e));
	return e;
}

void refuse(fuse_req_t req, int e, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fuse_reply_err(req, refusal(e, "%s", msg));
}

static void sfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node p, n = { 0 };
	if (parent == INO_TEMPLATES) {
		tpl_lookup(req, name);
		return;
	}
	if (node_resolve(parent, &p) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	double timeout = 0;
	if (parent == INO_ROOT) {
		if (!strcmp(name, ".sandboxfs")) {
			n.ino = INO_META;
		} else {
			struct sandbox *s = model_find(name);
			if (s) {
				n = (struct node){ .ino = ino_make(s->id, 0, K_DIR), .kind = K_DIR, .sbx = s };
			}
		}
	} else if (parent == INO_META) {
		for (unsigned i = INO_META_VERSION; i <= INO_TEMPLATES; i++)
			if (!strcmp(name, meta_names[i]))
				n.ino = i;
		timeout = 1;
		if (n.ino == INO_TEMPLATES) {
			struct fuse_entry_param e = { .ino = INO_TEMPLATES, .entry_timeout = 1 };
			tpl_fill_attr(INO_TEMPLATES, &e.attr);
			fuse_reply_entry(req, &e);
			return;
		}
	} else if (p.kind == K_DIR) {
		for (int k = K_EXEC; k <= K_RUNS; k++) {
			if (!strcmp(name, kinds[k].name)) {
				n = (struct node){ .ino = ino_make(p.sbx->id, 0, k), .kind = k, .sbx = p.sbx };
				sandbox_ref(p.sbx);
				timeout = 1;
			}
		}
	} else if (p.kind == K_RUNS) {
		char *end;
		unsigned long num = strtoul(name, &end, 10);
		if (*end == '\0' && name[0] >= '1' && name[0] <= '9' && num < (1ul << 24)) {
			pthread_mutex_lock(&model_lock);
			bool exists = sandbox_run(p.sbx, (unsigned)num) != NULL;
			pthread_mutex_unlock(&model_lock);
			if (exists) {
				n = (struct node){ .ino = ino_make(p.sbx->id, (unsigned)num, K_RUN_DIR),
						   .kind = K_RUN_DIR, .sbx = p.sbx, .run = (unsigned)num };
				sandbox_ref(p.sbx);
				timeout = 1;
			}
		}
	} else if (p.kind == K_RUN_DIR) {
		for (int k = K_RUN_CMD; k <= K_RUN_ENDED; k++) {
			if (!strcmp(name, kinds[k].name)) {
				n = (struct node){ .ino = ino_make(p.sbx->id, p.run, k), .kind = k,
						   .sbx = p.sbx, .run = p.run };
				sandbox_ref(p.sbx);
				timeout = 1;
			}
		}
	}
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
	if (tpl_owns(ino)) {
		tpl_getattr(req, ino);
		return;
	}
	if (node_resolve(ino, &n) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_attr(&n, &st);
	node_release(&n);
	fuse_reply_attr(req, &st, 0);
}

/* ---- directories ---- */

struct dirlist {
	char *buf;
	size_t len, cap;
	size_t *ends; /* where each entry ends: the offsets readdir resumes at */
	size_t nents;
};

static void dir_add(fuse_req_t req, struct dirlist *d, const char *name, fuse_ino_t ino,
		    mode_t mode)
{
	struct stat st = { .st_ino = ino, .st_mode = mode };
	size_t need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
	if (d->len + need > d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 4096;
		while (cap < d->len + need)
			cap *= 2;
		char *b = realloc(d->buf, cap);
		if (!b)
			return;
		d->buf = b;
		d->cap = cap;
	}
	size_t *e = realloc(d->ends, (d->nents + 1) * sizeof(*e));
	if (!e)
		return;
	d->ends = e;
	d->len += fuse_add_direntry(req, d->buf + d->len, need, name, &st, (off_t)(d->len + need));
	d->ends[d->nents++] = d->len;
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

static void add_sandbox(struct sandbox *s, void *ctx)
{
	struct list_ctx *c = ctx;
	dir_add(c->req, c->d, s->name, ino_make(s->id, 0, K_DIR), kinds[K_DIR].mode);
}

static void sfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node n = { 0 };
	struct dirlist *d = calloc(1, sizeof(*d));
	if (!d || (ino != INO_TEMPLATES && node_resolve(ino, &n) < 0)) {
		free(d);
		fuse_reply_err(req, d ? ENOENT : ENOMEM);
		return;
	}
	dir_add(req, d, ".", ino, DIR_MODE);
	dir_add(req, d, "..", INO_ROOT, DIR_MODE);
	if (ino == INO_ROOT) {
		dir_add(req, d, ".sandboxfs", INO_META, DIR_MODE);
		struct list_ctx c = { req, d };
		model_foreach(add_sandbox, &c);
	} else if (ino == INO_META) {
		for (unsigned i = INO_META_VERSION; i <= INO_META_LOG; i++)
			dir_add(req, d, meta_names[i], i, RO_MODE);
		dir_add(req, d, "templates", INO_TEMPLATES, S_IFDIR | 0755);
	} else if (ino == INO_TEMPLATES) {
		struct list_ctx c = { req, d };
		tpl_list(add_template, &c);
	} else if (n.kind == K_DIR) {
		for (int k = K_EXEC; k <= K_RUNS; k++)
			dir_add(req, d, kinds[k].name, ino_make(n.sbx->id, 0, k), kinds[k].mode);
	} else if (n.kind == K_RUNS) {
		pthread_mutex_lock(&model_lock);
		unsigned count = n.sbx->nruns;
		pthread_mutex_unlock(&model_lock);
		for (unsigned i = 1; i <= count; i++) {
			char name[16];
			snprintf(name, sizeof(name), "%u", i);
			dir_add(req, d, name, ino_make(n.sbx->id, i, K_RUN_DIR), DIR_MODE);
		}
	} else if (n.kind == K_RUN_DIR) {
		for (int k = K_RUN_CMD; k <= K_RUN_ENDED; k++)
			dir_add(req, d, kinds[k].name, ino_make(n.sbx->id, n.run, k), kinds[k].mode);
	} else {
		node_release(&n);
		free(d->buf);
		free(d->ends);
		free(d);
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	node_release(&n);
	fi->fh = (uintptr_t)d;
	fuse_reply_open(req, fi);
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
	free(d->buf);
	free(d->ends);
	free(d);
	fuse_reply_err(req, 0);
}

static void sfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct sbx_err err = { 0 };
	struct sandbox *s = NULL;
	if (parent != INO_ROOT) {
		refuse(req, EPERM, "mkdir %s: sandboxes are made at the top of the mount only", name);
		return;
	}
	int rc = sandbox_create(name, &s, &err);
	if (rc < 0) {
		log_error("%s", err.msg);
		fuse_reply_err(req, -rc);
		return;
	}
	struct node n = { .ino = ino_make(s->id, 0, K_DIR), .kind = K_DIR, .sbx = s };
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

static void sfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			struct fuse_file_info *fi)
{
	struct node n;
	if (tpl_owns(ino) && ino != INO_TEMPLATES) {
		if (to_set & ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
			       FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME)) {
			refuse(req, EPERM, "setattr on a template refused");
			return;
		}
		struct template *t = template_get_id((uint32_t)(ino - TEMPLATE_INO_BASE));
		bool defined = t != NULL;
		template_free(t);
		if (!defined) {
			/* `touch templates/NEW`: a template exists only once its
			 * JSON is written and the file closed. */
			refuse(req, EINVAL, "templates: a template is defined by writing its JSON, "
					    "not by touch or truncate");
			return;
		}
		tpl_getattr(req, ino);
		return;
	}
	if (node_resolve(ino, &n) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	const int ignored = FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
			    FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME;
	int e = 0;
	if (to_set & ~(FUSE_SET_ATTR_SIZE | ignored)) {
		e = EPERM;
	} else if (to_set & FUSE_SET_ATTR_SIZE) {
		if (!n.sbx || !kind_writable(n.kind) || n.kind == K_CTL)
			e = EACCES;
		else if (attr->st_size != 0)
			e = EINVAL;
		else if (n.kind != K_EXEC) {
			/* truncate(2) and ftruncate(2) clear at once, like `: > FILE`;
			 * what this open had written so far is dropped with it. */
			struct sbx_err err = { 0 };
			struct handle tmp = { .kind = n.kind, .sbx = n.sbx };
			struct handle *h = fi ? (struct handle *)(uintptr_t)fi->fh : NULL;
			if (h && h->sbx == n.sbx && h->kind == n.kind && h->wbuf) {
				explicit_bzero(h->wbuf, h->wlen);
				h->wlen = 0;
			}
			if (apply_setting(&tmp, "", 0, true, &err) < 0)
				e = err.code;
		}
	} else if (to_set & ignored) {
		e = EPERM; /* times are the daemon's to tell */
	}
	if (e) {
		node_release(&n);
		refuse(req, e, "setattr on inode %llu refused", (unsigned long long)ino);
		return;
	}
	struct stat st;
	fill_attr(&n, &st);
	node_release(&n);
	fuse_reply_attr(req, &st, 0);
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

const struct fuse_lowlevel_ops *fs_ops(const struct fs_options *o)
{
	opts = *o;
	return &ops;
}

const struct model_callbacks fs_model_callbacks = {
	.run_changed = stream_run_changed,
};
