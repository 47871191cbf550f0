/* Shared between the model's own files; not for the fs layer. */
#ifndef SBX_MODEL_INTERNAL_H
#define SBX_MODEL_INTERNAL_H

#include "model.h"

extern const struct model_callbacks *model_cb;

void model_handle_event(const struct engine_event *ev);
/* Loads the ended runs of a sandbox from its spool (adoption). */
void runs_reload_locked(struct sandbox *s);
void notify_run_changed(struct run *r);
/* Closes an ended run's spool fds (nobody reads it). */
void run_close_fds_locked(struct run *r);
/* Frees a run whose only reference was its sandbox's runs[]. */
void run_free_locked(struct run *r);

#endif
