/* Defensive child processes: posix_spawn, chdir("/"), every fd closed but
 * the ones named here, default signal dispositions and an empty mask. */
#ifndef SBX_SUBPROCESS_H
#define SBX_SUBPROCESS_H

#include <stddef.h>
#include <sys/types.h>

#include "err.h"

struct spawn_fds {
	int in, out, err; /* dup2'ed to 0, 1, 2; -1 means /dev/null */
	int fd3;	  /* dup2'ed to 3 when >= 0 (e.g. an --env-file pipe) */
};

/* Starts argv[0] (looked up in PATH when it has no '/') with envp (NULL =
 * the daemon's environ).  Returns the pid, or a negative errno. */
pid_t spawn_child(char *const argv[], char *const envp[], const struct spawn_fds *fds,
		  struct sbx_err *err);

/* The result of spawn_capture(). */
struct spawn_result {
	int status; /* exit code, or 128+signal (shell convention) */
	char *out;  /* NUL-terminated stdout, malloc'ed */
	size_t out_len;
	char *errtext; /* NUL-terminated stderr, malloc'ed */
	size_t err_len;
	int timed_out; /* the child was killed after timeout_ms */
};
void spawn_result_free(struct spawn_result *r);

/* Runs argv to completion, feeding `input` (may be NULL) on stdin and
 * collecting stdout/stderr (each capped at 16 MiB), and `fd3` as fd 3 if
 * >= 0.  Kills the child after timeout_ms (0 = no limit).  Returns 0 when
 * the child ran (whatever its exit status), or a negative errno if it
 * could not be started or waited for. */
int spawn_capture(char *const argv[], char *const envp[], const void *input, size_t input_len,
		  int fd3, int timeout_ms, struct spawn_result *res, struct sbx_err *err);

/* write(2) that cannot raise SIGPIPE in the process: a closed reader gives
 * -1/EPIPE instead.  Thread-safe (masks SIGPIPE in the calling thread only);
 * for writers of pipes to children, e.g. engine_exec's stdin_fd. */
ssize_t spawn_write_nosigpipe(int fd, const void *buf, size_t n);

/* Converts a waitpid() status to the shell convention (code or 128+sig). */
int spawn_exit_code(int wstatus);

#endif
