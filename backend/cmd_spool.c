/* Commands written to exec, in memory while small, then in an O_TMPFILE
 * file of the state directory (opened with openat, never linked, so it
 * disappears with its last fd). */
#include "cmd_spool.h"
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Atomic size_t mem_total;
static char *spool_dir;

void cmd_spool_set_dir(const char *dir)
{
	free(spool_dir);
	spool_dir = dir ? strdup(dir) : NULL;
}

void cmd_spool_init(struct cmd_spool *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

size_t cmd_spool_mem_total(void)
{
	return atomic_load(&mem_total);
}

static void drop_mem(struct cmd_spool *c)
{
	if (!c->mem)
		return;
	explicit_bzero(c->mem, c->len);
	free(c->mem);
	atomic_fetch_sub(&mem_total, c->cap);
	c->mem = NULL;
	c->cap = 0;
}

void cmd_spool_free(struct cmd_spool *c)
{
	drop_mem(c);
	if (c->fd >= 0)
		close(c->fd);
	cmd_spool_init(c);
}

/* An unlinked file in the spool directory. */
static int open_spool_file(struct sbx_err *err)
{
	const char *dir = spool_dir ? spool_dir : "/tmp";
	int dfd = open(dir, O_DIRECTORY | O_PATH | O_CLOEXEC);
	if (dfd < 0)
		return sbx_err_set(err, errno, "spooling the command in %s: %s", dir,
				   strerror(errno));
	int fd = openat(dfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
		/* No O_TMPFILE on this file system: create and unlink at once. */
		char name[64];
		snprintf(name, sizeof(name), ".cmd-%d-%p", (int)getpid(), (void *)&name);
		fd = openat(dfd, name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd >= 0)
			unlinkat(dfd, name, 0);
	}
	int e = errno;
	close(dfd);
	if (fd < 0)
		return sbx_err_set(err, e, "spooling the command in %s: %s", dir, strerror(e));
	return fd;
}

int cmd_spool_append(struct cmd_spool *c, const char *buf, size_t len, struct sbx_err *err)
{
	if (!len)
		return 0;
	if (c->fd < 0) {
		size_t need = c->len + len;
		if (need <= c->cap) {
			memcpy(c->mem + c->len, buf, len);
			c->len = need;
			return 0;
		}
		size_t cap = c->cap ? c->cap : 4096;
		while (cap < need)
			cap *= 2;
		size_t grow = cap - c->cap;
		if (cap <= CMD_SPOOL_MEM_MAX &&
		    atomic_fetch_add(&mem_total, grow) + grow <= CMD_SPOOL_MEM_TOTAL) {
			char *b = malloc(cap);
			if (!b) {
				atomic_fetch_sub(&mem_total, grow);
				return sbx_err_set(err, ENOMEM, "write exec: out of memory");
			}
			/* Not realloc: freed memory keeps no copy of the command. */
			if (c->mem)
				memcpy(b, c->mem, c->len);
			memcpy(b + c->len, buf, len);
			if (c->mem) {
				explicit_bzero(c->mem, c->len);
				free(c->mem);
			}
			c->mem = b;
			c->cap = cap;
			c->len = need;
			return 0;
		}
		if (cap <= CMD_SPOOL_MEM_MAX)
			atomic_fetch_sub(&mem_total, grow);
		/* Too large for memory: everything so far moves to a file. */
		int fd = open_spool_file(err);
		if (fd < 0)
			return fd;
		int rc = c->len ? pwrite_all(fd, c->mem, c->len, 0) : 0;
		if (rc < 0) {
			close(fd);
			return sbx_err_set(err, -rc, "write exec: spooling the command: %s",
					   strerror(-rc));
		}
		c->fd = fd;
		drop_mem(c);
	}
	int rc = pwrite_all(c->fd, buf, len, (off_t)c->len);
	if (rc < 0) {
		/* Whatever part landed is past c->len: it is never read. */
		return sbx_err_set(err, -rc, "write exec: spooling the command: %s", strerror(-rc));
	}
	c->len += len;
	return 0;
}

int cmd_spool_read(const struct cmd_spool *c, size_t off, char *buf, size_t len)
{
	if (off + len > c->len)
		return -EINVAL;
	if (c->fd < 0) {
		memcpy(buf, c->mem + off, len);
		return 0;
	}
	return pread_all(c->fd, buf, len, (off_t)off);
}
