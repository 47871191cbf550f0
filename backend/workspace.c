/* Workspaces: policy and proof (workspace.h, docs/security.md). */
#include "workspace.h"
#include "engine.h"
#include "log.h"
#include "state.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_mutex_t ws_lock = PTHREAD_MUTEX_INITIALIZER;
static char **roots; /* resolved; guarded by ws_lock */
static size_t nroots;
static char *guard_mount, *guard_state;
static char **guard_engine; /* engines' data roots */
static size_t nguard_engine;

/* Never a workspace, nor anything under or containing one of these: the
 * system, the engines' data and run directories (/var/lib, /run). */
static const char *const system_dirs[] = {
	"/bin",	    "/boot",	"/dev",	    "/etc",	  "/lib",	"/lib32",    "/lib64",
	"/libx32",  "/proc",	"/root",    "/run",	  "/sbin",	"/sys",	     "/usr",
	"/var/lib", "/var/run", "/var/log", "/var/cache", "/var/spool", "/var/mail", "/snap",
};

/* File systems that are not plain storage: kernel interfaces, and any FUSE
 * file system (another sandboxfs among them). */
static const char *const denied_types[] = {
	"proc",	    "sysfs",	  "devtmpfs",	"devpts",      "cgroup",   "cgroup2",
	"debugfs",  "tracefs",	  "securityfs", "bpf",	       "configfs", "pstore",
	"efivarfs", "mqueue",	  "hugetlbfs",	"binfmt_misc", "autofs",   "fusectl",
	"nsfs",	    "rpc_pipefs", "selinuxfs",	"fuse",	       "fuseblk",
};
static const unsigned long denied_magic[] = {
	0x9fa0 /* proc */,	   0x62656572 /* sysfs */,	0x27e0eb /* cgroup */,
	0x63677270 /* cgroup2 */,  0x1cd1 /* devpts */,		0x64626720 /* debugfs */,
	0x74726163 /* tracefs */,  0x73636673 /* securityfs */, 0xcafe4a11 /* bpf */,
	0x62656570 /* configfs */, 0x6165676c /* pstore */,	0xde5e81e4 /* efivarfs */,
	0x19800202 /* mqueue */,   0x958458f6 /* hugetlbfs */,	0x42494e4d /* binfmt_misc */,
	0x0187 /* autofs */,	   0x65735546 /* fuse */,	0x65735543 /* fusectl */,
	0x6e736673 /* nsfs */,	   0x67596969 /* rpc_pipefs */, 0xf97cff8c /* selinuxfs */,
};

int workspace_path_within(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	if (n == 1 && dir[0] == '/')
		return 1;
	return !strncmp(path, dir, n) && (path[n] == '/' || path[n] == '\0');
}

static void free_roots_locked(void)
{
	for (size_t i = 0; i < nroots; i++)
		free(roots[i]);
	free(roots);
	roots = NULL;
	nroots = 0;
}

int workspace_set_roots(const char *spec, struct sbx_err *err)
{
	if (!spec || !spec[0])
		spec = WORKSPACE_DEFAULT_ROOTS;
	cleanup_free char *copy = strdup(spec);
	size_t cap = 1;
	for (const char *p = spec; *p; p++)
		cap += *p == ':';
	char **v = calloc(cap, sizeof(*v));
	if (!copy || !v) {
		free(v);
		return sbx_err_set(err, ENOMEM, "workspace_roots: out of memory");
	}
	size_t n = 0;
	int rc = 0;
	char *save = NULL;
	for (char *tok = strtok_r(copy, ":", &save); tok && rc == 0;
	     tok = strtok_r(NULL, ":", &save)) {
		char real[PATH_MAX];
		if (tok[0] != '/')
			rc = sbx_err_set(err, EINVAL, "workspace_roots: %s is not an absolute path",
					 tok);
		else if (!strcmp(tok, "/"))
			rc = sbx_err_set(err, EINVAL, "workspace_roots: / would allow everything");
		else if (!(v[n++] = strdup(realpath(tok, real) ? real : tok)))
			rc = sbx_err_set(err, ENOMEM, "workspace_roots: out of memory");
	}
	if (rc < 0) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return rc;
	}
	pthread_mutex_lock(&ws_lock);
	free_roots_locked();
	roots = v;
	nroots = n;
	pthread_mutex_unlock(&ws_lock);
	return 0;
}

static char *real_or_copy(const char *p)
{
	char real[PATH_MAX];
	return p ? strdup(realpath(p, real) ? real : p) : NULL;
}

void workspace_set_guarded(const char *mountpoint, const char *state_dir)
{
	pthread_mutex_lock(&ws_lock);
	free(guard_mount);
	free(guard_state);
	guard_mount = real_or_copy(mountpoint);
	guard_state = real_or_copy(state_dir);
	pthread_mutex_unlock(&ws_lock);
}

int workspace_add_guarded(const char *dir)
{
	char *c = real_or_copy(dir);
	pthread_mutex_lock(&ws_lock);
	char **v = c ? realloc(guard_engine, (nguard_engine + 1) * sizeof(*v)) : NULL;
	if (v) {
		guard_engine = v;
		guard_engine[nguard_engine++] = c;
	}
	pthread_mutex_unlock(&ws_lock);
	if (!v)
		free(c);
	return v ? 0 : -ENOMEM;
}

void workspace_shutdown(void)
{
	pthread_mutex_lock(&ws_lock);
	for (size_t i = 0; i < nguard_engine; i++)
		free(guard_engine[i]);
	free(guard_engine);
	guard_engine = NULL;
	nguard_engine = 0;
	free_roots_locked();
	free(guard_mount);
	free(guard_state);
	guard_mount = guard_state = NULL;
	pthread_mutex_unlock(&ws_lock);
}

/* ---- file system types ---- */

static int type_denied(const char *type)
{
	if (!strncmp(type, "fuse.", 5))
		return 1;
	for (size_t i = 0; i < SBX_ARRAY_SIZE(denied_types); i++)
		if (!strcmp(type, denied_types[i]))
			return 1;
	return 0;
}

/* mountinfo escapes ' ', '\t', '\n' and '\\' as \ooo. */
static void unescape(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

/* One line of mountinfo: mount id, mount point and type (pointers into line). */
static int mountinfo_fields(char *line, unsigned long *id, char **point, char **type)
{
	char *save = NULL, *f[5] = { 0 };
	char *tok = strtok_r(line, " \n", &save);
	for (int i = 0; i < 5 && tok; i++, tok = strtok_r(NULL, " \n", &save))
		f[i] = tok;
	while (tok && strcmp(tok, "-") != 0)
		tok = strtok_r(NULL, " \n", &save);
	tok = tok ? strtok_r(NULL, " \n", &save) : NULL;
	if (!f[4] || !tok)
		return -1;
	*id = strtoul(f[0], NULL, 10);
	*point = f[4];
	unescape(*point);
	*type = tok;
	return 0;
}

/* The type of mount `mnt_id` into typebuf, and the first mount strictly
 * under `canon` of a denied type into badbuf ("" if none). */
static int scan_mounts(unsigned long mnt_id, const char *canon, char *typebuf, size_t typesz,
		       char *badbuf, size_t badsz, char *badtype, size_t badtypesz)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	char *line = NULL;
	size_t cap = 0;
	typebuf[0] = badbuf[0] = badtype[0] = '\0';
	while (getline(&line, &cap, f) > 0) {
		unsigned long id;
		char *point, *type;
		if (mountinfo_fields(line, &id, &point, &type) < 0)
			continue;
		if (id == mnt_id)
			snprintf(typebuf, typesz, "%s", type);
		if (!badbuf[0] && strcmp(point, canon) != 0 &&
		    workspace_path_within(point, canon) && type_denied(type)) {
			snprintf(badbuf, badsz, "%s", point);
			snprintf(badtype, badtypesz, "%s", type);
		}
	}
	free(line);
	fclose(f);
	return 0;
}

/* ---- the check ---- */

/* Opens canon from "/" one component at a time, following no symlink: the
 * descriptor is the directory the resolved path named at this moment. */
static int walk_nofollow(int start, const char *path, int *out)
{
	int fd = dup(start);
	if (fd < 0)
		return -errno;
	cleanup_free char *copy = strdup(path);
	if (!copy) {
		close(fd);
		return -ENOMEM;
	}
	char *save = NULL;
	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		int next = openat(fd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int e = errno;
		close(fd);
		if (next < 0)
			return -e;
		fd = next;
	}
	*out = fd;
	return 0;
}

/* The reasons in the order a reader expects them: where, then what. */
static int check_place(const char *path, const char *canon, struct sbx_err *err)
{
	pthread_mutex_lock(&ws_lock);
	bool unset = !roots;
	pthread_mutex_unlock(&ws_lock);
	int rc = unset ? workspace_set_roots(NULL, err) : 0;
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&ws_lock);
	bool under = false;
	for (size_t i = 0; i < nroots; i++)
		under |= workspace_path_within(canon, roots[i]);
	if (!under) {
		char list[512] = "";
		size_t off = 0;
		for (size_t i = 0; i < nroots && off < sizeof(list); i++)
			off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
						i ? ":" : "", roots[i]);
		rc = sbx_err_set(err, EINVAL,
				 "workspace %s: %s is not under the workspace roots %s", path,
				 canon, list);
	}
	const char *guarded[] = { guard_mount, guard_state };
	const char *what[] = { "mount", "state directory" };
	for (size_t i = 0; rc == 0 && i < SBX_ARRAY_SIZE(guarded); i++)
		if (guarded[i] && (workspace_path_within(canon, guarded[i]) ||
				   workspace_path_within(guarded[i], canon)))
			rc = sbx_err_set(err, EINVAL, "workspace %s: overlaps sandboxfs' own %s %s",
					 path, what[i], guarded[i]);
	for (size_t i = 0; rc == 0 && i < nguard_engine; i++)
		if (workspace_path_within(canon, guard_engine[i]) ||
		    workspace_path_within(guard_engine[i], canon))
			rc = sbx_err_set(err, EINVAL,
					 "workspace %s: overlaps the engine's data root %s", path,
					 guard_engine[i]);
	pthread_mutex_unlock(&ws_lock);
	if (rc < 0)
		return rc;
	/* The usual engine sockets, wherever their links point. */
	static const char *const sockets[] = { "/run/docker.sock", "/var/run/docker.sock",
					       "/run/containerd/containerd.sock",
					       "/run/podman/podman.sock" };
	for (size_t i = 0; i < SBX_ARRAY_SIZE(sockets); i++) {
		char sock[PATH_MAX];
		if (realpath(sockets[i], sock) && workspace_path_within(sock, canon))
			return sbx_err_set(err, EINVAL,
					   "workspace %s: would expose the engine socket %s", path,
					   sockets[i]);
	}
	for (size_t i = 0; i < SBX_ARRAY_SIZE(system_dirs); i++)
		if (workspace_path_within(canon, system_dirs[i]) ||
		    workspace_path_within(system_dirs[i], canon))
			return sbx_err_set(
				err, EINVAL, "workspace %s: %s %s the system directory %s", path,
				canon,
				workspace_path_within(canon, system_dirs[i]) ? "is in" : "contains",
				system_dirs[i]);
	return 0;
}

static int check_fs(const char *path, const char *canon, int fd, struct sbx_err *err)
{
	struct statfs sfs;
	if (fstatfs(fd, &sfs) < 0)
		return sbx_err_set(err, EINVAL, "workspace %s: statfs: %s", path, strerror(errno));
	for (size_t i = 0; i < SBX_ARRAY_SIZE(denied_magic); i++)
		if ((unsigned long)sfs.f_type == denied_magic[i])
			return sbx_err_set(err, EINVAL,
					   "workspace %s: %s is on a pseudo or FUSE file system "
					   "(type 0x%lx)",
					   path, canon, (unsigned long)sfs.f_type);
	struct statx stx;
	unsigned long mnt_id = 0;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) == 0 && (stx.stx_mask & STATX_MNT_ID))
		mnt_id = (unsigned long)stx.stx_mnt_id;
	char type[64], bad[PATH_MAX], badtype[64];
	int r = scan_mounts(mnt_id, canon, type, sizeof(type), bad, sizeof(bad), badtype,
			    sizeof(badtype));
	if (r < 0)
		return sbx_err_set(err, EINVAL, "workspace %s: cannot read the mount table: %s",
				   path, strerror(-r));
	if (type[0] && type_denied(type))
		return sbx_err_set(err, EINVAL, "workspace %s: %s is on a %s file system", path,
				   canon, type);
	if (bad[0])
		return sbx_err_set(err, EINVAL, "workspace %s: contains a %s mount at %s", path,
				   badtype, bad);
	return 0;
}

int workspace_open(const char *path, int *fd, char canon[PATH_MAX], struct sbx_err *err)
{
	*fd = -1;
	if (path[0] != '/')
		return sbx_err_set(err, EINVAL, "workspace %s: must be an absolute path", path);
	if (!realpath(path, canon))
		return sbx_err_set(err, EINVAL, "workspace %s: %s", path, strerror(errno));
	int r = check_place(path, canon, err);
	if (r < 0)
		return r;
	struct stat st;
	if (stat(canon, &st) == 0 && !S_ISDIR(st.st_mode))
		return sbx_err_set(err, EINVAL, "workspace %s: not a directory", path);
	int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return sbx_err_set(err, EINVAL, "workspace %s: /: %s", path, strerror(errno));
	int d = -1;
	r = walk_nofollow(root, canon, &d);
	close(root);
	if (r < 0)
		return sbx_err_set(err, EINVAL,
				   "workspace %s: %s changed while it was checked (%s)", path,
				   canon, strerror(-r));
	r = check_fs(path, canon, d, err);
	if (r < 0) {
		close(d);
		return r;
	}
	*fd = d;
	return 0;
}

int workspace_check(const char *path, struct sbx_err *err)
{
	int fd;
	char canon[PATH_MAX];
	int r = workspace_open(path, &fd, canon, err);
	if (r == 0)
		close(fd);
	return r;
}

/* ---- the proof ---- */

/* Is `pid` the init of container `id` (the engine is local)? */
static int pid_is_container(pid_t pid, const char *id)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%ld/cgroup", (long)pid);
	cleanup_free char *text = NULL;
	size_t len;
	if (read_file(p, &text, &len, 1 << 16) < 0)
		return 0;
	return strstr(text, id) != NULL;
}

int workspace_verify(pid_t pid, const char *container_id, const char *target, int fd,
		     struct sbx_err *err)
{
	if (pid <= 0)
		return sbx_err_set(err, EINVAL,
				   "workspace %s: cannot verify the mount: the "
				   "container is not running",
				   target);
	char p[64];
	snprintf(p, sizeof(p), "/proc/%ld/root", (long)pid);
	cleanup_close int root = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
	/* Checked after the open: the root is that of the container's init. */
	if (root < 0 || !pid_is_container(pid, container_id))
		return sbx_err_set(err, EINVAL,
				   "workspace %s: cannot verify the mount: the "
				   "engine is not local (workspaces need a local engine)",
				   target);
	/* Resolved as the container would: symlinks of the image stay in it. */
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	cleanup_close int in = (int)syscall(SYS_openat2, root, target, &how, sizeof(how));
	if (in < 0)
		return sbx_err_set(err, EINVAL, "workspace %s: not found in the container: %s",
				   target, strerror(errno));
	struct stat a, b;
	if (fstat(in, &a) < 0 || fstat(fd, &b) < 0)
		return sbx_err_set(err, EINVAL, "workspace %s: stat: %s", target, strerror(errno));
	if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		return sbx_err_set(err, EINVAL,
				   "workspace %s: the engine mounted another directory "
				   "than the one checked (the path changed meanwhile)",
				   target);
	return 0;
}

/* ---- starting again ---- */

int workspace_start_container(const struct engine *e, const char *container, struct sbx_err *err)
{
	struct engine_bind *b = NULL;
	size_t n = 0;
	int rc = engine_container_binds(e, container, &b, &n, err);
	int *fds = rc == 0 ? calloc(n ? n : 1, sizeof(int)) : NULL;
	if (rc == 0 && !fds)
		rc = sbx_err_set(err, ENOMEM, "start: out of memory");
	for (size_t i = 0; fds && i < n; i++)
		fds[i] = -1;
	/* The source docker keeps is the resolved path that was checked: it
	 * must still resolve to itself and pass the check. */
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char canon[PATH_MAX];
		rc = workspace_open(b[i].source, &fds[i], canon, err);
		if (rc == 0 && strcmp(canon, b[i].source) != 0)
			rc = sbx_err_set(err, EINVAL, "workspace %s: now resolves to %s",
					 b[i].source, canon);
	}
	if (rc == 0)
		rc = engine_start(e, container, err);
	if (rc == 0 && n) {
		long pid = 0;
		char id[65];
		rc = engine_container_pid(e, container, &pid, id, err);
		for (size_t i = 0; rc == 0 && i < n; i++)
			rc = workspace_verify((pid_t)pid, id, b[i].target, fds[i], err);
		if (rc < 0) {
			struct sbx_err ign = { 0 };
			log_warn("container %.12s stopped again: %s", container, err->msg);
			if (engine_stop(e, container, &ign) < 0)
				log_warn("stopping container %.12s: %s", container, ign.msg);
		}
	}
	for (size_t i = 0; fds && i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
	engine_binds_free(b, n);
	return rc;
}
