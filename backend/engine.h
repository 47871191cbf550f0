/* The engine driver: everything sandboxfs asks of a container engine, done
 * through a docker-compatible CLI (docker, podman).  No FUSE here.
 *
 * Every call is synchronous and bounded by a timeout except the two that
 * hand back a live child (engine_exec_start, engine_events_start): those
 * return pipes that the caller's I/O loop owns. */
#ifndef SBX_ENGINE_H
#define SBX_ENGINE_H

#include <stddef.h>
#include <sys/types.h>

#include "err.h"
#include "mask.h"
#include "template.h"

struct engine {
	char *cli;	/* path or name of the docker CLI */
	char *instance; /* this mount's label value, [a-z0-9]{16} */
	int timeout_ms; /* bound on each short CLI call */
	char *endpoint; /* NULL: the CLI's default; "x://..." → --host, else --context */
};

/* Label keys on every container this mount creates. */
#define SBX_LABEL_INSTANCE "sandboxfs.instance"
#define SBX_LABEL_SANDBOX "sandboxfs.sandbox"
#define SBX_LABEL_MOUNTPOINT "sandboxfs.mountpoint"
/* On pool containers only: the template they were made from.  Labels
 * cannot change, so a claimed one is recognised by its name (pool.c). */
#define SBX_LABEL_POOL "sandboxfs.pool"

/* What a new container is made of.  Templates (later) fill this in. */
struct container_spec {
	const char *name; /* the sandbox name; container is sandboxfs-<instance>-<name> */
	const char *image;
	const char *mountpoint; /* informational label */
	const char *network;	/* "none" unless opted in */
	long pids_limit;	/* 0 = engine default */
	long long memory_bytes; /* 0 = no limit */
	int init;		/* --init */
	double cpus;		/* 0 = no limit */
	const char *user;
	int read_only;	 /* --read-only, with a tmpfs on /tmp */
	int agent_tmpfs; /* an exec-capable private tmpfs on /.sandboxfs for the agent */
	const struct workspace *workspaces; /* bind mounts at the same path */
	size_t nworkspaces;
	const struct kv_list *env;    /* container environment (not secrets) */
	const struct kv_list *labels; /* extra labels */
	char *const *cap_add;
	size_t ncap_add;
	const char *workdir;
	const char *pool; /* a pool container of this template, or NULL */
	/* Extra raw arguments placed before the image (templates, later). */
	char *const *extra_args;
};

/* Errnos the driver maps engine failures to (docs/interface.md):
 *   ECONNREFUSED  the engine cannot be reached (no daemon, bad DOCKER_HOST)
 *   ENOMEDIUM     the image does not exist and could not be pulled
 *   EHOSTDOWN     the container exists but is not running
 *   ENOENT        no such container
 *   EEXIST        a container of that name already exists on the engine
 *   ETIMEDOUT     the CLI did not answer within timeout_ms
 *   ENOEXEC       the CLI could not be executed at all
 *   EIO           anything else (the reason says what the CLI printed) */
int engine_classify_error(const char *cli_stderr, int exit_code);

/* Fails with a reason when the CLI is missing (ENOEXEC) or the engine does
 * not answer (ECONNREFUSED); on success *version is the server version. */
int engine_check(const struct engine *e, char **version, struct sbx_err *err);

/* The engine's data root (`info`'s DockerRootDir), to keep it out of
 * workspaces when it is not in a system directory. */
int engine_data_root(const struct engine *e, char **dir, struct sbx_err *err);

/* docker run -d ... ; on success *container_id is the full id (malloc'ed). */
int engine_create(const struct engine *e, const struct container_spec *spec, char **container_id,
		  struct sbx_err *err);
/* docker rename CONTAINER NEWNAME (NEWNAME gets no prefix). */
int engine_rename(const struct engine *e, const char *container, const char *newname,
		  struct sbx_err *err);
/* docker rm -f; a container already gone is success. */
int engine_destroy(const struct engine *e, const char *container, struct sbx_err *err);
int engine_stop(const struct engine *e, const char *container, struct sbx_err *err);
int engine_start(const struct engine *e, const char *container, struct sbx_err *err);
/* docker pause / unpause: every process of the container frozen or thawed. */
int engine_pause(const struct engine *e, const char *container, bool pause, struct sbx_err *err);
/* docker commit, untagged: *image_id is the new image's id (malloc'ed).
 * The sandbox's labels are cleared in it. */
int engine_commit(const struct engine *e, const char *container, char **image_id,
		  struct sbx_err *err);
/* 1 if `docker image inspect REF` finds an image, 0 if not, or -errno. */
int engine_image_exists(const struct engine *e, const char *ref, struct sbx_err *err);
int engine_image_tag(const struct engine *e, const char *id, const char *ref, struct sbx_err *err);
/* docker image rm; best effort when err is NULL. */
int engine_image_remove(const struct engine *e, const char *id, struct sbx_err *err);
/* Streams `docker save ID` through a search for each (value, len): 1 when
 * one occurs anywhere in the archive, 0 when none, or -errno. */
int engine_image_contains(const struct engine *e, const char *id, const struct mask_secret *values,
			  size_t n, struct sbx_err *err);
/* Runs script (sh -c) in a container with args as $1...; stdin empty. */
int engine_exec_script(const struct engine *e, const char *container, const char *script,
		       char *const *args, size_t nargs, struct sbx_err *err);
/* Returns 1 running, 0 not running, or a negative errno (ENOENT if gone). */
int engine_is_running(const struct engine *e, const char *container, struct sbx_err *err);

/* The host pid of the container's init (0 when not running) and its id. */
int engine_container_pid(const struct engine *e, const char *container, long *pid, char id[65],
			 struct sbx_err *err);

/* A bind mount of a container, as the engine keeps it. */
struct engine_bind {
	char *source;
	char *target;
	int ro;
};
void engine_binds_free(struct engine_bind *v, size_t n);
int engine_container_binds(const struct engine *e, const char *container, struct engine_bind **out,
			   size_t *n, struct sbx_err *err);

/* One container of this instance, as listed by engine_list(). */
struct engine_container {
	char *id;
	char *sandbox; /* value of SBX_LABEL_SANDBOX */
	char *name;    /* the container's name ("" if unknown) */
	char *pool;    /* value of SBX_LABEL_POOL ("" if absent) */
	char *image;
	int running;
	int paused; /* running but frozen (docker pause) */
};
void engine_containers_free(struct engine_container *v, size_t n);
/* All containers (running or not) labelled with this instance. */
int engine_list(const struct engine *e, struct engine_container **out, size_t *n,
		struct sbx_err *err);

/* A live `docker exec`.  The caller owns the fds and must reap the pid. */
struct engine_exec {
	pid_t pid;
	int stdin_fd;  /* write end, O_NONBLOCK|O_CLOEXEC: the command text goes here */
	int stdout_fd; /* read ends, O_NONBLOCK|O_CLOEXEC */
	int stderr_fd;
};
/* Starts the run wrapper inside `container`:
 *   docker exec -i --env-file /dev/fd/3 [-w workdir] CONTAINER /bin/sh -c WRAPPER
 * `env` is "KEY=VALUE\n" lines (settings and credentials) that travel on a
 * pipe as fd 3, never in argv.  The wrapper prints its pid in the container
 * ("<pid>\n") as the first line of stdout, then reads the command from
 * stdin to end-of-file and evaluates it with /bin/sh, so commands of any
 * size work and the command is the leader of its own process group.
 * With inline_cmd (a small command, no NUL) the command is the wrapper's $1
 * instead: no -i, stdin is /dev/null, ex->stdin_fd is -1.
 * -E2BIG when `env` does not fit a pipe (pipe-max-size).  The CLI's own
 * failures (container stopped or gone) show as its exit status and stderr.
 * Write stdin_fd with spawn_write_nosigpipe() unless SIGPIPE is ignored. */
int engine_exec_start(const struct engine *e, const char *container, const char *env,
		      size_t env_len, const char *workdir, const char *inline_cmd,
		      struct engine_exec *ex, struct sbx_err *err);

/* Sends signal `sig` to process group `pgid` inside the container:
 * -ESRCH when no such group is left, -EINVAL for pgid <= 1. */
int engine_kill_group(const struct engine *e, const char *container, long pgid, int sig,
		      struct sbx_err *err);

/* Writes `content` to `path` inside the container with mode 0600, creating
 * parent directories; "~/" is the container user's home.  The content
 * travels on stdin, never in argv. */
int engine_put_file(const struct engine *e, const char *container, const char *path,
		    const void *content, size_t len, struct sbx_err *err);

/* A live `docker events` stream filtered on this instance's label, printing
 * one JSON object per line.  Caller owns fd (O_NONBLOCK|O_CLOEXEC) and pid. */
int engine_events_start(const struct engine *e, pid_t *pid, int *fd, struct sbx_err *err);

enum engine_event_kind {
	ENGINE_EV_OTHER,
	ENGINE_EV_START,
	ENGINE_EV_DIE,	   /* the container stopped (killed, stopped, exited) */
	ENGINE_EV_DESTROY, /* the container was removed */
	ENGINE_EV_PAUSE,   /* docker pause: processes frozen, exec refused */
	ENGINE_EV_UNPAUSE,
};
struct engine_event {
	enum engine_event_kind kind;
	char id[65];	   /* container id */
	char sandbox[64];  /* value of SBX_LABEL_SANDBOX ("" if absent) */
	char instance[64]; /* value of SBX_LABEL_INSTANCE ("" if absent) */
	int exit_code;	   /* for DIE, -1 if unknown */
};
/* Parses one line of `docker events --format '{{json .}}'` with cJSON.
 * Returns 0, or -EINVAL for anything that is not such an event. */
int engine_parse_event(const char *line, size_t len, struct engine_event *ev);

#endif
