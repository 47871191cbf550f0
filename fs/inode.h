/* Inode numbers are computed, never stored:
 *
 *   1                       the mount's root
 *   2..15                   .sandboxfs and its files
 *   2^24 + id               .sandboxfs/templates/NAME
 *   id << 32 | run << 8 | kind    a sandbox's files (id >= 1, never reused
 *                                 while the daemon lives, so a sandbox made
 *                                 again under an old name gets new inodes)
 *
 * Nothing needs forgetting, so FORGET is a no-op. */
#ifndef SBX_INODE_H
#define SBX_INODE_H

#include <stdint.h>
#include <sys/stat.h>

#define INO_ROOT 1
#define INO_META 2
#define INO_META_VERSION 3
#define INO_META_BACKEND 4
#define INO_META_LOG 5
#define INO_TEMPLATES 6
#define INO_META_EVENTS 7
#define INO_META_SUMMARY 8
#define INO_META_POOL 9
#define INO_META_LAST INO_META_POOL
/* .sandboxfs/templates/NAME: TEMPLATE_INO_BASE + the template's id */
#define TEMPLATE_INO_BASE (1u << 24)

enum kind {
	K_NONE = 0,
	/* a sandbox (run == 0) */
	K_DIR,
	K_EXEC,
	K_OUTPUT,
	K_STDOUT,
	K_STDERR,
	K_STATUS,
	K_WAIT,
	K_AUTH,
	K_ENV,
	K_WORKDIR,
	K_TIMEOUT,
	K_CTL,
	K_INFO,
	K_STDIN,
	K_EVENTS,
	K_STATS,
	K_TTL,
	K_RUNS,
	K_RUNS_LATEST, /* runs/latest: a symlink to the newest run's directory */
	/* runs/N (run >= 1) */
	K_RUN_DIR,
	K_RUN_CMD,
	K_RUN_OUTPUT,
	K_RUN_STDOUT,
	K_RUN_STDERR,
	K_RUN_STATUS,
	K_RUN_STARTED,
	K_RUN_ENDED,
	K_RUN_STDIN,
	K_RUN_WAIT,
	K_MAX,
	/* Not part of a sandbox inode number. */
	K_ROOT = 64,
	K_META_DIR,
	K_META_FILE, /* .sandboxfs/version, backend, log */
	K_TEMPLATES,
	K_TEMPLATE,	/* .sandboxfs/templates/NAME */
	K_META_EVENTS,	/* .sandboxfs/events */
	K_META_SUMMARY, /* .sandboxfs/summary */
};

#define K_SANDBOX_FIRST K_EXEC /* files of a sandbox directory: K_EXEC..K_RUNS */
#define K_SANDBOX_LAST K_RUNS
#define K_RUN_FIRST K_RUN_CMD /* files of runs/N: K_RUN_CMD..K_RUN_WAIT */
#define K_RUN_LAST K_RUN_WAIT

static inline uint64_t ino_make(uint64_t sbx, unsigned run, enum kind k)
{
	return sbx << 32 | (uint64_t)run << 8 | (uint64_t)k;
}
static inline uint64_t ino_sbx(uint64_t ino)
{
	return ino >> 32;
}
static inline unsigned ino_run(uint64_t ino)
{
	return (unsigned)((ino >> 8) & 0xffffff);
}
static inline enum kind ino_kind(uint64_t ino)
{
	unsigned k = ino & 0xff;
	return k < K_MAX ? (enum kind)k : K_NONE;
}

#endif
