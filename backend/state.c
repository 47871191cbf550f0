#include "state.h"

#include <dirent.h>
#include <stdbool.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>

static int lock_fd = -1;

int mkdir_p(const char *path, struct sbx_err *err)
{
	char buf[4096];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return sbx_err_set(err, ENAMETOOLONG, "path too long: %s", path);
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char saved = *p;
			*p = '\0';
			if (mkdir(buf, 0700) < 0 && errno != EEXIST)
				return sbx_err_set(err, errno, "mkdir %s: %s", buf,
						   strerror(errno));
			*p = saved;
			if (!saved)
				break;
		}
	}
	return 0;
}

static int rm_rf_at(int parent, const char *name)
{
	if (unlinkat(parent, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	struct dirent *de;
	int rc = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		int r = rm_rf_at(dirfd(d), de->d_name);
		if (r < 0)
			rc = r;
	}
	closedir(d);
	if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		rc = -errno;
	return rc;
}

int rm_rf(const char *path)
{
	return rm_rf_at(AT_FDCWD, path);
}

int pwrite_all(int fd, const void *data, size_t len, off_t off)
{
	const char *buf = data;
	while (len > 0) {
		ssize_t n = pwrite(fd, buf, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int pread_all(int fd, void *data, size_t len, off_t off)
{
	char *buf = data;
	while (len > 0) {
		ssize_t n = pread(fd, buf, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int path_join(char *buf, size_t size, const char *dir, const char *name)
{
	int n = snprintf(buf, size, "%s/%s", dir, name);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int open_in(const char *dir, const char *name, int flags, mode_t mode)
{
	cleanup_close int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	int fd = openat(dfd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode);
	return fd < 0 ? -errno : fd;
}

int write_file_in(const char *dir, const char *name, const void *data, size_t len,
		  struct sbx_err *err)
{
	char path[PATH_MAX];
	if (path_join(path, sizeof(path), dir, name) < 0)
		return sbx_err_set(err, ENAMETOOLONG, "path too long: %s/%s", dir, name);
	return write_file_atomic(path, data, len, err);
}

int read_file_in(const char *dir, const char *name, char **buf, size_t *len, size_t max)
{
	char path[PATH_MAX];
	if (path_join(path, sizeof(path), dir, name) < 0)
		return -ENAMETOOLONG;
	return read_file(path, buf, len, max);
}

int write_file_atomic(const char *path, const void *data, size_t len, struct sbx_err *err)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return sbx_err_set(err, ENAMETOOLONG, "path too long: %s", path);
	cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
				    0600);
	if (fd < 0)
		return sbx_err_set(err, errno, "create %s: %s", tmp, strerror(errno));
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			unlink(tmp);
			return sbx_err_set(err, e, "write %s: %s", tmp, strerror(e));
		}
		p += n;
		len -= (size_t)n;
	}
	if (rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		return sbx_err_set(err, e, "rename %s: %s", path, strerror(e));
	}
	return 0;
}

int read_file(const char *path, char **buf, size_t *len, size_t max)
{
	cleanup_close int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t cap = 256, n = 0;
	cleanup_free char *b = malloc(cap);
	if (!b)
		return -ENOMEM;
	for (;;) {
		if (n + 1 >= cap) {
			if (cap >= max)
				return -EFBIG;
			cap *= 2;
			char *nb = realloc(b, cap);
			if (!nb)
				return -ENOMEM;
			b = nb;
		}
		ssize_t r = read(fd, b + n, cap - n - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	b[n] = '\0';
	*buf = steal_pointer(&b);
	if (len)
		*len = n;
	return 0;
}

int state_open(const char *dir, char instance[17], struct sbx_err *err)
{
	char path[PATH_MAX];
	int rc = mkdir_p(dir, err);
	if (rc < 0)
		return sbx_err_wrap(err, "state directory");

	if (path_join(path, sizeof(path), dir, "lock") < 0)
		return sbx_err_set(err, ENAMETOOLONG, "state directory %s: path too long", dir);
	lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock_fd < 0)
		return sbx_err_set(err, errno, "open %s: %s", path, strerror(errno));
	if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0)
		return sbx_err_set(err, EBUSY, "state directory %s is in use by another sandboxfs",
				   dir);

	if (path_join(path, sizeof(path), dir, "instance") < 0)
		return sbx_err_set(err, ENAMETOOLONG, "state directory %s: path too long", dir);
	cleanup_free char *text = NULL;
	size_t len = 0;
	if (read_file(path, &text, &len, 4096) == 0 && len >= 16) {
		bool valid = true;
		for (int i = 0; i < 16; i++)
			if (!strchr("0123456789abcdef", text[i]) || !text[i])
				valid = false;
		if (valid) {
			memcpy(instance, text, 16);
			instance[16] = '\0';
			return 0;
		}
	}
	unsigned char rnd[8];
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		return sbx_err_set(err, EIO, "getrandom: %s", strerror(errno));
	for (int i = 0; i < 8; i++)
		snprintf(instance + 2 * i, 3, "%02x", rnd[i]);
	char line[18];
	snprintf(line, sizeof(line), "%s\n", instance);
	rc = write_file_atomic(path, line, 17, err);
	if (rc < 0)
		return sbx_err_wrap(err, "state directory");
	return 0;
}

void state_close(void)
{
	if (lock_fd >= 0)
		close(lock_fd);
	lock_fd = -1;
}
