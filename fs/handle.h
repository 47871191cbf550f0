/* Per-open state, kept in fi->fh from open to release (lxcfs style). */
#ifndef SBX_HANDLE_H
#define SBX_HANDLE_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <stdbool.h>

#include "inode.h"
#include "model.h"

struct handle {
	enum kind kind;
	uint64_t ino;
	struct sandbox *sbx;     /* a reference, NULL under .sandboxfs */
	struct run *run;         /* a reference: the run this handle reads, or exec started */
	enum stream stream;
	bool nonseekable;
	off_t pos;               /* (L) read position of nonseekable handles */

	char *data;              /* generated content, fixed at open */
	size_t len;
	int file_fd;             /* runs/N/cmd: read from its spool file, not memory */

	char *wbuf;              /* what was written, applied at flush */
	size_t wlen, wcap;
	bool writable, trunc, poisoned;
	bool undo_valid;         /* undo holds what an O_TRUNC flush cleared */
	struct setting_undo undo;

	char *tpl_name;          /* K_TEMPLATE: the template's name */
	uint32_t tpl_id;

	pthread_mutex_t exec_lock; /* exec: guards wbuf, exec_started and run while starting */
	bool exec_started;       /* exec: the run was started from this handle */
	bool number_read;        /* exec: "N\n" was returned */
	struct cmd_spool cmd;    /* exec: the command written so far */
	int poison_errno;        /* exec: a write failed with it; close runs nothing */

	struct fuse_pollhandle *ph; /* (L) */
	struct handle *poll_next;   /* (L) on the list of handles that polled */
};

/* stream.c: answering reads that may have to wait, and polls. */
void stream_read(fuse_req_t req, struct handle *h, size_t size, off_t off);
void stream_wait(fuse_req_t req, struct handle *h, size_t size, off_t off);
/* Replies to req (a flush, or a read when reply_number) once h->run has
 * started or failed to. */
void stream_await_start(fuse_req_t req, struct handle *h, bool reply_number);
void stream_poll(fuse_req_t req, struct handle *h, struct fuse_pollhandle *ph);
/* Drops h from the poll list (release). */
void stream_forget_handle(struct handle *h);
/* The model's callbacks. */
void stream_run_changed(struct run *r);

/* templates.c: .sandboxfs/templates/ */
bool tpl_owns(fuse_ino_t ino);
void tpl_lookup(fuse_req_t req, const char *name);
void tpl_getattr(fuse_req_t req, fuse_ino_t ino);
/* Appends the directory's entries through add(). */
void tpl_list(void (*add)(void *ctx, const char *name, fuse_ino_t ino, mode_t mode), void *ctx);
void tpl_create(fuse_req_t req, const char *name, struct fuse_file_info *fi);
void tpl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void tpl_flush(fuse_req_t req, struct handle *h);
void tpl_unlink(fuse_req_t req, const char *name);
void tpl_fill_attr(fuse_ino_t ino, struct stat *st);

void reply_buf_at(fuse_req_t req, const char *data, size_t len, size_t size, off_t off);

#endif
