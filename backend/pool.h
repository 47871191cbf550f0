/* The warm pool: per pooled template, N containers created and started in
 * the background, claimed by mkdir (docs/interface.md, "The pool").
 *
 * A pool container is made by the same path as a sandbox's (model.c's
 * create_container), named sandboxfs-INSTANCE-_pool_HEX and labelled
 * sandboxfs.pool=TEMPLATE.  Labels cannot change, so the container's name
 * is the truth: a claim renames it to sandboxfs-INSTANCE-NAME, after which
 * reconciliation adopts it as NAME; one still named _pool_ that the pool
 * does not own (an earlier daemon's) is removed.  Never reused: a claimed
 * container leaves the pool for good. */
#ifndef SBX_POOL_H
#define SBX_POOL_H

#include <stdbool.h>

#include "engine.h"

#define POOL_SLOT_PREFIX "_pool_"
#define TOMB_PREFIX "_rm_"

/* Starts the pool thread; the default target is -o pool. */
int pool_start(long default_target);
void pool_stop(void);
/* The pool key of a template: its name ("default" for the built-in one). */
const char *pool_key(const struct template *t);
/* Takes a ready container of template `key` made with settings
 * `effective` on engine e: 0 with *id and *slot (malloc'ed), or -ENOENT.
 * The slot stays the pool's until pool_claim_done(). */
int pool_claim(const char *key, const char *effective, const struct engine *e, char **id,
	       char **slot);
void pool_claim_done(const char *slot);
/* Is slot (the part after sandboxfs-INSTANCE-) a container the pool is
 * making, holds or is handing out? */
bool pool_owns(const char *slot);
/* The text of .sandboxfs/pool (malloc'ed): "TEMPLATE ready/target" lines. */
char *pool_status_text(void);

#endif
