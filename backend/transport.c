/* docker/podman exec as the agent's transport (transport.h). */
#include "transport.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "subprocess.h"

#define SETPRIV "/usr/bin/setpriv"

/* Written to a temporary name and renamed: a half-streamed binary is never
 * started.  `exec` leaves the serving agent as the exec's only process; it
 * forks, detaches and returns once its socket listens. */
#define INSTALL_SCRIPT                                                                             \
	"umask 077; t=" AGENT_DIR "/agent.$$; cat > \"$t\" && chmod 700 \"$t\" && "                \
	"mv -f \"$t\" " AGENT_PATH " && exec " AGENT_PATH " serve"

static size_t cli_args(const struct engine *e, const char **v, size_t n)
{
	v[n++] = e->cli;
	if (e->endpoint && strstr(e->endpoint, "://")) {
		v[n++] = "--host";
		v[n++] = e->endpoint;
	} else if (e->endpoint && e->endpoint[0]) {
		v[n++] = "--context";
		v[n++] = e->endpoint;
	}
	return n;
}

static int check(const struct engine *e, const char *container, struct sbx_err *err)
{
	if (!e || !e->cli || !e->cli[0])
		return sbx_err_set(err, EINVAL, "agent: no CLI configured");
	if (!container || !container[0] || container[0] == '-' || strchr(container, '\n'))
		return sbx_err_set(err, EINVAL, "agent: invalid container name");
	return 0;
}

int transport_install(const struct engine *e, const char *container, struct sbx_err *err)
{
	const char *v[16];
	int rc = check(e, container, err);
	if (rc < 0)
		return rc;
	size_t n = cli_args(e, v, 0);
	const char *tail[] = { "exec", "-i", container, "/bin/sh", "-c", INSTALL_SCRIPT, NULL };
	memcpy(v + n, tail, sizeof(tail));
	struct spawn_result res;
	rc = spawn_capture((char *const *)v, NULL, sbx_agent_bin, sbx_agent_len, -1, e->timeout_ms,
			   &res, err);
	if (rc < 0) {
		spawn_result_free(&res);
		return sbx_err_wrap(err, "agent install");
	}
	if (res.timed_out)
		rc = sbx_err_set(err, ETIMEDOUT, "agent install: no answer within %d ms",
				 e->timeout_ms);
	else if (res.status != 0) {
		/* docker prints an OCI runtime's complaint on stdout. */
		const char *t = res.errtext && res.errtext[0] ? res.errtext
				: res.out		      ? res.out
							      : "";
		char line[200];
		size_t k = strcspn(t, "\n");
		snprintf(line, sizeof(line), "%.*s", (int)(k > 190 ? 190 : k), t);
		rc = sbx_err_set(err, ENOEXEC, "agent install: exit %d: %s", res.status,
				 line[0] ? line : "no message");
	}
	spawn_result_free(&res);
	return rc;
}

static int pipe_nb(int p[2], int parent_end)
{
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	if (fcntl(p[parent_end], F_SETFL, O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

int transport_connect(const struct engine *e, const char *container, struct transport_proc *p,
		      struct sbx_err *err)
{
	const char *v[20];
	int in[2] = { -1, -1 }, out[2] = { -1, -1 };
	int rc = check(e, container, err);
	if (rc < 0)
		return rc;
	size_t n = 0;
	if (access(SETPRIV, X_OK) == 0) {
		v[n++] = SETPRIV;
		v[n++] = "--pdeathsig";
		v[n++] = "KILL";
		v[n++] = "--";
	}
	n = cli_args(e, v, n);
	const char *tail[] = { "exec", "-i", container, AGENT_PATH, "connect", NULL };
	memcpy(v + n, tail, sizeof(tail));
	if ((rc = pipe_nb(in, 1)) < 0 || (rc = pipe_nb(out, 0)) < 0) {
		for (int i = 0; i < 2; i++) {
			if (in[i] >= 0)
				close(in[i]);
			if (out[i] >= 0)
				close(out[i]);
		}
		return sbx_err_set(err, -rc, "agent connect: pipe: %s", strerror(-rc));
	}
	struct spawn_fds fds = { .in = in[0], .out = out[1], .err = -1, .fd3 = -1 };
	pid_t pid = spawn_child((char *const *)v, NULL, &fds, err);
	close(in[0]);
	close(out[1]);
	if (pid < 0) {
		close(in[1]);
		close(out[0]);
		return sbx_err_wrap(err, "agent connect");
	}
	*p = (struct transport_proc){ .pid = pid, .to_agent = in[1], .from_agent = out[0] };
	return 0;
}
