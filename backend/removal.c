/* rmdir's second half, in the background.  rmdir writes a journal entry
 * STATE/removing/CONTAINER_ID ("ENDPOINT\nNAME\n") and returns; a thread
 * per removal renames the container to a tombstone (sandboxfs-INSTANCE-
 * _rm_ID: the name is free again), removes it, and deletes the entry.
 * Until the rename, a mkdir of the same name waits (only that name), and
 * reconciliation does not adopt the container back.  After a crash the
 * start replays the journal; a tombstone found on the engine is removed
 * whatever the journal says (model.c). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engines.h"
#include "log.h"
#include "model_internal.h"
#include "pool.h"
#include "state.h"

struct removal {
	char *name;
	char *cid;
	const struct engine *engine;
	bool renamed;
	struct removal *next;
};

static struct removal *pending SBX_GUARDED_BY(model_lock);
static bool draining SBX_GUARDED_BY(model_lock);
static unsigned inflight SBX_GUARDED_BY(model_lock);
static pthread_cond_t removal_cond = PTHREAD_COND_INITIALIZER;

static void cond_wait_locked(void) SBX_REQUIRES(model_lock) SBX_NO_TSA
{
	pthread_cond_wait(&removal_cond, &model_lock.m);
}

/* Sleeps s seconds, or less when the daemon stops; false if it does. */
static bool pause_unless_draining(unsigned s) SBX_EXCLUDES(model_lock) SBX_NO_TSA
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += s;
	sbx_lock(&model_lock);
	if (!draining)
		pthread_cond_timedwait(&removal_cond, &model_lock.m, &ts);
	bool go_on = !draining;
	sbx_unlock(&model_lock);
	return go_on;
}

bool removal_pending_id_locked(const char *cid)
{
	for (struct removal *r = pending; r; r = r->next)
		if (!strcmp(r->cid, cid))
			return true;
	return false;
}

static void cond_wait_until_locked(const struct timespec *ts) SBX_REQUIRES(model_lock) SBX_NO_TSA
{
	pthread_cond_timedwait(&removal_cond, &model_lock.m, ts);
}

/* Bounded: an engine that does not answer would hold the request for ever
 * (the create then fails on its own, EEXIST or ECONNREFUSED). */
void removal_wait_name_locked(const char *name)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 15;
	for (;;) {
		bool busy = false;
		for (struct removal *r = pending; r && !busy; r = r->next)
			busy = !r->renamed && !strcmp(r->name, name);
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		if (!busy || now.tv_sec > until.tv_sec ||
		    (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec))
			return;
		cond_wait_until_locked(&until);
	}
}

static int journal_dir(char *buf, size_t size)
{
	return path_join(buf, size, model_config()->state_dir, "removing");
}

static void removal_free(struct removal *r)
{
	engine_use(r->engine, -1);
	free(r->name);
	free(r->cid);
	free(r);
}

static void *removal_main(void *arg)
{
	struct removal *r = arg;
	struct sbx_err err = { 0 };
	char tomb[128];
	snprintf(tomb, sizeof(tomb), "sandboxfs-%s-" TOMB_PREFIX "%.24s",
		 model_config()->engine.instance, r->cid);
	int rc = engine_rename(r->engine, r->cid, tomb, &err);
	/* An engine that went down: retried (the container stays pending, so
	 * it is never adopted back) until it answers or the daemon stops; the
	 * next start replays the journal. */
	for (unsigned i = 1; rc == -ECONNREFUSED || rc == -ETIMEDOUT; i++) {
		if (!pause_unless_draining(i < 10 ? i : 10))
			break;
		sbx_err_clear(&err);
		rc = engine_rename(r->engine, r->cid, tomb, &err);
	}
	if (rc < 0 && rc != -ENOENT)
		log_debug("rmdir %s: rename: %s; removing under its name", r->name, err.msg);

	/* Removed by id: the same whether the rename worked or not. */
	sbx_err_clear(&err);
	int d = -1;
	if (rc == 0 || rc == -ENOENT) {
		sbx_lock(&model_lock);
		r->renamed = true;
		pthread_cond_broadcast(&removal_cond);
		sbx_unlock(&model_lock);
	}
	d = rc == -ENOENT ? 0 : engine_destroy(r->engine, r->cid, &err);
	if (d < 0)
		log_warn("rmdir %s: removing container %.12s: %s (the next start retries)", r->name,
			 r->cid, err.msg);

	char dir[PATH_MAX], path[PATH_MAX];
	if (d == 0 && journal_dir(dir, sizeof(dir)) == 0 &&
	    path_join(path, sizeof(path), dir, r->cid) == 0)
		unlink(path);

	sbx_lock(&model_lock);
	for (struct removal **p = &pending; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			break;
		}
	inflight--;
	pthread_cond_broadcast(&removal_cond);
	sbx_unlock(&model_lock);
	removal_free(r);
	return NULL;
}

int removal_begin(const struct engine *e, const char *name, const char *cid, bool journaled,
		  struct sbx_err *err)
{
	char dir[PATH_MAX];
	if (!journaled) {
		char *text = NULL;
		int n = asprintf(&text, "%s\n%s\n", e->endpoint ? e->endpoint : "", name);
		if (n < 0)
			return sbx_err_set(err, ENOMEM, "out of memory");
		int rc = journal_dir(dir, sizeof(dir));
		if (rc == 0)
			rc = mkdir_p(dir, err);
		else
			sbx_err_set(err, ENAMETOOLONG, "state path too long");
		if (rc == 0)
			rc = write_file_in(dir, cid, text, (size_t)n, err);
		free(text);
		if (rc < 0)
			return rc;
	}
	struct removal *r = calloc(1, sizeof(*r));
	if (!r || !(r->name = strdup(name)) || !(r->cid = strdup(cid))) {
		if (r) {
			free(r->name);
			free(r);
		}
		return sbx_err_set(err, ENOMEM, "out of memory");
	}
	r->engine = e;
	engine_use(e, +1);
	sbx_lock(&model_lock);
	r->next = pending;
	pending = r;
	inflight++;
	sbx_unlock(&model_lock);

	pthread_t t;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, removal_main, r) != 0)
		removal_main(r); /* no thread: here and now */
	pthread_attr_destroy(&attr);
	return 0;
}

void removal_recover(void)
{
	char dir[PATH_MAX];
	if (journal_dir(dir, sizeof(dir)) < 0)
		return;
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' ||
		    strspn(de->d_name, "0123456789abcdef") != strlen(de->d_name))
			continue;
		char *text = NULL;
		size_t len = 0;
		if (read_file_in(dir, de->d_name, &text, &len, 4096) < 0)
			continue;
		char *nl = strchr(text, '\n');
		char *name = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		if (name && (nl = strchr(name, '\n')))
			*nl = '\0';
		const struct engine *e = engine_for(text[0] ? text : NULL);
		struct sbx_err err = { 0 };
		if (e && name) {
			log_info("rmdir %s: finishing the removal of container %.12s", name,
				 de->d_name);
			removal_begin(e, name, de->d_name, true, &err);
		}
		free(text);
	}
	closedir(d);
}

void removal_drain(void)
{
	sbx_lock(&model_lock);
	draining = true;
	pthread_cond_broadcast(&removal_cond);
	while (inflight)
		cond_wait_locked();
	sbx_unlock(&model_lock);
}
