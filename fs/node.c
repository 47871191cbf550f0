/* Inodes: what each one names, its attributes, and the table of file
 * kinds.  The one place that says which run a file shows. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node.h"
#include "template.h"

#define KIND(n, m, o)                                                                              \
	{                                                                                          \
		.name = n, .mode = m, .ops = o                                                     \
	}
#define STREAM_KIND(n, s, latest)                                                                  \
	{                                                                                          \
		.name = n, .mode = RO_MODE, .ops = &stream_file_ops, .stream = s,                  \
		.follows_latest = latest                                                           \
	}

static const struct kind_info kinds[K_MAX] = {
	[K_DIR] = KIND(NULL, S_IFDIR | 0755, NULL),
	[K_EXEC] = KIND("exec", S_IFREG | 0666, &exec_file_ops),
	[K_OUTPUT] = STREAM_KIND("output", STREAM_OUTPUT, true),
	[K_STDOUT] = STREAM_KIND("stdout", STREAM_STDOUT, true),
	[K_STDERR] = STREAM_KIND("stderr", STREAM_STDERR, true),
	[K_STATUS] = { "status", RO_MODE, &status_file_ops, STREAM_OUTPUT, true },
	[K_WAIT] = { "wait", RO_MODE, &wait_file_ops, STREAM_OUTPUT, true },
	[K_AUTH] = KIND("auth", S_IFREG | 0600, &setting_file_ops),
	[K_ENV] = KIND("env", S_IFREG | 0644, &setting_file_ops),
	[K_WORKDIR] = KIND("workdir", S_IFREG | 0644, &setting_file_ops),
	[K_TIMEOUT] = KIND("timeout", S_IFREG | 0644, &setting_file_ops),
	[K_CTL] = KIND("ctl", S_IFREG | 0222, &ctl_file_ops),
	[K_INFO] = KIND("info", RO_MODE, &info_file_ops),
	[K_STDIN] = { "stdin", S_IFREG | 0222, &stdin_file_ops, STREAM_OUTPUT, true },
	[K_EVENTS] = KIND("events", RO_MODE, &events_file_ops),
	[K_STATS] = KIND("stats", RO_MODE, &stats_file_ops),
	[K_TTL] = KIND("ttl", S_IFREG | 0644, &setting_file_ops),
	[K_RUNS] = KIND("runs", DIR_MODE, NULL),
	[K_RUNS_LATEST] = KIND("latest", S_IFLNK | 0777, NULL),
	[K_RUN_DIR] = KIND(NULL, DIR_MODE, NULL),
	[K_RUN_CMD] = KIND("cmd", RO_MODE, &run_cmd_file_ops),
	[K_RUN_OUTPUT] = STREAM_KIND("output", STREAM_OUTPUT, false),
	[K_RUN_STDOUT] = STREAM_KIND("stdout", STREAM_STDOUT, false),
	[K_RUN_STDERR] = STREAM_KIND("stderr", STREAM_STDERR, false),
	[K_RUN_STATUS] = KIND("status", RO_MODE, &status_file_ops),
	[K_RUN_STARTED] = KIND("started", RO_MODE, &run_text_file_ops),
	[K_RUN_ENDED] = KIND("ended", RO_MODE, &run_text_file_ops),
	[K_RUN_STDIN] = KIND("stdin", S_IFREG | 0222, &stdin_file_ops),
	[K_RUN_WAIT] = { "wait", RO_MODE, &wait_file_ops, STREAM_OUTPUT, false },
};

static const struct kind_info other_kinds[] = {
	[K_ROOT - K_ROOT] = KIND(NULL, DIR_MODE, NULL),
	[K_META_DIR - K_ROOT] = KIND(".sandboxfs", DIR_MODE, NULL),
	[K_META_FILE - K_ROOT] = KIND(NULL, RO_MODE, &meta_file_ops),
	[K_TEMPLATES - K_ROOT] = KIND("templates", S_IFDIR | 0755, NULL),
	[K_TEMPLATE - K_ROOT] = KIND(NULL, S_IFREG | 0644, &template_file_ops),
	[K_META_EVENTS - K_ROOT] = KIND("events", RO_MODE, &events_file_ops),
	[K_META_SUMMARY - K_ROOT] = KIND("summary", RO_MODE, &summary_file_ops),
};

const struct kind_info *kind_info(enum kind k)
{
	static const struct kind_info none = { 0 };
	if (k > K_NONE && k < K_MAX)
		return &kinds[k];
	if (k >= K_ROOT && k <= K_META_SUMMARY)
		return &other_kinds[k - K_ROOT];
	return &none;
}

enum kind meta_kind(unsigned ino)
{
	switch (ino) {
	case INO_TEMPLATES:
		return K_TEMPLATES;
	case INO_META_EVENTS:
		return K_META_EVENTS;
	case INO_META_SUMMARY:
		return K_META_SUMMARY;
	default:
		return K_META_FILE;
	}
}

const char *const meta_names[] = {
	[INO_META_VERSION] = "version", [INO_META_BACKEND] = "backend",
	[INO_META_LOG] = "log",		[INO_TEMPLATES] = "templates",
	[INO_META_EVENTS] = "events",	[INO_META_SUMMARY] = "summary",
	[INO_META_POOL] = "pool",
};

bool kind_writable(enum kind k)
{
	return k == K_EXEC || k == K_AUTH || k == K_ENV || k == K_WORKDIR || k == K_TIMEOUT ||
	       k == K_CTL || k == K_TEMPLATE || k == K_STDIN || k == K_RUN_STDIN || k == K_TTL;
}

bool node_is_dir(const struct node *n)
{
	return S_ISDIR(kind_info(n->kind)->mode);
}

void node_release(struct node *n)
{
	if (n->sbx)
		sandbox_put(n->sbx);
	n->sbx = NULL;
}

static bool template_ino(fuse_ino_t ino)
{
	return ino >= TEMPLATE_INO_BASE && ino < (1ull << 32);
}

int node_resolve(fuse_ino_t ino, struct node *n)
{
	*n = (struct node){ .ino = ino };
	if (ino == INO_ROOT) {
		n->kind = K_ROOT;
		return 0;
	}
	if (ino == INO_META) {
		n->kind = K_META_DIR;
		return 0;
	}
	if ((ino >= INO_META_VERSION && ino <= INO_META_LOG) || ino == INO_META_POOL) {
		n->kind = K_META_FILE;
		return 0;
	}
	if (ino >= INO_TEMPLATES && ino <= INO_META_LAST) {
		n->kind = meta_kind(ino);
		return 0;
	}
	if (template_ino(ino)) {
		n->kind = K_TEMPLATE;
		return 0; /* templates.c knows whether it exists */
	}
	n->kind = ino_kind(ino);
	n->run = ino_run(ino);
	if (n->kind == K_NONE || ino_sbx(ino) == 0)
		return -ENOENT;
	if ((n->run == 0) != (n->kind <= K_RUNS_LATEST))
		return -ENOENT;
	n->sbx = model_find_id(ino_sbx(ino));
	if (!n->sbx)
		return -ENOENT;
	if (n->run) {
		struct run *r = sandbox_run(n->sbx, n->run);
		if (!r) {
			node_release(n);
			return -ENOENT;
		}
		run_put(r);
	}
	return 0;
}

struct run *node_run(const struct node *n)
{
	if (!n->sbx)
		return NULL;
	if (n->run)
		return sandbox_run(n->sbx, n->run);
	return kind_info(n->kind)->follows_latest ? sandbox_run(n->sbx, 0) : NULL;
}

static bool is_settings_kind(enum kind k)
{
	return k == K_AUTH || k == K_ENV || k == K_WORKDIR || k == K_TIMEOUT || k == K_TTL;
}

/* When the mount was made: the time of the files outside sandboxes. */
static struct timespec mounted_at;

void node_init(void)
{
	clock_gettime(CLOCK_REALTIME, &mounted_at);
}

/* Times: a sandbox's files its creation, settings their last write, run
 * files the run's start (mtime: the last output, or the end). */
void node_attr(const struct node *n, struct stat *st)
{
	const struct kind_info *ki = kind_info(n->kind);
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_nlink = S_ISDIR(ki->mode) ? 2 : 1;
	st->st_blksize = 4096;
	st->st_mode = ki->mode;
	st->st_atim = st->st_mtim = st->st_ctim = mounted_at;
	if (!n->sbx)
		return;
	struct sandbox_view sv;
	sandbox_view(n->sbx, &sv);
	st->st_mtim = st->st_ctim = st->st_atim = sv.created;
	if (is_settings_kind(n->kind))
		st->st_mtim = st->st_ctim = sv.settings_changed;
	struct run *r = node_run(n);
	if (r) {
		struct run_view v;
		run_view(r, &v);
		run_put(r);
		st->st_atim = st->st_ctim = v.started_at;
		st->st_mtim = v.ended		     ? v.ended_at
			      : v.last_output.tv_sec ? v.last_output
						     : v.started_at;
		/* The top-level streams are nonseekable, like a pipe: wc -c
		 * trusts a size it cannot seek within and would print 0, so
		 * they show none and are read to the end.  runs/N/ (and
		 * runs/latest/) show the bytes spooled so far. */
		if (ki->ops == &stream_file_ops && !ki->follows_latest)
			st->st_size = v.size[ki->stream];
	}
	if (n->kind == K_RUNS_LATEST)
		st->st_size = snprintf(NULL, 0, "%u", sv.nruns);
	st->st_blocks = (st->st_size + 511) / 512;
}
