/* The agent's transport: "a process whose stdin/stdout reach the agent".
 * Today `docker exec -i C /.sandboxfs/agent connect` (or podman's, the same
 * CLI shape); a kubectl exec would be one more implementation of these two
 * calls.  No FUSE, no model. */
#ifndef SBX_TRANSPORT_H
#define SBX_TRANSPORT_H

#include <sys/types.h>

#include "engine.h"
#include "err.h"

#define AGENT_DIR "/.sandboxfs"
#define AGENT_PATH AGENT_DIR "/agent"

struct transport_proc {
	pid_t pid;
	int to_agent;	/* write end, O_NONBLOCK|O_CLOEXEC */
	int from_agent; /* read end, O_NONBLOCK|O_CLOEXEC */
};

/* Streams the agent binary into the container's tmpfs over one exec's
 * stdin and starts it serving (detached, its own session).  An agent
 * already serving is left alone.  Bounded by the engine's timeout. */
int transport_install(const struct engine *e, const char *container, struct sbx_err *err);

/* Starts the channel process.  The caller owns the fds and reaps pid.
 * Call it from a thread that lives as long as the daemon (a starter
 * thread of agent_channel.c): the process dies with its spawning thread
 * (pdeathsig). */
int transport_connect(const struct engine *e, const char *container, struct transport_proc *p,
		      struct sbx_err *err);

/* The agent binary embedded in the daemon (generated at build time). */
extern const unsigned char sbx_agent_bin[];
extern const unsigned long sbx_agent_len;

#endif
