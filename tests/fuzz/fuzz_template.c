/* libFuzzer target: template JSON (cJSON) validation.  A template either
 * parses and then re-parses identically from its own canonical text, or is
 * refused with EINVAL and a one-line reason. */
#include <errno.h>

#include "fuzz_common.h"
#include "template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct template *t = NULL;
	struct sbx_err e = { 0 };
	int r = template_parse("fuzz", (const char *)data, size, &t, &e);
	if (r < 0) {
		/* ENOMEM is the one other answer, and a fuzzer will not see it. */
		fuzz_check_err(r, &e);
		fuzz_assert(t == NULL);
		return 0;
	}
	fuzz_assert(t && t->text && t->network);
	fuzz_assert(t->pids >= 0 && t->memory >= 0 && t->cpus >= 0);
	for (size_t i = 0; i < t->nworkspaces; i++)
		fuzz_assert(t->workspaces[i].path[0] == '/');
	struct template *again = template_dup(t);
	fuzz_assert(again && !strcmp(again->text, t->text));
	fuzz_assert(again->pids == t->pids && again->memory == t->memory);
	template_free(again);
	template_free(t);
	return 0;
}
