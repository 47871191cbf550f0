/* Placement by Docker Swarm (docs/scale-out.md): a sandbox whose template
 * says "placement": "swarm" is a one-replica service made through the
 * manager; swarm's scheduler picks the node, and from then on the sandbox
 * lives on that node's engine like any other (runs, kills, auth, events).
 *
 * The config's "swarm" section is read once at start-up, before any other
 * thread runs, and never changes: it needs no lock. */
#ifndef SBX_SWARM_H
#define SBX_SWARM_H

#include <stdbool.h>

#include "engine.h"
#include "err.h"
#include "template.h"

struct cJSON;

/* {"manager": URL?, "nodes": {NODE_ID: ENGINE_URL}}: EINVAL with a reason. */
int swarm_config_load(const struct cJSON *section, struct sbx_err *err);
void swarm_config_free(void);
bool swarm_configured(void);
/* EINVAL when t asks for what a swarm service cannot express. */
int swarm_check_template(const struct template *t, struct sbx_err *err);
#define SWARM_MAX_NODES 32
/* The manager's URL (when named) and every node's: up to max of them. */
size_t swarm_endpoints(const char **out, size_t max);
/* Makes the engine slots of the manager and of every node (their events
 * streams and adoption then cover every node). */
void swarm_touch_engines(void);

/* Creates the service of sandbox `name` from t and waits for its task's
 * container: *node is that node's engine, *id the container's full id. */
int swarm_create(const char *name, const char *image, const char *mountpoint,
		 const struct template *t, const struct engine **node, char **id,
		 struct sbx_err *err);
/* After the container of sandbox `name` on e was removed: removes its
 * service when e is a swarm node (a service already gone is success). */
int swarm_remove(const struct engine *e, const char *name, struct sbx_err *err);
/* The swarm node id whose engine is e, or NULL. */
const char *swarm_node_of(const struct engine *e);

#endif
