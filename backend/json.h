#ifndef SBX_JSON_H
#define SBX_JSON_H

#include <cjson/cJSON.h>

static inline void cleanup_cjsonp(cJSON **p)
{
	cJSON_Delete(*p);
}
#define cleanup_cjson __attribute__((cleanup(cleanup_cjsonp)))

#endif
