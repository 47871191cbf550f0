#ifndef SBX_CLI_H
#define SBX_CLI_H

#include "fs.h"

/* First pass over argv: drops the options only mount(8)/fstab mean
 * (_netdev, noauto, x-systemd.*, ...) and the SOURCE argument that
 * `mount -t fuse.sandboxfs SOURCE MOUNTPOINT` passes, leaving the
 * mountpoint as the only positional.  -1 (message on stderr) on error. */
int cli_mount_compat(struct fuse_args *args);

/* --version: sandboxfs's version, the engine the CLI at `cli` (NULL: none
 * found) answers for, asked with a 5 s bound, then libfuse's version. */
int cli_print_version(const char *cli);

#endif
