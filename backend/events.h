/* The audit log: one JSON object per line for every lifecycle event and
 * run, kept in memory (bounded) and in STATE/events.jsonl (rotated to
 * events.jsonl.1), served as .sandboxfs/events and NAME/events.
 *
 * Offsets are positions in the log since the daemon started (what was
 * loaded from the state directory included); lines dropped from memory
 * move the first offset still served forward.  No FUSE here. */
#ifndef SBX_EVENTS_H
#define SBX_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* Bytes kept in memory and on disk (per file: two files at most). */
#define EVENTS_MEM_MAX (2u << 20)
#define EVENTS_FILE_MAX (1u << 20)

/* Loads the log kept in state_dir and opens it for appending. */
int events_init(const char *state_dir);
void events_shutdown(void);
/* Who hears that lines were added (fs/ wakes its readers); called from
 * the writer thread with no lock held. */
void events_set_listener(void (*fn)(void));

/* A new event object {"time","event","sandbox"?}; add fields and pass it
 * to events_emit, which consumes it.  Callable under any lock: it only
 * appends to memory; a thread of its own writes the file and wakes the
 * readers. */
cJSON *events_new(const char *event, const char *sandbox);
void events_emit(cJSON *ev);
/* Shorthand for an event with only a sandbox (and an optional string field). */
void events_simple(const char *event, const char *sandbox, const char *key, const char *value);

/* Copies lines from *pos (whole lines of `sandbox` only when it is not
 * NULL) into buf, at most size bytes; moves *pos past what it consumed.
 * Returns the bytes copied (0: nothing new yet). */
size_t events_read(uint64_t *pos, const char *sandbox, char *buf, size_t size);
/* Is there something for a reader at pos (of sandbox, or all)? */
bool events_ready(uint64_t pos, const char *sandbox);

#endif
