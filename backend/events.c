/* The audit log (events.h).  events_lock guards the memory copy; it is a
 * leaf lock (nothing else is taken under it, no disk I/O under it), so
 * events_emit may be called under any other lock. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "events.h"
#include "lock.h"
#include "log.h"
#include "model.h"
#include "state.h"

static sbx_mutex events_lock = SBX_MUTEX_INIT;
static char *mem SBX_GUARDED_BY(events_lock); /* whole lines, oldest first */
static size_t mem_len SBX_GUARDED_BY(events_lock);
static uint64_t mem_base SBX_GUARDED_BY(events_lock); /* log offset of mem[0] */
static char *path, *path_old;			      /* set once at init */
static void (*listener)(void);

void events_set_listener(void (*fn)(void))
{
	listener = fn;
}

/* Appends whole lines to memory, dropping the oldest past the bound. */
static void mem_append_locked(const char *line, size_t len) SBX_REQUIRES(events_lock)
{
	if (mem_len + len > EVENTS_MEM_MAX) {
		size_t drop = mem_len + len - EVENTS_MEM_MAX;
		if (drop < mem_len / 4)
			drop = mem_len / 4; /* drop in large steps: memmove is O(n) */
		char *nl = drop < mem_len ? memchr(mem + drop, '\n', mem_len - drop) : NULL;
		drop = nl ? (size_t)(nl + 1 - mem) : mem_len;
		memmove(mem, mem + drop, mem_len - drop);
		mem_len -= drop;
		mem_base += drop;
	}
	if (!mem)
		mem = malloc(EVENTS_MEM_MAX + 8192);
	if (!mem || len > EVENTS_MEM_MAX)
		return;
	memcpy(mem + mem_len, line, len);
	mem_len += len;
}

static void load_file(const char *p)
{
	char *buf = NULL;
	size_t len = 0;
	if (read_file(p, &buf, &len, EVENTS_FILE_MAX * 2) < 0)
		return;
	/* Only whole lines: a crash may have cut the last one. */
	while (len && buf[len - 1] != '\n')
		len--;
	sbx_lock(&events_lock);
	mem_append_locked(buf, len);
	sbx_unlock(&events_lock);
	free(buf);
}

/* The writer thread: appends what memory holds beyond `written` to the
 * file (rotating it) and wakes the readers, so that events_emit never
 * blocks on the disk and may be called under the model's lock. */
static pthread_t writer;
static bool writer_started;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static uint64_t written SBX_GUARDED_BY(events_lock); /* log offset the file has */
static bool dirty SBX_GUARDED_BY(events_lock), quit SBX_GUARDED_BY(events_lock);
static int file_fd = -1; /* the writer thread's (and init's before it starts) */
static size_t file_len;

static void write_out(const char *buf, size_t len)
{
	if (file_fd >= 0 && file_len + len > EVENTS_FILE_MAX) {
		/* Rotate: the previous file is kept as events.jsonl.1. */
		if (rename(path, path_old) == 0) {
			int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC,
				      0600);
			if (fd >= 0) {
				close(file_fd);
				file_fd = fd;
				file_len = 0;
			}
		}
	}
	if (file_fd >= 0 && write(file_fd, buf, len) == (ssize_t)len)
		file_len += len;
}

static void *writer_main(void *arg) SBX_NO_TSA
{
	(void)arg;
	char *buf = NULL;
	sbx_lock(&events_lock);
	for (;;) {
		while (!dirty && !quit)
			pthread_cond_wait(&wake, &events_lock.m);
		if (!dirty && quit)
			break;
		dirty = false;
		if (written < mem_base)
			written = mem_base;
		size_t len = (size_t)(mem_base + mem_len - written);
		char *b = len ? realloc(buf, len) : buf;
		if (b) {
			buf = b;
			memcpy(buf, mem + (written - mem_base), len);
			written += len;
		} else {
			len = 0;
		}
		sbx_unlock(&events_lock);
		if (len)
			write_out(buf, len);
		if (listener)
			listener();
		sbx_lock(&events_lock);
	}
	sbx_unlock(&events_lock);
	free(buf);
	return NULL;
}

int events_init(const char *state_dir)
{
	if (asprintf(&path, "%s/events.jsonl", state_dir) < 0 ||
	    asprintf(&path_old, "%s/events.jsonl.1", state_dir) < 0)
		return -ENOMEM;
	load_file(path_old);
	load_file(path);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		log_warn("events: cannot open %s: %s; events are kept in memory only", path,
			 strerror(errno));
	off_t end = fd >= 0 ? lseek(fd, 0, SEEK_END) : 0;
	if (end > 0) {
		/* A cut last line is ended so that the next one stays whole. */
		char c = 0;
		int rfd = open(path, O_RDONLY | O_CLOEXEC);
		if (rfd >= 0 && pread(rfd, &c, 1, end - 1) == 1 && c != '\n' &&
		    write(fd, "\n", 1) == 1)
			end++;
		if (rfd >= 0)
			close(rfd);
	}
	file_fd = fd;
	file_len = end > 0 ? (size_t)end : 0;
	sbx_lock(&events_lock);
	written = mem_base + mem_len;
	quit = false;
	sbx_unlock(&events_lock);
	int rc = pthread_create(&writer, NULL, writer_main, NULL);
	if (rc)
		return -rc;
	writer_started = true;
	return 0;
}

void events_shutdown(void)
{
	if (writer_started) {
		sbx_lock(&events_lock);
		quit = true;
		pthread_cond_signal(&wake);
		sbx_unlock(&events_lock);
		pthread_join(writer, NULL);
		writer_started = false;
	}
	if (file_fd >= 0)
		close(file_fd);
	file_fd = -1;
	sbx_lock(&events_lock);
	free(mem);
	mem = NULL;
	mem_len = 0;
	sbx_unlock(&events_lock);
	free(path);
	free(path_old);
	path = path_old = NULL;
}

cJSON *events_new(const char *event, const char *sandbox)
{
	struct timespec now;
	char when[40];
	clock_gettime(CLOCK_REALTIME, &now);
	format_time(&now, when, sizeof(when));
	cJSON *ev = cJSON_CreateObject();
	if (!ev)
		return NULL;
	cJSON_AddStringToObject(ev, "time", when);
	cJSON_AddStringToObject(ev, "event", event);
	if (sandbox)
		cJSON_AddStringToObject(ev, "sandbox", sandbox);
	return ev;
}

void events_emit(cJSON *ev)
{
	if (!ev)
		return;
	char *text = cJSON_PrintUnformatted(ev);
	cJSON_Delete(ev);
	if (!text)
		return;
	size_t len = strlen(text);
	text[len] = '\n'; /* cJSON's NUL becomes the newline; the length says the rest */
	sbx_lock(&events_lock);
	mem_append_locked(text, len + 1);
	dirty = true;
	pthread_cond_signal(&wake);
	sbx_unlock(&events_lock);
	free(text);
}

void events_simple(const char *event, const char *sandbox, const char *key, const char *value)
{
	cJSON *ev = events_new(event, sandbox);
	if (ev && key && value)
		cJSON_AddStringToObject(ev, key, value);
	events_emit(ev);
}

/* Does the line at l (len bytes, with its newline) belong to sandbox?
 * Names never need escaping (parse.c), so the plain text is exact. */
static bool line_of(const char *l, size_t len, const char *needle, size_t nlen)
{
	return memmem(l, len, needle, nlen) != NULL;
}

static size_t read_locked(uint64_t *pos, const char *sandbox, char *buf, size_t size, bool probe)
	SBX_REQUIRES(events_lock)
{
	if (*pos < mem_base)
		*pos = mem_base; /* dropped from memory: go on with the oldest kept */
	uint64_t end = mem_base + mem_len;
	if (*pos >= end)
		return 0;
	const char *p = mem + (*pos - mem_base);
	size_t avail = (size_t)(end - *pos);
	if (!sandbox) {
		size_t n = avail < size ? avail : size;
		if (!probe) {
			memcpy(buf, p, n);
			*pos += n;
		}
		return n;
	}
	char needle[300];
	int nl = snprintf(needle, sizeof(needle), "\"sandbox\":\"%s\"", sandbox);
	if (nl < 0 || (size_t)nl >= sizeof(needle))
		return 0;
	size_t out = 0, off = 0;
	while (off < avail) {
		const char *e = memchr(p + off, '\n', avail - off);
		size_t llen = e ? (size_t)(e - (p + off)) + 1 : avail - off;
		if (line_of(p + off, llen, needle, (size_t)nl)) {
			if (probe)
				return 1;
			if (out + llen > size) {
				if (out == 0) { /* a line longer than the read: its start */
					memcpy(buf, p + off, size);
					out = size;
					off += llen;
				}
				break;
			}
			memcpy(buf + out, p + off, llen);
			out += llen;
		}
		off += llen;
	}
	if (!probe)
		*pos += off;
	return out;
}

size_t events_read(uint64_t *pos, const char *sandbox, char *buf, size_t size)
{
	sbx_lock(&events_lock);
	size_t n = read_locked(pos, sandbox, buf, size, false);
	sbx_unlock(&events_lock);
	return n;
}

bool events_ready(uint64_t pos, const char *sandbox)
{
	sbx_lock(&events_lock);
	size_t n = read_locked(&pos, sandbox, NULL, SIZE_MAX, true);
	sbx_unlock(&events_lock);
	return n > 0;
}
