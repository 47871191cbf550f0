/* Launching a run (backend-internal): what the sandbox hands a new run. */
#ifndef SBX_RUN_H
#define SBX_RUN_H

#include "model_internal.h"

struct run_launch {
	const struct cmd_spool *cmd;
	const char *env; /* "KEY=VALUE\n" lines: settings and credentials */
	size_t env_len;
	const char *workdir;	    /* "" = the image's */
	long timeout;		    /* seconds, 0 = none */
	const char *const *secrets; /* values to mask in its output */
	size_t nsecrets;
	struct agent_channel *chan; /* the sandbox's agent, or NULL: docker exec */
	bool stdin_open;	    /* stdin stays open for runs/N/stdin (agent only) */
};

/* Spools and spawns r (already numbered and listed in its sandbox).  On
 * failure nothing of it runs; the caller ends it with run_fail_start(). */
int run_launch(struct run *r, const struct run_launch *l, struct sbx_err *err)
	SBX_EXCLUDES(model_lock);
/* Ends a run that could not start: `lost`, with err as its reason. */
void run_fail_start(struct run *r, const struct sbx_err *err) SBX_EXCLUDES(model_lock);

/* ---- hooks for the agent transport (backend/agent_channel.c) ----
 * Called with no lock held, by the I/O thread (which owns a live run's
 * spool) except attach/detach (the launching thread). */
struct agent_channel;
/* r now runs through c: r keeps a reference of c, and c one of r. */
void run_hook_attach(struct run *r, struct agent_channel *c) SBX_EXCLUDES(model_lock);
void run_hook_detach(struct run *r) SBX_EXCLUDES(model_lock);
void run_hook_live(struct run *r, long pgid) SBX_EXCLUDES(model_lock);
/* Marks r's spool as running through the agent (a restart resumes it). */
void run_hook_mark_agent(struct run *r);
void run_hook_changed(struct run *r) SBX_EXCLUDES(model_lock);
/* Spools masked bytes, honouring max_output and a full disk. */
/* Masks (one masker per file) and spools bytes of stream st, as a live
 * docker exec run does; run_hook_flush() releases what the maskers hold. */
void run_hook_push(struct run *r, struct masker mask[STREAM_COUNT], enum stream st, const char *buf,
		   size_t len, int *spool_errno);
void run_hook_flush(struct run *r, struct masker mask[STREAM_COUNT], int *spool_errno);
/* The command ended with code (128+signal when signalled). */
void run_hook_exited(struct run *r, int code, bool timed_out) SBX_EXCLUDES(model_lock);
/* The run never started (start_errno) or its channel failed. */
void run_hook_lost(struct run *r, int start_errno, const char *reason) SBX_EXCLUDES(model_lock);

#endif
