/* What the engine driver's files share (not for the model). */
#ifndef SBX_ENGINE_INTERNAL_H
#define SBX_ENGINE_INTERNAL_H

#include "engine.h"
#include "subprocess.h"

/* One line of `ps -a --format '{{json .}}'` (docker or podman shapes).
 * Returns 0, -EINVAL for garbage, or -ENOMEM. */
int engine_parse_ps_line(const char *instance, const char *line, size_t len,
			 struct engine_container *c);
void engine_container_clear(struct engine_container *c);
/* podman 4 prints `ps --format '{{json .}}'` as one JSON array: this turns
 * it into docker's shape, one object per line.  NULL if not an array. */
char *engine_ps_array_to_lines(const char *text, size_t len, size_t *out_len);

/* `container inspect -f '{{json .Mounts}}'` (docker and podman: Source,
 * Destination, RW; HostConfig's shape, Target/ReadOnly, is taken too): the
 * bind mounts (Type "bind"), in order.  0, -EINVAL for anything else, or -ENOMEM. */
int engine_parse_binds(const char *text, size_t len, struct engine_bind **out, size_t *n);
/* The CLI's argv for e (its --host/--context) followed by words; NULL on
 * ENOMEM.  Freed with engine_argv_free. */
char **engine_argv(const struct engine *e, const char *const *words);
void engine_argv_free(char **v);
/* Runs the CLI with words to completion, as every call does: errno and a
 * one-line reason from its stderr.  res may be NULL; else freed by caller. */
int engine_cli(const struct engine *e, const char *what, const char *const *words,
	       const void *input, size_t input_len, struct spawn_result *res, struct sbx_err *err);

#endif
