/* Launching a run (backend-internal): what the sandbox hands a new run. */
#ifndef SBX_RUN_H
#define SBX_RUN_H

#include "model_internal.h"

struct run_launch {
	const struct cmd_spool *cmd;
	const char *env;      /* "KEY=VALUE\n" lines: settings and credentials */
	size_t env_len;
	const char *workdir;  /* "" = the image's */
	long timeout;         /* seconds, 0 = none */
	const char *const *secrets; /* values to mask in its output */
	size_t nsecrets;
};

/* Spools and spawns r (already numbered and listed in its sandbox).  On
 * failure nothing of it runs; the caller ends it with run_fail_start(). */
int run_launch(struct run *r, const struct run_launch *l, struct sbx_err *err)
	SBX_EXCLUDES(model_lock);
/* Ends a run that could not start: `lost`, with err as its reason. */
void run_fail_start(struct run *r, const struct sbx_err *err) SBX_EXCLUDES(model_lock);

#endif
