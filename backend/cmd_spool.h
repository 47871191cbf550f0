/* A command being written to exec: small ones in memory, larger ones in an
 * unlinked file under the state directory, so that clients writing without
 * closing cannot grow the daemon (docs/security.md). */
#ifndef SBX_CMD_SPOOL_H
#define SBX_CMD_SPOOL_H

#include <stddef.h>

#include "err.h"

/* Bytes one command keeps in memory before it moves to a file. */
#define CMD_SPOOL_MEM_MAX (64u * 1024)
/* Bytes all commands together keep in memory; past it, new bytes of any
 * command go to a file. */
#define CMD_SPOOL_MEM_TOTAL (4u << 20)

struct cmd_spool {
	char *mem;  /* the command while it is small, else NULL */
	size_t len; /* bytes written so far */
	size_t cap; /* of mem */
	int fd;	    /* the unlinked file holding it once large, else -1 */
};

void cmd_spool_init(struct cmd_spool *c);
/* Sets the directory spooled commands go to (the state directory). */
void cmd_spool_set_dir(const char *dir);
/* Returns 0 or -errno (ENOSPC, EIO, ENOMEM...), leaving c unchanged on error. */
int cmd_spool_append(struct cmd_spool *c, const char *buf, size_t len, struct sbx_err *err);
/* Copies bytes [off, off+len) into buf; returns 0 or -errno. */
int cmd_spool_read(const struct cmd_spool *c, size_t off, char *buf, size_t len);
void cmd_spool_free(struct cmd_spool *c);
/* Bytes held in memory by all commands now (tests, the log). */
size_t cmd_spool_mem_total(void);

#endif
