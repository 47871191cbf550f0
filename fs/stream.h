/* Reads that wait (stream.c), for the kinds of file that have them. */
#ifndef SBX_STREAM_H
#define SBX_STREAM_H

#include "handle.h"

enum wait_kind {
	W_READ,		/* bytes of a stream file at a position */
	W_WAIT,		/* the run's end */
	W_START,	/* exec's flush: the run started or failed to */
	W_START_NUMBER, /* exec's read-back: the same, then "N\n" */
	W_EVENTS,	/* events: a line past the handle's position */
};

/* Answers req at once when it can be, else parks it until h->run changes
 * so that it can (or the request is interrupted). */
void stream_park_or_answer(fuse_req_t req, struct handle *h, enum wait_kind kind, size_t size,
			   off_t pos);

#endif
