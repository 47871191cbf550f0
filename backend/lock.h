/* Mutexes the compiler can check: clang's thread-safety analysis
 * (-Wthread-safety) sees every lock and every guarded field through these
 * annotations; other compilers ignore them.
 *
 * The naming rule (docs/locking.md): a function whose name ends in _locked
 * must be called with the lock it names in SBX_REQUIRES held; every other
 * function takes the locks it needs itself and is called without them. */
#ifndef SBX_LOCK_H
#define SBX_LOCK_H

#include <pthread.h>

#if defined(__clang__)
#define SBX_TSA(x) __attribute__((x))
#else
#define SBX_TSA(x)
#endif

#define SBX_CAPABILITY(x) SBX_TSA(capability(x))
#define SBX_GUARDED_BY(x) SBX_TSA(guarded_by(x))
#define SBX_PT_GUARDED_BY(x) SBX_TSA(pt_guarded_by(x))
#define SBX_REQUIRES(...) SBX_TSA(requires_capability(__VA_ARGS__))
#define SBX_EXCLUDES(...) SBX_TSA(locks_excluded(__VA_ARGS__))
#define SBX_ACQUIRE(...) SBX_TSA(acquire_capability(__VA_ARGS__))
#define SBX_RELEASE(...) SBX_TSA(release_capability(__VA_ARGS__))
#define SBX_NO_TSA SBX_TSA(no_thread_safety_analysis)

typedef struct SBX_CAPABILITY("mutex") sbx_mutex {
	pthread_mutex_t m;
} sbx_mutex;

#define SBX_MUTEX_INIT                                                                             \
	{                                                                                          \
		PTHREAD_MUTEX_INITIALIZER                                                          \
	}

static inline void sbx_mutex_init(sbx_mutex *mu) SBX_NO_TSA
{
	pthread_mutex_init(&mu->m, NULL);
}
static inline void sbx_mutex_destroy(sbx_mutex *mu) SBX_NO_TSA
{
	pthread_mutex_destroy(&mu->m);
}
static inline void sbx_lock(sbx_mutex *mu) SBX_ACQUIRE(*mu) SBX_NO_TSA
{
	pthread_mutex_lock(&mu->m);
}
static inline void sbx_unlock(sbx_mutex *mu) SBX_RELEASE(*mu) SBX_NO_TSA
{
	pthread_mutex_unlock(&mu->m);
}

#endif
