/* Shared between the FUSE glue's files (fs.c dispatches, files.c opens,
 * reads and writes, stream.c answers reads that wait). */
#ifndef SBX_FS_INTERNAL_H
#define SBX_FS_INTERNAL_H

#include "fs.h"
#include "handle.h"

#define DIR_MODE (S_IFDIR | 0555)
#define RO_MODE (S_IFREG | 0444)

/* What an inode names: a reference to its sandbox (if any) and whether
 * it exists at all. */
struct node {
	uint64_t ino;
	enum kind kind;
	struct sandbox *sbx;
	unsigned run;
};

int node_resolve(fuse_ino_t ino, struct node *n);
void node_release(struct node *n);
enum stream kind_stream(enum kind k);
bool is_stream(enum kind k);
bool kind_writable(enum kind k);
/* Logs why a request was refused and answers it. */
void refuse(fuse_req_t req, int e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same without replying: logs and returns e. */
int refusal(int e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int apply_setting(struct handle *h, const char *buf, size_t len, bool replace,
		  struct sbx_err *err);
void handle_free(struct handle *h);

extern const char *const meta_names[];
extern struct fs_options opts;

/* files.c */
void sfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void sfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		struct fuse_file_info *fi);
void sfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void sfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void sfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
	       struct fuse_file_info *fi);
void sfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void sfs_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
	      struct fuse_pollhandle *ph);

#endif
