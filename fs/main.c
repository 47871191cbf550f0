/* sandboxfs: option parsing and start-up.  The backend is checked before
 * the mount is made and before daemonizing, so that errors reach the
 * terminal (sshfs does the same). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "fs.h"
#include "log.h"
#include "state.h"
#include "template.h"
#include "workspace.h"

struct cli_options {
	char *image, *docker, *state, *config, *max_output, *workspace_roots, *pool;
	int shared; /* allow_other or allow_root was asked for: refused */
};

#define OPT(t, f)                                                                                  \
	{                                                                                          \
		t, offsetof(struct cli_options, f), 0                                              \
	}
static const struct fuse_opt cli_spec[] = {
	OPT("image=%s", image),
	OPT("--image=%s", image),
	OPT("docker=%s", docker),
	OPT("--docker=%s", docker),
	OPT("state=%s", state),
	OPT("--state=%s", state),
	OPT("config=%s", config),
	OPT("--config=%s", config),
	OPT("max_output=%s", max_output),
	OPT("--max_output=%s", max_output),
	OPT("pool=%s", pool),
	OPT("--pool=%s", pool),
	OPT("workspace_roots=%s", workspace_roots),
	OPT("--workspace_roots=%s", workspace_roots),
	/* Consumed here so that libfuse never sees them (docs/security.md). */
	{ "allow_other", offsetof(struct cli_options, shared), 1 },
	{ "allow_root", offsetof(struct cli_options, shared), 1 },
	FUSE_OPT_END
};

static void usage(const char *prog)
{
	printf("usage: %s [options] [SOURCE] MOUNTPOINT\n"
	       "       (SOURCE, as mount(8) passes it, is ignored; see sandboxfs(1))\n\n"
	       "sandboxfs options (default in brackets):\n"
	       "    -o image=IMAGE         image of new sandboxes [sandboxfs/base]\n"
	       "    -o docker=PATH         docker-compatible CLI [docker, looked up in PATH]\n"
	       "    -o state=DIR           run history and spooled output; not under MOUNTPOINT\n"
	       "                           [$XDG_STATE_HOME/sandboxfs/MOUNTPOINT with '/' as '_',\n"
	       "                           else ~/.local/state/..., else /var/lib/sandboxfs/...]\n"
	       "    -o config=FILE         JSON templates [none]\n"
	       "    -o max_output=BYTES    output spooled per run at most, k/m/g suffix,\n"
	       "                           0 = no limit [8g]\n"
	       "    -o pool=N              ready containers kept per template (0-64), claimed\n"
	       "                           by mkdir [0]\n"
	       "    -o workspace_roots=DIRS  host directories a template may mount as a\n"
	       "                           workspace, ':'-separated [/home:/srv:/tmp:/var/tmp]\n"
	       "    (each also as --name=value)\n"
	       "    -f                     stay in the foreground, log to stderr\n"
	       "                           [daemonize, log to syslog]\n"
	       "    -o _netdev,noauto,nofail,auto,user,users,owner,group,defaults,comment=,x-*\n"
	       "                           fstab options, accepted and ignored\n"
	       "    --version              also the engine found (docker version, at most 5 s)\n\n",
	       prog);
}

/* Resolves a CLI name through PATH, as posix_spawnp would. */
static char *find_cli(const char *name)
{
	if (strchr(name, '/'))
		return access(name, X_OK) == 0 ? realpath(name, NULL) : NULL;
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	cleanup_free char *copy = strdup(path);
	for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir;
	     dir = strtok_r(NULL, ":", &save)) {
		char full[PATH_MAX];
		snprintf(full, sizeof(full), "%s/%s", dir, name);
		if (access(full, X_OK) == 0)
			return strdup(full);
	}
	return NULL;
}

static char *default_state_dir(const char *mountpoint)
{
	const char *base = getenv("XDG_STATE_HOME");
	/* mount(8) runs helpers without HOME (nor PATH). */
	const char *home = getenv("HOME");
	char *escaped = strdup(mountpoint);
	char *dir = NULL;
	if (!escaped)
		return NULL;
	for (char *p = escaped; *p; p++)
		if (*p == '/')
			*p = '_';
	int rc = base && base[0] == '/' ? asprintf(&dir, "%s/sandboxfs/%s", base, escaped)
		 : home && home[0] == '/'
			 ? asprintf(&dir, "%s/.local/state/sandboxfs/%s", home, escaped)
			 : asprintf(&dir, "/var/lib/sandboxfs/%s", escaped);
	free(escaped);
	return rc < 0 ? NULL : dir;
}

static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void mountinfo_unescape(char *s)
{
	char *o = s;
	for (char *i = s; *i; i++) {
		if (i[0] == '\\' && i[1] >= '0' && i[1] <= '3' && i[2] >= '0' && i[2] <= '7' &&
		    i[3] >= '0' && i[3] <= '7') {
			*o++ = (char)((i[1] - '0') << 6 | (i[2] - '0') << 3 | (i[3] - '0'));
			i += 3;
		} else {
			*o++ = *i;
		}
	}
	*o = '\0';
}

/* Whether a sandboxfs is mounted on path (a live one: a stale mount was
 * detached before this is asked). */
static bool sandboxfs_mounted_on(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return false;
	char *line = NULL;
	size_t cap = 0;
	bool found = false;
	while (!found && getline(&line, &cap, f) > 0) {
		/* id parent major:minor root MOUNTPOINT opts... - FSTYPE source ... */
		char mp[PATH_MAX], fstype[64];
		const char *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1 ||
		    sscanf(sep + 3, "%63s", fstype) != 1)
			continue;
		mountinfo_unescape(mp);
		found = !strcmp(mp, path) && !strcmp(fstype, "fuse.sandboxfs");
	}
	free(line);
	fclose(f);
	return found;
}

/* Everything after option parsing; returns the exit status. */
static int run(struct cli_options *o, struct fuse_cmdline_opts *cmd, struct fuse_args *args)
{
	struct sbx_err err = { 0 };
	char instance[17];
	int ret = 1;
	struct stat sb;
	if (stat(cmd->mountpoint, &sb) < 0 && errno == ENOTCONN) {
		/* A daemon before us died without unmounting. */
		log_warn("%s is a stale mount of a dead daemon; detaching it", cmd->mountpoint);
		if (umount2(cmd->mountpoint, MNT_DETACH) < 0)
			log_error("detaching the stale mount %s: %m", cmd->mountpoint);
	}
	cleanup_free char *mountpoint = realpath(cmd->mountpoint, NULL);
	if (!mountpoint) {
		fprintf(stderr, "sandboxfs: mountpoint %s: %s\n", cmd->mountpoint, strerror(errno));
		return 1;
	}
	/* Stacked on a live one, we would hide its sandboxes. */
	if (sandboxfs_mounted_on(mountpoint)) {
		fprintf(stderr,
			"sandboxfs: %s is already served by a running sandboxfs; unmount it "
			"first (fusermount3 -u %s)\n",
			mountpoint, mountpoint);
		return 1;
	}

	cleanup_free char *cli = find_cli(o->docker ? o->docker : "docker");
	if (!cli) {
		fprintf(stderr,
			"sandboxfs: the docker CLI '%s' was not found or is not executable\n",
			o->docker ? o->docker : "docker");
		return 1;
	}

	cleanup_free char *state = o->state ? strdup(o->state) : default_state_dir(mountpoint);
	if (state && stat(state, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "sandboxfs: state directory %s is not a directory\n", state);
		return 1;
	}
	if (!state || mkdir_p(state, &err) < 0) {
		fprintf(stderr, "sandboxfs: state directory: %s\n", err.msg);
		return 1;
	}
	cleanup_free char *state_real = realpath(state, NULL);
	if (!state_real || workspace_path_within(state_real, mountpoint)) {
		fprintf(stderr,
			"sandboxfs: the state directory must not be under the mountpoint\n");
		return 1;
	}
	if (state_open(state_real, instance, &err) < 0) {
		fprintf(stderr, "sandboxfs: %s\n", err.msg);
		return 1;
	}

	long long max_output = DEFAULT_MAX_OUTPUT;
	if (o->max_output && parse_size_suffix(o->max_output, 1LL << 62, &max_output) < 0) {
		fprintf(stderr, "sandboxfs: max_output=%s: expected bytes with an optional k/m/g\n",
			o->max_output);
		return 1;
	}
	long pool = 0;
	if (o->pool) {
		char *end = NULL;
		errno = 0;
		pool = strtol(o->pool, &end, 10);
		if (errno || end == o->pool || *end || pool < 0 || pool > TEMPLATE_MAX_POOL) {
			fprintf(stderr,
				"sandboxfs: pool=%s: expected a whole number from 0 to %d\n",
				o->pool, TEMPLATE_MAX_POOL);
			return 1;
		}
	}
	struct model_config mc = {
		.pool = pool,
		.max_output = max_output,
		.engine = { .cli = cli, .instance = instance, .timeout_ms = 60000 },
		.state_dir = state_real,
		.image = o->image ? o->image : "sandboxfs/base",
		.mountpoint = mountpoint,
	};
	cleanup_free char *version = NULL;
	if (engine_check(&mc.engine, &version, &err) < 0) {
		if (err.code == ENOEXEC) {
			fprintf(stderr, "sandboxfs: %s\n", err.msg);
			return 1;
		}
		log_warn(
			"the engine does not answer (%s); mounting anyway, mkdir will fail until it does",
			err.msg);
	} else {
		/* A data root moved out of /var/lib must stay out of workspaces too. */
		cleanup_free char *root = NULL;
		if (engine_data_root(&mc.engine, &root, &err) == 0)
			workspace_add_guarded(root);
		else
			log_debug("engine data root unknown: %s", err.msg);
	}
	raise_fd_limit();
	signal(SIGPIPE, SIG_IGN);

	if (workspace_set_roots(o->workspace_roots, &err) < 0) {
		fprintf(stderr, "sandboxfs: %s\n", err.msg);
		return 1;
	}

	if (templates_init(o->config, state_real, mountpoint, &err) < 0) {
		fprintf(stderr, "sandboxfs: %s\n", err.msg);
		return 1;
	}
	struct fs_options fo = { .engine_version = version };
	if (model_init(&mc, &fs_model_callbacks, &err) < 0) {
		fprintf(stderr, "sandboxfs: %s\n", err.msg);
		return 1;
	}
	fuse_opt_add_arg(args, "-ofsname=sandboxfs,subtype=sandboxfs");
	const struct fuse_lowlevel_ops *ops = fs_ops(&fo);
	struct fuse_session *se = fuse_session_new(args, ops, sizeof(*ops), NULL);
	if (!se) {
		/* libfuse said which option it did not know. */
		fprintf(stderr, "sandboxfs: see sandboxfs --help for the options\n");
		return 1;
	}
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, mountpoint) != 0)
		goto out_signals;
	/* Children must never hold the FUSE fd: it would keep the mount alive. */
	fcntl(fuse_session_fd(se), F_SETFD, FD_CLOEXEC);
	fuse_daemonize(cmd->foreground);
	if (!cmd->foreground)
		sbx_log_init_syslog(mountpoint, cmd->debug);

	if (model_start(&err) < 0) {
		log_error("%s", err.msg);
		goto out_unmount;
	}
	log_info("mounted %s (instance %s, state %s, cli %s, engine %s)", mountpoint, instance,
		 state_real, cli, version ? version : "unreachable");

	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(lc, cmd->clone_fd);
	/* libfuse's cmdline default for idle threads is UINT_MAX ("unset"). */
	if (cmd->max_idle_threads <= 100000)
		fuse_loop_cfg_set_idle_threads(lc, cmd->max_idle_threads);
	/* mkdir and rmdir hold a thread for the length of a docker call. */
	unsigned max_threads = cmd->max_threads;
	if (max_threads < 64 || max_threads > 100000)
		max_threads = 64;
	fuse_loop_cfg_set_max_threads(lc, max_threads);
	ret = cmd->singlethread ? fuse_session_loop(se) : fuse_session_loop_mt(se, lc);
	fuse_loop_cfg_destroy(lc);
	model_shutdown();
	fs_cleanup();
	templates_shutdown();
	workspace_shutdown();
	log_info("unmounted %s", mountpoint);

out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
	return ret ? 1 : 0;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct cli_options o = { 0 };
	struct fuse_cmdline_opts cmd = { 0 };
	int ret = 1;

	sbx_log_init(0, 0);
	if (cli_mount_compat(&args) < 0 || fuse_opt_parse(&args, &o, cli_spec, NULL) < 0 ||
	    fuse_parse_cmdline(&args, &cmd) < 0)
		goto out;
	if (cmd.show_help) {
		usage(argv[0]);
		fuse_cmdline_help();
		fuse_lowlevel_help();
		ret = 0;
	} else if (cmd.show_version) {
		cleanup_free char *cli = find_cli(o.docker ? o.docker : "docker");
		ret = cli_print_version(cli) < 0 ? 1 : 0;
	} else if (o.shared) {
		/* Other users would run commands as root in our sandboxes. */
		fprintf(stderr, "sandboxfs: allow_other and allow_root are refused: every "
				"local user could run commands in the sandboxes and read their "
				"output (see docs/security.md)\n");
		ret = 1;
	} else if (!cmd.mountpoint) {
		fprintf(stderr, "sandboxfs: no mountpoint given (see --help)\n");
	} else {
		sbx_log_init(0, cmd.debug);
		ret = run(&o, &cmd, &args);
	}
out:
	fuse_opt_free_args(&args);
	free(cmd.mountpoint);
	free(o.image);
	free(o.docker);
	free(o.state);
	free(o.config);
	free(o.max_output);
	free(o.pool);
	free(o.workspace_roots);
	state_close();
	return ret;
}
