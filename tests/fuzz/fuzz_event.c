/* libFuzzer target: one line of `docker events --format '{{json .}}'`.
 * It is parsed into a bounded struct or refused; labels are never cut. */
#include <errno.h>

#include "engine.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct engine_event ev;
	memset(&ev, 0x5a, sizeof(ev));
	int r = engine_parse_event((const char *)data, size, &ev);
	if (r < 0) {
		fuzz_assert(r == -EINVAL);
		return 0;
	}
	fuzz_assert(r == 0);
	fuzz_assert(memchr(ev.id, '\0', sizeof(ev.id)) && ev.id[0]);
	fuzz_assert(memchr(ev.sandbox, '\0', sizeof(ev.sandbox)));
	fuzz_assert(memchr(ev.instance, '\0', sizeof(ev.instance)));
	fuzz_assert(ev.kind >= ENGINE_EV_OTHER && ev.kind <= ENGINE_EV_UNPAUSE);
	return 0;
}
