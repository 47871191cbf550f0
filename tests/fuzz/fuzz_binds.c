/* libFuzzer target: `container inspect -f '{{json .Mounts}}'`,
 * parsed as workspace_start_container() does before a start. */
#include <errno.h>
#include <string.h>

#include "engine_internal.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct engine_bind *v = NULL;
	size_t n = 0;
	int r = engine_parse_binds((const char *)data, size, &v, &n);
	if (r < 0) {
		fuzz_assert(r == -EINVAL || r == -ENOMEM);
		fuzz_assert(!v && n == 0);
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		fuzz_assert(v[i].source[0] == '/' && v[i].target[0] == '/' &&
			    (v[i].ro == 0 || v[i].ro == 1));
	engine_binds_free(v, n);
	return 0;
}
