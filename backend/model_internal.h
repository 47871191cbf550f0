/* The model's private half: the layouts of sandboxes and runs, and the one
 * lock that guards them.  Only backend/ includes this; fs/ sees the opaque
 * types and the copying API of model.h (docs/architecture.md).
 *
 * model_lock guards every field marked SBX_GUARDED_BY(model_lock) in every
 * sandbox and run, and the sandbox table.  Nothing blocks under it: no
 * docker call, no child wait, no disk I/O (docs/locking.md). */
#ifndef SBX_MODEL_INTERNAL_H
#define SBX_MODEL_INTERNAL_H

#include "lock.h"
#include "model.h"

extern sbx_mutex model_lock;

enum run_phase {
	RUN_STARTING, /* docker exec spawned, the wrapper has not reported yet */
	RUN_LIVE,     /* the command runs */
	RUN_ENDED,
};

enum run_outcome { OUTCOME_NONE, OUTCOME_EXITED, OUTCOME_TIMEOUT, OUTCOME_KILLED, OUTCOME_LOST };

/* A run never calls up into its sandbox: what it needs of it (name for the
 * log, engine and container for kills) is copied in when it is made. */
struct run {
	unsigned refs SBX_GUARDED_BY(model_lock);
	/* Immutable after creation. */
	unsigned number; /* 1-based, never reused in a sandbox */
	char *dir;	 /* spool directory of this run */
	char *sandbox_name;
	char *container;
	const struct engine *engine;
	long long max_output;

	enum run_phase phase SBX_GUARDED_BY(model_lock);
	enum run_outcome outcome SBX_GUARDED_BY(model_lock);
	int exit_code SBX_GUARDED_BY(model_lock);	    /* valid for OUTCOME_EXITED */
	int start_errno SBX_GUARDED_BY(model_lock);	    /* 0, or why the run never started */
	char *reason SBX_GUARDED_BY(model_lock);	    /* why it was lost / did not start */
	struct timespec started SBX_GUARDED_BY(model_lock); /* CLOCK_REALTIME */
	struct timespec ended SBX_GUARDED_BY(model_lock);
	struct timespec last_output SBX_GUARDED_BY(model_lock);

	/* Spool: fds stay open while the run lives or someone reads it; pread
	 * is safe outside the lock for anyone holding a reader.  While only
	 * one stream has spoken, that stream's file is a hard link of
	 * `output` and alias == that stream. */
	int fd[STREAM_COUNT] SBX_GUARDED_BY(model_lock);     /* -1 = not open */
	off_t size[STREAM_COUNT] SBX_GUARDED_BY(model_lock); /* bytes spooled */
	int alias SBX_GUARDED_BY(model_lock);		     /* stream aliased to output, or -1 */
	unsigned readers SBX_GUARDED_BY(model_lock);	     /* open handles reading the spool */

	long pgid SBX_GUARDED_BY(model_lock);		/* process group inside, 0 = unknown */
	pid_t local_pid SBX_GUARDED_BY(model_lock);	/* the local docker exec, 0 once reaped */
	bool kill_requested SBX_GUARDED_BY(model_lock); /* ctl kill / rmdir signalled it */
	bool timed_out SBX_GUARDED_BY(model_lock);
	bool container_died SBX_GUARDED_BY(model_lock);
	bool rmdir_kill SBX_GUARDED_BY(model_lock); /* rmdir removes its container: it ends killed */
	bool truncated SBX_GUARDED_BY(model_lock);  /* output past max_output or a full disk */
	/* Its local docker exec died while the command ran on inside: status
	 * `lost`, but pgid stays known and ctl kill still reaches it until
	 * the group is gone. */
	bool observer_lost SBX_GUARDED_BY(model_lock);

	struct run_io *io SBX_GUARDED_BY(model_lock); /* live part, owned by the I/O thread */
	struct agent_channel *chan SBX_GUARDED_BY(model_lock); /* live through the agent */
};

enum sandbox_state {
	SBX_CREATING, /* docker run in progress: name reserved, not listed */
	SBX_RUNNING,
	SBX_STOPPED,  /* the container exists but does not run */
	SBX_REMOVING, /* rmdir in progress */
	SBX_REMOVED,  /* gone from the table */
};

struct sandbox {
	unsigned refs SBX_GUARDED_BY(model_lock);
	/* Immutable after creation (or before the sandbox is published). */
	uint64_t id; /* never reused in this process: inode numbers use it */
	char *name;
	char *container; /* container name on the engine */
	char *image;
	char *template_name;	     /* the template it was made from */
	char *effective;	     /* JSON: the settings it was made with (info) */
	const struct engine *engine; /* where its container lives */
	char *spool_dir;	     /* STATE/sandboxes/NAME */
	struct timespec created;
	bool from_pool; /* its container was a pool container */

	char *container_id SBX_GUARDED_BY(model_lock);
	enum sandbox_state state SBX_GUARDED_BY(model_lock);

	struct run **runs SBX_GUARDED_BY(model_lock); /* runs[i]->number == i + 1 */
	unsigned nruns SBX_GUARDED_BY(model_lock);

	struct kv_list env SBX_GUARDED_BY(model_lock); /* settings */
	struct kv_list auth
		SBX_GUARDED_BY(model_lock);	      /* credentials: never logged, never on disk */
	char **auth_files SBX_GUARDED_BY(model_lock); /* paths placed inside */
	size_t nauth_files SBX_GUARDED_BY(model_lock);
	struct kv_list auth_file_secrets
		SBX_GUARDED_BY(model_lock);	  /* path -> content, masking only */
	char *workdir SBX_GUARDED_BY(model_lock); /* "" = image default */
	long timeout SBX_GUARDED_BY(model_lock);  /* seconds, 0 = none */
	struct timespec settings_changed SBX_GUARDED_BY(model_lock);
	char *last_error SBX_GUARDED_BY(model_lock);
	struct timespec last_error_at SBX_GUARDED_BY(model_lock);
	double died_at SBX_GUARDED_BY(model_lock);    /* CLOCK_MONOTONIC s of its last die event */
	bool user_stopped SBX_GUARDED_BY(model_lock); /* ctl stop: an outage must not restart it */
	bool paused SBX_GUARDED_BY(model_lock);	      /* docker pause: no exec can start */
	/* Idle TTL (ttl.c): seconds, 0 = none; what to do; when something
	 * last happened (CLOCK_MONOTONIC s); open files; stopped for idleness. */
	long ttl SBX_GUARDED_BY(model_lock);
	bool ttl_remove SBX_GUARDED_BY(model_lock);
	double last_active SBX_GUARDED_BY(model_lock);
	unsigned open_files SBX_GUARDED_BY(model_lock);
	bool idle_stopped SBX_GUARDED_BY(model_lock);
	bool stopping SBX_GUARDED_BY(model_lock); /* we stop it: its die event is no news */
	/* The table's generation when we last made, started or stopped its
	 * container: an engine listing older than that says nothing of it. */
	uint64_t changed_gen SBX_GUARDED_BY(model_lock);
	struct agent_channel *chan SBX_GUARDED_BY(model_lock); /* the agent inside, or NULL */
	bool stdin_open SBX_GUARDED_BY(model_lock); /* ctl stdin open: runs keep stdin open */
};

/* ---- model_base.c ---- */
void model_config_set(const struct model_config *cfg);

/* ---- sandbox.c: the sandbox object ---- */
struct sandbox *sandbox_new(const char *name, const struct engine *engine);
void sandbox_get_locked(struct sandbox *s) SBX_REQUIRES(model_lock);
void sandbox_put_locked(struct sandbox *s) SBX_REQUIRES(model_lock);
void sandbox_set_error_locked(struct sandbox *s, const char *msg) SBX_REQUIRES(model_lock);
/* The sandbox's container id (or name), copied; NULL on ENOMEM. */
char *sandbox_container_dup(struct sandbox *s) SBX_EXCLUDES(model_lock);
/* Marks its live runs killed (rmdir) or lost with the container. */
void sandbox_mark_runs_locked(struct sandbox *s, bool killed) SBX_REQUIRES(model_lock);
/* rmdir is about to remove the container (on), or failed to (off): whatever
 * the run's docker exec reports meanwhile, a live run ends `killed`. */
void sandbox_mark_rmdir_locked(struct sandbox *s, bool on) SBX_REQUIRES(model_lock);
bool sandbox_listed_locked(const struct sandbox *s) SBX_REQUIRES(model_lock);
/* The latest run ctl kill can still reach: live, or whose observer was
 * lost.  A later run that never started does not hide it. */
struct run *sandbox_killable_run_locked(struct sandbox *s) SBX_REQUIRES(model_lock);
void sandbox_status_line_locked(struct sandbox *s, struct run *r, char *buf, size_t len)
	SBX_REQUIRES(model_lock);
/* We changed s's container (create, ctl start/stop): see changed_gen. */
void sandbox_changed_locked(struct sandbox *s) SBX_REQUIRES(model_lock);

/* ---- ops.c: ctl pause / resume ---- */
/* Waits (up to 10 s) until no docker exec is entering s's container (a
 * run starting, the agent being installed): freezing it meanwhile (docker
 * pause, docker commit) leaves runc's init frozen inside, and the engine
 * hangs on that container. */
void sandbox_wait_exec_settled(struct sandbox *s) SBX_EXCLUDES(model_lock);
int sandbox_pause(struct sandbox *s, const char *cid, bool pause, struct sbx_err *err)
	SBX_EXCLUDES(model_lock);

/* ---- ttl.c: the idle TTL ---- */
int sandbox_set_ttl(struct sandbox *s, const char *buf, size_t len, struct sbx_err *err)
	SBX_EXCLUDES(model_lock);
/* From the template, before the sandbox is published. */
void sandbox_ttl_init(struct sandbox *s, long ttl, bool remove) SBX_EXCLUDES(model_lock);
/* Its spool directory exists (or the ttl state changed): the ttl is
 * written there. */
void sandbox_ttl_created(struct sandbox *s) SBX_EXCLUDES(model_lock);
/* Adoption: what the spool directory kept (disk I/O, before publishing). */
void sandbox_ttl_load(struct sandbox *s, bool running) SBX_EXCLUDES(model_lock);
/* A run is about to start: activity; an idle-stopped sandbox is started
 * again (blocking: a docker call). */
int sandbox_wake_for_run(struct sandbox *s, struct sbx_err *err) SBX_EXCLUDES(model_lock);
void ttl_start(void);
void ttl_stop(void);

/* ---- ops.c: audit-log hooks (never under the lock) ---- */
/* docker stop on behalf of `by` (ctl, idle), logged as such. */
int sandbox_stop(struct sandbox *s, const char *cid, const char *by, struct sbx_err *err)
	SBX_EXCLUDES(model_lock);
void events_created(const char *name, const char *tpl, const char *image); /* any lock */
void events_auth_changed(struct sandbox *s) SBX_EXCLUDES(model_lock);
void events_run_ended(struct run *r) SBX_EXCLUDES(model_lock);
void events_run_started(struct sandbox *s, struct run *r, const struct cmd_spool *cmd)
	SBX_EXCLUDES(model_lock);

/* ---- model.c ---- */
struct template;
/* Makes a pool container named slot for template t, exactly as mkdir would
 * make a sandbox's (pool.c). */
int model_pool_container(const char *slot, struct template *t, const struct engine *e, char **id,
			 struct sbx_err *err);

/* Reconciles every engine again, on the task thread. */
void model_resync_all(void);

/* ---- removal.c: rmdir's second half ---- */
/* Journals the removal of container cid (sandbox name) unless journaled,
 * and removes it on a thread of its own. */
int removal_begin(const struct engine *e, const char *name, const char *cid, bool journaled,
		  struct sbx_err *err) SBX_EXCLUDES(model_lock);
/* Is cid's removal under way (not to be adopted back)? */
bool removal_pending_id_locked(const char *cid) SBX_REQUIRES(model_lock);
/* Waits while a container still named name is being removed. */
void removal_wait_name_locked(const char *name) SBX_REQUIRES(model_lock);
/* Replays the journal of a daemon that died (before the first reconcile). */
void removal_recover(void) SBX_EXCLUDES(model_lock);
/* Waits for the removals under way (shutdown). */
void removal_drain(void) SBX_EXCLUDES(model_lock);

/* ---- save.c ---- */
int sandbox_save(struct sandbox *s, const char *cid, const char *image, struct sbx_err *err);
/* Gives a sandbox its agent channel and, when it runs, starts it
 * (asynchronously).  Runs found live in its spool are resumed through it,
 * or end lost. */
void sandbox_agent_start(struct sandbox *s, bool running) SBX_EXCLUDES(model_lock);

/* ---- run_object.c: runs as objects ---- */
/* A new run numbered after s's last one, not yet in s->runs. */
struct run *run_new(const struct sandbox *s, unsigned number, const char *container);
void run_get_locked(struct run *r) SBX_REQUIRES(model_lock);
void run_put_locked(struct run *r) SBX_REQUIRES(model_lock);
/* Closes an ended run's spool fds (nobody reads it). */
void run_close_fds_locked(struct run *r) SBX_REQUIRES(model_lock);
void run_status_line_locked(struct run *r, char *buf, size_t len) SBX_REQUIRES(model_lock);
/* The status line of an ended run with this outcome. */
void outcome_status_line(enum run_outcome outcome, int code, char *buf, size_t len);
/* Who hears that a run changed (the model passes fs/'s callback on). */
void runs_set_listener(void (*fn)(struct run *r));
void notify_run_changed(struct run *r) SBX_EXCLUDES(model_lock);
extern const char *const stream_names[STREAM_COUNT];

/* ---- history.c: run history that outlives the daemon ---- */
/* Reads the ended runs of a sandbox's spool (disk I/O: never under the
 * lock).  *out is an array of *n runs numbered 1..n. */
int runs_load(const struct sandbox *s, const char *container, struct run ***out, unsigned *n)
	SBX_EXCLUDES(model_lock);

#endif
