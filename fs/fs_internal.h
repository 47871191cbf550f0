/* Shared between the FUSE glue's files: fs.c dispatches, node.c resolves
 * inodes, files.c/exec.c/stream.c/templates.c serve the kinds of file. */
#ifndef SBX_FS_INTERNAL_H
#define SBX_FS_INTERNAL_H

#include "fs.h"
#include "handle.h"
#include "node.h"

/* Logs why a request was refused and answers it. */
void refuse(fuse_req_t req, int e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same without replying: logs and returns e. */
int refusal(int e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Replies with a copy of data[off, off+size). */
void reply_buf_at(fuse_req_t req, const char *data, size_t len, size_t size, off_t off);

extern struct fs_options opts;

/* A handle of a kind, not yet tracked; handle_free() undoes it. */
struct handle *handle_alloc(enum kind kind, uint64_t ino, int flags);
void handle_free(struct handle *h);
/* Keeps h on (add) or off the list of open handles freed at unmount. */
void handle_track(struct handle *h, bool add);
/* One handle still open, or NULL (fs_cleanup). */
struct handle *handle_first_open(void);

/* stream.c: the model's callback. */
void stream_run_changed(struct run *r);
/* events.c's listener: new lines for the readers of events. */
void stream_events_changed(void);
/* After the session ended (and the model stopped): frees parked requests. */
void stream_cleanup(void);

/* templates.c: .sandboxfs/templates/ */
void tpl_lookup(fuse_req_t req, const char *name);
/* Whether a template inode is a defined template (not one being created). */
bool tpl_defined(fuse_ino_t ino);
/* Attributes of a template inode; -ENOENT when there is no such template
 * (and no open creating it). */
int tpl_attr(fuse_ino_t ino, struct stat *st);
/* Appends the directory's entries through add(). */
void tpl_list(void (*add)(void *ctx, const char *name, fuse_ino_t ino, mode_t mode), void *ctx);
void tpl_create(fuse_req_t req, const char *name, struct fuse_file_info *fi);
void tpl_unlink(fuse_req_t req, const char *name);
/* Opens a template inode's handle (K_TEMPLATE); returns 0 or an errno. */
int tpl_open(struct handle *h, int flags);

#endif
