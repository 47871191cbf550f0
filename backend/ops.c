/* Operator verbs on a sandbox's container: ctl pause / resume. */
#include <errno.h>

#include "log.h"
#include "model_internal.h"

int sandbox_pause(struct sandbox *s, const char *cid, bool pause, struct sbx_err *err)
{
	const char *verb = pause ? "pause" : "resume";
	sbx_lock(&model_lock);
	bool running = s->state == SBX_RUNNING, paused = s->paused;
	sbx_unlock(&model_lock);
	if (!running)
		return sbx_err_set(err, EHOSTDOWN, "ctl %s: the container of %s is not running", verb,
				   s->name);
	if (paused == pause)
		return 0; /* already so: nothing to do */
	int rc = engine_pause(s->engine, cid, pause, err);
	if (rc < 0)
		return rc;
	sbx_lock(&model_lock);
	/* The engine's event says the same; setting it now means a read right
	 * after the write already sees it. */
	if (s->state == SBX_RUNNING)
		s->paused = pause;
	sbx_unlock(&model_lock);
	log_info("sandbox %s: %s by ctl", s->name, pause ? "paused" : "resumed");
	return 0;
}
