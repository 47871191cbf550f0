/* The stateful fake docker of the model's unit tests (tests/fake-docker
 * with FAKE_DOCKER_STATE): a temporary directory holding the state
 * directory of the mount and the fake engine's containers. */
#ifndef SBX_FAKE_ENGINE_H
#define SBX_FAKE_ENGINE_H

#include <limits.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "state.h"

struct fake_engine {
	char tmpdir[64];
	char state_dir[256];
	char engine_dir[256];
	char cli[PATH_MAX]; /* the fake docker, absolute */
};

/* 0, or -1 when the fake docker or a temporary directory is missing. */
static inline int fake_engine_setup(struct fake_engine *f, const char *name)
{
	const char *fake = getenv("FAKE_DOCKER");
	if (!fake || !*fake)
		fake = "tests/fake-docker";
	snprintf(f->tmpdir, sizeof(f->tmpdir), "/tmp/%s.XXXXXX", name);
	if (!realpath(fake, f->cli) || !mkdtemp(f->tmpdir))
		return -1;
	snprintf(f->state_dir, sizeof(f->state_dir), "%s/state", f->tmpdir);
	snprintf(f->engine_dir, sizeof(f->engine_dir), "%s/engine", f->tmpdir);
	mkdir_p(f->state_dir, NULL);
	mkdir_p(f->engine_dir, NULL);
	setenv("FAKE_DOCKER_STATE", f->engine_dir, 1);
	unsetenv("FAKE_DOCKER_MODE");
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

/* run_start() of a command given as text (the tests' commands are small). */
static inline int run_start_text(struct sandbox *s, const char *cmd, size_t len, struct run **out,
				 struct sbx_err *err)
{
	struct cmd_spool c;
	cmd_spool_init(&c);
	int rc = cmd_spool_append(&c, cmd, len, err);
	if (rc == 0)
		rc = run_start(s, &c, out, err);
	cmd_spool_free(&c);
	return rc;
}

/* Whether the model lists a sandbox of that name. */
static inline bool listed(const char *name)
{
	struct sandbox_listing l;
	bool found = false;
	if (model_list(&l) < 0)
		return false;
	for (size_t i = 0; i < l.n; i++)
		found |= !strcmp(l.names[i], name);
	sandbox_listing_free(&l);
	return found;
}

#endif
