/* libFuzzer target: `docker ps --format '{{json .}}'` output, one line
 * (docker) or one JSON array (podman), parsed as engine_list() does. */
#include <errno.h>

#include "engine_internal.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one_line(const char *line, size_t len)
{
	struct engine_container c = { 0 };
	int r = engine_parse_ps_line("0011223344556677", line, len, &c);
	if (r < 0) {
		fuzz_assert(r == -EINVAL || r == -ENOMEM);
		fuzz_assert(!c.id && !c.image && !c.sandbox);
		return;
	}
	fuzz_assert(c.id && c.id[0] && c.image);
	fuzz_assert(c.running == 0 || c.running == 1);
	engine_container_clear(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	size_t len = size;
	char *lines = NULL;
	if (size && data[0] == '[') {
		lines = engine_ps_array_to_lines(text, size, &len);
		if (!lines)
			return 0;
		text = lines;
	}
	for (const char *p = text; p < text + len;) {
		const char *eol = memchr(p, '\n', (size_t)(text + len - p));
		size_t l = eol ? (size_t)(eol - p) : (size_t)(text + len - p);
		one_line(p, l);
		p += l + 1;
	}
	free(lines);
	return 0;
}
