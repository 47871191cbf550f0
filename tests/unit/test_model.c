/* The model and its runs without a mount: backend/model.h driven the way
 * fs/ drives it, against the stateful fake docker (tests/fake-docker with
 * FAKE_DOCKER_STATE), whose `exec` runs each command here on the host.
 *
 * Two model lifetimes in one process: the first creates, runs, ends, loses
 * and removes; the second starts on the same state directory and adopts
 * what the first left on the engine, history included.  Reader threads
 * call the copying API while runs progress (TSan build: no race), and the
 * ASan build's leak check proves every object freed. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "model.h"
#include "state.h"
#include "tap.h"
#include "fake_engine.h"

#define INSTANCE "0123456789abcdef"
#define SECRET "s3cr3t-value"

static struct fake_engine fe;

/* ---- what the model tells us ---- */

static pthread_mutex_t cb_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cb_cond = PTHREAD_COND_INITIALIZER;
static unsigned changes;

static void on_run_changed(struct run *r)
{
	(void)r;
	pthread_mutex_lock(&cb_mu);
	changes++;
	pthread_cond_broadcast(&cb_cond);
	pthread_mutex_unlock(&cb_mu);
}

static unsigned changes_now(void)
{
	pthread_mutex_lock(&cb_mu);
	unsigned n = changes;
	pthread_mutex_unlock(&cb_mu);
	return n;
}

/* Waits (at most ms) until r's view says `ended` (or, with want_started,
 * `started`), woken by run_changed. */
static bool wait_run(struct run *r, bool want_started, int ms)
{
	struct timespec end;
	clock_gettime(CLOCK_REALTIME, &end);
	end.tv_sec += ms / 1000;
	end.tv_nsec += (ms % 1000) * 1000000L;
	if (end.tv_nsec >= 1000000000L) {
		end.tv_sec++;
		end.tv_nsec -= 1000000000L;
	}
	for (;;) {
		struct run_view v;
		run_view(r, &v);
		if (want_started ? v.started : v.ended)
			return true;
		pthread_mutex_lock(&cb_mu);
		/* Short waits: a change may land between the view and here. */
		struct timespec now, step;
		clock_gettime(CLOCK_REALTIME, &now);
		step = now;
		step.tv_nsec += 50000000L;
		if (step.tv_nsec >= 1000000000L) {
			step.tv_sec++;
			step.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&cb_cond, &cb_mu, &step);
		pthread_mutex_unlock(&cb_mu);
		if (now.tv_sec > end.tv_sec ||
		    (now.tv_sec == end.tv_sec && now.tv_nsec > end.tv_nsec))
			return false;
	}
}

/* ---- helpers ---- */

static void show(const char *label, const char *s, size_t n)
{
	printf("#   %s '", label);
	for (size_t i = 0; s && i < n; i++)
		if (s[i] == '\n')
			printf("\\n");
		else
			putchar(s[i]);
	printf("'\n");
}

#define is_bytes(got, got_len, want, ...)                                                          \
	do {                                                                                       \
		const char *gb_ = (got), *wb_ = (want);                                            \
		size_t gl_ = (got_len), wl_ = strlen(wb_);                                         \
		int eq_ = gb_ && gl_ == wl_ && memcmp(gb_, wb_, wl_) == 0;                         \
		ok(eq_, __VA_ARGS__);                                                              \
		if (!eq_) {                                                                        \
			show("got", gb_, gb_ ? gl_ : 0);                                           \
			show("want", wb_, wl_);                                                    \
		}                                                                                  \
	} while (0)

/* What a reader of stream st sees of r, from offset 0 to the end. */
static size_t read_stream(struct run *r, enum stream st, char *buf, size_t cap)
{
	size_t got = 0;
	run_reader_open(r);
	for (;;) {
		int fd;
		size_t n;
		run_read_span(r, st, (off_t)got, cap - got, &fd, &n);
		if (n == 0)
			break;
		ssize_t k = pread(fd, buf + got, n, (off_t)got);
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	run_reader_close(r);
	return got;
}

static char *setting_text(struct sandbox *s, enum setting which)
{
	size_t len;
	char *t = sandbox_setting_text(s, which, &len);
	if (t && strlen(t) != len) {
		free(t);
		return strdup("(length differs)");
	}
	return t;
}

#define is_setting(s, which, want, ...)                                                            \
	do {                                                                                       \
		char *st_ = setting_text((s), (which));                                            \
		is_bytes(st_, st_ ? strlen(st_) : 0, (want), __VA_ARGS__);                         \
		free(st_);                                                                         \
	} while (0)

static size_t nlisted(void)
{
	struct sandbox_listing l;
	if (model_list(&l) < 0)
		return (size_t)-1;
	size_t n = l.n;
	sandbox_listing_free(&l);
	return n;
}

static bool exists(const char *dir, const char *name)
{
	char path[512];
	struct stat sb;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return stat(path, &sb) == 0;
}

static void write_mode(const char *mode)
{
	char path[300];
	snprintf(path, sizeof(path), "%s/mode", fe.engine_dir);
	if (mode)
		write_file_atomic(path, mode, strlen(mode), NULL);
	else
		unlink(path);
}

/* How many `ps` calls of the fake engine have started (calls.started) or
 * finished (calls.done). */
static int ps_calls(const char *which)
{
	char path[300];
	snprintf(path, sizeof(path), "%s/%s", fe.engine_dir, which);
	FILE *f = fopen(path, "re");
	int n = 0, c;
	if (!f)
		return 0;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static int ps_done(void)
{
	return ps_calls("calls.done");
}

/* settle: wait for the reconciliation that follows the start. */
static int start_model(const char *fake, bool settle)
{
	struct sbx_err err = { 0 };
	struct model_config cfg = {
		.engine = { .cli = (char *)fake, .instance = INSTANCE, .timeout_ms = 20000 },
		.state_dir = fe.state_dir,
		.image = "sandboxfs/base",
		.mountpoint = "/mnt/sbx",
		.max_output = DEFAULT_MAX_OUTPUT,
	};
	static const struct model_callbacks cb = { .run_changed = on_run_changed };
	int before = ps_done();
	is_call(model_init(&cfg, &cb, &err), 0, "model_init");
	is_call(model_start(&err), 0, "model_start");
	if (!settle)
		return 0;
	/* The events stream's first connection reconciles once more, on the
	 * task thread.  Let it finish, so that it does not race what the test
	 * does next (test_stale_listing races it on purpose). */
	for (int i = 0; i < 200 && ps_done() < before + 2; i++)
		usleep(20000);
	usleep(100000);
	return 0;
}

/* ---- readers racing the runs (TSan) ---- */

static atomic_bool readers_stop;
static atomic_uint reader_rounds;

static void *reader_main(void *arg)
{
	(void)arg;
	char buf[4096];
	while (!atomic_load(&readers_stop)) {
		struct sandbox_listing l;
		if (model_list(&l) == 0) {
			for (size_t i = 0; i < l.n; i++) {
				struct sandbox *s = model_find(l.names[i]);
				if (!s)
					continue;
				struct sandbox_view sv;
				sandbox_view(s, &sv);
				struct run *r = sandbox_run(s, 0);
				if (r) {
					struct run_view rv;
					char line[32];
					run_view(r, &rv);
					run_status_line(r, line, sizeof(line));
					read_stream(r, STREAM_OUTPUT, buf, sizeof(buf));
					run_put(r);
				}
				free(sandbox_info_json(s));
				size_t len;
				free(sandbox_setting_text(s, SETTING_ENV, &len));
				sandbox_put(s);
			}
			sandbox_listing_free(&l);
		}
		atomic_fetch_add(&reader_rounds, 1);
	}
	return NULL;
}

/* ---- the first model: create, run, end, lose, remove ---- */

static void test_lifecycle(const char *fake)
{
	struct sbx_err err = { 0 };
	struct sandbox *s = NULL, *dup = NULL;
	struct run *r = NULL;
	struct run_view v;
	char buf[4096];
	size_t n;

	start_model(fake, true);
	is_int(nlisted(), 0, "a fresh state lists no sandbox");

	is_call(sandbox_create("alpha", &s, &err), 0, "mkdir alpha");
	if (!s)
		return;
	ok(listed("alpha"), "alpha is listed");
	dup = model_find("alpha");
	ok(dup == s, "model_find returns the same object");
	if (dup)
		sandbox_put(dup);
	is_str(sandbox_name(s), "alpha", "sandbox_name");
	dup = model_find_id(sandbox_id(s));
	ok(dup == s, "model_find_id");
	if (dup)
		sandbox_put(dup);
	struct sandbox_view sv;
	sandbox_view(s, &sv);
	ok(sv.running && sv.nruns == 0, "view: running, no runs");
	is_call(sandbox_create("alpha", NULL, &err), -EEXIST, "mkdir alpha again: EEXIST");
	is_call(sandbox_create("-bad", NULL, &err), -EINVAL, "mkdir -bad: EINVAL");
	ok(!listed("-bad"), "a refused name is not listed");
	ok(model_find("nope") == NULL, "model_find of an unknown name");

	/* settings */
	is_call(sandbox_setting_apply(s, SETTING_ENV, "GREETING=hello\n", 15, true, &err), 0,
		"env: set");
	is_setting(s, SETTING_ENV, "GREETING=hello\n", "env reads back");
	is_call(sandbox_setting_apply(s, SETTING_ENV, "1BAD=x\n", 7, false, &err), -EINVAL,
		"env: bad name refused");
	is_setting(s, SETTING_ENV, "GREETING=hello\n", "a refused env write changes nothing");
	is_call(sandbox_setting_apply(s, SETTING_ENV, "EXTRA=1\n", 8, false, &err), 0,
		"env: append");
	is_setting(s, SETTING_ENV, "GREETING=hello\nEXTRA=1\n", "env appended");
	is_call(sandbox_setting_apply(s, SETTING_AUTH, "TOKEN=" SECRET "\n", 19, true, &err), 0,
		"auth: set");
	is_setting(s, SETTING_AUTH, "TOKEN\n", "auth reads back names only");
	is_call(sandbox_setting_apply(s, SETTING_WORKDIR, "/tmp\n", 5, true, &err), 0,
		"workdir: set");
	is_setting(s, SETTING_WORKDIR, "/tmp\n", "workdir reads back");
	is_call(sandbox_setting_apply(s, SETTING_WORKDIR, "rel\n", 4, true, &err), -EINVAL,
		"workdir: relative refused");
	is_call(sandbox_setting_apply(s, SETTING_TIMEOUT, "abc", 3, true, &err), -EINVAL,
		"timeout: garbage refused");
	is_setting(s, SETTING_TIMEOUT, "0\n", "timeout unchanged");
	is_call(setting_check_partial(SETTING_ENV, "A=1\n2B", 6, &err), 0,
		"partial env: only complete lines are checked");
	is_call(setting_check_partial(SETTING_ENV, "2B=1\n", 5, &err), -EINVAL,
		"partial env: a bad complete line");

	/* a run that exits */
	unsigned before = changes_now();
	const char *cmd = "echo \"$GREETING\"; echo oops >&2; echo \"$TOKEN\"; pwd; exit 3";
	is_call(run_start_text(s, cmd, strlen(cmd), &r, &err), 0, "exec");
	if (!r)
		return;
	is_int(run_number(r), 1, "first run is number 1");
	ok(wait_run(r, false, 20000), "run 1 ends");
	ok(changes_now() > before, "run_changed fired (%u times)", changes_now() - before);
	run_view(r, &v);
	ok(v.started && v.ended && v.start_errno == 0, "view: started, ended, no start errno");
	is_bytes(v.status, strlen(v.status), "exited 3\n", "status line");
	n = read_stream(r, STREAM_STDOUT, buf, sizeof(buf));
	is_bytes(buf, n, "hello\n***\n/tmp\n", "stdout: env, masked secret, workdir");
	n = read_stream(r, STREAM_STDERR, buf, sizeof(buf));
	is_bytes(buf, n, "oops\n", "stderr");
	is_int(v.size[STREAM_OUTPUT], v.size[STREAM_STDOUT] + v.size[STREAM_STDERR],
	       "output holds both streams");
	n = read_stream(r, STREAM_OUTPUT, buf, sizeof(buf));
	ok(n == 20 && memmem(buf, n, "oops\n", 5) && !memmem(buf, n, SECRET, strlen(SECRET)),
	   "output: both streams, no secret");
	char *text = run_file_text(r, "cmd", &n);
	is_bytes(text, n, cmd, "spool keeps cmd");
	free(text);
	text = run_file_text(r, "status", &n);
	is_bytes(text, n, "exited 3\n", "spool keeps the status");
	free(text);
	/* Seen ended means its files are written (they come first). */
	text = run_file_text(r, "ended", &n);
	ok(text && n == 25 && text[24] == '\n', "ended file written: %s", text ? text : "(null)");
	free(text);
	ok(v.ended_at.tv_sec >= v.started_at.tv_sec && v.started_at.tv_sec > 0,
	   "started/ended times");
	run_put(r);

	/* a run killed while it runs */
	is_call(run_start_text(s, "echo up; sleep 30", 17, &r, &err), 0, "exec sleep");
	ok(wait_run(r, true, 20000), "run 2 started");
	run_view(r, &v);
	is_bytes(v.status, strlen(v.status), "running\n", "status while it runs");
	is_call(run_kill(r, SIGKILL, &err), 0, "kill run 2");
	ok(wait_run(r, false, 20000), "run 2 ends");
	run_view(r, &v);
	is_bytes(v.status, strlen(v.status), "killed\n", "status: killed");
	is_call(run_kill(r, SIGKILL, &err), -ESRCH, "kill of an ended run: ESRCH");
	run_put(r);

	/* a run that outlives the timeout */
	is_call(sandbox_setting_apply(s, SETTING_TIMEOUT, "1\n", 2, true, &err), 0, "timeout 1");
	is_call(run_start_text(s, "sleep 30", 8, &r, &err), 0, "exec sleep 30");
	ok(wait_run(r, false, 20000), "run 3 ends");
	run_view(r, &v);
	is_bytes(v.status, strlen(v.status), "timeout\n", "status: timeout");
	run_put(r);
	is_call(sandbox_setting_apply(s, SETTING_TIMEOUT, "0\n", 2, true, &err), 0, "timeout 0");

	/* a run whose docker exec cannot start it */
	write_mode("stopped");
	is_call(run_start_text(s, "echo never", 10, &r, &err), 0, "exec in a stopped container");
	ok(r && wait_run(r, false, 20000), "run 4 ends");
	write_mode(NULL);
	if (r) {
		run_view(r, &v);
		is_bytes(v.status, strlen(v.status), "lost\n", "status: lost");
		is_int(v.start_errno, EHOSTDOWN, "start_errno: EHOSTDOWN");
		/* docker's complaint is a reason, never output */
		ok(v.size[STREAM_OUTPUT] == 0 && v.size[STREAM_STDERR] == 0,
		   "docker's complaint is not output");
		text = run_file_text(r, "reason", &n);
		ok(text && strstr(text, "the run did not start") && strstr(text, "is not running"),
		   "reason: %s", text ? text : "(null)");
		free(text);
		run_put(r);
	}

	/* which run each number shows */
	sandbox_view(s, &sv);
	is_int(sv.nruns, 4, "four runs");
	r = sandbox_run(s, 0);
	ok(r && run_number(r) == 4, "run 0 is the latest");
	run_put(r);
	r = sandbox_run(s, 1);
	ok(r && run_number(r) == 1, "run 1");
	run_put(r);
	ok(sandbox_run(s, 5) == NULL, "no run 5");
	char line[32];
	run_status_line(NULL, line, sizeof(line));
	is_str(line, "idle\n", "no run: idle");

	/* info */
	text = sandbox_info_json(s);
	cJSON *info = text ? cJSON_Parse(text) : NULL;
	ok(info != NULL, "info is JSON");
	ok(text && !strstr(text, SECRET), "info carries no secret");
	is_str(cJSON_GetStringValue(cJSON_GetObjectItem(info, "name")), "alpha", "info: name");
	is_int(cJSON_GetNumberValue(cJSON_GetObjectItem(info, "runs")), 4, "info: runs");
	cJSON *latest = cJSON_GetObjectItem(info, "latest");
	is_str(cJSON_GetStringValue(cJSON_GetObjectItem(latest, "status")), "lost",
	       "info: latest status");
	cJSON *auth = cJSON_GetObjectItem(cJSON_GetObjectItem(info, "auth"), "env");
	is_str(cJSON_GetStringValue(cJSON_GetArrayItem(auth, 0)), "TOKEN", "info: auth names");
	cJSON_Delete(info);
	free(text);

	/* readers while runs progress */
	pthread_t th[3];
	atomic_store(&readers_stop, false);
	for (int i = 0; i < 3; i++)
		pthread_create(&th[i], NULL, reader_main, NULL);
	for (int i = 0; i < 4; i++) {
		const char *loop = "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done";
		r = NULL;
		is_call(run_start_text(s, loop, strlen(loop), &r, &err), 0,
			"exec with readers (%d)", i);
		ok(r && wait_run(r, false, 20000), "run ends with readers (%d)", i);
		if (r) {
			run_view(r, &v);
			is_bytes(v.status, strlen(v.status), "exited 0\n", "exited 0 (%d)", i);
			is_int(v.size[STREAM_STDOUT], 1690, "all 200 lines spooled (%d)", i);
			run_put(r);
		}
	}
	atomic_store(&readers_stop, true);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	ok(atomic_load(&reader_rounds) > 0, "readers ran %u rounds", atomic_load(&reader_rounds));

	/* remove: gone from the table, the engine and the spool */
	struct sandbox *b = NULL;
	is_call(sandbox_create("beta", &b, &err), 0, "mkdir beta");
	ok(listed("beta") && nlisted() == 2, "beta is listed");
	char beta_spool[300];
	snprintf(beta_spool, sizeof(beta_spool), "%s/sandboxes", fe.state_dir);
	ok(exists(beta_spool, "beta"), "beta has a spool");
	is_call(sandbox_remove("beta", &err), 0, "rmdir beta");
	ok(!listed("beta") && nlisted() == 1, "beta is gone from the listing");
	ok(model_find("beta") == NULL, "model_find(beta) after rmdir");
	ok(!exists(beta_spool, "beta"), "beta's spool is gone");
	is_call(sandbox_remove("beta", &err), -ENOENT, "rmdir beta again: ENOENT");
	if (b) {
		sandbox_view(b, &sv);
		ok(!sv.running, "a held reference to a removed sandbox still answers");
		sandbox_put(b);
	}

	sandbox_put(s);
	model_shutdown();
}

/* ---- the second model: adoption ---- */

static void test_adopt(const char *fake)
{
	struct sbx_err err = { 0 };
	struct run_view v;
	char buf[4096];
	size_t n;

	/* A run that was live when the daemon died: its spool says running. */
	char dir[300];
	snprintf(dir, sizeof(dir), "%s/sandboxes/alpha/runs/9", fe.state_dir);
	mkdir_p(dir, NULL);
	write_file_in(dir, "cmd", "sleep 100", 9, NULL);
	write_file_in(dir, "status", "running\n", 8, NULL);
	write_file_in(dir, "started", "2026-01-01T00:00:00.000Z\n", 25, NULL);
	write_file_in(dir, "ended", "", 0, NULL);
	write_file_in(dir, "output", "", 0, NULL);

	start_model(fake, true);
	ok(listed("alpha") && nlisted() == 1, "alpha is adopted");
	struct sandbox *s = model_find("alpha");
	if (!s)
		return;
	struct sandbox_view sv;
	sandbox_view(s, &sv);
	ok(sv.running, "adopted: running");
	is_int(sv.nruns, 9, "adopted: runs 1..9 (9 the highest in the spool)");

	struct run *r = sandbox_run(s, 1);
	if (r) {
		run_view(r, &v);
		ok(v.started && v.ended, "run 1: ended");
		is_bytes(v.status, strlen(v.status), "exited 3\n", "run 1: status from the spool");
		n = read_stream(r, STREAM_STDOUT, buf, sizeof(buf));
		is_bytes(buf, n, "hello\n***\n/tmp\n", "run 1: stdout from the spool");
		n = read_stream(r, STREAM_STDERR, buf, sizeof(buf));
		is_bytes(buf, n, "oops\n", "run 1: stderr from the spool");
		run_put(r);
	}
	r = sandbox_run(s, 2);
	if (r) {
		run_view(r, &v);
		is_bytes(v.status, strlen(v.status), "killed\n", "run 2: killed");
		run_put(r);
	}
	r = sandbox_run(s, 4);
	if (r) {
		run_view(r, &v);
		is_bytes(v.status, strlen(v.status), "lost\n", "run 4: lost");
		run_put(r);
	}
	r = sandbox_run(s, 9);
	if (r) {
		run_view(r, &v);
		is_bytes(v.status, strlen(v.status), "lost\n", "run 9 (live at the restart): lost");
		char *text = run_file_text(r, "reason", &n);
		is_bytes(text, n, "the daemon restarted while the run was live\n", "run 9: reason");
		free(text);
		text = run_file_text(r, "status", &n);
		is_bytes(text, n, "lost\n", "run 9: the spool says lost from now on");
		free(text);
		run_put(r);
	}

	/* Settings are not persisted: an adopted sandbox starts with none. */
	r = NULL;
	is_call(run_start_text(s, "echo again", 10, &r, &err), 0, "exec in the adopted sandbox");
	ok(r && run_number(r) == 10, "numbered after the history");
	ok(r && wait_run(r, false, 20000), "run 10 ends");
	if (r) {
		run_view(r, &v);
		is_bytes(v.status, strlen(v.status), "exited 0\n", "run 10: exited 0");
		n = read_stream(r, STREAM_OUTPUT, buf, sizeof(buf));
		is_bytes(buf, n, "again\n", "run 10: output");
	}

	is_call(sandbox_remove("alpha", &err), 0, "rmdir alpha");
	is_int(nlisted(), 0, "nothing listed");
	/* Held references outlive the removal. */
	if (r) {
		run_view(r, &v);
		is_bytes(v.status, strlen(v.status), "exited 0\n", "a held run still answers");
		run_put(r);
	}
	sandbox_put(s);
	model_shutdown();
	char engine_c[300];
	snprintf(engine_c, sizeof(engine_c), "%s/c", fe.engine_dir);
	DIR *d = opendir(engine_c);
	int left = 0;
	for (struct dirent *de; d && (de = readdir(d));)
		left += de->d_name[0] != '.';
	if (d)
		closedir(d);
	is_int(left, 0, "no container left on the engine");
}

/* ---- a listing older than a sandbox ---- */

static void test_stale_listing(const char *fake)
{
	struct sbx_err err = { 0 };
	struct sandbox *s = NULL;
	char path[300];

	/* The fake engine answers `ps` a second after taking its listing. */
	snprintf(path, sizeof(path), "%s/ps_delay", fe.engine_dir);
	write_file_atomic(path, "1", 1, NULL);
	int started = ps_calls("calls.started"), done = ps_done();
	start_model(fake, false);
	for (int i = 0; i < 500 && ps_calls("calls.started") < started + 2; i++)
		usleep(20000);
	usleep(100000); /* the reconciliation's listing is taken, not yet answered */
	is_call(sandbox_create("late", &s, &err), 0, "mkdir while the engine is listing");
	for (int i = 0; i < 500 && ps_done() < done + 2; i++)
		usleep(20000);
	usleep(200000);
	unlink(path);
	ok(ps_done() >= done + 2, "the reconciliation answered");
	ok(listed("late"), "a listing older than the sandbox does not forget it");
	if (s) {
		struct sandbox_view sv;
		sandbox_view(s, &sv);
		ok(sv.running, "still running");
		sandbox_put(s);
	}
	is_call(sandbox_remove("late", &err), 0, "rmdir late");
	model_shutdown();
}

int main(void)
{
	if (fake_engine_setup(&fe, "test_model") < 0)
		return 99;
	const char *fake_abs = fe.cli;

	test_lifecycle(fake_abs);
	test_adopt(fake_abs);
	test_stale_listing(fake_abs);

	rm_rf(fe.tmpdir);
	return tap_done();
}
