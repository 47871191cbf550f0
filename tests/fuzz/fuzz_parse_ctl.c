/* libFuzzer target: the one-line parsers.  The first byte picks one of
 * ctl, signal, timeout, workdir, sandbox name and variable name. */
#include <errno.h>
#include <signal.h>

#include "fuzz_common.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_ctl(const char *s, size_t len)
{
	struct ctl_cmd c;
	struct sbx_err e = { 0 };
	int r;

	memset(&c, 0x5a, sizeof(c));
	r = parse_ctl(s, len, &c, &e);
	if (r < 0) {
		fuzz_check_err(r, &e);
		fuzz_assert(c.signal == 0x5a5a5a5a);
		return;
	}
	fuzz_assert(r == 0);
	fuzz_assert(c.verb == CTL_KILL || c.verb == CTL_STOP || c.verb == CTL_START ||
		    c.verb == CTL_SAVE || c.verb == CTL_EOF || c.verb == CTL_STDIN ||
		    c.verb == CTL_PAUSE || c.verb == CTL_RESUME);
	if (c.verb == CTL_STDIN)
		fuzz_assert(c.stdin_open == true || c.stdin_open == false);
	if (c.verb == CTL_KILL)
		fuzz_assert(c.signal >= 1 && c.signal <= 64);
	if (c.verb == CTL_SAVE) {
		size_t l = strnlen(c.image, sizeof(c.image));

		fuzz_assert(l >= 1 && l <= 255 && c.image[0] != '-');
		fuzz_assert(strspn(c.image, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					    "0123456789._/:@-") == l);
		fuzz_assert(memmem(s, len, c.image, l) != NULL);
	}
}

static void fuzz_signal(const char *s, size_t len)
{
	struct sbx_err e = { 0 };
	int sig = -1, r = parse_signal(s, len, &sig, &e);

	if (r < 0) {
		fuzz_check_err(r, &e);
		fuzz_assert(sig == -1);
	} else {
		fuzz_assert(r == 0 && sig >= 1 && sig <= 64);
	}
}

static void fuzz_timeout(const char *s, size_t len)
{
	struct sbx_err e = { 0 };
	long t = -1;
	int r = parse_timeout(s, len, &t, &e);

	if (r < 0) {
		fuzz_check_err(r, &e);
		fuzz_assert(t == -1);
	} else {
		fuzz_assert(r == 0 && t >= 0 && t <= 2678400);
	}
}

static void fuzz_workdir(const char *s, size_t len)
{
	struct sbx_err e = { 0 };
	char *w = NULL;
	int r = parse_workdir(s, len, &w, &e);

	if (r < 0) {
		fuzz_check_err(r, &e);
		fuzz_assert(w == NULL);
		return;
	}
	fuzz_assert(r == 0 && w);
	fuzz_assert(w[0] == '\0' || w[0] == '/');
	fuzz_assert(!strchr(w, '\n') && strlen(w) <= 4095);
	fuzz_assert(strlen(w) == len || strlen(w) + 1 == len);
	free(w);
}

static void fuzz_names(const char *s, size_t len)
{
	struct sbx_err e = { 0 };
	char *z = strndup(s, len);
	int r;

	fuzz_assert(z);
	r = parse_sandbox_name(z, &e);
	if (r < 0) {
		fuzz_check_err(r, &e);
	} else {
		size_t l = strlen(z);

		fuzz_assert(r == 0 && l >= 1 && l <= 63);
		fuzz_assert(strcmp(z, ".") != 0 && strcmp(z, "..") != 0 && !strchr(z, '/'));
	}
	free(z);
	sbx_err_clear(&e);
	r = parse_env_name(s, len, &e);
	if (r < 0)
		fuzz_check_err(r, &e);
	else
		fuzz_assert(len >= 1 && len <= 255 && !memchr(s, '=', len) &&
			    !memchr(s, '\0', len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data + 1;

	if (size < 1)
		return 0;
	size--;
	switch (data[0] % 5) {
	case 0:
		fuzz_ctl(s, size);
		break;
	case 1:
		fuzz_signal(s, size);
		break;
	case 2:
		fuzz_timeout(s, size);
		break;
	case 3:
		fuzz_workdir(s, size);
		break;
	default:
		fuzz_names(s, size);
		break;
	}
	return 0;
}
