/* Per-open state, kept in fi->fh from open to release (lxcfs style), and
 * the table that says what each kind of file does: adding a file is one
 * row in fs/node.c and one set of these functions. */
#ifndef SBX_HANDLE_H
#define SBX_HANDLE_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <stdbool.h>

#include "inode.h"
#include "lock.h"
#include "model.h"

/* What a file written in pieces collects until it is flushed. */
struct write_buf {
	char *data;
	size_t len, cap;
	bool poisoned; /* a write was refused: nothing of this open applies */
};

struct handle {
	const struct file_ops *ops;
	enum kind kind;
	uint64_t ino;
	struct sandbox *sbx; /* a reference, NULL outside sandboxes */
	struct run *run;     /* a reference: the run this handle reads, or exec started */
	bool writable, trunc;
	bool counted; /* counted as an open file of the sandbox (idle TTL) */

	char *data; /* generated content, fixed at open */
	size_t len;
	int file_fd; /* runs/N/cmd: served from its spool file, -1 otherwise */
	struct write_buf w;

	/* Streams (stream.c). */
	enum stream stream;
	bool nonseekable;
	bool nonblock;		    /* events opened O_NONBLOCK: EAGAIN at the end */
	bool reader;		    /* holds run_reader_open() */
	off_t pos;		    /* read position of nonseekable handles (stream_lock) */
	struct fuse_pollhandle *ph; /* (stream_lock) */
	struct handle *poll_next;   /* (stream_lock) on the list of handles that polled */

	/* Settings (files.c). */
	bool undo_valid; /* undo holds what an O_TRUNC flush cleared */
	bool cleared;	 /* an empty flush of this O_TRUNC open cleared, unlogged */
	struct setting_undo undo;

	/* exec (exec.c). */
	sbx_mutex exec_lock;  /* guards cmd, poison_errno, exec_started and run while starting */
	bool exec_started;    /* the run was started from this handle */
	bool number_read;     /* "N\n" was returned */
	struct cmd_spool cmd; /* the command written so far */
	int poison_errno;     /* a write failed with it: the close runs nothing */

	struct handle *open_prev, *open_next; /* fs.c: the handles still open */

	/* .sandboxfs/templates/NAME (templates.c). */
	char *tpl_name;
	uint32_t tpl_id;
};

/* What one kind of file does.  A NULL entry takes the default: read
 * serves h->data, write is refused, flush and release do nothing extra,
 * poll says always ready. */
struct file_ops {
	/* Fills the handle at open; returns 0 or an errno for the reply. */
	int (*open)(struct handle *h, int flags);
	void (*read)(fuse_req_t req, struct handle *h, size_t size, off_t off);
	/* Returns 0 or the errno to answer; never replies, because a reply
	 * lets the opener close and a release on another thread free h. */
	int (*write)(struct handle *h, const char *buf, size_t size);
	void (*flush)(fuse_req_t req, struct handle *h);
	void (*release)(struct handle *h);
	void (*poll)(fuse_req_t req, struct handle *h, struct fuse_pollhandle *ph);
	/* truncate(2) by path to 0: like an open with O_TRUNC and no write. */
	int (*truncate)(struct sandbox *s, enum kind k, struct sbx_err *err);
};

extern const struct file_ops exec_file_ops, stream_file_ops, wait_file_ops, status_file_ops,
	info_file_ops, run_text_file_ops, run_cmd_file_ops, setting_file_ops, ctl_file_ops,
	meta_file_ops, template_file_ops, stdin_file_ops, events_file_ops, stats_file_ops,
	summary_file_ops;

/* Appends to a write buffer (zeroing what it moves: it may hold a
 * credential); returns 0 or an errno. */
int write_buf_append(struct write_buf *w, const char *buf, size_t size, size_t max);
void write_buf_clear(struct write_buf *w);
void write_buf_free(struct write_buf *w);

#endif
