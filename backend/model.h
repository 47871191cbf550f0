/* The model: sandboxes, their settings and their runs.  No FUSE here.
 *
 * One mutex, model_lock, guards every field marked (L) in every sandbox
 * and run, and the sandbox table.
 * Blocking work (the docker CLI, disk) is never done while holding it.
 * Objects are reference counted; sandbox_put()/run_put() take the lock. */
#ifndef SBX_MODEL_H
#define SBX_MODEL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "engine.h"
#include "err.h"
#include "mask.h"
#include "parse.h"

extern pthread_mutex_t model_lock;

enum stream { STREAM_OUTPUT = 0, STREAM_STDOUT = 1, STREAM_STDERR = 2, STREAM_COUNT = 3 };

enum run_phase {
	RUN_STARTING, /* docker exec spawned, the wrapper has not reported yet */
	RUN_LIVE,     /* the command runs */
	RUN_ENDED,
};

enum run_outcome { OUTCOME_NONE, OUTCOME_EXITED, OUTCOME_TIMEOUT, OUTCOME_KILLED, OUTCOME_LOST };

struct sandbox;

struct run {
	unsigned refs;           /* (L) */
	struct sandbox *sbx;     /* holds a reference */
	unsigned number;         /* 1-based, never reused in a sandbox */
	char *dir;               /* spool directory of this run */

	enum run_phase phase;    /* (L) */
	enum run_outcome outcome; /* (L) */
	int exit_code;           /* (L) valid for OUTCOME_EXITED */
	int start_errno;         /* (L) 0, or why the run never started */
	char *reason;            /* (L) why it was lost / did not start */
	struct timespec started, ended; /* (L) CLOCK_REALTIME */

	/* Spool: fds stay open for the run's life; pread is safe outside the
	 * lock for anyone holding a reference.  While only one stream has
	 * spoken, that stream's file is a hard link of `output` and
	 * alias == that stream. */
	int fd[STREAM_COUNT];    /* (L) -1 = not created yet */
	off_t size[STREAM_COUNT]; /* (L) bytes spooled */
	int alias;               /* (L) stream aliased to output, or -1 */
	unsigned readers;        /* (L) open handles reading the spool: fds stay open */

	long pgid;               /* (L) the command's process group inside, 0 = unknown */
	pid_t local_pid;         /* (L) the local docker exec, 0 once reaped */
	bool kill_requested;     /* (L) ctl kill / rmdir signalled it */
	bool timed_out;          /* (L) */
	bool container_died;     /* (L) */
	bool truncated;          /* (L) output past max_output or a full disk was dropped */

	struct run_io *io;       /* live part, owned by the I/O thread */
};

enum sandbox_state {
	SBX_CREATING, /* docker run in progress: name reserved, not listed */
	SBX_RUNNING,
	SBX_STOPPED,  /* the container exists but does not run */
	SBX_REMOVING, /* rmdir in progress */
	SBX_REMOVED,  /* gone from the table */
};

struct sandbox {
	unsigned refs;           /* (L) */
	uint64_t id;             /* never reused in this process: inode numbers use it */
	char *name;
	char *container;         /* container name on the engine */
	char *container_id;      /* (L) */
	char *image;
	char *template_name;     /* the template it was made from */
	char *effective;         /* JSON: the settings it was made with (info) */
	const struct engine *engine; /* where its container lives */
	char *spool_dir;         /* STATE/sandboxes/NAME */
	struct timespec created;
	enum sandbox_state state; /* (L) */

	struct run **runs;       /* (L) runs[i]->number == i + 1 */
	unsigned nruns;          /* (L) */

	struct kv_list env;      /* (L) settings */
	struct kv_list auth;     /* (L) credentials: never logged, never on disk */
	char **auth_files;       /* (L) paths placed inside */
	size_t nauth_files;      /* (L) */
	struct kv_list auth_file_secrets; /* (L) path -> content, for masking only */
	char *workdir;           /* (L) "" = image default */
	long timeout;            /* (L) seconds, 0 = none */
	char *last_error;        /* (L) */
	double died_at;          /* (L) CLOCK_MONOTONIC seconds of its last die event */
	bool user_stopped;       /* (L) ctl stop: an engine outage must not restart it */
};

/* What the fs layer hears from the model.  Called without model_lock held,
 * from any thread. */
struct model_callbacks {
	/* Bytes arrived, the run started, or it ended. */
	void (*run_changed)(struct run *r);
};

struct model_config {
	struct engine engine;
	const char *state_dir;
	const char *image;      /* default image */
	const char *mountpoint;
	long long max_output;   /* bytes spooled per run at most, 0 = no limit */
};

#define DEFAULT_MAX_OUTPUT (8LL << 30)

int model_init(const struct model_config *cfg, const struct model_callbacks *cb,
	       struct sbx_err *err);
/* Starts the I/O thread and the events stream, and adopts this instance's
 * containers found on the engine. */
int model_start(struct sbx_err *err);
void model_shutdown(void);
const struct model_config *model_config(void);
const struct engine *model_default_engine(void);
/* Templates changed: engines no template or sandbox uses are let go. */
void model_engines_changed(void);

/* Sandbox table. Lookups return a new reference (or NULL). */
struct sandbox *model_find(const char *name);
struct sandbox *model_find_id(uint64_t id);
/* Calls fn for each listed sandbox (running or stopped), under model_lock. */
void model_foreach(void (*fn)(struct sandbox *s, void *ctx), void *ctx);

int sandbox_create(const char *name, struct sandbox **out, struct sbx_err *err);
int sandbox_remove(const char *name, struct sbx_err *err);
void sandbox_get(struct sandbox *s);   /* under model_lock */
void sandbox_ref(struct sandbox *s);   /* takes model_lock */
void sandbox_put(struct sandbox *s);   /* takes model_lock */
void sandbox_put_locked(struct sandbox *s);
void sandbox_set_error(struct sandbox *s, const char *msg); /* under model_lock */

/* Settings; each validates first and changes nothing on error. */
int sandbox_set_env(struct sandbox *s, const char *buf, size_t len, bool replace,
		    struct sbx_err *err);
int sandbox_set_auth(struct sandbox *s, const char *buf, size_t len, bool replace,
		     struct sbx_err *err);
int sandbox_set_workdir(struct sandbox *s, const char *buf, size_t len, struct sbx_err *err);
int sandbox_set_timeout(struct sandbox *s, const char *buf, size_t len, struct sbx_err *err);
int sandbox_ctl(struct sandbox *s, const char *buf, size_t len, struct sbx_err *err);

/* What a settings file held before an open with O_TRUNC cleared it, so an
 * invalid write later on that open can put it back ("changes nothing"). */
enum setting { SETTING_ENV, SETTING_AUTH, SETTING_WORKDIR, SETTING_TIMEOUT };
struct setting_undo {
	enum setting which;
	struct kv_list kv;
	char *workdir;
	long timeout;
};
/* ctl save IMAGE: commits the container (cid) without its credentials to a
 * new image; EPERM/EEXIST/EACCES as docs/interface.md says. */
int sandbox_save(struct sandbox *s, const char *cid, const char *image, struct sbx_err *err);
int setting_save(struct sandbox *s, enum setting which, struct setting_undo *u);
void setting_restore(struct sandbox *s, struct setting_undo *u); /* consumes u */
void setting_undo_free(struct setting_undo *u);

/* Runs. */
struct run *sandbox_latest_run(struct sandbox *s); /* under model_lock; no new ref */
struct run *sandbox_run(struct sandbox *s, unsigned number); /* under model_lock; no new ref */
void run_get(struct run *r);  /* under model_lock */
void run_put(struct run *r);  /* takes model_lock */
void run_put_locked(struct run *r);

/* Starts a run of cmd; *out gets a reference.  The run may still be
 * RUN_STARTING on return: run_changed() fires when it is live or failed.
 * On failure before a run number was given, returns -errno and *out=NULL;
 * once numbered, a run that cannot start ends OUTCOME_LOST. */
int run_start(struct sandbox *s, const char *cmd, size_t len, struct run **out,
	      struct sbx_err *err);
/* Signals the run's process group inside the container. */
int run_kill(struct run *r, int sig, struct sbx_err *err);

/* A handle that reads a run's spool holds it open (fds are closed once a
 * run has ended and nobody reads it). */
void run_reader_get_locked(struct run *r);
void run_reader_put(struct run *r);
/* What a reader of stream st may read now (under model_lock). */
int run_stream_fd(struct run *r, enum stream st);
/* One status line with "\n", e.g. "exited 0\n"; r may be NULL ("idle"). */
void run_status_line(struct run *r, char *buf, size_t len); /* under model_lock */

/* A JSON document describing the sandbox (malloc'ed). */
char *sandbox_info_json(struct sandbox *s);
/* RFC 3339 UTC with milliseconds. */
void format_time(const struct timespec *ts, char *buf, size_t len);

#endif
