/* Command-line conventions shared with the rest of the FUSE world: how
 * mount(8) and libfuse's mount.fuse3 call a file system, and --version. */
#include "cli.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"
#include "err.h"

struct positionals {
	char *arg[3];
	int n;
};

/* Options mount(8) or fstab carry that mean nothing to a FUSE daemon.
 * mount.fuse3 already drops most of them; sandboxfs run by hand or by
 * another helper (systemd's .mount units) may still see them. */
static const struct fuse_opt mount_only_spec[] = { FUSE_OPT_KEY("_netdev", FUSE_OPT_KEY_DISCARD),
						   FUSE_OPT_KEY("auto", FUSE_OPT_KEY_DISCARD),
						   FUSE_OPT_KEY("noauto", FUSE_OPT_KEY_DISCARD),
						   FUSE_OPT_KEY("nofail", FUSE_OPT_KEY_DISCARD),
						   FUSE_OPT_KEY("user", FUSE_OPT_KEY_DISCARD),
						   FUSE_OPT_KEY("nouser", FUSE_OPT_KEY_DISCARD),
						   FUSE_OPT_KEY("users", FUSE_OPT_KEY_DISCARD),
						   FUSE_OPT_KEY("owner", FUSE_OPT_KEY_DISCARD),
						   FUSE_OPT_KEY("group", FUSE_OPT_KEY_DISCARD),
						   FUSE_OPT_KEY("defaults", FUSE_OPT_KEY_DISCARD),
						   FUSE_OPT_KEY("comment=", FUSE_OPT_KEY_DISCARD),
						   FUSE_OPT_END };

static int mount_only_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct positionals *p = data;
	if (key == FUSE_OPT_KEY_NONOPT) {
		/* Keep them aside: which one is the mountpoint depends on how many. */
		if (p->n < 3)
			p->arg[p->n] = strdup(arg);
		p->n++;
		return 0;
	}
	/* x-systemd.*, x-gvfs-* and the like are for other programs. */
	if (key == FUSE_OPT_KEY_OPT && !strncmp(arg, "x-", 2))
		return 0;
	return 1;
}

int cli_mount_compat(struct fuse_args *args)
{
	struct positionals p = { 0 };
	int ret = -1;
	if (fuse_opt_parse(args, &p, mount_only_spec, mount_only_proc) < 0)
		goto out;
	if (p.n > 2) {
		fprintf(stderr,
			"sandboxfs: too many arguments: '%s' (usage: sandboxfs [SOURCE] MOUNTPOINT [options])\n",
			p.arg[2] ? p.arg[2] : "");
		goto out;
	}
	/* mount(8) passes SOURCE MOUNTPOINT: the source names nothing here.  A
	 * mountpoint given after "--" keeps its "--" for the second parse. */
	if (p.n > 0) {
		const char *mp = p.arg[p.n - 1];
		bool dashdash = args->argc > 0 && !strcmp(args->argv[args->argc - 1], "--");
		if (!mp || (mp[0] == '-' && !dashdash && fuse_opt_add_arg(args, "--") < 0) ||
		    fuse_opt_add_arg(args, mp) < 0)
			goto out;
	}
	ret = 0;
out:
	for (int i = 0; i < 3; i++)
		free(p.arg[i]);
	return ret;
}

#define VERSION_TIMEOUT_MS 5000

int cli_print_version(const char *cli)
{
	printf("sandboxfs %s\n", SANDBOXFS_VERSION);
	if (!cli) {
		printf("engine: not found\n");
	} else {
		const char *name = strrchr(cli, '/') ? strrchr(cli, '/') + 1 : cli;
		struct engine e = { .cli = (char *)cli, .timeout_ms = VERSION_TIMEOUT_MS };
		struct sbx_err err = { 0 };
		cleanup_free char *version = NULL;
		if (engine_check(&e, &version, &err) < 0)
			printf("engine: %s (%s) not answering: %s\n", name, cli, err.msg);
		else
			printf("engine: %s %s (%s)\n", name, version, cli);
	}
	printf("libfuse %s\n", fuse_pkgversion());
	return fflush(stdout) == 0 ? 0 : -1;
}
