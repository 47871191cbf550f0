"""Helpers for the sandboxfs integration tests (standard library only).

The fixtures in conftest.py build on these; tests import the helpers with
`from sbxlib import ...`. Everything that can block on the mount or on the
engine is bounded in time: file reads that may wait go through a `cat`
child killed after a timeout, engine calls through `docker` with a timeout,
and a test that still hangs has its daemon killed by the watchdog in
conftest.py, which fails every request blocked on its FUSE connection.
"""

import errno
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# SANDBOXFS_TEST_ENGINE=podman runs the suites against podman: its CLI, the
# base image loaded as localhost/sandboxfs/base, and a test-owned
# containers.conf (conftest.py; docs/templates.md, podman).
ENGINE = os.environ.get("SANDBOXFS_TEST_ENGINE", "docker")
PODMAN = ENGINE == "podman"
IMAGE = os.environ.get("SANDBOXFS_TEST_IMAGE",
                       "localhost/sandboxfs/base" if PODMAN else "sandboxfs/base")
DOCKER = (os.environ.get("SANDBOXFS_TEST_DOCKER") or shutil.which(ENGINE) or ENGINE)
PODMAN_CONF = '[containers]\ndefault_ulimits = ["nofile=1024:20000", "nproc=4096:4096"]\n'
SANITIZED = os.environ.get("SANDBOXFS_SANITIZE") == "1"

# The files of a sandbox directory (docs/interface.md, "The tree").
CONTROL_FILES = {
    "exec", "output", "stdout", "stderr", "status", "wait", "auth", "env",
    "workdir", "timeout", "ctl", "info", "stdin", "events", "stats", "ttl", "runs",
}
RUN_FILES = {"cmd", "output", "stdout", "stderr", "status", "started", "ended", "stdin", "wait"}

RFC3339_MS = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\n$")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [a-z]+: .+$")


class TimeBoundExceeded(Exception):
    """Raised in the main thread when a test exceeds its time bound."""


class MountError(Exception):
    pass


# Every mount started in this process (the watchdog aborts them) and every
# instance id seen (the session finalizer looks for their containers).
ACTIVE_MOUNTS = set()
ALL_INSTANCES = set()
_lock = threading.Lock()
_counter = itertools.count(1)


def unique_name(prefix="s"):
    """A sandbox name unique in this process and among parallel processes."""
    return f"{prefix}{os.getpid()}-{next(_counter)}"


# ------------------------------------------------------------------ files

def read(path):
    """All bytes of a file, read until end-of-file (the files use direct I/O
    and report size 0, so the size is never trusted)."""
    chunks = []
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


def write(path, data, mode="w", chunk=None):
    """Write like a shell redirection: mode 'w' is `>` (O_CREAT|O_TRUNC),
    'a' is `>>` (O_CREAT|O_APPEND). `chunk` splits the data into writes of
    that size (shells write in 4 KiB pieces). Returns None; an error of
    open, any write or close is raised as OSError (check .errno)."""
    if isinstance(data, str):
        data = data.encode()
    flags = {
        "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    }[mode]
    fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        step = chunk or max(len(data), 1)
        while len(view):
            n = os.write(fd, view[:step])
            view = view[n:]
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise
    os.close(fd)


def fill(path, chunk=1 << 16):
    """Write zeros to path until its file system is full."""
    buf = b"\0" * chunk
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                os.write(fd, buf)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(buf) == 1:
                    break
                buf = buf[:len(buf) // 2]
    finally:
        os.close(fd)


def errno_of(fn, *args, **kwargs):
    """Call fn; return the errno of the OSError it raised, or None."""
    try:
        fn(*args, **kwargs)
    except OSError as e:
        return e.errno
    return None


def errname(n):
    return errno.errorcode.get(n, str(n)) if n is not None else "no error"


def wait_for(predicate, timeout=5.0, interval=0.05, what=None):
    """Poll predicate until it returns a true value (returned). OSErrors
    raised by the predicate count as false. AssertionError on time-out."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = predicate()
            if v:
                return v
            last = v
        except OSError as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or predicate}; last: {last!r}")
        time.sleep(interval)


def cat(path, timeout=30, check=True):
    """Read a file through `cat` in a child killed after `timeout` seconds:
    the way to read files that may block (output, wait). Returns the bytes;
    with check, a failing cat raises AssertionError."""
    p = subprocess.run(["timeout", "-s", "KILL", str(timeout), "cat", "--", path],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if check and p.returncode != 0:
        why = "killed after the time-out" if p.returncode in (137, -9) else f"exit {p.returncode}"
        raise AssertionError(f"cat {path}: {why}: {p.stderr.decode(errors='replace').strip()}"
                             f" (read so far: {p.stdout[:200]!r})")
    return p.stdout


def bounded_call(fn, timeout):
    """Run fn in a thread; return (done, result_or_exception)."""
    box = {}

    def target():
        try:
            box["r"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            box["e"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return False, None
    return True, box.get("e", box.get("r"))


def unescape_mount_field(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def fuse_mounted(path):
    """Is path a FUSE mount point according to /proc/mounts?"""
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and unescape_mount_field(fields[1]) == path \
                    and fields[2].startswith("fuse"):
                return True
    return False


def mounts_under(prefix):
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 2:
                p = unescape_mount_field(fields[1])
                if p.startswith(prefix.rstrip("/") + "/"):
                    out.append(p)
    return out


def proc_cmdlines():
    """(pid, cmdline bytes) of every process on the host."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    out.append((int(d), f.read()))
            except OSError:
                pass
    return out


def files_under(root):
    """Paths of the regular files under root."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            p = os.path.join(dirpath, fn)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    return out


def grep_tree(root, needle):
    """Files under root whose bytes contain needle."""
    hits = []
    for p in files_under(root):
        try:
            with open(p, "rb") as f:
                if needle in f.read():
                    hits.append(p)
        except OSError:
            pass
    return hits


# ------------------------------------------------------------------ engine

def docker(*args, timeout=60, check=True, input=None):
    """Run the docker CLI (bytes in, bytes out), bounded."""
    try:
        p = subprocess.run([DOCKER, *args], input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"docker {' '.join(args)}: no answer within {timeout}s")
    if check and p.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {p.returncode}: "
                             f"{p.stderr.decode(errors='replace').strip()}")
    return p


def inspect(container):
    """`docker inspect` of one container as a dict, or None if it does not exist."""
    p = docker("inspect", "--type", "container", container, check=False)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout)[0]


def inspect_raw(container):
    return docker("inspect", "--type", "container", container, check=False).stdout


def containers(label_filter):
    """Ids of all containers (running or not) matching a label filter."""
    p = docker("ps", "-aq", "--no-trunc", "--filter", f"label={label_filter}")
    return p.stdout.decode().split()


def ps(container):
    """[(pid, args)] of the processes inside a container (busybox ps)."""
    p = docker("exec", container, "ps", "-o", "pid,args")
    out = []
    for line in p.stdout.decode(errors="replace").splitlines()[1:]:
        line = line.strip()
        if not line:
            continue
        pid, _, args = line.partition(" ")
        out.append((int(pid), args.strip()))
    return out


def run_processes(container, baseline):
    """Processes inside the container that are neither in `baseline` (a set of
    pids from before the run), nor the `ps` that lists them, nor the
    sandbox's agent (which may have started after the baseline)."""
    return [(pid, args) for pid, args in ps(container)
            if pid not in baseline and not args.startswith("ps -o pid,args")
            and not args.startswith("/.sandboxfs/agent ")]


def engine_version():
    return docker("version", "--format", "{{.Server.Version}}").stdout.decode().strip()


# ------------------------------------------------------------------ processes

class Reader:
    """`cat PATH` in a child, its stdout collected by a thread as it arrives."""

    def __init__(self, path, args=None):
        self.path = path
        self.proc = subprocess.Popen(args or ["cat", "--", path], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = bytearray()
        self.eof = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self):
        fd = self.proc.stdout.fileno()
        while True:
            try:
                b = os.read(fd, 65536)
            except OSError:
                b = b""
            with self.cond:
                if not b:
                    self.eof = True
                    self.cond.notify_all()
                    return
                self.buf += b
                self.cond.notify_all()

    def data(self):
        with self.cond:
            return bytes(self.buf)

    def wait_data(self, pred, timeout):
        """Wait until pred(bytes so far) is true; returns the bytes."""
        if isinstance(pred, bytes):
            want = pred
            pred = lambda b: want in b  # noqa: E731
        with self.cond:
            ok = self.cond.wait_for(lambda: pred(bytes(self.buf)) or self.eof, timeout)
            got = bytes(self.buf)
        if not ok or not pred(got):
            raise AssertionError(f"reader of {self.path}: condition not met within {timeout}s"
                                 f" (eof={self.eof}, exit={self.proc.poll()}); got {got[:300]!r}")
        return got

    def wait_exit(self, timeout):
        """Wait for the reader to exit; returns its exit status."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"reader of {self.path} still running after {timeout}s; "
                                 f"got {self.data()[:300]!r}")
        self.thread.join(5)
        return rc

    def stderr(self):
        if self.proc.poll() is None:
            return b""
        return self.proc.stderr.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.thread.join(2)
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


# ------------------------------------------------------------------ mounts

class Sandbox:
    """One sandbox directory of a mount."""

    def __init__(self, mount, name):
        self.mount = mount
        self.name = name
        self.path = os.path.join(mount.path, name)

    def __repr__(self):
        return f"<Sandbox {self.name} of {self.mount.path}>"

    def p(self, *parts):
        return os.path.join(self.path, *parts)

    @property
    def container(self):
        return self.mount.container(self.name)

    def read(self, *parts):
        return read(self.p(*parts))

    def write(self, fname, data, mode="w", chunk=None):
        return write(self.p(fname), data, mode, chunk)

    def exec(self, cmd, chunk=4096):
        """`printf %s CMD > exec`, written in 4 KiB pieces like a shell."""
        write(self.p("exec"), cmd, "w", chunk)

    def exec_n(self, cmd):
        """Start a run through an O_RDWR exec handle; returns its number."""
        if isinstance(cmd, str):
            cmd = cmd.encode()
        fd = os.open(self.p("exec"), os.O_RDWR)
        try:
            view = memoryview(cmd)
            while len(view):
                view = view[os.write(fd, view[:4096]):]
            got = os.read(fd, 64)
        finally:
            os.close(fd)
        assert re.fullmatch(rb"[1-9][0-9]*\n", got), f"exec read-back gave {got!r}"
        return int(got)

    def output(self, timeout=60):
        """`cat output`: blocks until the latest run ends."""
        return cat(self.p("output"), timeout)

    def status(self):
        return read(self.p("status"))

    def wait(self, timeout=60):
        return cat(self.p("wait"), timeout)

    def run(self, cmd, timeout=60):
        """exec CMD, then `cat output` (until the run ends) and `cat status`."""
        self.exec(cmd)
        out = self.output(timeout)
        return out, self.status()

    def info(self):
        return json.loads(read(self.p("info")))

    def settle(self, timeout=30):
        """Waits until the agent's start is over (connected, or fallen back
        to docker exec): a container frozen by an outside `docker pause`
        while a docker exec enters it hangs the engine on that container
        (runc's init frozen inside)."""
        wait_for(lambda: "is starting" not in self.info().get("transport_reason", ""),
                 timeout, what="the agent's start to settle")

    def inspect(self):
        return inspect(self.container)

    def ps(self):
        return ps(self.container)

    def pids(self):
        return {pid for pid, _ in self.ps()}


class Mount:
    """A sandboxfs daemon in the foreground on a fresh mount point."""

    def __init__(self, binary, base, extra_args=(), env=None, image=IMAGE, state=None,
                 mountpoint=None):
        self.dir = os.path.realpath(tempfile.mkdtemp(prefix="m", dir=base))
        # mountpoint: an existing directory (e.g. the stale mount of a killed
        # daemon) instead of a fresh one.
        self.reuse_path = mountpoint is not None
        self.path = mountpoint or os.path.join(self.dir, "mnt")
        self.state = state or os.path.join(self.dir, "state")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.image = image
        engine = f",docker={DOCKER}" if PODMAN else ""
        self.cmd = [binary, "-f", "-o", f"state={self.state},image={image}{engine}",
                    *extra_args, self.path]
        self.env = env
        self.proc = None
        self.instance = None
        self.conn = None
        self.sandboxes = []
        self.readers = []
        self.children = []
        self.aborted = False
        self.expect_exit = False
        self.stopped = False
        self.exit_problem = None

    def __repr__(self):
        return f"<Mount {self.path}>"

    # -- life cycle

    def start(self, wait=True, timeout=10):
        if not self.reuse_path:
            os.makedirs(self.path)
        os.makedirs(self.state, exist_ok=True)
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, env=self.env, cwd="/",
                                         start_new_session=True)
        with _lock:
            ACTIVE_MOUNTS.add(self)
        if wait:
            self.wait_mounted(timeout)
        return self

    def wait_mounted(self, timeout=10):
        deadline = time.monotonic() + timeout
        version = os.path.join(self.path, ".sandboxfs", "version")
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise MountError(f"sandboxfs exited with status {rc} before the mount came up"
                                 f" ({' '.join(self.cmd)}); its log:\n{self.log_tail()}")
            left = deadline - time.monotonic()
            if fuse_mounted(self.path):
                v = cat(version, timeout=max(1, int(left) + 1), check=False)
                if v:
                    break
            if left <= 0:
                raise MountError(f"the mount did not come up within {timeout}s"
                                 f" ({' '.join(self.cmd)}); log:\n{self.log_tail()}")
            time.sleep(0.05)
        self.conn = os.minor(os.stat(self.path).st_dev)
        inst = os.path.join(self.state, "instance")
        try:
            wait_for(lambda: os.path.exists(inst), 2, what=inst)
            with open(inst) as f:
                self.instance = f.read().strip()
        except (AssertionError, OSError):
            self.instance = None
        if self.instance:
            record_instance(self.instance)

    def wait_exit(self, timeout=10):
        """For a daemon expected to exit on its own: its status, or None."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def abort(self):
        """Kill the daemon and abort its FUSE connection: every request blocked
        on it fails at once (used when a test overruns its bound)."""
        self.aborted = True
        if self.conn is not None:
            try:
                with open(f"/sys/fs/fuse/connections/{self.conn}/abort", "w") as f:
                    f.write("1")
            except OSError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def is_mounted(self):
        return fuse_mounted(self.path)

    def unmount(self, timeout=15):
        """fusermount3 -u (umount -l as a fallback); True if it is gone."""
        if not self.is_mounted():
            return True
        subprocess.run(["fusermount3", "-u", self.path], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=timeout, check=False)
        if self.is_mounted():
            subprocess.run(["umount", "-l", self.path], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=timeout, check=False)
        return not self.is_mounted()

    def stop(self):
        """Unmount and wait for the daemon to exit by itself (it should, with
        status 0). Returns a list of problems."""
        problems = []
        if self.proc is None or self.stopped:
            return problems
        self.stopped = True
        clean = self.unmount()
        if not clean:
            problems.append(f"{self.path}: could not be unmounted")
            self.abort()
            self.unmount()
        rc = None
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            if not self.aborted and not self.expect_exit:
                problems.append("sandboxfs did not exit within 10 s of its unmount")
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        else:
            if rc != 0 and not self.aborted and not self.expect_exit:
                problems.append(f"sandboxfs exited with status {rc} after its unmount")
        with _lock:
            ACTIVE_MOUNTS.discard(self)
        log = self.log()
        lines = log.splitlines()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "WARNING: ThreadSanitizer"):
            at = [i for i, line in enumerate(lines) if marker in line]
            if at:
                report = "\n      ".join(lines[max(at[0] - 2, 0):at[0] + 30])
                problems.append(f"sanitizer report in the daemon's log:\n      {report}")
                break
        return problems

    def teardown(self):
        """Remove everything the mount made, even after a failure. Returns a
        list of problems to report (leftovers count as failures)."""
        problems = []
        for r in self.readers:
            r.kill()
        for c in self.children:
            if c.poll() is None:
                c.kill()
            try:
                c.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is None:
            return problems
        if not self.stopped and self.proc.poll() is None and self.is_mounted():
            done, names = bounded_call(lambda: os.listdir(self.path), 15)
            names = set(names) if done and isinstance(names, list) else set()
            names |= set(self.sandboxes)
            names.discard(".sandboxfs")
            for n in sorted(names):
                p = os.path.join(self.path, n)
                done, _ = bounded_call(lambda p=p: os.rmdir(p), 60)
                if not done:
                    problems.append(f"rmdir {p} did not return within 60 s")
                    self.abort()
                    break
        problems += self.stop()
        # Containers of this instance still on the engine were not removed by
        # the rmdirs above: a leak.
        ids = set()
        try:
            if self.instance:
                ids |= set(containers(f"sandboxfs.instance={self.instance}"))
            ids |= set(containers(f"sandboxfs.mountpoint={self.path}"))
        except AssertionError as e:
            problems.append(f"cannot list containers: {e}")
        if ids:
            if not self.aborted:
                names = docker("ps", "-a", "--no-trunc", "--format", "{{.Names}} {{.Status}}",
                               *[x for i in ids for x in ("--filter", f"id={i}")],
                               check=False).stdout.decode().strip()
                problems.append(f"containers left on the engine after rmdir of every sandbox: {names}")
            docker("rm", "-f", *sorted(ids), check=False, timeout=120)
        return problems

    # -- helpers

    def p(self, *parts):
        return os.path.join(self.path, *parts)

    def log(self):
        """The daemon's stderr so far, as text."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_bytes(self):
        with open(self.log_path, "rb") as f:
            return f.read()

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    def container(self, name):
        return f"sandboxfs-{self.instance}-{name}"

    def sandbox(self, name=None):
        """mkdir a sandbox (registered for clean-up) and return it."""
        name = name or unique_name()
        self.sandboxes.append(name)
        os.mkdir(os.path.join(self.path, name))
        return Sandbox(self, name)

    def names(self):
        """The sandboxes listed at the root (without .sandboxfs)."""
        return set(os.listdir(self.path)) - {".sandboxfs"}

    def containers(self):
        return containers(f"sandboxfs.instance={self.instance}")

    def reader(self, path):
        r = Reader(path)
        self.readers.append(r)
        return r

    def spawn(self, args, **kwargs):
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        c = subprocess.Popen(args, **kwargs)
        self.children.append(c)
        return c

    def sbx_log(self):
        """The mount's .sandboxfs/log."""
        return read(self.p(".sandboxfs", "log"))


def record_instance(instance):
    with _lock:
        ALL_INSTANCES.add(instance)
    path = os.environ.get("SANDBOXFS_TEST_INSTANCES")
    if path:
        with open(path, "a") as f:
            f.write(instance + "\n")


def abort_all_mounts():
    with _lock:
        mounts = list(ACTIVE_MOUNTS)
    for m in mounts:
        m.abort()


# ------------------------------------------------------------------ daemon resources

def proc_fds(pid):
    """How many file descriptors the process holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss_kb(pid, field="VmRSS"):
    """VmRSS (or VmHWM, ...) of the process in kB."""
    with open(f"/proc/{pid}/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) if m else 0


def proc_children_args(pid):
    """[(pid, argv)] of the direct children of a process."""
    out = []
    for cpid, cmdline in proc_cmdlines():
        try:
            with open(f"/proc/{cpid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append((cpid, [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]))
    return out


# ------------------------------------------------------------------ a second dockerd

class Dockerd:
    """A dockerd of the test's own, isolated from the host's engine: its own
    socket, data root, exec root and network namespace (`unshare --net`: a
    dockerd with --bridge none would otherwise delete the host's docker0).
    It can be stopped and started again on the same directories. teardown()
    removes everything, whatever state it is in."""

    def __init__(self):
        # Short: the socket path must fit in sun_path.
        self.dir = os.path.realpath(tempfile.mkdtemp(prefix="sbx-f-", dir="/tmp"))
        self.host = f"unix://{self.dir}/docker.sock"
        self.proc = None
        self.log_path = os.path.join(self.dir, "dockerd.log")
        with open(os.path.join(self.dir, "daemon.json"), "w") as f:
            f.write("{}\n")

    def __repr__(self):
        return f"<Dockerd {self.host}>"

    def docker(self, *args, timeout=60, check=True, input=None):
        return docker("-H", self.host, *args, timeout=timeout, check=check, input=input)

    def start(self, timeout=60):
        self.launch()
        return self.wait_answer(timeout)

    def launch(self):
        """Start dockerd without waiting for it to answer."""
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                ["unshare", "--net", "dockerd", "--config-file", f"{self.dir}/daemon.json",
                 "--host", self.host, "--data-root", f"{self.dir}/data",
                 "--exec-root", f"{self.dir}/exec", "--pidfile", f"{self.dir}/docker.pid",
                 "--bridge", "none", "--iptables=false", "--ip6tables=false",
                 "--ip-masq=false"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            logf.close()

    def wait_answer(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"dockerd exited with {self.proc.returncode}: {self.tail()}")
            try:
                if self.docker("info", check=False, timeout=10).returncode == 0:
                    return self
            except AssertionError:
                pass  # no answer in 10 s: a swarm member still reaching its manager
            if time.monotonic() > deadline:
                raise AssertionError(f"dockerd did not answer within {timeout}s: {self.tail()}")
            time.sleep(0.2)

    def load_image(self, image=IMAGE):
        save = subprocess.Popen([DOCKER, "save", image], stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            load = subprocess.run([DOCKER, "-H", self.host, "load"], stdin=save.stdout,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        finally:
            save.stdout.close()
            save.wait(60)
        if save.returncode != 0 or load.returncode != 0:
            raise AssertionError(f"loading {image}: {load.stderr.decode(errors='replace')}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=60):
        """SIGTERM and wait for the exit (its containerd goes with it)."""
        if not self.running():
            return
        self.proc.send_signal(15)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._kill_group()

    def _kill_group(self):
        # The managed containerd and shims live in the session made for it.
        try:
            os.killpg(self.proc.pid, 9)
        except OSError:
            pass

    def tail(self, n=2000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def teardown(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.decode().split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=120)
            self.stop(30)
            self._kill_group()
        # containerd-shims are in their own sessions: find them by their
        # arguments naming this directory.
        for pid, cmdline in proc_cmdlines():
            if self.dir.encode() in cmdline and pid != os.getpid():
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        umount_tree(self.dir)
        if not mounts_under(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)


def umount_tree(d):
    """Unmount everything at or under d, deepest first (umount -l as a fallback)."""
    for p in sorted(set(mounts_under(d)), key=len, reverse=True):
        if subprocess.run(["umount", p], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", p], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)


# ------------------------------------------------------------------ a small tmpfs

class Tmpfs:
    """A tmpfs of a given size on a fresh directory (for a state directory
    that fills up); teardown() unmounts it (lazily if still busy)."""

    def __init__(self, base, size="4m"):
        self.path = os.path.realpath(tempfile.mkdtemp(prefix="t", dir=base))
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        self.path], check=True, timeout=30)

    def teardown(self):
        for _ in range(3):
            if not is_mountpoint(self.path):
                break
            if subprocess.run(["umount", self.path], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30).returncode != 0:
                time.sleep(0.5)
        if is_mountpoint(self.path):
            subprocess.run(["umount", "-l", self.path], timeout=30, check=False)
        if not is_mountpoint(self.path):
            shutil.rmtree(self.path, ignore_errors=True)


def is_mountpoint(path):
    with open("/proc/mounts") as f:
        return any(len(fl) >= 2 and unescape_mount_field(fl[1]) == path
                   for fl in (line.split() for line in f))


def assert_errno(expected, fn, *args, **kwargs):
    """fn(*args) fails with errno expected (an int or a tuple of ints)."""
    got = errno_of(fn, *args, **kwargs)
    if isinstance(expected, int):
        expected = (expected,)
    assert got in expected, (f"{getattr(fn, '__name__', fn)}{args}: expected "
                             f"{'/'.join(errname(e) for e in expected)}, got {errname(got)}")
