/* What every part of the model shares and that depends on nothing of it:
 * the one lock (docs/locking.md) and the mount's configuration. */
#include "model_internal.h"

sbx_mutex model_lock = SBX_MUTEX_INIT;

/* Set once by model_init() before any other thread exists. */
static struct model_config config;

const struct model_config *model_config(void)
{
	return &config;
}

void model_config_set(const struct model_config *cfg)
{
	config = *cfg;
}
