/* What the engine driver's files share (not for the model). */
#ifndef SBX_ENGINE_INTERNAL_H
#define SBX_ENGINE_INTERNAL_H

#include "engine.h"

/* One line of `ps -a --format '{{json .}}'` (docker or podman shapes).
 * Returns 0, -EINVAL for garbage, or -ENOMEM. */
int engine_parse_ps_line(const char *instance, const char *line, size_t len,
			 struct engine_container *c);
void engine_container_clear(struct engine_container *c);

#endif
