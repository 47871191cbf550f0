#ifndef SBX_JSON_H
#define SBX_JSON_H

#include <stdbool.h>

#include <cjson/cJSON.h>

static inline void cleanup_cjsonp(cJSON **p)
{
	cJSON_Delete(*p);
}
#define cleanup_cjson __attribute__((cleanup(cleanup_cjsonp)))

/* Adds item to parent (an object under key, or an array when key is NULL),
 * or frees it: false when either is missing (out of memory) or the add
 * fails, so that no failed add leaks its item or goes unnoticed. */
static inline bool json_put_item(cJSON *parent, const char *key, cJSON *item)
{
	bool ok = parent && item &&
		  (key ? cJSON_AddItemToObject(parent, key, item)
		       : cJSON_AddItemToArray(parent, item));
	if (!ok)
		cJSON_Delete(item);
	return ok;
}

#endif
