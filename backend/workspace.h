/* Workspaces: which host directories a sandbox may get, and proof that the
 * one it got is the one that was checked (docs/security.md).
 *
 * A workspace is allowed only under the operator's roots (-o
 * workspace_roots), never on a pseudo file system, never a system
 * directory, an engine's data or run directory, sandboxfs' own mount or
 * state directory, nor anything containing one of these.  The check is on
 * the resolved path and on an O_PATH descriptor walked component by
 * component without following symlinks, so it is about a directory, not a
 * spelling; after the engine mounted it, workspace_verify() compares what
 * the container sees with that descriptor. */
#ifndef SBX_WORKSPACE_H
#define SBX_WORKSPACE_H

#include <limits.h>
#include <sys/types.h>

#include "err.h"

#define WORKSPACE_DEFAULT_ROOTS "/home:/srv:/tmp:/var/tmp"

/* DIR[:DIR...], each absolute.  NULL or "" means the default. */
int workspace_set_roots(const char *spec, struct sbx_err *err);
/* sandboxfs' own mount and state directory (copied; NULL to forget). */
void workspace_set_guarded(const char *mountpoint, const char *state_dir);
/* An engine's data or run directory found at start-up (copied). */
int workspace_add_guarded(const char *dir);
void workspace_shutdown(void);

/* Resolves `path`, opens the directory it names with a no-symlink walk
 * and checks it against the policy.  On success *fd is an O_PATH
 * descriptor of it (caller closes) and canon its resolved path.
 * EINVAL with a reason otherwise. */
int workspace_open(const char *path, int *fd, char canon[PATH_MAX], struct sbx_err *err);

/* The same check, descriptor closed: for template validation. */
int workspace_check(const char *path, struct sbx_err *err);

/* 0 when `target` inside the container whose init is `pid` (and whose id
 * is `container_id`) is the very directory `fd` is; EINVAL if it is
 * something else or cannot be checked (not a local engine). */
int workspace_verify(pid_t pid, const char *container_id, const char *target, int fd,
		     struct sbx_err *err);

struct engine;
/* engine_start() for a container that may have workspaces: each is checked
 * again before, and verified after (the container is stopped again when a
 * check fails). */
int workspace_start_container(const struct engine *e, const char *container, struct sbx_err *err);

/* Is `path` `dir` or under it (both resolved, no trailing '/')? */
int workspace_path_within(const char *path, const char *dir);

#endif
