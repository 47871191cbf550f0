/* The warm pool (pool.h).  One thread keeps every pooled template at its
 * target: it creates one container at a time, outside pool_lock, and backs
 * off (1 s doubling to 60 s) after a failure, whose reason .sandboxfs/pool
 * and the log show.  mkdir only takes a ready id under the lock. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "engines.h"
#include "ioloop.h"
#include "lock.h"
#include "log.h"
#include "model_internal.h"
#include "pool.h"
#include "template.h"

struct slot {
	char *name; /* _pool_HEX */
	char *id;   /* NULL while it is being created */
	bool claimed;
};

struct pool {
	char *key;
	char *effective; /* the settings its containers were made with */
	const struct engine *engine;
	long target;
	struct slot *slots; /* being created, ready, being claimed */
	size_t nslots;
	char *last_error;
	double backoff;	 /* seconds, 0 = none */
	double retry_at; /* CLOCK_MONOTONIC */
	bool seen;	 /* still a pooled template at the last scan */
};

static sbx_mutex pool_lock = SBX_MUTEX_INIT;
static pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER;
static struct pool *pools SBX_GUARDED_BY(pool_lock);
static size_t npools SBX_GUARDED_BY(pool_lock);
static bool stopping SBX_GUARDED_BY(pool_lock);
static bool running;
static pthread_t thread;
static long default_target;

static double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *pool_key(const struct template *t)
{
	return strcmp(t->name, "builtin") ? t->name : "default";
}

static struct pool *find_pool_locked(const char *key) SBX_REQUIRES(pool_lock)
{
	for (size_t i = 0; i < npools; i++)
		if (!strcmp(pools[i].key, key))
			return &pools[i];
	return NULL;
}

static size_t ready_locked(const struct pool *p) SBX_REQUIRES(pool_lock)
{
	size_t n = 0;
	for (size_t i = 0; i < p->nslots; i++)
		n += p->slots[i].id && !p->slots[i].claimed;
	return n;
}

static void slot_del_locked(struct pool *p, size_t i) SBX_REQUIRES(pool_lock)
{
	free(p->slots[i].name);
	free(p->slots[i].id);
	memmove(&p->slots[i], &p->slots[i + 1], (p->nslots - i - 1) * sizeof(*p->slots));
	p->nslots--;
}

static void destroy_quietly(const struct engine *e, const char *id)
{
	struct sbx_err err = { 0 };
	if (engine_destroy(e, id, &err) < 0)
		log_warn("pool: removing container %.12s: %s", id, err.msg);
}

int pool_claim(const char *key, const char *effective, const struct engine *e, char **id,
	       char **slot)
{
	int rc = -ENOENT;
	sbx_lock(&pool_lock);
	struct pool *p = find_pool_locked(key);
	for (size_t i = 0;
	     p && p->engine == e && effective && !strcmp(p->effective, effective) && i < p->nslots;
	     i++) {
		struct slot *s = &p->slots[i];
		if (!s->id || s->claimed)
			continue;
		*id = strdup(s->id);
		*slot = strdup(s->name);
		if (!*id || !*slot) {
			free(*id);
			free(*slot);
			rc = -ENOMEM;
			break;
		}
		s->claimed = true;
		rc = 0;
		break;
	}
	pthread_cond_signal(&pool_cond);
	sbx_unlock(&pool_lock);
	return rc;
}

void pool_claim_done(const char *slot)
{
	sbx_lock(&pool_lock);
	for (size_t i = 0; i < npools; i++)
		for (size_t j = 0; j < pools[i].nslots; j++)
			if (!strcmp(pools[i].slots[j].name, slot)) {
				slot_del_locked(&pools[i], j);
				break;
			}
	pthread_cond_signal(&pool_cond);
	sbx_unlock(&pool_lock);
}

bool pool_owns(const char *slot)
{
	bool found = false;
	sbx_lock(&pool_lock);
	for (size_t i = 0; i < npools && !found; i++)
		for (size_t j = 0; j < pools[i].nslots && !found; j++)
			found = !strcmp(pools[i].slots[j].name, slot);
	sbx_unlock(&pool_lock);
	return found;
}

char *model_pool_text(void)
{
	return pool_status_text();
}

char *pool_status_text(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	sbx_lock(&pool_lock);
	for (size_t i = 0; i < npools; i++) {
		const struct pool *p = &pools[i];
		if (!p->seen || (p->target == 0 && p->nslots == 0))
			continue;
		fprintf(f, "%s %zu/%ld", p->key, ready_locked(p), p->target);
		if (p->last_error)
			fprintf(f, " error: %s", p->last_error);
		fputc('\n', f);
	}
	sbx_unlock(&pool_lock);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* ---- the pool thread ---- */

/* Updates pool `key` for template t; removes ready containers that are no
 * longer wanted (settings changed, target lowered).  Returns ids to remove. */
static void update_pool_locked(struct template *t, const struct engine *e, char *effective,
			       char ***drop, size_t *ndrop) SBX_REQUIRES(pool_lock)
{
	const char *key = pool_key(t);
	long target = t->pool >= 0 ? t->pool : default_target;
	struct pool *p = find_pool_locked(key);
	if (!p) {
		struct pool *np = realloc(pools, (npools + 1) * sizeof(*np));
		char *k = strdup(key);
		if (!np || !k) {
			if (np)
				pools = np;
			free(k);
			free(effective);
			return;
		}
		pools = np;
		p = &pools[npools++];
		*p = (struct pool){ .key = k };
	}
	p->seen = true;
	bool changed = !p->effective || !effective || strcmp(p->effective, effective) ||
		       p->engine != e;
	if (changed) {
		free(p->effective);
		p->effective = effective;
		p->engine = e;
		effective = NULL;
	}
	free(effective);
	p->target = target;
	size_t keep = 0;
	for (size_t i = 0; i < p->nslots;) {
		struct slot *s = &p->slots[i];
		if (!s->id || s->claimed || (!changed && keep < (size_t)target)) {
			keep += s->id && !s->claimed;
			i++;
			continue;
		}
		char **d = realloc(*drop, (*ndrop + 1) * sizeof(*d));
		if (!d) {
			i++;
			continue;
		}
		*drop = d;
		(*drop)[(*ndrop)++] = s->id;
		s->id = NULL;
		slot_del_locked(p, i);
	}
}

struct want {
	struct template *t;
	const struct engine *e;
	char *effective;
};

/* The pooled templates, read outside pool_lock (templates_lock is theirs). */
static size_t scan_templates(struct want *w, size_t max)
{
	char **names = NULL;
	uint32_t *ids = NULL;
	size_t n = 0, nw = 0;
	bool have_default = false;
	template_names(&names, &ids, &n);
	for (size_t i = 0; i <= n && nw < max; i++) {
		struct template *t = NULL;
		if (i < n) {
			have_default |= !strcmp(names[i], "default");
			t = template_get(names[i]);
		} else if (!have_default) {
			template_parse("builtin", "{}", 2, &t, NULL);
		}
		if (!t)
			continue;
		w[nw++] = (struct want){ t, engine_for(t->engine),
					 template_effective_json(t, model_config()->image) };
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(ids);
	return nw;
}

static void cond_wait_locked(double seconds) SBX_REQUIRES(pool_lock) SBX_NO_TSA
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	long long ns = (long long)ts.tv_nsec + (long long)(seconds * 1e9);
	ts.tv_sec += (time_t)(ns / 1000000000LL);
	ts.tv_nsec = (long)(ns % 1000000000LL);
	pthread_cond_timedwait(&pool_cond, &pool_lock.m, &ts);
}

/* Makes one container for pool `key`; records it or the failure. */
static void refill_one(const char *key, struct template *t, const struct engine *e,
		       const char *effective, char *slot)
{
	struct sbx_err err = { 0 };
	char *id = NULL;
	int rc = model_pool_container(slot, t, e, &id, &err);
	sbx_lock(&pool_lock);
	struct pool *p = find_pool_locked(key);
	size_t i = 0;
	while (p && i < p->nslots && strcmp(p->slots[i].name, slot))
		i++;
	bool wanted = p && i < p->nslots && !stopping && !strcmp(p->effective, effective);
	if (rc == 0 && wanted) {
		p->slots[i].id = id;
		id = NULL;
		free(p->last_error);
		p->last_error = NULL;
		p->backoff = 0;
	} else if (p && i < p->nslots) {
		slot_del_locked(p, i);
	}
	if (rc < 0 && p) {
		p->backoff = p->backoff ? (p->backoff * 2 > 60 ? 60 : p->backoff * 2) : 1;
		p->retry_at = now_mono() + p->backoff;
		free(p->last_error);
		p->last_error = strdup(err.msg);
	}
	double backoff = p ? p->backoff : 0;
	sbx_unlock(&pool_lock);
	if (rc < 0)
		log_warn("pool %s: refill failed, retrying in %.0f s: %s", key, backoff, err.msg);
	if (id) /* made for a pool that changed meanwhile */
		destroy_quietly(e, id);
	free(id);
}

static void *pool_main(void *arg)
{
	(void)arg;
	double started = now_mono();
	bool resynced = false;
	for (;;) {
		/* A container the killed daemon's CLI was still making when we
		 * reconciled at start (created, maybe never started): look again. */
		if (!resynced && now_mono() - started > 3) {
			model_resync_all();
			resynced = true;
		}
		struct want w[64];
		size_t nw = scan_templates(w, SBX_ARRAY_SIZE(w));
		char **drop = NULL;
		size_t ndrop = 0;
		const struct engine *drop_engine[64] = { 0 };
		size_t pick = SIZE_MAX;
		char *slot = NULL, *effective = NULL;
		double wait = 1.0;

		sbx_lock(&pool_lock);
		if (stopping) {
			sbx_unlock(&pool_lock);
			for (size_t i = 0; i < nw; i++) {
				template_free(w[i].t);
				free(w[i].effective);
			}
			break;
		}
		for (size_t i = 0; i < npools; i++)
			pools[i].seen = false;
		for (size_t i = 0; i < nw; i++) {
			size_t before = ndrop;
			update_pool_locked(w[i].t, w[i].e, w[i].effective, &drop, &ndrop);
			for (size_t j = before; j < ndrop && j < 64; j++)
				drop_engine[j] = w[i].e;
			w[i].effective = NULL;
		}
		/* A template deleted (or no longer valid): its ready containers go. */
		for (size_t i = 0; i < npools; i++) {
			struct pool *p = &pools[i];
			for (size_t j = 0; !p->seen && j < p->nslots;) {
				char **d = p->slots[j].id && !p->slots[j].claimed
						   ? realloc(drop, (ndrop + 1) * sizeof(*d))
						   : NULL;
				if (!d) {
					j++;
					continue;
				}
				drop = d;
				if (ndrop < 64)
					drop_engine[ndrop] = p->engine;
				drop[ndrop++] = p->slots[j].id;
				p->slots[j].id = NULL;
				slot_del_locked(p, j);
			}
		}
		double now = now_mono();
		for (size_t i = 0; i < nw && pick == SIZE_MAX; i++) {
			struct pool *p = find_pool_locked(pool_key(w[i].t));
			if (!p || (long)p->nslots >= p->target || !p->effective)
				continue;
			bool creating = false;
			for (size_t j = 0; j < p->nslots; j++)
				creating |= !p->slots[j].id;
			if (creating)
				continue;
			if (now < p->retry_at) {
				wait = p->retry_at - now < wait ? p->retry_at - now : wait;
				continue;
			}
			uint64_t r = 0;
			if (getrandom(&r, sizeof(r), 0) != sizeof(r))
				r = (uint64_t)(now * 1e9);
			struct slot *ns = realloc(p->slots, (p->nslots + 1) * sizeof(*ns));
			effective = strdup(p->effective);
			if (asprintf(&slot, POOL_SLOT_PREFIX "%016" PRIx64, r) < 0)
				slot = NULL;
			char *sname = slot ? strdup(slot) : NULL;
			if (!ns || !slot || !sname || !effective) {
				if (ns)
					p->slots = ns;
				free(slot);
				free(sname);
				free(effective);
				slot = effective = NULL;
				continue;
			}
			p->slots = ns;
			p->slots[p->nslots++] = (struct slot){ .name = sname };
			pick = i;
		}
		if (pick == SIZE_MAX && ndrop == 0)
			cond_wait_locked(wait);
		sbx_unlock(&pool_lock);

		for (size_t i = 0; i < ndrop; i++) {
			destroy_quietly(i < 64 && drop_engine[i] ? drop_engine[i]
								 : model_default_engine(),
					drop[i]);
			free(drop[i]);
		}
		free(drop);
		if (pick != SIZE_MAX)
			refill_one(pool_key(w[pick].t), w[pick].t, w[pick].e, effective, slot);
		free(slot);
		free(effective);
		for (size_t i = 0; i < nw; i++)
			template_free(w[i].t);
	}
	return NULL;
}

int pool_start(long target)
{
	default_target = target;
	int rc = pthread_create(&thread, NULL, pool_main, NULL);
	if (rc != 0)
		return -rc;
	running = true;
	return 0;
}

/* Ready containers are removed: an unmount leaves no container that is not
 * a sandbox (one a crash leaves is removed by the next start). */
void pool_stop(void)
{
	if (!running)
		return;
	sbx_lock(&pool_lock);
	stopping = true;
	pthread_cond_signal(&pool_cond);
	sbx_unlock(&pool_lock);
	pthread_join(thread, NULL);
	running = false;
	/* The thread is gone and mkdir no longer runs: the pools are ours
	 * alone; no docker call is made under the lock all the same. */
	sbx_lock(&pool_lock);
	struct pool *gone = pools;
	size_t n = npools;
	pools = NULL;
	npools = 0;
	sbx_unlock(&pool_lock);
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < gone[i].nslots; j++) {
			if (gone[i].slots[j].id && gone[i].engine)
				destroy_quietly(gone[i].engine, gone[i].slots[j].id);
			free(gone[i].slots[j].name);
			free(gone[i].slots[j].id);
		}
		free(gone[i].slots);
		free(gone[i].key);
		free(gone[i].effective);
		free(gone[i].last_error);
	}
	free(gone);
}
