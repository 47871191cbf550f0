/* The model as fs/ sees it: sandboxes and runs as opaque, reference-counted
 * objects, and copies of what they hold.  No FUSE here, and no lock to take:
 * every function takes the model's own lock itself and returns copies, so a
 * caller never holds a pointer into a sandbox's or a run's fields
 * (docs/architecture.md, docs/locking.md). */
#ifndef SBX_MODEL_H
#define SBX_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "cmd_spool.h"
#include "engine.h"
#include "err.h"
#include "mask.h"
#include "parse.h"

struct sandbox;
struct run;

enum stream { STREAM_OUTPUT = 0, STREAM_STDOUT = 1, STREAM_STDERR = 2, STREAM_COUNT = 3 };

/* What the fs layer hears from the model.  Called without any model lock
 * held, from any thread. */
struct model_callbacks {
	/* Bytes arrived, the run started, or it ended. */
	void (*run_changed)(struct run *r);
	/* Lines were added to the audit log (events.h). */
	void (*events_changed)(void);
};

struct model_config {
	struct engine engine;
	const char *state_dir;
	const char *image; /* default image */
	const char *mountpoint;
	long long max_output; /* bytes spooled per run at most, 0 = no limit */
	long pool;	      /* -o pool: ready containers per template */
};

#define DEFAULT_MAX_OUTPUT (8LL << 30)

int model_init(const struct model_config *cfg, const struct model_callbacks *cb,
	       struct sbx_err *err);
/* Starts the I/O thread and the events streams, and adopts this instance's
 * containers found on the engine. */
int model_start(struct sbx_err *err);
void model_shutdown(void);
const struct model_config *model_config(void);
const struct engine *model_default_engine(void);
/* Templates changed: engines no template or sandbox uses are let go. */
void model_engines_changed(void);
/* Templates changed: engines no template or sandbox uses are let go. */
void model_engines_changed(void);

/* ---- sandboxes ---- */

/* Lookups return a new reference (or NULL). */
struct sandbox *model_find(const char *name);
struct sandbox *model_find_id(uint64_t id);

/* A copy of the listed sandboxes (running, stopped, being removed). */
struct sandbox_listing {
	char **names;
	uint64_t *ids;
	size_t n;
};
int model_list(struct sandbox_listing *out);
void sandbox_listing_free(struct sandbox_listing *l);

/* The text of .sandboxfs/pool: "TEMPLATE ready/target[ error: WHY]" lines. */
char *model_pool_text(void);

int sandbox_create(const char *name, struct sandbox **out, struct sbx_err *err);
int sandbox_remove(const char *name, struct sbx_err *err);
void sandbox_ref(struct sandbox *s);
void sandbox_put(struct sandbox *s);

/* Fixed for the sandbox's life: no copy needed. */
uint64_t sandbox_id(const struct sandbox *s);
const char *sandbox_name(const struct sandbox *s);

struct sandbox_view {
	struct timespec created;
	struct timespec settings_changed; /* last write of env/auth/workdir/timeout */
	bool running;
	bool paused;	   /* docker pause: no exec can start */
	bool idle_stopped; /* stopped by the idle TTL: the next exec starts it */
	bool engine_down;  /* its engine is known not to answer */
	unsigned nruns;
};
void sandbox_view(struct sandbox *s, struct sandbox_view *v);
/* An exec was refused because the sandbox's engine is down: ask it again. */
void sandbox_engine_recheck(struct sandbox *s);

/* Settings: the files env, auth, workdir, timeout. */
enum setting { SETTING_ENV, SETTING_AUTH, SETTING_WORKDIR, SETTING_TIMEOUT, SETTING_TTL };
/* Applies what was written (replace: the open truncated the file).  Each
 * validates first and changes nothing on error. */
int sandbox_setting_apply(struct sandbox *s, enum setting which, const char *buf, size_t len,
			  bool replace, struct sbx_err *err);
/* Clears a setting without a log line: the first half of a shell's `>`
 * (its open truncates, the write comes later and says what happened). */
int sandbox_setting_clear(struct sandbox *s, enum setting which, struct sbx_err *err);
/* Checks the complete lines of a partial write: 0 or -errno. */
int setting_check_partial(enum setting which, const char *buf, size_t len, struct sbx_err *err);
/* What reading the file shows (auth: names only), malloc'ed. */
char *sandbox_setting_text(struct sandbox *s, enum setting which, size_t *len);
int sandbox_ctl(struct sandbox *s, const char *buf, size_t len, struct sbx_err *err);
/* A file of the sandbox was opened (+1) or closed (-1): the idle TTL
 * counts open files as activity. */
void sandbox_files_opened(struct sandbox *s, int delta);
/* Seconds since anything happened in s, or -1 while something goes on. */
double sandbox_idle_seconds(struct sandbox *s);

/* What a sandbox's container uses now (stats.c). */
struct sandbox_stats {
	double cpu_percent;		/* of one CPU; -1 = unknown */
	long long memory, memory_limit; /* bytes; limit 0 = none */
	long long pids, pids_limit;	/* limit 0 = none */
	long long uptime;		/* seconds since the container started */
	bool net;			/* it has an interface besides lo */
	long long rx, tx;
};
/* fresh: take a second CPU sample when the last is missing or older
 * than 10 s (a 200 ms pause). */
int sandbox_stats(struct sandbox *s, struct sandbox_stats *st, bool fresh, struct sbx_err *err);
/* NAME/stats: "key value" lines, malloc'ed (NULL and err on failure). */
char *sandbox_stats_text(struct sandbox *s, size_t *len, struct sbx_err *err);
/* .sandboxfs/summary: the table of every sandbox, malloc'ed. */
char *model_summary(size_t *len);
/* A JSON document describing the sandbox (malloc'ed). */
char *sandbox_info_json(struct sandbox *s);

/* What a settings file held before an open with O_TRUNC cleared it, so an
 * invalid write later on that open can put it back ("changes nothing"). */
struct setting_undo {
	enum setting which;
	struct kv_list kv;
	char *workdir;
	long timeout;
};
/* ctl save IMAGE: commits the container (cid) without its credentials to a
 * new image; EPERM/EEXIST/EACCES as docs/interface.md says. */
int setting_save(struct sandbox *s, enum setting which, struct setting_undo *u);
void setting_restore(struct sandbox *s, struct setting_undo *u); /* consumes u */
void setting_undo_free(struct setting_undo *u);

/* ---- runs ---- */

/* Run `number` of s (0 = the latest) as a new reference, or NULL. */
struct run *sandbox_run(struct sandbox *s, unsigned number);
void run_put(struct run *r);
unsigned run_number(const struct run *r); /* fixed for the run's life */

/* A copy of what a run's files show. */
struct run_view {
	bool started; /* the command runs or ran (not still starting) */
	bool ended;
	int start_errno; /* 0, or why the run never started */
	struct timespec started_at, ended_at, last_output;
	off_t size[STREAM_COUNT];
	char status[32]; /* the status line with its "\n" */
};
void run_view(struct run *r, struct run_view *v);
/* The status line of r ("idle\n" for NULL). */
void run_status_line(struct run *r, char *buf, size_t len);
/* The same for the sandbox's own status file: "paused\n" while the
 * container is paused and r (its latest run, maybe NULL) has not ended. */
void sandbox_status_line(struct sandbox *s, struct run *r, char *buf, size_t len);

/* Starts a run of cmd; *out gets a reference.  The run may still be
 * starting on return: run_changed() fires when it is live or failed.
 * On failure before a run number was given, returns -errno and *out=NULL;
 * once numbered, a run that cannot start ends `lost`. */
int run_start(struct sandbox *s, const struct cmd_spool *cmd, struct run **out,
	      struct sbx_err *err);
/* Feeds the stdin of a run started with `ctl stdin open` (through the
 * agent): -EPIPE once it was closed or the run ended, -EOPNOTSUPP for a
 * run whose stdin was never open. */
int run_stdin_write(struct run *r, const char *buf, size_t len, struct sbx_err *err);
/* End-of-file on that stdin (ctl eof). */
int run_stdin_close(struct run *r, struct sbx_err *err);
/* Signals the run's process group inside the container. */
int run_kill(struct run *r, int sig, struct sbx_err *err);

/* A handle that reads a run's spool holds it open: an ended run's files
 * are opened here (outside any lock) and closed by the last reader. */
int run_reader_open(struct run *r);
void run_reader_close(struct run *r);
/* Where a reader of stream st at pos finds up to max bytes now: *fd (valid
 * while the reader is open) and *n (0 = nothing yet, or end-of-file once
 * the view says ended). */
void run_read_span(struct run *r, enum stream st, off_t pos, size_t max, int *fd, size_t *n);
/* A small file of the run's spool (cmd, started, ended), malloc'ed; an
 * empty text when it is missing. */
char *run_file_text(struct run *r, const char *name, size_t *len);
/* A file of the run's spool opened read-only: an fd, or -errno. */
int run_file_open(struct run *r, const char *name);

/* RFC 3339 UTC with milliseconds. */
void format_time(const struct timespec *ts, char *buf, size_t len);

#endif
