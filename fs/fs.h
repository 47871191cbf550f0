#ifndef SBX_FS_H
#define SBX_FS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include "model.h"

struct fs_options {
	const char *engine_version; /* NULL when the engine did not answer at start */
};

const struct fuse_lowlevel_ops *fs_ops(const struct fs_options *o);
/* After the session ended: frees what the kernel never released. */
void fs_cleanup(void);
extern const struct model_callbacks fs_model_callbacks;

#endif
