/* The state directory: instance id, the lock that keeps two daemons off
 * one directory, and small file helpers for the spool. */
#ifndef SBX_STATE_H
#define SBX_STATE_H

#include <stddef.h>
#include <sys/types.h>

#include "err.h"

/* Creates dir if needed, locks it (EBUSY if another daemon holds it) and
 * reads or makes the instance id (16 hex digits) into instance[17]. */
int state_open(const char *dir, char instance[17], struct sbx_err *err);
void state_close(void);

int mkdir_p(const char *path, struct sbx_err *err);
/* Removes a tree; a missing path is success. */
int rm_rf(const char *path);
/* All of len bytes at off, retrying short and interrupted calls: 0, or
 * -errno (-EIO when the file ends first). */
int pwrite_all(int fd, const void *data, size_t len, off_t off);
int pread_all(int fd, void *data, size_t len, off_t off);
/* dir + "/" + name into buf; -ENAMETOOLONG when it does not fit. */
int path_join(char *buf, size_t size, const char *dir, const char *name);
/* openat(dir, name) with O_NOFOLLOW|O_CLOEXEC added: an fd or -errno. */
int open_in(const char *dir, const char *name, int flags, mode_t mode);
int write_file_in(const char *dir, const char *name, const void *data, size_t len,
		  struct sbx_err *err);
int read_file_in(const char *dir, const char *name, char **buf, size_t *len, size_t max);
/* Writes data to path via a temporary file and rename(2). */
int write_file_atomic(const char *path, const void *data, size_t len, struct sbx_err *err);
/* Reads a whole (small) file; *buf is NUL-terminated and malloc'ed. */
int read_file(const char *path, char **buf, size_t *len, size_t max);

#endif
