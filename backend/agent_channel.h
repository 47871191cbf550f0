/* One channel per sandbox to the agent inside it, multiplexing every run
 * (docs/agent-protocol.md).  The agent is an untrusted peer: every frame is
 * checked, and a channel that misbehaves is closed, its runs end `lost`
 * with the reason, and the sandbox falls back to one docker exec per run.
 *
 * Lock order: model_lock → chan_lock (agent_channel.c's, one for all channels).  Nothing here takes
 * model_lock while holding its own lock; the run hooks it calls (run.h)
 * are called with no lock held. */
#ifndef SBX_AGENT_CHANNEL_H
#define SBX_AGENT_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>

#include "engine.h"
#include "err.h"

struct agent_channel;
struct run;
struct run_launch;

/* A channel in state "not started"; NULL on ENOMEM. */
struct agent_channel *agent_channel_new(const struct engine *e, const char *container,
					const char *sandbox_name);
void agent_channel_ref(struct agent_channel *c);
void agent_channel_put(struct agent_channel *c);
/* Installs and connects the agent on a starter thread (asynchronously). */
void agent_channel_start(struct agent_channel *c);
/* Shutdown: drops what is queued to start and waits for the starts under
 * way (they use the engines, freed after this). */
void agent_channels_drain(void);
/* After the I/O thread stopped: ends the transports it watched and drops
 * its references to their channels. */
void agent_channels_shutdown(void);
/* Whether c is being started (a docker exec into its container is under
 * way). */
bool agent_channel_starting(struct agent_channel *c);
/* No agent for this sandbox (SANDBOXFS_NO_AGENT): info says why. */
void agent_channel_disable(struct agent_channel *c, const char *why);
/* Before start: r was live through the agent when the last daemon died;
 * out/err are the byte counts of its streams in the spool. */
int agent_channel_resume(struct agent_channel *c, struct run *r, uint64_t out, uint64_t err);
/* Ends the channel: kills the transport process, never waits. */
void agent_channel_stop(struct agent_channel *c);

/* Starts r through the agent: 0, -EAGAIN when the channel is not up (the
 * caller uses docker exec), or another -errno with err set. */
int agent_channel_spawn(struct agent_channel *c, struct run *r, const struct run_launch *l,
			struct sbx_err *err);
/* Bytes for r's stdin, or its end (close_it): 0, -EPIPE (closed, or the run
 * has ended), -EOPNOTSUPP (r was started with stdin at end-of-file),
 * -ENOBUFS (the channel's queue is full: try again). */
int agent_channel_stdin(struct agent_channel *c, struct run *r, const char *buf, size_t len,
			bool close_it, struct sbx_err *err);
/* Signals r's process group through the agent: 0 or -ESRCH. */
int agent_channel_signal(struct agent_channel *c, struct run *r, int sig, struct sbx_err *err);
/* "agent" or "exec", and why (empty when agent). */
void agent_channel_describe(struct agent_channel *c, char *why, size_t len, const char **transport);

/* The daemon-side parser over a byte stream, for the fuzzer: feeds buf to a
 * channel that has no transport and no runs.  Returns 0, or -EPROTO once
 * the peer misbehaved. */
int agent_channel_fuzz(const unsigned char *buf, size_t len);

#endif
