/* Every allocation of a backend call may fail (failmalloc.h): for each
 * call, the 1st, 2nd, ... allocation is made to fail in turn until one
 * pass sees no failure.  Each failure must give a clean result (-ENOMEM and
 * nothing changed, or success when the failure was tolerated), never a
 * crash; the ASan build's leak check proves nothing leaks on any path.
 *
 * Calls on JSON input may answer EINVAL instead: cJSON cannot tell "out of
 * memory" from "malformed" (docs/testing.md). */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "engine_internal.h"
#include "failmalloc.h"
#include "mask.h"
#include "model.h"
#include "parse.h"
#include "state.h"
#include "tap.h"
#include "template.h"
#include "fake_engine.h"

#define INSTANCE "0123456789abcdef"
#define MAX_POINTS 5000

static struct fake_engine fe;
static struct sandbox *alpha;

/* One step of a sweep: arms failure n, makes the call, disarms (*fired),
 * checks the outcome (true = clean) and cleans up. */
typedef bool (*step_fn)(unsigned long n, bool *fired);

static void sweep(const char *name, step_fn step)
{
	unsigned long n, points = 0, bad = 0;
	for (n = 1; n <= MAX_POINTS; n++) {
		bool fired = false;
		if (!step(n, &fired)) {
			bad++;
			printf("#   %s: failing allocation %lu: unclean outcome\n", name, n);
		}
		if (!fired)
			break;
		points++;
	}
	ok(bad == 0 && n <= MAX_POINTS, "%s: %lu allocations, each failure clean", name, points);
}

/* A failure is only right when an allocation failed. */
static bool is_nomem(int rc, const struct sbx_err *err)
{
	return failmalloc_last_fired() && rc == -ENOMEM && err->code == ENOMEM && err->msg[0] &&
	       !strchr(err->msg, '\n');
}

/* ENOMEM, or EINVAL from a JSON parser that ran out of memory. */
static bool is_nomem_json(int rc, const struct sbx_err *err)
{
	return is_nomem(rc, err) ||
	       (failmalloc_last_fired() && rc == -EINVAL && err->code == EINVAL);
}

/* ---- parsers and lists ---- */

static bool step_kv_lines(unsigned long n, bool *fired)
{
	static const char in[] = "A=1\nB=two words\n# comment\n\nC=3\r\nA=again\n";
	struct sbx_err err = { 0 };
	struct kv_list l = { 0 };
	bool good = kv_list_set(&l, "X", "0") == 0;
	failmalloc_arm(n);
	int rc = parse_kv_lines(in, sizeof(in) - 1, &l, &err);
	*fired = failmalloc_disarm();
	if (rc == 0)
		good = good && l.n == 4 && !strcmp(kv_list_get(&l, "A"), "again") &&
		       !strcmp(kv_list_get(&l, "C"), "3");
	else
		good = good && is_nomem(rc, &err) && l.n == 1 && !strcmp(kv_list_get(&l, "X"), "0");
	kv_list_free(&l);
	return good;
}

static bool auth_step(const char *in, unsigned long n, bool *fired, bool json)
{
	struct sbx_err err = { 0 };
	struct auth_doc d = { 0 };
	failmalloc_arm(n);
	int rc = parse_auth(in, strlen(in), &d, &err);
	*fired = failmalloc_disarm();
	bool good;
	if (rc == 0)
		good = d.env.n == 2 && d.nfiles == (json ? 2u : 0u);
	else
		good = (json ? is_nomem_json(rc, &err) : is_nomem(rc, &err)) && d.env.n == 0 &&
		       d.nfiles == 0;
	auth_doc_free(&d);
	return good;
}

static bool step_auth_lines(unsigned long n, bool *fired)
{
	return auth_step("TOKEN=abc123\nOTHER=xyz789\n", n, fired, false);
}

static bool step_auth_json(unsigned long n, bool *fired)
{
	return auth_step("{\"env\":{\"TOKEN\":\"abc123\",\"OTHER\":\"x\"},"
			 "\"files\":{\"/etc/a\":\"content\",\"~/.b\":\"more\"}}",
			 n, fired, true);
}

static void three(struct kv_list *l)
{
	kv_list_set(l, "K1", "v1");
	kv_list_set(l, "K2", "v2");
	kv_list_set(l, "K3", "v3");
}

static bool step_kv_copy(unsigned long n, bool *fired)
{
	struct kv_list src = { 0 }, dst = { 0 };
	three(&src);
	kv_list_set(&dst, "Y", "1");
	failmalloc_arm(n);
	int rc = kv_list_copy(&dst, &src);
	*fired = failmalloc_disarm();
	bool good = rc == 0 ? dst.n == 3 && !strcmp(kv_list_get(&dst, "K3"), "v3")
			    : rc == -ENOMEM && dst.n == 1 && !strcmp(kv_list_get(&dst, "Y"), "1");
	kv_list_free(&src);
	kv_list_free(&dst);
	return good;
}

static bool step_kv_merge(unsigned long n, bool *fired)
{
	struct kv_list src = { 0 }, dst = { 0 };
	three(&src);
	kv_list_set(&dst, "K2", "old");
	kv_list_set(&dst, "Y", "1");
	failmalloc_arm(n);
	int rc = kv_list_merge(&dst, &src);
	*fired = failmalloc_disarm();
	bool good = rc == 0 ? dst.n == 4 && !strcmp(kv_list_get(&dst, "K2"), "v2")
			    : rc == -ENOMEM && dst.n == 2 &&
				      !strcmp(kv_list_get(&dst, "K2"), "old");
	kv_list_free(&src);
	kv_list_free(&dst);
	return good;
}

static bool step_kv_set(unsigned long n, bool *fired)
{
	struct kv_list l = { 0 };
	three(&l);
	failmalloc_arm(n);
	int rc1 = kv_list_set(&l, "K2", "replaced");
	int rc2 = kv_list_set(&l, "K4", "new");
	*fired = failmalloc_disarm();
	bool good = (rc1 == 0 ? !strcmp(kv_list_get(&l, "K2"), "replaced")
			      : rc1 == -ENOMEM && !strcmp(kv_list_get(&l, "K2"), "v2")) &&
		    (rc2 == 0 ? l.n == 4 : rc2 == -ENOMEM && l.n == 3);
	kv_list_free(&l);
	return good;
}

static bool step_kv_text(unsigned long n, bool *fired)
{
	struct kv_list a = { 0 }, b = { 0 };
	three(&a);
	kv_list_set(&b, "Z", "26");
	const struct kv_list *lists[] = { &a, &b };
	size_t len = 0;
	failmalloc_arm(n);
	char *t = kv_list_text(lists, 2, true, &len);
	*fired = failmalloc_disarm();
	bool good = !t || (len == 23 && !strcmp(t, "K1=v1\nK2=v2\nK3=v3\nZ=26\n"));
	secret_free_n(t, len);
	kv_list_free(&a);
	kv_list_free(&b);
	return good;
}

static const char tpl_json[] =
	"{\"image\":\"busybox:1.36\",\"match\":\"ci-*\",\"workspace\":[\"/var/tmp\"],"
	"\"workdir\":\"/work\",\"env\":{\"A\":\"1\",\"B\":\"2\"},\"user\":\"1000:1000\","
	"\"network\":\"bridge\",\"memory\":\"512m\",\"cpus\":1.5,\"pids\":100,"
	"\"read_only\":true,\"init\":false,\"labels\":{\"team\":\"x\"},"
	"\"cap_add\":[\"NET_BIND_SERVICE\"]}";

static bool step_template_parse(unsigned long n, bool *fired)
{
	struct sbx_err err = { 0 };
	struct template *t = NULL;
	failmalloc_arm(n);
	int rc = template_parse("ci", tpl_json, sizeof(tpl_json) - 1, &t, &err);
	*fired = failmalloc_disarm();
	bool good = rc == 0 ? t && t->nworkspaces == 1 && t->env.n == 2 && t->ncap_add == 1
			    : is_nomem_json(rc, &err) && !t;
	template_free(t);
	return good;
}

static bool step_template_effective(unsigned long n, bool *fired)
{
	struct template *t = NULL;
	bool good = template_parse("ci", tpl_json, sizeof(tpl_json) - 1, &t, NULL) == 0;
	failmalloc_arm(n);
	char *eff = good ? template_effective_json(t, "sandboxfs/base") : NULL;
	struct template *dup = good ? template_dup(t) : NULL;
	*fired = failmalloc_disarm();
	if (eff) {
		cJSON *j = cJSON_Parse(eff);
		good = good && j;
		cJSON_Delete(j);
	}
	good = good && (!dup || (dup->nworkspaces == 1 && !strcmp(dup->image, "busybox:1.36")));
	free(eff);
	template_free(dup);
	template_free(t);
	return good;
}

static int collect(void *ctx, const char *buf, size_t len)
{
	FILE *f = ctx;
	fwrite(buf, 1, len, f);
	return 0;
}

static bool step_masker(unsigned long n, bool *fired)
{
	static const char *const secrets[] = { "hunter22", "correct horse", "x", "hunter22" };
	struct masker m;
	memset(&m, 0, sizeof(m));
	failmalloc_arm(n);
	int rc = masker_init(&m, secrets, 4);
	*fired = failmalloc_disarm();
	bool good = rc == 0 || rc == -ENOMEM;
	if (rc == 0) {
		char *out = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&out, &len);
		mask_push(&m, "a hunter2", 9, collect, f);
		mask_push(&m, "2 b correct horse c", 19, collect, f);
		mask_flush(&m, collect, f);
		fclose(f);
		good = out && !strcmp(out, "a *** b *** c");
		free(out);
	}
	masker_free(&m);
	return good;
}

static bool step_engine_json(unsigned long n, bool *fired)
{
	static const char ev_line[] =
		"{\"status\":\"die\",\"id\":\"abc\",\"Type\":\"container\",\"Action\":\"die\","
		"\"Actor\":{\"ID\":\"abc\",\"Attributes\":{\"exitCode\":\"137\","
		"\"sandboxfs.instance\":\"" INSTANCE "\",\"sandboxfs.sandbox\":\"alpha\"}}}";
	static const char ps_line[] =
		"{\"ID\":\"abc\",\"Image\":\"img\",\"Labels\":\"sandboxfs.instance=" INSTANCE
		",sandboxfs.sandbox=alpha\",\"Names\":\"sandboxfs-" INSTANCE "-alpha\","
		"\"State\":\"running\"}";
	struct engine_event ev;
	struct engine_container c = { 0 };
	failmalloc_arm(n);
	int rc1 = engine_parse_event(ev_line, sizeof(ev_line) - 1, &ev);
	int rc2 = engine_parse_ps_line(INSTANCE, ps_line, sizeof(ps_line) - 1, &c);
	*fired = failmalloc_disarm();
	bool good = (rc1 == 0 ? ev.kind == ENGINE_EV_DIE && ev.exit_code == 137 : rc1 == -EINVAL) &&
		    (rc2 == 0 ? c.id && c.sandbox && !strcmp(c.sandbox, "alpha") && c.running
			      : (rc2 == -ENOMEM || rc2 == -EINVAL) && !c.id);
	engine_container_clear(&c);
	return good;
}

/* ---- the model ---- */

static int containers_on_engine(void)
{
	char path[300];
	snprintf(path, sizeof(path), "%s/c", fe.engine_dir);
	DIR *d = opendir(path);
	int n = 0;
	for (struct dirent *de; d && (de = readdir(d));)
		n += de->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

/* How many `ps` calls of the fake engine have finished. */
static int ps_done(void)
{
	char path[300];
	snprintf(path, sizeof(path), "%s/calls.done", fe.engine_dir);
	FILE *f = fopen(path, "re");
	int n = 0, c;
	if (!f)
		return 0;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/* rmdir removes the container in the background (removal.c). */
static bool engine_settles_at(int before)
{
	/* Removals finish in the background: up to 30 s on a loaded machine. */
	for (int i = 0; i < 3000 && containers_on_engine() != before; i++)
		usleep(10000);
	return containers_on_engine() == before;
}

static bool step_create(unsigned long n, bool *fired)
{
	struct sbx_err err = { 0 };
	char name[32];
	snprintf(name, sizeof(name), "c%lu", n);
	int before = containers_on_engine();
	failmalloc_arm(n);
	int rc = sandbox_create(name, NULL, &err);
	*fired = failmalloc_disarm();
	if (rc == 0)
		return listed(name) && sandbox_remove(name, &err) == 0 && engine_settles_at(before);
	bool good = is_nomem_json(rc, &err) && !listed(name) && containers_on_engine() == before;
	if (!good)
		printf("#   rc %d: %s; %d containers, %d before\n", rc, err.msg,
		       containers_on_engine(), before);
	return good;
}

static bool step_remove(unsigned long n, bool *fired)
{
	struct sbx_err err = { 0 };
	int before = containers_on_engine();
	if (sandbox_create("gone", NULL, &err) < 0)
		return false;
	failmalloc_arm(n);
	int rc = sandbox_remove("gone", &err);
	*fired = failmalloc_disarm();
	if (rc == 0)
		return !listed("gone") && engine_settles_at(before);
	bool good = is_nomem(rc, &err) && listed("gone");
	if (!good)
		printf("#   rc %d: %s\n", rc, err.msg);
	struct sandbox *s = model_find("gone");
	struct sandbox_view v = { 0 };
	if (s) {
		sandbox_view(s, &v);
		sandbox_put(s);
	}
	bool removed = sandbox_remove("gone", &err) == 0;
	return good && v.running && removed;
}

static char *text_of(enum setting which)
{
	size_t len;
	char *t = sandbox_setting_text(alpha, which, &len);
	return t ? t : strdup("(null)");
}

struct setting_case {
	enum setting which;
	const char *base, *write, *after;
	bool replace;
};

static const struct setting_case setting_cases[] = {
	{ SETTING_ENV, "A=1\n", "B=2\nC=3\n", "A=1\nB=2\nC=3\n", false },
	{ SETTING_ENV, "A=1\n", "B=2\nC=3\n", "B=2\nC=3\n", true },
	{ SETTING_AUTH, "T1=secret1\n", "T2=secret2\n", "T1\nT2\n", false },
	{ SETTING_AUTH, "T1=secret1\n", "{\"env\":{\"T3\":\"secret3\"}}", "T3\n", true },
	{ SETTING_WORKDIR, "/a\n", "/b/c\n", "/b/c\n", true },
	{ SETTING_TIMEOUT, "5\n", "7\n", "7\n", true },
};
static const struct setting_case *cur_case;

static bool step_setting(unsigned long n, bool *fired)
{
	const struct setting_case *c = cur_case;
	struct sbx_err err = { 0 };
	if (sandbox_setting_apply(alpha, c->which, c->base, strlen(c->base), true, &err) < 0)
		return false;
	char *before = text_of(c->which);
	failmalloc_arm(n);
	int rc = sandbox_setting_apply(alpha, c->which, c->write, strlen(c->write), c->replace,
				       &err);
	*fired = failmalloc_disarm();
	char *after = text_of(c->which);
	bool good = rc == 0 ? !strcmp(after, c->after)
			    : (c->write[0] == '{' ? is_nomem_json(rc, &err) : is_nomem(rc, &err)) &&
				      !strcmp(after, before);
	if (!good)
		printf("#   rc %d (%s): '%s' after, '%s' before\n", rc, err.msg, after, before);
	free(before);
	free(after);
	return good;
}

static bool step_setting_text(unsigned long n, bool *fired)
{
	static const enum setting all[] = { SETTING_ENV, SETTING_AUTH, SETTING_WORKDIR,
					    SETTING_TIMEOUT };
	bool good = true;
	for (size_t i = 0; i < SBX_ARRAY_SIZE(all); i++) {
		char *want = text_of(all[i]);
		size_t len = 0;
		failmalloc_arm(n);
		char *t = sandbox_setting_text(alpha, all[i], &len);
		*fired |= failmalloc_disarm();
		good = good && (!t || (len == strlen(want) && !strcmp(t, want)));
		free(t);
		free(want);
		struct setting_undo u;
		failmalloc_arm(n);
		int rc = setting_save(alpha, all[i], &u);
		*fired |= failmalloc_disarm();
		good = good && (rc == 0 || rc == -ENOMEM);
		if (rc == 0)
			setting_restore(alpha, &u);
		else
			setting_undo_free(&u);
	}
	return good;
}

static bool step_check_partial(unsigned long n, bool *fired)
{
	struct sbx_err err = { 0 };
	failmalloc_arm(n);
	int rc1 = setting_check_partial(SETTING_ENV, "A=1\nB=2\nC", 9, &err);
	int rc2 = setting_check_partial(SETTING_WORKDIR, "/a/b\n", 5, &err);
	*fired = failmalloc_disarm();
	return (rc1 == 0 || rc1 == -ENOMEM) && (rc2 == 0 || rc2 == -ENOMEM) &&
	       (*fired || (rc1 == 0 && rc2 == 0));
}

/* ctl stop then start: each either happens or changes nothing. */
static bool step_ctl(unsigned long n, bool *fired)
{
	struct sbx_err err = { 0 };
	struct sandbox_view v;
	failmalloc_arm(n);
	int rc = sandbox_ctl(alpha, "stop", 4, &err);
	*fired = failmalloc_disarm();
	sandbox_view(alpha, &v);
	bool good = rc == 0 ? !v.running : is_nomem(rc, &err) && v.running;
	if (rc == 0) {
		failmalloc_arm(n);
		rc = sandbox_ctl(alpha, "start", 5, &err);
		*fired |= failmalloc_disarm();
		sandbox_view(alpha, &v);
		good = good && (rc == 0 ? v.running : is_nomem(rc, &err) && !v.running);
		if (rc < 0)
			good = sandbox_ctl(alpha, "start", 5, &err) == 0 && good;
	}
	if (!good)
		printf("#   rc %d (%s), running %d\n", rc, err.msg, v.running);
	return good;
}

static bool step_list_info(unsigned long n, bool *fired)
{
	struct sandbox_listing l;
	failmalloc_arm(n);
	int rc = model_list(&l);
	char *info = sandbox_info_json(alpha);
	*fired = failmalloc_disarm();
	bool good = rc == 0 ? l.n == 1 && !strcmp(l.names[0], "alpha")
			    : rc == -ENOMEM && l.n == 0 && !l.names;
	if (rc == 0)
		sandbox_listing_free(&l);
	if (info) {
		cJSON *j = cJSON_Parse(info);
		const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(j, "name"));
		good = good && j && name && !strcmp(name, "alpha");
		if (!good)
			printf("#   rc %d, info '%.60s'\n", rc, info);
		cJSON_Delete(j);
		free(info);
	}
	return good;
}

static bool wait_ended(struct run *r, struct run_view *v)
{
	for (int i = 0; i < 2000; i++) {
		run_view(r, v);
		if (v->ended)
			return true;
		usleep(10000);
	}
	return false;
}

static bool step_run(unsigned long n, bool *fired)
{
	struct sbx_err err = { 0 };
	struct run *r = NULL;
	struct run_view v;
	struct sandbox_view sv0, sv1;
	sandbox_view(alpha, &sv0);
	failmalloc_arm(n);
	int rc = run_start_text(alpha, "echo hi", 7, &r, &err);
	*fired = failmalloc_disarm();
	sandbox_view(alpha, &sv1);
	bool good = sv1.nruns == sv0.nruns + (r ? 1 : 0);
	if (rc == 0) {
		good = good && r && wait_ended(r, &v) && !strcmp(v.status, "exited 0\n");
		if (good) {
			size_t len;
			failmalloc_arm(n);
			char *t = run_file_text(r, "cmd", &len);
			*fired |= failmalloc_disarm();
			good = !t || (len == 7 && !memcmp(t, "echo hi", 7));
			free(t);
		}
	} else {
		good = good && is_nomem(rc, &err);
		if (r)
			good = good && wait_ended(r, &v) && !strcmp(v.status, "lost\n") &&
			       v.start_errno == ENOMEM;
	}
	if (!good)
		printf("#   rc %d (%s), run %p, status %s", rc, err.msg, (void *)r,
		       r ? v.status : "-\n");
	if (r)
		run_put(r);
	return good;
}

/* Whether STATE/templates.json holds template "ci" (its match glob). */
static bool ci_persisted(void)
{
	char path[300], *text = NULL;
	snprintf(path, sizeof(path), "%s/templates.json", fe.state_dir);
	bool found = read_file(path, &text, NULL, 1 << 20) == 0 && strstr(text, "ci-*");
	free(text);
	return found;
}

static bool step_template_define(unsigned long n, bool *fired)
{
	struct sbx_err err = { 0 };
	failmalloc_arm(n);
	int rc = template_define("ci", tpl_json, sizeof(tpl_json) - 1, 0, &err);
	*fired = failmalloc_disarm();
	struct template *t = template_get("ci");
	bool good = rc == 0 ? t && ci_persisted()
			    : is_nomem_json(rc, &err) && !t && !ci_persisted();
	if (!good)
		printf("#   rc %d (%s), template %s, %spersisted\n", rc, err.msg,
		       t ? "kept" : "gone", ci_persisted() ? "" : "not ");
	template_free(t);
	if (rc == 0)
		good = template_delete("ci", &err) == 0 && good;
	return good;
}

static bool step_template_delete(unsigned long n, bool *fired)
{
	struct sbx_err err = { 0 };
	if (template_define("ci", tpl_json, sizeof(tpl_json) - 1, 0, &err) < 0)
		return false;
	failmalloc_arm(n);
	int rc = template_delete("ci", &err);
	*fired = failmalloc_disarm();
	struct template *t = template_get("ci");
	bool good = rc == 0 ? !t && !ci_persisted() : is_nomem(rc, &err) && t && ci_persisted();
	if (!good)
		printf("#   rc %d (%s), template %s, %spersisted\n", rc, err.msg,
		       t ? "kept" : "gone", ci_persisted() ? "" : "not ");
	template_free(t);
	if (rc < 0)
		good = template_delete("ci", &err) == 0 && good;
	return good;
}

static void test_model(const char *fake)
{
	struct sbx_err err = { 0 };
	struct model_config cfg = {
		.engine = { .cli = (char *)fake, .instance = INSTANCE, .timeout_ms = 20000 },
		.state_dir = fe.state_dir,
		.image = "sandboxfs/base",
		.mountpoint = "/mnt/sbx",
		.max_output = DEFAULT_MAX_OUTPUT,
	};
	if (templates_init(NULL, fe.state_dir, "/mnt/sbx", &err) < 0 ||
	    model_init(&cfg, NULL, &err) < 0) {
		ok(0, "model init: %s", err.msg);
		return;
	}
	/* Made before the threads start: nothing races its creation. */
	ok(sandbox_create("alpha", &alpha, &err) == 0, "mkdir alpha: %s", err.msg);
	ok(model_start(&err) == 0, "model_start: %s", err.msg);
	if (!alpha)
		return;
	/* The events stream's first reconciliation (a second `ps`) must be
	 * over before sandboxes come and go: a listing taken before a
	 * container is made forgets its sandbox. */
	for (int i = 0; i < 500 && ps_done() < 2; i++)
		usleep(20000);
	usleep(100000);

	sweep("sandbox_create", step_create);
	sweep("sandbox_remove", step_remove);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(setting_cases); i++) {
		char label[64];
		cur_case = &setting_cases[i];
		snprintf(label, sizeof(label), "sandbox_setting_apply case %zu", i);
		sweep(label, step_setting);
	}
	sweep("sandbox_setting_text, setting_save", step_setting_text);
	sweep("model_list, sandbox_info_json", step_list_info);
	sweep("setting_check_partial", step_check_partial);
	sweep("sandbox_ctl stop, start", step_ctl);
	/* No timeout and no workdir left from the cases above. */
	sandbox_setting_apply(alpha, SETTING_TIMEOUT, "0", 1, true, &err);
	sandbox_setting_apply(alpha, SETTING_WORKDIR, "", 0, true, &err);
	sweep("run_start, run_file_text", step_run);
	sweep("template_define", step_template_define);
	sweep("template_delete", step_template_delete);

	sandbox_put(alpha);
	ok(sandbox_remove("alpha", &err) == 0, "rmdir alpha");
	model_shutdown();
	templates_shutdown();
	is_int(containers_on_engine(), 0, "no container left on the engine");
}

int main(void)
{
	if (fake_engine_setup(&fe, "test_failmalloc") < 0)
		return 99;
	const char *fake_abs = fe.cli;
	failmalloc_init();

	sweep("parse_kv_lines", step_kv_lines);
	sweep("parse_auth (lines)", step_auth_lines);
	sweep("parse_auth (JSON)", step_auth_json);
	sweep("kv_list_set", step_kv_set);
	sweep("kv_list_copy", step_kv_copy);
	sweep("kv_list_merge", step_kv_merge);
	sweep("kv_list_text", step_kv_text);
	sweep("template_parse", step_template_parse);
	sweep("template_effective_json, template_dup", step_template_effective);
	sweep("masker_init, mask_push", step_masker);
	sweep("engine_parse_event, engine_parse_ps_line", step_engine_json);
	test_model(fake_abs);

	rm_rf(fe.tmpdir);
	return tap_done();
}
