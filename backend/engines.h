/* The engines of a mount and their events streams (backend-internal). */
#ifndef SBX_ENGINES_H
#define SBX_ENGINES_H

#include <stdbool.h>

#include "engine.h"

/* Where the events streams report: called from the I/O thread. */
struct engine_sink {
	void (*event)(const struct engine *e, const struct engine_event *ev);
	/* The stream (re)connected: bring the model in line with the engine
	 * (after an outage that began at outage_at, CLOCK_MONOTONIC s). */
	void (*resync)(const struct engine *e, bool after_outage, double outage_at);
};

void engines_init(const struct engine *default_engine, const struct engine_sink *sink);
/* The slot of an endpoint (NULL or "" = the default engine), made on first
 * use; NULL when there are too many engines or no memory. */
const struct engine *engine_for(const char *endpoint);
/* Up to max engines known so far. */
size_t engines_list(const struct engine **out, size_t max);
/* Starts every events stream (and those of engines made later). */
void engines_start(void);
/* After the I/O thread stopped: ends the streams and frees the slots. */
void engines_shutdown(void);
double mono_now(void);
/* A sandbox (or a reconciliation) starts or stops using e (lock order:
 * the model's lock may be held; slots_lock is taken inside). */
void engine_use(const struct engine *e, int delta);
/* A call on e just worked: an events stream waiting out its backoff
 * retries now. */
void engine_answered(const struct engine *e);
/* Whether e answers, logged once per change. */
void engine_health(const struct engine *e, bool up, const char *why);
/* Was e last seen not answering? */
bool engine_is_down(const struct engine *e);
/* Templates changed: each engine's slot checks whether it is still used. */
void engines_poke_all(void);

#endif
