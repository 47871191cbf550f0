/* The engine driver and the spawner: errno mapping, event parsing, the fake
 * CLI's failure modes, and (when an engine answers) the real thing. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "engine_internal.h"
#include "subprocess.h"
#include "tap.h"

#define SKIP(...)                                                                                  \
	do {                                                                                       \
		tap_n++;                                                                           \
		printf("ok %d - # SKIP ", tap_n);                                                  \
		printf(__VA_ARGS__);                                                               \
		printf("\n");                                                                      \
	} while (0)

static const char *fake;
static char tmpdir[] = "/tmp/test_engine.XXXXXX";
static char argv_log[256], env_log[256], stdin_log[256];
#define INSTANCE "0123456789abcdef"
#define FAKE_ID "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* is_str for text with newlines: tap.h would print them raw, breaking TAP. */
static void show(const char *label, const char *s)
{
	printf("#   %s '", label);
	for (; s && *s; s++)
		if (*s == '\n')
			printf("\\n");
		else
			putchar(*s);
	printf("'\n");
}
#define is_text(got, want, ...)                                                                    \
	do {                                                                                       \
		const char *gt_ = (got), *wt_ = (want);                                            \
		int eq_ = gt_ && strcmp(gt_, wt_) == 0;                                            \
		ok(eq_, __VA_ARGS__);                                                              \
		if (!eq_) {                                                                        \
			show("got", gt_);                                                          \
			show("want", wt_);                                                         \
		}                                                                                  \
	} while (0)

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int one_line(const char *s)
{
	return s[0] && !strchr(s, '\n') && !strchr(s, '\r');
}

/* A whole file, NUL-terminated; "" if missing. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0;
	if (!f)
		return strdup("");
	FILE *m = open_memstream(&buf, &len);
	int c;
	while ((c = fgetc(f)) != EOF)
		fputc(c, m);
	fclose(m);
	fclose(f);
	return buf;
}

static void mode(const char *m)
{
	setenv("FAKE_DOCKER_MODE", m, 1);
	unlink(argv_log);
}

/* Reads fd to end-of-file (it is non-blocking). */
static size_t read_all(int fd, char *buf, size_t cap, int timeout_ms)
{
	size_t n = 0;
	int64_t end = now_ms() + timeout_ms;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)(end - now_ms());
		if (left <= 0 || poll(&p, 1, left) <= 0)
			break;
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r < 0 && errno == EAGAIN)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == cap - 1)
			break;
	}
	buf[n] = '\0';
	return n;
}

static void test_classify(void)
{
	static const struct {
		const char *text;
		int want;
	} cases[] = {
		{ "Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?",
		  ECONNREFUSED },
		{ "error during connect: Get \"http://%2F%2F.%2Fpipe/v1.24/version\": open //./pipe: no such file",
		  ECONNREFUSED },
		{ "dial unix /var/run/docker.sock: connect: permission denied", ECONNREFUSED },
		{ "Get http://h:1/v1.41/version: dial tcp 1.2.3.4:1: connect: connection refused",
		  ECONNREFUSED },
		{ "Unable to find image 'nope:latest' locally\ndocker: Error response from daemon: Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host",
		  ENOMEDIUM },
		{ "Unable to find image 'x:latest' locally\ndocker: Error response from daemon: pull access denied for x, repository does not exist or may require 'docker login'",
		  ENOMEDIUM },
		{ "Error response from daemon: manifest for x:nope not found: manifest unknown: manifest unknown",
		  ENOMEDIUM },
		{ "Error: No such image: x", ENOMEDIUM },
		{ "Unable to find image 'x:latest' locally\nCannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?",
		  ECONNREFUSED },
		{ "Error response from daemon: Container abc is not running", EHOSTDOWN },
		{ "Error: No such container: x", ENOENT },
		{ "Error response from daemon: No such container: x", ENOENT },
		{ "Error: No such object: x", ENOENT },
		{ "docker: Error response from daemon: Conflict. The container name \"/x\" is already in use by container \"ab\".",
		  EEXIST },
		{ "docker: Error response from daemon: OCI runtime create failed: whatever", EIO },
		{ "Error response from daemon: Container abc is paused, unpause the container before exec",
		  EBUSY },
		{ "OCI runtime exec failed: exec failed: unable to start container process: chdir to cwd (\"/nope\") set in config.json failed: no such file or directory: unknown",
		  ENOENT },
		{ "OCI runtime exec failed: exec failed: unable to start container process: chdir to cwd (\"/etc/passwd\") set in config.json failed: not a directory: unknown",
		  ENOTDIR },
		{ "", EIO },
	};
	for (size_t i = 0; i < SBX_ARRAY_SIZE(cases); i++)
		is_int(engine_classify_error(cases[i].text, 1), cases[i].want, "classify #%zu", i);
	is_int(engine_classify_error(NULL, 1), EIO, "classify NULL");
}

static void test_parse_event(void)
{
	static const char die[] =
		"{\"status\":\"die\",\"id\":\"8157be4266902a4db6233a22f8b48bd24804d758c1d41c66c1ce61e6f787e417\",\"from\":\"sandboxfs/base\",\"Type\":\"container\",\"Action\":\"die\",\"Actor\":{\"ID\":\"8157be4266902a4db6233a22f8b48bd24804d758c1d41c66c1ce61e6f787e417\",\"Attributes\":{\"exitCode\":\"137\",\"image\":\"sandboxfs/base\",\"name\":\"sandboxfs-" INSTANCE
		"-a\",\"sandboxfs.instance\":\"" INSTANCE
		"\",\"sandboxfs.sandbox\":\"a\"}},\"scope\":\"local\",\"time\":1795839497,\"timeNano\":1795839497203638766}\n";
	static const char destroy[] =
		"{\"status\":\"destroy\",\"id\":\"8157be4266902a4db6233a22f8b48bd24804d758c1d41c66c1ce61e6f787e417\",\"Type\":\"container\",\"Action\":\"destroy\",\"Actor\":{\"ID\":\"8157be4266902a4db6233a22f8b48bd24804d758c1d41c66c1ce61e6f787e417\",\"Attributes\":{\"image\":\"sandboxfs/base\",\"sandboxfs.instance\":\"" INSTANCE
		"\",\"sandboxfs.sandbox\":\"b.c\"}},\"time\":1}";
	/* docker >= 25 (API 1.44) drops status/id/from. */
	static const char start[] =
		"{\"Type\":\"container\",\"Action\":\"start\",\"Actor\":{\"ID\":\"abc\",\"Attributes\":{\"sandboxfs.sandbox\":\"s\"}},\"scope\":\"local\"}";
	static const char exec_die[] =
		"{\"status\":\"exec_die\",\"id\":\"abc\",\"Type\":\"container\",\"Action\":\"exec_die\",\"Actor\":{\"ID\":\"abc\",\"Attributes\":{\"execID\":\"32\",\"exitCode\":\"0\",\"sandboxfs.sandbox\":\"s\"}}}";
	static const char exec_start[] =
		"{\"status\":\"exec_start: /bin/sh -c echo $$\",\"id\":\"abc\",\"Type\":\"container\",\"Action\":\"exec_start: /bin/sh -c echo $$\",\"Actor\":{\"ID\":\"abc\",\"Attributes\":{}}}";
	static const char podman[] =
		"{\"ID\":\"abc\",\"Image\":\"x\",\"Name\":\"n\",\"Status\":\"died\",\"Type\":\"container\",\"Attributes\":{\"sandboxfs.sandbox\":\"p\"},\"ContainerExitCode\":3}";
	struct engine_event ev;
	char *huge;

	is_int(engine_parse_event(die, strlen(die), &ev), 0, "die parses");
	is_int(ev.kind, ENGINE_EV_DIE, "die kind");
	is_int(ev.exit_code, 137, "die exit code");
	is_text(ev.id, "8157be4266902a4db6233a22f8b48bd24804d758c1d41c66c1ce61e6f787e417",
		"die id");
	is_text(ev.sandbox, "a", "die sandbox label");
	is_text(ev.instance, INSTANCE, "die instance label");
	is_int(engine_parse_event(destroy, strlen(destroy), &ev), 0, "destroy parses");
	is_int(ev.kind, ENGINE_EV_DESTROY, "destroy kind");
	is_text(ev.sandbox, "b.c", "destroy sandbox");
	is_int(ev.exit_code, -1, "destroy has no exit code");
	static const char pause_ev[] =
		"{\"status\":\"pause\",\"id\":\"ab\",\"Type\":\"container\",\"Action\":\"pause\",\"Actor\":{\"ID\":\"ab\",\"Attributes\":{}},\"time\":1}";
	static const char unpause_ev[] =
		"{\"status\":\"unpause\",\"id\":\"ab\",\"Type\":\"container\",\"Action\":\"unpause\",\"Actor\":{\"ID\":\"ab\",\"Attributes\":{}},\"time\":1}";
	is_int(engine_parse_event(pause_ev, strlen(pause_ev), &ev), 0, "pause parses");
	is_int(ev.kind, ENGINE_EV_PAUSE, "pause kind");
	is_int(engine_parse_event(unpause_ev, strlen(unpause_ev), &ev), 0, "unpause parses");
	is_int(ev.kind, ENGINE_EV_UNPAUSE, "unpause kind");
	is_int(engine_parse_event(start, strlen(start), &ev), 0, "start (new format) parses");
	is_int(ev.kind, ENGINE_EV_START, "start kind");
	is_text(ev.id, "abc", "start id from Actor");
	is_text(ev.instance, "", "absent label is empty");
	is_int(engine_parse_event(exec_die, strlen(exec_die), &ev), 0, "exec_die parses");
	is_int(ev.kind, ENGINE_EV_OTHER, "exec_die is not die");
	is_int(engine_parse_event(exec_start, strlen(exec_start), &ev), 0, "exec_start parses");
	is_int(ev.kind, ENGINE_EV_OTHER, "exec_start is other");
	is_int(engine_parse_event(podman, strlen(podman), &ev), 0, "podman event parses");
	is_int(ev.kind, ENGINE_EV_DIE, "podman died");
	is_int(ev.exit_code, 3, "podman exit code");
	/* The length bounds the parse: no NUL needed, the rest ignored. */
	is_int(engine_parse_event(die, strlen(die) - 40, &ev), -EINVAL, "truncated JSON");
	is_int(engine_parse_event("}{not json", 10, &ev), -EINVAL, "garbage");
	is_int(engine_parse_event("[1,2]", 5, &ev), -EINVAL, "not an object");
	is_int(engine_parse_event("\"x\"", 3, &ev), -EINVAL, "a string");
	is_int(engine_parse_event("{\"Action\":\"die\"}", 16, &ev), -EINVAL, "no id");
	is_int(engine_parse_event("{\"id\":\"a\"} x", 12, &ev), -EINVAL, "trailing garbage");
	is_int(engine_parse_event("", 0, &ev), -EINVAL, "empty");
	huge = malloc(200100);
	if (!huge)
		abort();
	strcpy(huge, "{\"Action\":\"die\",\"id\":\"");
	memset(huge + strlen(huge), 'a', 200000);
	strcpy(huge + 22 + 200000, "\"}");
	is_int(engine_parse_event(huge, strlen(huge), &ev), -EINVAL, "huge id");
	memset(huge, 0, 200100);
	strcpy(huge,
	       "{\"Action\":\"die\",\"id\":\"x\",\"Actor\":{\"Attributes\":{\"sandboxfs.sandbox\":\"");
	memset(huge + strlen(huge), 'b', 100);
	strcat(huge, "\"}}}");
	is_int(engine_parse_event(huge, strlen(huge), &ev), -EINVAL, "huge label");
	free(huge);
}

static void test_spawn(void)
{
	struct spawn_result res;
	struct sbx_err err = { 0 };
	int r;

	char *a1[] = { "sh", "-c", "echo out; echo err >&2; exit 7", NULL };
	r = spawn_capture(a1, NULL, NULL, 0, -1, 5000, &res, &err);
	is_int(r, 0, "spawn sh");
	is_int(res.status, 7, "exit code");
	is_text(res.out, "out\n", "stdout");
	is_text(res.errtext, "err\n", "stderr");
	spawn_result_free(&res);

	char *a2[] = { "sh", "-c", "kill -TERM $$", NULL };
	spawn_capture(a2, NULL, NULL, 0, -1, 5000, &res, &err);
	is_int(res.status, 128 + SIGTERM, "killed by SIGTERM: 143");
	spawn_result_free(&res);

	size_t big = 1 << 20;
	unsigned char *in = malloc(big);
	if (!in)
		abort();
	for (size_t i = 0; i < big; i++)
		in[i] = (unsigned char)(i * 7 + (i >> 9));
	char *a3[] = { "cat", NULL };
	r = spawn_capture(a3, NULL, in, big, -1, 10000, &res, &err);
	ok(r == 0 && res.out_len == big && memcmp(res.out, in, big) == 0,
	   "1 MiB through cat round-trips exactly");
	spawn_result_free(&res);
	char *a4[] = { "true", NULL };
	r = spawn_capture(a4, NULL, in, big, -1, 10000, &res, &err);
	ok(r == 0 && res.status == 0, "input nobody reads: no SIGPIPE, no hang");
	spawn_result_free(&res);
	free(in);

	char *a5[] = { "sh", "-c", "head -c 20000000 /dev/zero; echo done >&2", NULL };
	r = spawn_capture(a5, NULL, NULL, 0, -1, 20000, &res, &err);
	ok(r == 0 && res.out_len == 16u << 20 && strcmp(res.errtext, "done\n") == 0,
	   "stdout capped at 16 MiB, child not blocked");
	spawn_result_free(&res);

	int64_t t0 = now_ms();
	char *a6[] = { "sh", "-c", "sleep 10; echo never", NULL };
	r = spawn_capture(a6, NULL, NULL, 0, -1, 300, &res, &err);
	int64_t dt = now_ms() - t0;
	ok(r == 0 && res.timed_out && res.status == 137, "timeout kills (status %d)", res.status);
	ok(dt < 2000, "timeout is prompt (%lld ms)", (long long)dt);
	spawn_result_free(&res);

	/* A grandchild holding the pipes must not hold us. */
	t0 = now_ms();
	char *a7[] = { "sh", "-c", "sleep 3 & echo hi", NULL };
	r = spawn_capture(a7, NULL, NULL, 0, -1, 10000, &res, &err);
	ok(r == 0 && strcmp(res.out, "hi\n") == 0 && now_ms() - t0 < 2000,
	   "returns when the child exits, not when its grandchild does");
	spawn_result_free(&res);

	/* No fd of ours reaches the child, cloexec or not. */
	int leak1 = open("/dev/null", O_RDONLY), leak2 = dup(1), fd3 = open("/dev/null", O_RDONLY);
	/* test(1) on each number: a glob or ls would open a directory fd. */
	char *a8[] = { "sh", "-c",
		       "i=0; while [ $i -lt 1024 ]; do [ -e /proc/$$/fd/$i ] && printf '%s ' $i;"
		       " i=$((i+1)); done",
		       NULL };
	spawn_capture(a8, NULL, NULL, 0, -1, 5000, &res, &err);
	is_text(res.out, "0 1 2 ", "child sees fds 0 1 2 only");
	spawn_result_free(&res);
	spawn_capture(a8, NULL, NULL, 0, fd3, 5000, &res, &err);
	is_text(res.out, "0 1 2 3 ", "with fd3: 0 1 2 3");
	spawn_result_free(&res);
	close(leak1);
	close(leak2);
	close(fd3);

	/* Our ignored and blocked signals are not the child's. */
	sigset_t blk, old;
	sigemptyset(&blk);
	sigaddset(&blk, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &blk, &old);
	signal(SIGINT, SIG_IGN);
	char *a9[] = { "grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status", NULL };
	spawn_capture(a9, NULL, NULL, 0, -1, 5000, &res, &err);
	unsigned long long blk_bits = 1, ign_bits = 1;
	sscanf(res.out, "SigBlk: %llx SigIgn: %llx", &blk_bits, &ign_bits);
	/* glibc's posix_spawn sets its own internal signals 32 and 33 to
	 * SIG_IGN when the parent handles them; nothing else may be. */
	ok(blk_bits == 0 && (ign_bits & ~0x180000000ull) == 0,
	   "default dispositions, empty mask (%s)", strtok(res.out, "\n"));
	spawn_result_free(&res);
	signal(SIGINT, SIG_DFL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	char *a10[] = { "pwd", NULL };
	spawn_capture(a10, NULL, NULL, 0, -1, 5000, &res, &err);
	is_text(res.out, "/\n", "cwd is /");
	spawn_result_free(&res);

	char *a11[] = { "/nonexistent/prog", NULL };
	is_int(spawn_capture(a11, NULL, NULL, 0, -1, 5000, &res, &err), -ENOENT, "missing program");
	ok(one_line(err.msg) && strstr(err.msg, "/nonexistent/prog"), "reason: %s", err.msg);
	char *a12[] = { "sandboxfs-no-such-program", NULL };
	is_int(spawn_capture(a12, NULL, NULL, 0, -1, 5000, &res, &err), -ENOENT,
	       "missing program in PATH");

	char *envp[] = { "ONLY=1", NULL };
	char *a13[] = { "/usr/bin/env", NULL };
	spawn_capture(a13, envp, NULL, 0, -1, 5000, &res, &err);
	is_text(res.out, "ONLY=1\n", "envp is the child's environment");
	spawn_result_free(&res);
}

static void *spawn_thread(void *arg)
{
	long id = (long)arg;
	char num[32];
	snprintf(num, sizeof(num), "%ld", id);
	char *a[] = { "sh", "-c", "echo $0; exit $(($0 % 50))", num, NULL };
	for (int i = 0; i < 20; i++) {
		struct spawn_result res;
		struct sbx_err err;
		char want[40];
		snprintf(want, sizeof(want), "%ld\n", id);
		if (spawn_capture(a, NULL, NULL, 0, -1, 10000, &res, &err) < 0 ||
		    strcmp(res.out, want) != 0 || res.status != id % 50)
			return (void *)1;
		spawn_result_free(&res);
	}
	return NULL;
}

static void test_spawn_threads(void)
{
	pthread_t t[8];
	int bad = 0;
	for (long i = 0; i < 8; i++)
		pthread_create(&t[i], NULL, spawn_thread, (void *)(i + 41));
	for (int i = 0; i < 8; i++) {
		void *rv;
		pthread_join(t[i], &rv);
		bad += rv != NULL;
	}
	is_int(bad, 0, "8 threads x 20 spawn_capture calls at once");
}

static void test_fake_errors(void)
{
	struct engine e = { .cli = (char *)fake, .instance = INSTANCE, .timeout_ms = 5000 };
	struct container_spec spec = { .name = "alpha",
				       .image = "sandboxfs/base",
				       .mountpoint = "/mnt/sbx",
				       .pids_limit = 512,
				       .init = 1 };
	struct engine_container *v;
	struct sbx_err err;
	char *s = NULL;
	size_t n;

	mode("down");
	is_call(engine_check(&e, &s, &err), -ECONNREFUSED, "down: check");
	ok(one_line(err.msg) && strstr(err.msg, "Cannot connect to the Docker daemon"),
	   "down: reason '%s'", err.msg);
	is_call(engine_create(&e, &spec, &s, &err), -ECONNREFUSED, "down: create");
	ok(strncmp(err.msg, "fake-docker run sandboxfs/base: Cannot connect", 46) == 0,
	   "create reason says what was tried: '%s'", err.msg);
	is_call(engine_list(&e, &v, &n, &err), -ECONNREFUSED, "down: list");
	is_call(engine_destroy(&e, "x", &err), -ECONNREFUSED, "down: destroy");

	mode("noimage");
	is_call(engine_create(&e, &spec, &s, &err), -ENOMEDIUM, "noimage: create");
	ok(one_line(err.msg) && strstr(err.msg, "pull access denied"), "noimage: '%s'", err.msg);
	mode("offline");
	is_call(engine_create(&e, &spec, &s, &err), -ENOMEDIUM, "image missing, registry offline");
	ok(strstr(err.msg, "no such host") != NULL, "offline: '%s'", err.msg);

	mode("conflict");
	is_call(engine_create(&e, &spec, &s, &err), -EEXIST, "conflict: create");
	ok(strstr(err.msg, "Conflict.") && one_line(err.msg), "conflict: '%s'", err.msg);
	s = slurp(argv_log);
	ok(!strstr(s, "rm -f"), "a name in use is not removed");
	free(s);

	mode("garbage");
	is_call(engine_check(&e, &s, &err), -EIO, "garbage: check");
	is_call(engine_create(&e, &spec, &s, &err), -EIO, "garbage: create");
	ok(strstr(err.msg, "garbage") != NULL, "garbage: '%s'", err.msg);
	s = slurp(argv_log);
	ok(strstr(s, "rm -f sandboxfs-" INSTANCE "-alpha") != NULL, "garbage: create cleans up");
	free(s);
	is_call(engine_list(&e, &v, &n, &err), -EIO, "garbage: list");
	is_call(engine_is_running(&e, "x", &err), -EIO, "garbage: is_running");
	ok(one_line(err.msg), "garbage reasons are one line: '%s'", err.msg);

	mode("hang");
	e.timeout_ms = 500;
	int64_t t0 = now_ms();
	is_call(engine_check(&e, &s, &err), -ETIMEDOUT, "hang: check");
	ok(now_ms() - t0 < 2000, "hang: check ends in time (%lld ms)", (long long)(now_ms() - t0));
	t0 = now_ms();
	is_call(engine_create(&e, &spec, &s, &err), -ETIMEDOUT, "hang: create");
	ok(now_ms() - t0 < 3000, "hang: create + cleanup end in time");
	s = slurp(argv_log);
	ok(strstr(s, "rm -f sandboxfs-" INSTANCE "-alpha") != NULL, "timeout: create cleans up");
	free(s);
	is_call(engine_list(&e, &v, &n, &err), -ETIMEDOUT, "hang: list");
	e.timeout_ms = 5000;

	mode("gone");
	is_call(engine_destroy(&e, "x", &err), 0, "gone: destroy succeeds (20.10 CLI)");
	is_call(engine_is_running(&e, "x", &err), -ENOENT, "gone: is_running");
	is_call(engine_stop(&e, "x", &err), -ENOENT, "gone: stop");
	is_call(engine_start(&e, "x", &err), -ENOENT, "gone: start");
	is_call(engine_kill_group(&e, "x", 42, 9, &err), -ENOENT, "gone: kill");

	mode("stopped");
	is_call(engine_kill_group(&e, "x", 42, 9, &err), -EHOSTDOWN, "stopped: kill");
	mode("nosuchproc");
	is_call(engine_kill_group(&e, "x", 4242, 9, &err), -ESRCH, "group gone: kill");
	is_call(engine_kill_group(&e, "x", 1, 9, &err), -EINVAL, "pgid 1 refused");
	is_call(engine_kill_group(&e, "x", 42, 99, &err), -EINVAL, "bad signal refused");
	is_call(engine_destroy(&e, "-rf", &err), -EINVAL, "option-like container refused");

	struct engine missing = { .cli = "/nonexistent/docker",
				  .instance = INSTANCE,
				  .timeout_ms = 5000 };
	is_call(engine_check(&missing, &s, &err), -ENOEXEC, "missing CLI: check");
	ok(one_line(err.msg) && strstr(err.msg, "/nonexistent/docker"), "missing: '%s'", err.msg);
	missing.cli = "sandboxfs-no-such-docker";
	is_call(engine_create(&missing, &spec, &s, &err), -ENOEXEC, "CLI not in PATH: create");
	struct engine_exec ex;
	is_call(engine_exec_start(&missing, "x", "", 0, NULL, NULL, &ex, &err), -ENOEXEC,
		"CLI not in PATH: exec");
	missing.cli = "/etc/passwd";
	is_call(engine_check(&missing, &s, &err), -ENOEXEC, "CLI not executable: check");
}

static void test_fake_ok(void)
{
	struct engine e = { .cli = (char *)fake, .instance = INSTANCE, .timeout_ms = 5000 };
	struct container_spec spec = { .name = "alpha",
				       .image = "sandboxfs/base",
				       .mountpoint = "/mnt/sbx",
				       .network = NULL,
				       .pids_limit = 512,
				       .memory_bytes = 1 << 28,
				       .init = 1 };
	struct engine_container *v = NULL;
	struct sbx_err err;
	char *s = NULL, *log;
	size_t n = 0;

	mode("ok");
	is_call(engine_check(&e, &s, &err), 0, "ok: check");
	is_text(s, "99.0.0", "ok: version");
	free(s);
	mode("ok");
	is_call(engine_create(&e, &spec, &s, &err), 0, "ok: create");
	is_text(s, FAKE_ID, "ok: container id");
	free(s);
	log = slurp(argv_log);
	is_text(log,
		"run -d --name sandboxfs-" INSTANCE "-alpha --label sandboxfs.instance=" INSTANCE
		" --label sandboxfs.sandbox=alpha --label sandboxfs.mountpoint=/mnt/sbx --init"
		" --cap-drop ALL --security-opt no-new-privileges --pids-limit 512"
		" --memory 268435456 --network none sandboxfs/base sleep 2147483647\n",
		"ok: run's argv");
	free(log);

	is_call(engine_list(&e, &v, &n, &err), 0, "ok: list");
	ok(n == 1 && strcmp(v[0].sandbox, "alpha") == 0 && strcmp(v[0].id, FAKE_ID) == 0 &&
		   v[0].running && strcmp(v[0].image, "sandboxfs/base") == 0,
	   "ok: list finds alpha, running");
	engine_containers_free(v, n);
	/* A mountpoint label faking a second sandbox label; podman's objects. */
	setenv("FAKE_DOCKER_PS",
	       "{\"ID\":\"a1\",\"Image\":\"i\",\"Labels\":\"sandboxfs.mountpoint=/m,sandboxfs.sandbox=evil,"
	       "sandboxfs.sandbox=real,sandboxfs.instance=" INSTANCE
	       "\",\"Names\":\"sandboxfs-" INSTANCE "-real\",\"State\":\"exited\"}\n\n"
	       "{\"Id\":\"b2\",\"Image\":\"i\",\"Labels\":{\"sandboxfs.sandbox\":\"pod\"},\"State\":\"running\"}\n"
	       "{\"ID\":\"c3\",\"Image\":\"i\",\"Labels\":\"other=1\",\"Status\":\"Up 1 second\"}",
	       1);
	is_call(engine_list(&e, &v, &n, &err), 0, "tricky list");
	ok(n == 2 && strcmp(v[0].sandbox, "real") == 0 && !v[0].running &&
		   strcmp(v[1].sandbox, "pod") == 0 && v[1].running,
	   "label spoofed by a value loses to the container name; podman labels object");
	engine_containers_free(v, n);
	/* engine_list()'s own shape: the exact label wins over the string;
	 * the fallback takes only a candidate the name was exactly made from. */
	setenv("FAKE_DOCKER_PS",
	       "{\"Sandbox\":\"pfx\",\"Ps\":{\"ID\":\"a1\",\"Image\":\"i\",\"Labels\":"
	       "\"note=x,sandboxfs.sandbox=pf,sandboxfs.sandbox=pfx\",\"Names\":\"sandboxfs-" INSTANCE
	       "-pfx\",\"State\":\"running\"}}\n"
	       "{\"ID\":\"b2\",\"Image\":\"i\",\"Labels\":\"note=x,sandboxfs.sandbox=pf,"
	       "sandboxfs.sandbox=pfy\",\"Names\":\"sandboxfs-" INSTANCE
	       "-pfy\",\"State\":\"running\"}\n"
	       "{\"ID\":\"c3\",\"Image\":\"i\",\"Labels\":\"sandboxfs.sandbox=q\",\"Names\":\"other\","
	       "\"State\":\"running\"}\n"
	       "{\"Sandbox\":7,\"Ps\":{\"ID\":\"d4\"}}",
	       1);
	is_call(engine_list(&e, &v, &n, &err), -EIO, "wrapper with a non-string label");
	setenv("FAKE_DOCKER_PS",
	       "{\"Sandbox\":\"pfx\",\"Ps\":{\"ID\":\"a1\",\"Image\":\"i\",\"Labels\":"
	       "\"note=x,sandboxfs.sandbox=pf,sandboxfs.sandbox=pfx\",\"Names\":\"sandboxfs-" INSTANCE
	       "-pfx\",\"State\":\"running\"}}\n"
	       "{\"ID\":\"b2\",\"Image\":\"i\",\"Labels\":\"note=x,sandboxfs.sandbox=pf,"
	       "sandboxfs.sandbox=pfy\",\"Names\":\"sandboxfs-" INSTANCE
	       "-pfy\",\"State\":\"running\"}\n"
	       "{\"ID\":\"c3\",\"Image\":\"i\",\"Labels\":\"sandboxfs.sandbox=q\",\"Names\":\"other\","
	       "\"State\":\"running\"}",
	       1);
	is_call(engine_list(&e, &v, &n, &err), 0, "exact labels list");
	ok(n == 2 && strcmp(v[0].sandbox, "pfx") == 0 && strcmp(v[1].sandbox, "pfy") == 0,
	   "a label value cannot rename a sandbox (exact label; exact name in the fallback)");
	engine_containers_free(v, n);
	setenv("FAKE_DOCKER_PS", "{\"ID\":\"a1\"}\nnot json", 1);
	is_call(engine_list(&e, &v, &n, &err), -EIO, "garbage line in ps");
	setenv("FAKE_DOCKER_PS", "", 1);
	is_call(engine_list(&e, &v, &n, &err), 0, "empty ps");
	is_int(n, 0, "no containers");
	unsetenv("FAKE_DOCKER_PS");

	is_call(engine_is_running(&e, "c", &err), 1, "ok: running");
	is_call(engine_stop(&e, "c", &err), 0, "ok: stop");
	is_call(engine_start(&e, "c", &err), 0, "ok: start");
	is_call(engine_destroy(&e, "c", &err), 0, "ok: destroy");
	is_call(engine_kill_group(&e, "c", 4242, 15, &err), 0, "ok: kill");
	log = slurp(argv_log);
	ok(strstr(log, "container inspect -f {{.State.Running}} c\nstop -t 2 c\nstart c\nrm -f c\n"
		       "exec c /bin/sh -c kill -15 -4242\n") != NULL,
	   "argv of inspect/stop/start/rm/kill");
	free(log);

	/* The environment travels on fd 3, not in argv. */
	static const char env[] = "SBX_SECRET_PROBE=hunter2-very-secret\nPLAIN=1\n";
	struct engine_exec ex;
	char buf[4096];
	setenv("FAKE_DOCKER_ENVFILE_LOG", env_log, 1);
	setenv("FAKE_DOCKER_STDIN_LOG", stdin_log, 1);
	mode("ok");
	is_call(engine_exec_start(&e, "c", env, strlen(env), "/work", NULL, &ex, &err), 0,
		"exec start");
	ok((fcntl(ex.stdout_fd, F_GETFL) & O_NONBLOCK) &&
		   (fcntl(ex.stdin_fd, F_GETFL) & O_NONBLOCK) &&
		   (fcntl(ex.stderr_fd, F_GETFD) & FD_CLOEXEC),
	   "exec fds are O_NONBLOCK|O_CLOEXEC");
	spawn_write_nosigpipe(ex.stdin_fd, "echo the command\n", 17);
	close(ex.stdin_fd);
	read_all(ex.stdout_fd, buf, sizeof(buf), 5000);
	is_text(buf, "4242\n", "exec: the pid line");
	int st;
	waitpid(ex.pid, &st, 0);
	is_int(spawn_exit_code(st), 0, "exec: exit 0");
	close(ex.stdout_fd);
	close(ex.stderr_fd);
	log = slurp(env_log);
	is_text(log, env, "env arrives through --env-file");
	free(log);
	log = slurp(stdin_log);
	is_text(log, "echo the command\n", "the command arrives on stdin");
	free(log);
	log = slurp(argv_log);
	is_text(log,
		"exec -i --env-file /dev/fd/3 -w /work c /bin/sh -c "
		"echo $$; __sbx_cmd=$(cat); if [ ${#__sbx_cmd} -lt 100000 ]; then "
		"set -- \"$__sbx_cmd\"; unset __sbx_cmd; command -v sh >/dev/null && "
		"exec sh -c \"$1\"; exec /bin/sh -c \"$1\"; fi; eval \"$__sbx_cmd\"\n",
		"exec argv");
	ok(!strstr(log, "hunter2"), "no secret in argv");
	free(log);

	/* Bigger than a default pipe, and bigger than any pipe. */
	size_t big = 300000;
	char *benv = malloc(4u << 20);
	if (!benv)
		abort();
	memcpy(benv, "BIG=", 4);
	memset(benv + 4, 'v', big - 5);
	benv[big - 1] = '\n';
	benv[big] = '\0';
	is_call(engine_exec_start(&e, "c", benv, big, NULL, NULL, &ex, &err), 0,
		"300 KB environment");
	close(ex.stdin_fd);
	read_all(ex.stdout_fd, buf, sizeof(buf), 5000);
	waitpid(ex.pid, &st, 0);
	close(ex.stdout_fd);
	close(ex.stderr_fd);
	log = slurp(env_log);
	ok(strlen(log) == big && memcmp(log, benv, big) == 0, "300 KB environment arrives whole");
	free(log);
	memset(benv + 4, 'v', (4u << 20) - 5);
	benv[(4u << 20) - 1] = '\0';
	is_call(engine_exec_start(&e, "c", benv, (4u << 20) - 1, NULL, NULL, &ex, &err), -E2BIG,
		"4 MiB environment: E2BIG");
	ok(one_line(err.msg), "E2BIG reason: %s", err.msg);
	free(benv);

	/* The wrapper itself, run by /bin/sh here. */
	setenv("FAKE_DOCKER_EXEC_LOCAL", "1", 1);
	is_call(engine_exec_start(&e, "c", "", 0, NULL, NULL, &ex, &err), 0, "local wrapper");
	spawn_write_nosigpipe(ex.stdin_fd, "unset __sbx_cmd\necho \"a b\"\nexit 3\n", 34);
	close(ex.stdin_fd);
	read_all(ex.stdout_fd, buf, sizeof(buf), 5000);
	waitpid(ex.pid, &st, 0);
	char want[64];
	snprintf(want, sizeof(want), "%d\na b\n", (int)ex.pid);
	is_text(buf, want, "wrapper prints its pid, then runs the script");
	is_int(spawn_exit_code(st), 3, "script's exit code");
	close(ex.stdout_fd);
	close(ex.stderr_fd);
	unsetenv("FAKE_DOCKER_EXEC_LOCAL");

	unlink(stdin_log);
	is_call(engine_put_file(&e, "c", "~/.x/auth.json", "{\"tok\":\"s3cr3t\"}", 16, &err), 0,
		"put_file");
	log = slurp(stdin_log);
	is_text(log, "{\"tok\":\"s3cr3t\"}", "file content goes on stdin");
	free(log);
	log = slurp(argv_log);
	ok(!strstr(log, "s3cr3t") && strstr(log, " sh ~/.x/auth.json\n"),
	   "path in argv, content not");
	free(log);
	unsetenv("FAKE_DOCKER_ENVFILE_LOG");
	unsetenv("FAKE_DOCKER_STDIN_LOG");

	pid_t pid;
	int fd;
	is_call(engine_events_start(&e, &pid, &fd, &err), 0, "events start");
	read_all(fd, buf, sizeof(buf), 800);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(fd);
	struct engine_event ev;
	char *nl = strchr(buf, '\n');
	ok(nl && engine_parse_event(buf, (size_t)(nl - buf), &ev) == 0 &&
		   ev.kind == ENGINE_EV_START && strcmp(ev.instance, INSTANCE) == 0,
	   "first event: start");
	log = slurp(argv_log);
	ok(strstr(log,
		  "events --filter label=sandboxfs.instance=" INSTANCE
		  " --filter type=container --filter event=start --filter event=die"
		  " --filter event=died --filter event=destroy --filter event=remove"
		  " --filter event=pause --filter event=unpause --format {{json .}}\n") != NULL,
	   "events argv");
	free(log);
}

#include "test_engine_real.h"

/* The pool's truth is the container's name: engine_list's line carries
 * the Pool label and Names (pool.h). */
static void test_ps_pool_and_name(void)
{
	static const char line[] =
		"{\"Sandbox\":\"_pool_00ff\",\"Pool\":\"default\",\"Ps\":{\"ID\":\"abc\","
		"\"Image\":\"sandboxfs/base\",\"Names\":\"sandboxfs-" INSTANCE "-x\","
		"\"State\":\"running\",\"Labels\":\"\"}}";
	struct engine_container c = { 0 };
	int r = engine_parse_ps_line(INSTANCE, line, sizeof(line) - 1, &c);
	ok(r == 0 && !strcmp(c.sandbox, "_pool_00ff") && !strcmp(c.pool, "default") &&
		   !strcmp(c.name, "sandboxfs-" INSTANCE "-x") && c.running,
	   "ps line: pool label and name (%d)", r);
	engine_container_clear(&c);
	static const char plain[] =
		"{\"Sandbox\":\"y\",\"Ps\":{\"ID\":\"abd\",\"Image\":\"i\",\"Names\":\"n1,n2\","
		"\"State\":\"exited\",\"Labels\":\"\"}}";
	r = engine_parse_ps_line(INSTANCE, plain, sizeof(plain) - 1, &c);
	ok(r == 0 && !strcmp(c.pool, "") && !strcmp(c.name, "n1") && !c.running,
	   "ps line without a pool label: empty pool, first name (%d)", r);
	engine_container_clear(&c);
}

int main(void)
{
	fake = getenv("FAKE_DOCKER");
	if (!fake || !*fake)
		fake = "tests/fake-docker";
	if (!mkdtemp(tmpdir))
		return 99;
	snprintf(argv_log, sizeof(argv_log), "%s/argv", tmpdir);
	snprintf(env_log, sizeof(env_log), "%s/env", tmpdir);
	snprintf(stdin_log, sizeof(stdin_log), "%s/stdin", tmpdir);
	setenv("FAKE_DOCKER_ARGV_LOG", argv_log, 1);
	setenv("FAKE_INSTANCE", INSTANCE, 1);

	test_classify();
	test_parse_event();
	test_ps_pool_and_name();
	test_spawn();
	test_spawn_threads();
	test_fake_errors();
	test_fake_ok();
	test_real();

	unlink(argv_log);
	unlink(env_log);
	unlink(stdin_log);
	rmdir(tmpdir);
	return tap_done();
}
