#include "ioloop.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"

static int epfd = -1;
static int stop_fd = -1;
static pthread_t io_thread, task_thread;
static bool started;

struct task {
	void (*fn)(void *ctx);
	void *ctx;
	struct task *next;
};

/* task_lock guards the task queue and task_stopping. */
static pthread_mutex_t task_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t task_cond = PTHREAD_COND_INITIALIZER;
static struct task *task_head, *task_tail;
static bool task_stopping;

/* Only the I/O thread touches it. */
static void **later;
static size_t nlater, caplater;

void ioloop_free_later(void *p)
{
	if (nlater == caplater) {
		size_t cap = caplater ? caplater * 2 : 8;
		void **v = realloc(later, cap * sizeof(*v));
		if (!v)
			return; /* leaked rather than freed too early */
		later = v;
		caplater = cap;
	}
	later[nlater++] = p;
}

static void *io_main(void *arg)
{
	struct epoll_event evs[64];

	(void)arg;
	for (;;) {
		int n = epoll_wait(epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("epoll_wait: %m");
			return NULL;
		}
		bool stop = false;
		for (int i = 0; i < n && !stop; i++) {
			struct io_watch *w = evs[i].data.ptr;
			if (!w)
				stop = true; /* stop_fd */
			else
				w->fn(w, evs[i].events);
		}
		for (size_t i = 0; i < nlater; i++)
			free(later[i]);
		nlater = 0;
		if (stop) {
			free(later);
			later = NULL;
			caplater = 0;
			return NULL;
		}
	}
}

static void *task_main(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&task_lock);
		while (!task_head && !task_stopping)
			pthread_cond_wait(&task_cond, &task_lock);
		struct task *t = task_head;
		if (!t) {
			pthread_mutex_unlock(&task_lock);
			return NULL;
		}
		task_head = t->next;
		if (!task_head)
			task_tail = NULL;
		pthread_mutex_unlock(&task_lock);
		t->fn(t->ctx);
		free(t);
	}
}

int ioloop_start(void)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		return -errno;
	stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (stop_fd < 0)
		return -errno;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, stop_fd, &ev) < 0)
		return -errno;
	int rc = pthread_create(&io_thread, NULL, io_main, NULL);
	if (rc)
		return -rc;
	rc = pthread_create(&task_thread, NULL, task_main, NULL);
	if (rc)
		return -rc;
	started = true;
	return 0;
}

void ioloop_stop(void)
{
	if (!started)
		return;
	uint64_t one = 1;
	if (write(stop_fd, &one, sizeof(one)) < 0)
		log_warn("stopping the I/O thread: %m");
	pthread_join(io_thread, NULL);
	pthread_mutex_lock(&task_lock);
	task_stopping = true;
	pthread_cond_signal(&task_cond);
	pthread_mutex_unlock(&task_lock);
	pthread_join(task_thread, NULL);
	/* Ready for another ioloop_start() (the unit tests restart the model
	 * in one process). */
	close(stop_fd);
	close(epfd);
	stop_fd = epfd = -1;
	task_stopping = false;
	started = false;
}

int ioloop_add(struct io_watch *w, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };
	return epoll_ctl(epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0 ? -errno : 0;
}

int ioloop_mod(struct io_watch *w, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };
	return epoll_ctl(epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0 ? -errno : 0;
}

void ioloop_del(struct io_watch *w)
{
	epoll_ctl(epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

int task_queue(void (*fn)(void *ctx), void *ctx)
{
	struct task *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->fn = fn;
	t->ctx = ctx;
	pthread_mutex_lock(&task_lock);
	if (task_tail)
		task_tail->next = t;
	else
		task_head = t;
	task_tail = t;
	pthread_cond_signal(&task_cond);
	pthread_mutex_unlock(&task_lock);
	return 0;
}
