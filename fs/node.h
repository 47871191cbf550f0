/* What an inode names, and the table of file kinds: name, mode and the
 * functions that serve it (handle.h). */
#ifndef SBX_NODE_H
#define SBX_NODE_H

#include <stdbool.h>

#include "handle.h"

#define DIR_MODE (S_IFDIR | 0555)
#define RO_MODE (S_IFREG | 0444)

struct kind_info {
	const char *name;
	mode_t mode;
	const struct file_ops *ops; /* NULL for directories */
	enum stream stream;	    /* stream files: which one */
	bool follows_latest;	    /* top-level files that show the latest run */
};
const struct kind_info *kind_info(enum kind k);

/* An inode resolved: a reference to its sandbox (if any) and whether it
 * exists at all. */
struct node {
	uint64_t ino;
	enum kind kind;
	struct sandbox *sbx;
	unsigned run;
};

/* 0, or -ENOENT when the inode names nothing (any more). */
int node_resolve(fuse_ino_t ino, struct node *n);
void node_release(struct node *n);
bool node_is_dir(const struct node *n);
/* The attributes of a resolved node. */
void node_attr(const struct node *n, struct stat *st);
/* The run a file of n shows (a file of runs/N, or the latest for top-level
 * stream/status/wait files), as a new reference or NULL. */
struct run *node_run(const struct node *n);
bool kind_writable(enum kind k);
/* Once, before the first request. */
void node_init(void);

extern const char *const meta_names[];
/* The kind of the .sandboxfs entry numbered ino. */
enum kind meta_kind(unsigned ino);

#endif
