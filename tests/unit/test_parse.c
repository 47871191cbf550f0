/* Unit tests of the input parsers (backend/parse.c). */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"
#include "tap.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static int msg_clean(const struct sbx_err *e, const char *secret)
{
	return strstr(e->msg, secret) == NULL && strchr(e->msg, '\n') == NULL && e->msg[0];
}

static void test_sandbox_name(void)
{
	static const char *good[] = {
		"a",
		"Z",
		"0",
		"loop-42-claude",
		"a.b_c-d",
		"9..",
		"a------------------------------------------------------------b"
	};
	static const char *bad[] = { "",
				     ".",
				     "..",
				     "-a",
				     "_a",
				     ".a",
				     "a/b",
				     "a b",
				     "a\tb",
				     "a\nb",
				     "\xc3\xa9t\xc3\xa9",
				     "a\x7f",
				     "a:b",
				     "a*" };
	char name[80];
	struct sbx_err e = { 0 };

	for (size_t i = 0; i < SBX_ARRAY_SIZE(good); i++)
		is_int(parse_sandbox_name(good[i], &e), 0, "name '%s' is valid", good[i]);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(bad); i++)
		is_int(parse_sandbox_name(bad[i], &e), -EINVAL, "name #%zu is invalid", i);
	is_int(e.code, EINVAL, "err.code is EINVAL");
	is_str(e.msg,
	       "invalid sandbox name: must match [a-zA-Z0-9][a-zA-Z0-9_.-]* and be at most 63 bytes",
	       "the reason");
	memset(name, 'x', 63);
	name[63] = '\0';
	is_int(parse_sandbox_name(name, &e), 0, "63 bytes are fine");
	name[63] = 'x';
	name[64] = '\0';
	is_int(parse_sandbox_name(name, &e), -EINVAL, "64 bytes are not");
	is_int(parse_sandbox_name(NULL, NULL), -EINVAL, "NULL name, NULL err");
}

static void test_kv_list(void)
{
	struct kv_list l = { 0 }, c = { 0 }, src = { 0 };

	is_int(kv_list_set(&l, "A", "1"), 0, "set A");
	is_int(kv_list_set(&l, "B", "2"), 0, "set B");
	is_int(kv_list_set(&l, "A", "3"), 0, "set A again");
	is_int(l.n, 2, "two keys");
	is_str(l.keys[0], "A", "A stays first");
	is_str(l.values[0], "3", "A replaced in place");
	is_str(kv_list_get(&l, "B"), "2", "get B");
	ok(kv_list_get(&l, "C") == NULL, "get missing");
	kv_list_set(&c, "OLD", "x");
	is_int(kv_list_copy(&c, &l), 0, "copy over a non-empty list");
	is_int(c.n, 2, "copy has two keys");
	ok(c.keys[1] != l.keys[1] && strcmp(c.keys[1], "B") == 0, "copy is deep");
	ok(kv_list_get(&c, "OLD") == NULL, "old content replaced");
	kv_list_set(&src, "B", "9");
	kv_list_set(&src, "D", "4");
	is_int(kv_list_merge(&c, &src), 0, "merge");
	is_int(c.n, 3, "merged: A B D");
	is_str(kv_list_get(&c, "B"), "9", "merge replaces");
	is_str(c.keys[2], "D", "merge appends");
	kv_list_free(&l);
	kv_list_free(&c);
	kv_list_free(&src);
	ok(l.n == 0 && l.keys == NULL, "free zeroes");
	kv_list_free(&l);
}

static void test_env_name(void)
{
	struct sbx_err e = { 0 };
	char longname[300];

	is_int(parse_env_name(S("PATH"), &e), 0, "PATH");
	is_int(parse_env_name(S("_x9"), &e), 0, "_x9");
	is_int(parse_env_name(S("1BAD"), &e), -EINVAL, "1BAD");
	is_str(e.msg,
	       "invalid variable name '1BAD': must match [A-Za-z_][A-Za-z0-9_]* and be at most 255 bytes",
	       "names a name-like key");
	is_int(parse_env_name(S(""), &e), -EINVAL, "empty");
	is_str(e.msg, "empty variable name", "empty reason");
	is_int(parse_env_name(S("A-B"), &e), -EINVAL, "A-B");
	ok(strstr(e.msg, "A-B") == NULL, "a key that is not name-like is not quoted");
	is_int(parse_env_name(S("A\0B"), &e), -EINVAL, "NUL inside");
	memset(longname, 'A', sizeof(longname));
	is_int(parse_env_name(longname, 255, &e), 0, "255 bytes");
	is_int(parse_env_name(longname, 256, &e), -EINVAL, "256 bytes");
}

static void test_kv_lines(void)
{
	struct kv_list l = { 0 };
	struct sbx_err e = { 0 };

	is_int(parse_kv_lines(S("A=1\n\n  # comment\n\t\nB= two = three \r\nC=\nD=x\r"), &l, &e), 0,
	       "lines parse");
	is_int(l.n, 4, "four variables");
	is_str(kv_list_get(&l, "A"), "1", "A");
	is_str(kv_list_get(&l, "B"), " two = three ",
	       "B: split at the first '=', spaces kept, \\r dropped");
	is_str(kv_list_get(&l, "C"), "", "C: empty value");
	is_str(kv_list_get(&l, "D"), "x", "D: last line without newline, \\r dropped");
	is_int(parse_kv_lines(S("  E=5\nA=11"), &l, &e), 0, "append");
	is_int(l.n, 5, "E appended");
	is_str(l.keys[0], "A", "A kept its place");
	is_str(kv_list_get(&l, "A"), "11", "A replaced");
	is_str(kv_list_get(&l, "E"), "5", "leading blanks before the key are skipped");
	is_int(parse_kv_lines(S("\xc3\xa9t\xc3\xa9=x"), &l, &e), -EINVAL, "non-ASCII key");
	is_int(parse_kv_lines(S("U=\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), &l, &e), 0,
	       "UTF-8 value");
	is_int(parse_kv_lines(S(""), &l, &e), 0, "empty buffer");
	is_int(parse_kv_lines(NULL, 0, &l, &e), 0, "NULL, 0");
	is_int(l.n, 6, "six variables");
	kv_list_free(&l);
}

/* Each bad input: errno, the exact message, and out unchanged. */
static void test_kv_lines_bad(void)
{
	static const struct {
		const char *in;
		size_t len;
		const char *msg;
	} bad[] = {
		{ S("GOOD=x\nBAD LINE secretvalue"), "line 2: expected KEY=VALUE" },
		{ S("GOOD=x\n1BAD=topsecret"),
		  "line 2: invalid variable name '1BAD': must match [A-Za-z_][A-Za-z0-9_]* and be at most 255 bytes" },
		{ S("GOOD=x\nab-cd+ef/topsecret==\n"),
		  "line 2: invalid variable name: must match [A-Za-z_][A-Za-z0-9_]* and be at most 255 bytes" },
		{ S("=topsecret"), "line 1: empty variable name" },
		{ S("K =topsecret"),
		  "line 1: invalid variable name: must match [A-Za-z_][A-Za-z0-9_]* and be at most 255 bytes" },
		{ S("A=1\n\nK=top\0secret"), "line 3: the value of K contains a NUL byte" },
		{ S("K=top\rsecret\n"), "line 1: the value of K contains a carriage return" },
		{ S("K=topsecret\r\r\n"), "line 1: the value of K contains a carriage return" },
		{ S("K=topsecret\xff"), "line 1: the value of K is not valid UTF-8" },
		{ S("K=topsecret\xc0\xaf"), "line 1: the value of K is not valid UTF-8" },
		{ S("K=topsecret\xed\xa0\x80"), "line 1: the value of K is not valid UTF-8" },
		{ S("K=topsecret\xf4\x90\x80\x80"), "line 1: the value of K is not valid UTF-8" },
		{ S("K=topsecret\xe2\x82"), "line 1: the value of K is not valid UTF-8" },
		{ S("K=topsecret\xc3("), "line 1: the value of K is not valid UTF-8" },
	};
	struct kv_list l = { 0 };
	struct sbx_err e;

	kv_list_set(&l, "KEEP", "old");
	kv_list_set(&l, "GOOD", "before");
	for (size_t i = 0; i < SBX_ARRAY_SIZE(bad); i++) {
		sbx_err_clear(&e);
		is_int(parse_kv_lines(bad[i].in, bad[i].len, &l, &e), -EINVAL, "bad kv #%zu", i);
		is_int(e.code, EINVAL, "  code");
		is_str(e.msg, bad[i].msg, "  message");
		ok(msg_clean(&e, "secret"), "  message has no value");
		ok(l.n == 2 && strcmp(kv_list_get(&l, "GOOD"), "before") == 0 &&
			   strcmp(kv_list_get(&l, "KEEP"), "old") == 0,
		   "  out unchanged (all or nothing)");
	}
	kv_list_free(&l);
}

/* docker's env-file reader takes lines of at most 65535 bytes. */
static void test_kv_line_limit(void)
{
	struct kv_list l = { 0 };
	struct sbx_err e = { 0 };
	char *buf = malloc(SBX_ENV_LINE_MAX + 2);
	size_t n = 100000;
	char *big = malloc(n + 64);
	char json[128];

	if (!buf || !big) {
		ok(0, "out of memory");
		free(buf);
		free(big);
		return;
	}

	memcpy(buf, "BIG=", 4);
	memset(buf + 4, 's', SBX_ENV_LINE_MAX - 4);
	buf[SBX_ENV_LINE_MAX] = '\n';
	is_int(parse_kv_lines(buf, SBX_ENV_LINE_MAX + 1, &l, &e), 0, "a 65535-byte line");
	is_int((int)strlen(kv_list_get(&l, "BIG")), (int)SBX_ENV_LINE_MAX - 4, "  whole value");
	is_int((int)kv_list_env_bytes(&l), (int)SBX_ENV_LINE_MAX + 1, "  env bytes");
	buf[SBX_ENV_LINE_MAX] = 's';
	buf[SBX_ENV_LINE_MAX + 1] = '\n';
	is_int(parse_kv_lines(buf, SBX_ENV_LINE_MAX + 2, &l, &e), -EINVAL, "a 65536-byte line");
	is_str(e.msg, "line 1: the value of BIG is too long: KEY=VALUE must fit in 65535 bytes",
	       "  the reason");
	ok(msg_clean(&e, "sss"), "  message has no value");
	kv_list_free(&l);

	struct auth_doc d = { 0 };
	int off = snprintf(json, sizeof(json), "{\"env\": {\"BIG\": \"");
	memcpy(big, json, (size_t)off);
	memset(big + off, 's', n);
	memcpy(big + off + n, "\"}}", 3);
	is_int(parse_auth(big, (size_t)off + n + 3, &d, &e), -EINVAL, "JSON: 100000-byte value");
	is_str(e.msg, "env: the value of BIG is too long: KEY=VALUE must fit in 65535 bytes",
	       "  the reason");
	auth_doc_free(&d);
	free(big);
	free(buf);
}

static void test_auth_lines(void)
{
	struct auth_doc d = { 0 };
	struct sbx_err e = { 0 };

	is_int(parse_auth(S("\n  TOKEN=abc\nOTHER=x=y\n"), &d, &e), 0, "auth as lines");
	is_int(d.env.n, 2, "two variables");
	is_str(kv_list_get(&d.env, "OTHER"), "x=y", "value");
	is_int(d.nfiles, 0, "no files");
	is_int(parse_auth(S("TOKEN=def\n"), &d, &e), 0, "append");
	is_str(kv_list_get(&d.env, "TOKEN"), "def", "merged");
	is_int(parse_auth(S("1X=topsecret\n"), &d, &e), -EINVAL, "bad line");
	ok(msg_clean(&e, "topsecret"), "no value in message");
	is_int(d.env.n, 2, "doc unchanged");
	auth_doc_free(&d);
}

static void test_auth_json(void)
{
	struct auth_doc d = { 0 };
	struct sbx_err e = { 0 };
	const char *j =
		" \n{\"env\": {\"A\": \"1\", \"B\": \"\\u00e9\"},\n"
		"  \"files\": {\"~/.codex/auth.json\": \"{\\\"k\\\": 1}\\n\", \"/etc/x\": \"\"}}\n\n";

	is_int(parse_auth(j, strlen(j), &d, &e), 0, "JSON auth");
	is_int(d.env.n, 2, "two variables");
	is_str(kv_list_get(&d.env, "B"), "\xc3\xa9", "escaped value decoded");
	is_int(d.nfiles, 2, "two files");
	is_str(d.files[0].path, "~/.codex/auth.json", "file path");
	is_str(d.files[0].content, "{\"k\": 1}\n", "file content");
	is_int(d.files[0].len, 9, "file length");
	is_int(d.files[1].len, 0, "empty file");
	is_int(parse_auth(S("{\"files\": {\"/etc/x\": \"new\", \"/etc/y\": \"y\"}, \"env\": {}}"),
			  &d, &e),
	       0, "second JSON merges");
	is_int(d.nfiles, 3, "three files");
	is_str(d.files[1].content, "new", "same path replaced");
	is_int(d.env.n, 2, "variables kept");
	is_int(parse_auth(S("{}"), &d, &e), 0, "empty object");
	auth_doc_free(&d);
	ok(d.nfiles == 0 && d.files == NULL && d.env.n == 0, "auth_doc_free zeroes");
}

static void test_auth_json_bad(void)
{
	static const struct {
		const char *in;
		size_t len;
		const char *msg;
	} bad[] = {
		{ S("{\"env\": {\"A\": \"topsecret\"}"), "invalid JSON at byte 25" },
		{ S("{\"env\": {\"A\": \"topsecret\"}} x"), "trailing data after JSON at byte 28" },
		{ S("{\"env\": {\"A\": \"topsecret\"}}{}"), "trailing data after JSON at byte 27" },
		{ S("{\"env\": [\"topsecret\"]}"), "\"env\" must be an object of strings" },
		{ S("{\"env\": {\"A\": 1}, \"x\": \"topsecret\"}"),
		  "env: the value of A is not a string" },
		{ S("{\"topsecret\": 1}"),
		  "unknown key in JSON auth: only \"env\" and \"files\" are allowed" },
		{ S("{\"env\": {\"1A\": \"topsecret\"}}"),
		  "env: invalid variable name '1A': must match [A-Za-z_][A-Za-z0-9_]* and be at most 255 bytes" },
		{ S("{\"env\": {\"A\": \"top\\nsecret\"}}"),
		  "env: the value of A contains a newline" },
		{ S("{\"env\": {\"A\": \"top\\rsecret\"}}"),
		  "env: the value of A contains a carriage return" },
		{ S("{\"env\": {\"A\": \"top\\u0000secret\"}}"),
		  "JSON strings must not contain \\u0000" },
		{ S("{\"env\": {\"A\": \"top\0secret\"}}"), "JSON contains a NUL byte" },
		{ S("{\"env\": {\"A\": \"top\xffsecret\"}}"),
		  "env: the value of A is not valid UTF-8" },
		{ S("{\"files\": \"topsecret\"}"), "\"files\" must be an object of strings" },
		{ S("{\"files\": {\"rel/path\": \"topsecret\"}}"),
		  "files entry 1: the path must be absolute or start with ~/" },
		{ S("{\"files\": {\"/ok\": \"a\", \"~x/y\": \"topsecret\"}}"),
		  "files entry 2: the path must be absolute or start with ~/" },
		{ S("{\"files\": {\"/a/../b\": \"topsecret\"}}"),
		  "files entry 1: the path contains a .. component" },
		{ S("{\"files\": {\"~/..\": \"topsecret\"}}"),
		  "files entry 1: the path contains a .. component" },
		{ S("{\"files\": {\"/a/b/\": \"topsecret\"}}"),
		  "files entry 1: the path does not name a file" },
		{ S("{\"files\": {\"~/\": \"topsecret\"}}"),
		  "files entry 1: the path does not name a file" },
		{ S("{\"files\": {\"/a/.\": \"topsecret\"}}"),
		  "files entry 1: the path does not name a file" },
		{ S("{\"files\": {\"/a\\nb\": \"topsecret\"}}"),
		  "files entry 1: the path contains a control character" },
		{ S("{\"files\": {\"/a\": 5}}"), "files entry 1: the content is not a string" },
		{ S("{\"files\": {\"topsecret\": \"/a\"}}"),
		  "files entry 1: the path must be absolute or start with ~/" },
		{ S("[\"topsecret\"]"), "line 1: expected KEY=VALUE" },
		{ S("  {\"env\": {\"A\": \"topsecret\", }}"), "invalid JSON at byte 30" },
	};
	struct auth_doc d = { 0 };
	struct sbx_err e;

	parse_auth(S("{\"env\": {\"KEEP\": \"v\"}, \"files\": {\"/keep\": \"c\"}}"), &d, &e);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(bad); i++) {
		sbx_err_clear(&e);
		is_int(parse_auth(bad[i].in, bad[i].len, &d, &e), -EINVAL, "bad auth JSON #%zu", i);
		is_str(e.msg, bad[i].msg, "  message");
		ok(msg_clean(&e, "secret"), "  message has no value");
		ok(d.env.n == 1 && d.nfiles == 1 && strcmp(d.files[0].content, "c") == 0,
		   "  doc unchanged");
	}
	auth_doc_free(&d);
}

static void test_auth_paths(void)
{
	char j[4200] = "{\"files\": {\"/";
	size_t n = strlen(j);
	struct auth_doc d = { 0 };
	struct sbx_err e = { 0 };

	memset(j + n, 'a', 4094);
	strcpy(j + n + 4094, "\": \"x\"}}");
	is_int(parse_auth(j, strlen(j), &d, &e), 0, "a 4095-byte path");
	j[n + 4094] = 'a';
	strcpy(j + n + 4095, "\": \"x\"}}");
	is_int(parse_auth(j, strlen(j), &d, &e), -EINVAL, "a 4096-byte path");
	is_str(e.msg, "files entry 1: the path is longer than 4095 bytes", "  message");
	is_int(parse_auth(S("{\"files\": {\"/a/..b/.c\": \"x\", \"/~/x\": \"y\"}}"), &d, &e), 0,
	       "..b and .c components are fine");
	is_int(d.nfiles, 3, "three files");
	auth_doc_free(&d);
}

static void test_signal(void)
{
	static const struct {
		const char *in;
		int sig;
	} good[] = {
		{ "TERM", SIGTERM },
		{ "SIGTERM", SIGTERM },
		{ "term", SIGTERM },
		{ "SigHup", SIGHUP },
		{ "KILL", SIGKILL },
		{ "9", 9 },
		{ "1", 1 },
		{ "64", 64 },
		{ "USR1", SIGUSR1 },
		{ "sigusr2", SIGUSR2 },
		{ "WINCH", SIGWINCH },
		{ "STKFLT", 16 },
		{ "IO", SIGIO },
		{ "PWR", SIGPWR },
		{ "SYS", SIGSYS },
		{ "VTALRM", SIGVTALRM },
		{ "CHLD", SIGCHLD },
		{ "RTMIN", 0 },
		{ "SIGRTMAX", 0 },
		{ "009", 9 },
	};
	static const char *bad[] = { "",
				     "0",
				     "65",
				     "-9",
				     "+9",
				     "SIG",
				     "SIGSIGTERM",
				     "TERMX",
				     "TER",
				     "9x",
				     " 9",
				     "TERM ",
				     "99999999999999999999",
				     "SIG9" };
	struct sbx_err e = { 0 };
	int sig;

	for (size_t i = 0; i < SBX_ARRAY_SIZE(good); i++) {
		int want = good[i].sig ? good[i].sig : (i == 17 ? SIGRTMIN : SIGRTMAX);

		sig = -1;
		is_int(parse_signal(good[i].in, strlen(good[i].in), &sig, &e), 0, "signal %s",
		       good[i].in);
		is_int(sig, want, "  = %d", want);
	}
	for (size_t i = 0; i < SBX_ARRAY_SIZE(bad); i++) {
		sig = -1;
		is_int(parse_signal(bad[i], strlen(bad[i]), &sig, &e), -EINVAL, "bad signal '%s'",
		       bad[i]);
		is_int(sig, -1, "  sig untouched");
	}
	parse_signal(S("FOO"), &sig, &e);
	is_str(e.msg, "unknown signal 'FOO': use a name (TERM, SIGTERM) or 1..64", "message");
	parse_signal(S("A\nB"), &sig, &e);
	is_str(e.msg, "unknown signal 'A?B': use a name (TERM, SIGTERM) or 1..64",
	       "control characters are not echoed");
}

static void test_ctl(void)
{
	struct ctl_cmd c;
	struct sbx_err e = { 0 };
	char img[300];

	is_int(parse_ctl(S("kill\n"), &c, &e), 0, "kill");
	ok(c.verb == CTL_KILL && c.signal == SIGKILL, "  default KILL");
	is_int(parse_ctl(S("kill TERM"), &c, &e), 0, "kill TERM");
	ok(c.verb == CTL_KILL && c.signal == SIGTERM, "  TERM");
	is_int(parse_ctl(S("  kill \t SIGINT  \n  "), &c, &e), 0, "kill with blanks around");
	is_int(c.signal, SIGINT, "  INT");
	is_int(parse_ctl(S("kill 15\n"), &c, &e), 0, "kill 15");
	is_int(c.signal, 15, "  15");
	is_int(parse_ctl(S("stop"), &c, &e), 0, "stop");
	is_int(c.verb, CTL_STOP, "  verb");
	is_int(parse_ctl(S("start\n"), &c, &e), 0, "start");
	is_int(c.verb, CTL_START, "  verb");
	is_int(parse_ctl(S("eof\n"), &c, &e), 0, "eof");
	is_int(c.verb, CTL_EOF, "  verb");
	is_int(parse_ctl(S("stdin open\n"), &c, &e), 0, "stdin open");
	ok(c.verb == CTL_STDIN && c.stdin_open, "  open");
	is_int(parse_ctl(S("stdin eof"), &c, &e), 0, "stdin eof");
	ok(c.verb == CTL_STDIN && !c.stdin_open, "  eof");
	is_int(parse_ctl(S("save my/img:v1\n"), &c, &e), 0, "save");
	ok(c.verb == CTL_SAVE && strcmp(c.image, "my/img:v1") == 0, "  image");
	is_int(parse_ctl(
		       S("save reg.io:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
		       &c, &e),
	       0, "save with registry");
	is_str(c.image,
	       "reg.io:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	       "  image");
	is_int(parse_ctl(S("save localhost/a__b.c-d--e:v1.2_3"), &c, &e), 0, "save: separators");
	static const char *const bad_refs[] = {
		"save ::x",  "save /x",	  "save Upper/Case:v1", "save a//b", "save a:",
		"save a:-x", "save a..b", "save a@sha256:abc",	"save -x",   "save a$b",
		"save a_",   "save .a",
	};
	for (size_t i = 0; i < SBX_ARRAY_SIZE(bad_refs); i++)
		is_int(parse_ctl(bad_refs[i], strlen(bad_refs[i]), &c, &e), -EINVAL, "%s",
		       bad_refs[i]);

	static const struct {
		const char *in;
		size_t len;
		const char *msg;
	} bad[] = {
		{ S(""), "empty ctl action" },
		{ S(" \n"), "empty ctl action" },
		{ S("\n\n"), "one ctl action per write" },
		{ S("stop\nstart"), "one ctl action per write" },
		{ S("kill\n\n"), "one ctl action per write" },
		{ S("reboot"),
		  "unknown ctl action 'reboot': expected kill [SIGNAL], stop, start, pause, resume, save IMAGE[:TAG], "
		  "eof or stdin open|eof" },
		{ S("KILL"),
		  "unknown ctl action 'KILL': expected kill [SIGNAL], stop, start, pause, resume, save IMAGE[:TAG], "
		  "eof or stdin open|eof" },
		{ S("eof now"), "eof takes no argument" },
		{ S("stdin"), "stdin takes one argument: open or eof" },
		{ S("stdin closed"), "stdin takes one argument: open or eof" },
		{ S("stdin open now"), "stdin takes one argument: open or eof" },
		{ S("kill TERM now"), "kill takes at most one argument: a signal" },
		{ S("kill BOGUS"), "unknown signal 'BOGUS': use a name (TERM, SIGTERM) or 1..64" },
		{ S("kill -9"), "unknown signal '-9': use a name (TERM, SIGTERM) or 1..64" },
		{ S("stop now"), "stop takes no argument" },
		{ S("start 1"), "start takes no argument" },
		{ S("save"), "save takes one argument: IMAGE[:TAG]" },
		{ S("save a b"), "save takes one argument: IMAGE[:TAG]" },
		{ S("save -x"),
		  "invalid image reference: expected [HOST[:PORT]/]name[/name...][:TAG], names in lower case, "
		  "at most 255 bytes" },
		{ S("save a$b"),
		  "invalid image reference: expected [HOST[:PORT]/]name[/name...][:TAG], names in lower case, "
		  "at most 255 bytes" },
		{ S("stop\r\n"), "ctl action contains a control character" },
		{ S("stop\0"), "ctl action contains a control character" },
		{ S("averyveryveryveryveryveryveryveryveryverylongverb"),
		  "unknown ctl action 'averyveryveryveryveryveryveryveryver...': expected kill [SIGNAL], stop, "
		  "start, pause, resume, save IMAGE[:TAG], eof or stdin open|eof" },
	};
	for (size_t i = 0; i < SBX_ARRAY_SIZE(bad); i++) {
		memset(&c, 0x5a, sizeof(c));
		is_int(parse_ctl(bad[i].in, bad[i].len, &c, &e), -EINVAL, "bad ctl #%zu", i);
		is_str(e.msg, bad[i].msg, "  message");
		ok(c.signal == 0x5a5a5a5a, "  out untouched");
	}
	strcpy(img, "save ");
	memset(img + 5, 'a', 255);
	img[260] = '\0';
	is_int(parse_ctl(img, strlen(img), &c, &e), 0, "255-byte image");
	is_int(strlen(c.image), 255, "  copied whole");
	strcpy(img + 260, "a");
	is_int(parse_ctl(img, strlen(img), &c, &e), -EINVAL, "256-byte image");
}

static void test_timeout(void)
{
	static const struct {
		const char *in;
		long want;
	} good[] = { { "", 0 },	      { "\n", 0 },     { "0", 0 },
		     { "30\n", 30 },  { " 7 \n", 7 },  { "2678400", 2678400 },
		     { "00010", 10 }, { "\t5\r\n", 5 } };
	static const char *bad[] = {
		"-1",	"+1",  "1.5", "10s", "1 2", "2678401", "99999999999999999999999",
		"0x10", "abc", "1\n2"
	};
	struct sbx_err e = { 0 };
	long t;

	for (size_t i = 0; i < SBX_ARRAY_SIZE(good); i++) {
		t = -1;
		is_int(parse_timeout(good[i].in, strlen(good[i].in), &t, &e), 0, "timeout #%zu", i);
		is_int(t, good[i].want, "  = %ld", good[i].want);
	}
	for (size_t i = 0; i < SBX_ARRAY_SIZE(bad); i++) {
		t = -1;
		is_int(parse_timeout(bad[i], strlen(bad[i]), &t, &e), -EINVAL, "bad timeout #%zu",
		       i);
		is_int(t, -1, "  untouched");
	}
	is_str(e.msg, "invalid timeout: whole seconds from 0 to 2678400 (31 days)", "message");
	is_int(parse_timeout(S("5\0"), &t, &e), -EINVAL, "NUL");
}

static void test_workdir(void)
{
	struct sbx_err e = { 0 };
	char *w = NULL, big[4200];

	is_int(parse_workdir(S("/srv/app\n"), &w, &e), 0, "workdir");
	is_str(w, "/srv/app", "  newline stripped");
	free(w);
	is_int(parse_workdir(S("/a b/c \n"), &w, &e), 0, "spaces kept");
	is_str(w, "/a b/c ", "  value");
	free(w);
	w = NULL;
	is_int(parse_workdir(S("\n"), &w, &e), 0, "empty line");
	is_str(w, "", "  empty string");
	free(w);
	w = NULL;
	is_int(parse_workdir(NULL, 0, &w, &e), 0, "nothing");
	is_str(w, "", "  empty string");
	free(w);
	w = NULL;
	is_int(parse_workdir(S("rel/dir\n"), &w, &e), -EINVAL, "relative");
	is_str(e.msg, "workdir must be an absolute path", "  message");
	is_int(parse_workdir(S("/a\n/b\n"), &w, &e), -EINVAL, "two lines");
	is_str(e.msg, "workdir must be one line", "  message");
	is_int(parse_workdir(S("/a\n\n"), &w, &e), -EINVAL, "two newlines");
	is_int(parse_workdir(S("/a\0b"), &w, &e), -EINVAL, "NUL");
	is_str(e.msg, "workdir contains a NUL byte", "  message");
	is_int(parse_workdir(S(" /a"), &w, &e), -EINVAL, "leading space");
	ok(w == NULL, "out untouched on errors");
	big[0] = '/';
	memset(big + 1, 'd', 4094);
	big[4095] = '\n';
	is_int(parse_workdir(big, 4096, &w, &e), 0, "4095 bytes");
	is_int(strlen(w), 4095, "  length");
	free(w);
	big[4095] = 'd';
	is_int(parse_workdir(big, 4096, &w, &e), -EINVAL, "4096 bytes");
	is_str(e.msg, "workdir is longer than 4095 bytes", "  message");
}

static void test_size_suffix(void)
{
	static const struct {
		const char *in;
		long long want;
	} good[] = { { "0", 0 },	{ "512", 512 },	     { "1k", 1024 },	  { "2K", 2048 },
		     { "3m", 3 << 20 }, { "4G", 4LL << 30 }, { "8g", 8LL << 30 }, { "100b", 100 } };
	static const char *const bad[] = {
		"", "k", "-1", "1x", "1kb", " 1", "1 ", "+1", "99999999999999999999", "8192g"
	};
	long long v;
	for (size_t i = 0; i < SBX_ARRAY_SIZE(good); i++) {
		v = -1;
		is_int(parse_size_suffix(good[i].in, 1LL << 40, &v), 0, "size '%s'", good[i].in);
		ok(v == good[i].want, "  is %lld", good[i].want);
	}
	for (size_t i = 0; i < SBX_ARRAY_SIZE(bad); i++)
		is_int(parse_size_suffix(bad[i], 1LL << 40, &v), -EINVAL, "size '%s' is refused",
		       bad[i]);
}

int main(void)
{
	test_size_suffix();
	test_sandbox_name();
	test_kv_list();
	test_env_name();
	test_kv_lines();
	test_kv_lines_bad();
	test_kv_line_limit();
	test_auth_lines();
	test_auth_json();
	test_auth_json_bad();
	test_auth_paths();
	test_signal();
	test_ctl();
	test_timeout();
	test_workdir();
	return tap_done();
}
