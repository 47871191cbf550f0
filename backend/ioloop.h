/* The I/O thread (epoll: every run pipe, pidfd, timer and the events
 * stream) and the task thread (blocking engine calls that must not stall
 * the I/O thread: kills, inspections, reconciliation). */
#ifndef SBX_IOLOOP_H
#define SBX_IOLOOP_H

#include <stdint.h>

struct io_watch {
	int fd;
	void (*fn)(struct io_watch *w, uint32_t events);
	void *ctx;
};

int ioloop_start(void);
void ioloop_stop(void);
/* Any thread may add a watch; only handlers on the I/O thread may delete. */
int ioloop_add(struct io_watch *w, uint32_t events);
int ioloop_mod(struct io_watch *w, uint32_t events);
void ioloop_del(struct io_watch *w);
/* For handlers on the I/O thread: frees p once the current batch of events
 * is handled, since another event of the batch may still point into it. */
void ioloop_free_later(void *p);

/* Runs fn(ctx) on the task thread, in order.  Returns 0 or -ENOMEM. */
int task_queue(void (*fn)(void *ctx), void *ctx);

#endif
