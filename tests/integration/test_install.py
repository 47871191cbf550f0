"""sandboxfs installed like a file system (issue 14, point 1): `meson
install`, the man page, `mount -t fuse.sandboxfs`, an fstab line, the
systemd unit, syslog, --help and --version.

The module builds the source tree once in a fresh meson build directory
(prefix /usr/local; with SANDBOXFS_SANITIZE=1, the sanitizer of
SANDBOXFS_SANITIZER, address by default) and installs it
into a DESTDIR. mount(8) runs its helpers with no PATH, so mount.fuse3 finds
`sandboxfs` only in the standard directories: the tests make the installed
tree visible at its prefix inside a private mount namespace (`unshare -m`,
DESTDIR/usr/local bound on /usr/local) and change nothing on the host. The
files of a mount made in that namespace are reached through /proc/PID/root.
"""

import errno
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import sbxlib
from conftest import tmp_base
from sbxlib import CONTROL_FILES, DOCKER, IMAGE, REPO, RUN_FILES, SANITIZED, cat, read, fill

PREFIX = "/usr/local"
INSTALLED = {
    "usr/local/bin/sandboxfs",
    "usr/local/share/man/man1/sandboxfs.1",
    "usr/local/lib/systemd/system/sandboxfs@.service",
}
OPTIONS = {  # option -> its default as --help shows it
    "image": "sandboxfs/base",
    "docker": "docker, looked up in PATH",
    "state": None,           # several lines, checked apart
    "config": "none",
    "max_output": "8g",
    "workspace_roots": "/home:/srv:/tmp:/var/tmp",
}
SBXFS_FILES = {"version", "backend", "log", "templates/"}


def project_version():
    with open(os.path.join(REPO, "meson.build")) as f:
        return re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)


def run(argv, timeout=120, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, **kw)


def check(p):
    assert p.returncode == 0, (f"{' '.join(map(str, p.args))}: exit {p.returncode}\n"
                               f"{p.stdout.decode(errors='replace')[-2000:]}"
                               f"{p.stderr.decode(errors='replace')[-2000:]}")
    return p


# ------------------------------------------------------------------ the install

@pytest.fixture(scope="module")
def installed():
    """{'build', 'destdir', 'destdir_opt'}: the tree built and installed
    with meson (prefix /usr/local into destdir, then prefix /opt/sandboxfs
    into destdir_opt)."""
    if not shutil.which("meson") or not shutil.which("ninja"):
        pytest.fail("meson and ninja are needed (scripts/setup)", pytrace=False)
    top = tempfile.mkdtemp(prefix="install", dir=tmp_base())
    build = os.path.join(top, "build")
    opts = []
    if SANITIZED:   # as scripts/test-pass builds SANDBOXFS_BIN
        san = {"thread": "thread"}.get(os.environ.get("SANDBOXFS_SANITIZER"), "address,undefined")
        opts = [f"-Db_sanitize={san}", "-Db_lundef=false"]
    check(run(["meson", "setup", "--prefix", PREFIX, *opts, build, REPO], timeout=300))
    check(run(["ninja", "-C", build, "sandboxfs", "sandboxfs.1"], timeout=600))
    dest = os.path.join(top, "dest")
    check(run(["meson", "install", "-C", build, "--no-rebuild", "--destdir", dest],
              timeout=120))
    check(run(["meson", "setup", "--reconfigure", "--prefix", "/opt/sandboxfs", build, REPO],
              timeout=300))
    check(run(["ninja", "-C", build, "sandboxfs", "sandboxfs.1"], timeout=600))
    dest_opt = os.path.join(top, "dest-opt")
    check(run(["meson", "install", "-C", build, "--no-rebuild", "--destdir", dest_opt],
              timeout=120))
    yield {"build": build, "destdir": dest, "destdir_opt": dest_opt}
    shutil.rmtree(top, ignore_errors=True)


def installed_files(root):
    return {os.path.relpath(p, root) for p in sbxlib.files_under(root)}


class Namespace:
    """A private mount namespace (a `sleep` holding it) in which each
    (source, target) of `binds` is bind-mounted."""

    def __init__(self, binds, env=None):
        self.env = env
        setup = "".join(f"mount --bind {shlex.quote(s)} {shlex.quote(d)} && "
                        for s, d in binds)
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"{setup}echo ready && exec sleep 3600"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline() if ready else b""
        if line != b"ready\n":
            self.close()
            raise AssertionError(f"unshare: {self.proc.stderr.read().decode(errors='replace')}")
        self.pid = self.proc.pid

    def argv(self, args):
        return ["nsenter", "-t", str(self.pid), "-m", "--", *args]

    def run(self, *args, timeout=60, env=None):
        return run(["timeout", "-s", "KILL", str(timeout), *self.argv(args)],
                   timeout=timeout + 10, env=env or self.env)

    def path(self, p):
        """p (absolute) as the namespace sees it."""
        return f"/proc/{self.pid}/root{p}"

    def mounts(self):
        with open(f"/proc/{self.pid}/mounts") as f:
            return [line.split() for line in f]

    def mount_line(self, mp):
        for fields in self.mounts():
            if sbxlib.unescape_mount_field(fields[1]) == mp:
                return fields
        return None

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


def daemons_of(mp):
    """Pids of the sandboxfs processes whose arguments name mountpoint mp."""
    out = []
    for pid, cmdline in sbxlib.proc_cmdlines():
        args = cmdline.split(b"\0")
        if args and args[0].endswith(b"sandboxfs") and mp.encode() in args:
            out.append(pid)
    return out


@pytest.fixture
def ns_mount(installed, scratch):
    """A namespace with the install at /usr/local, a mount point and a state
    directory. Teardown unmounts, stops the daemons, removes the containers
    of the state's instance (reported: rmdir should have) and the namespace."""
    # A detached daemon's stderr is /dev/null: sanitizer reports go to files
    # (mount(8) passes these variables on).
    san = os.path.join(scratch, "sanitizer")
    san_env = None
    if SANITIZED:
        san_env = dict(os.environ)
        for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"):
            san_env[var] = ":".join(filter(None, [os.environ.get(var), f"log_path={san}"]))
    ns = Namespace([(os.path.join(installed["destdir"], "usr/local"), PREFIX)], env=san_env)
    env = {"ns": ns, "mp": os.path.join(scratch, "mnt"), "state": os.path.join(scratch, "state"),
           "scratch": scratch}
    os.makedirs(env["mp"])
    os.makedirs(env["state"])
    yield env
    problems = []
    try:
        if ns.mount_line(env["mp"]):
            ns.run("umount", "-l", env["mp"], timeout=15)
        deadline = time.monotonic() + 10
        while daemons_of(env["mp"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in daemons_of(env["mp"]):
            problems.append(f"sandboxfs {pid} still running 10 s after its unmount")
            os.kill(pid, signal.SIGKILL)
        try:
            with open(os.path.join(env["state"], "instance")) as f:
                inst = f.read().strip()
        except OSError:
            inst = None
        if inst:
            ids = sbxlib.containers(f"sandboxfs.instance={inst}")
            if ids:
                problems.append(f"containers left: {ids}")
                sbxlib.docker("rm", "-f", *ids, check=False, timeout=120)
    finally:
        ns.close()
    reports = sorted(f for f in os.listdir(scratch) if f.startswith("sanitizer"))
    for f in reports:
        with open(os.path.join(scratch, f), errors="replace") as fh:
            problems.append(f"sanitizer report {f}:\n{fh.read()[:3000]}")
    assert not problems, problems


def instance_of(state):
    with open(os.path.join(state, "instance")) as f:
        inst = f.read().strip()
    sbxlib.record_instance(inst)
    return inst


def use_mount(ns, mp, name):
    """The user's view through a mount made in ns: a sandbox, a run, its
    output and status, rmdir."""
    m = ns.path(mp)
    assert read(os.path.join(m, ".sandboxfs", "version")) == \
        f"sandboxfs {project_version()}\n".encode()
    os.mkdir(os.path.join(m, name))
    # /bin/echo, not a builtin: it reports a failing close (sandboxfs(1), NOTES).
    check(run(["/bin/sh", "-c", 'exec /bin/echo "echo out; echo err >&2; exit 3" > "$1"',
               "sh", os.path.join(m, name, "exec")], timeout=60))
    assert cat(os.path.join(m, name, "wait")) == b"exited 3\n"
    assert cat(os.path.join(m, name, "stdout")) == b"out\n"
    assert cat(os.path.join(m, name, "stderr")) == b"err\n"
    assert sorted(os.listdir(os.path.join(m, name, "runs"))) == ["1"]
    os.rmdir(os.path.join(m, name))
    assert os.listdir(m) == [".sandboxfs"]


def wait_gone(mp, timeout=10):
    sbxlib.wait_for(lambda: not daemons_of(mp), timeout, what=f"the daemon of {mp} to exit")


# ------------------------------------------------------------------ meson install

def test_meson_install_honours_destdir_and_prefix(installed):
    assert installed_files(installed["destdir"]) == INSTALLED
    assert installed_files(installed["destdir_opt"]) == {
        p.replace("usr/local", "opt/sandboxfs") for p in INSTALLED}
    binary = os.path.join(installed["destdir"], "usr/local/bin/sandboxfs")
    assert os.stat(binary).st_mode & 0o777 == 0o755
    page = os.path.join(installed["destdir"], "usr/local/share/man/man1/sandboxfs.1")
    assert os.stat(page).st_mode & 0o777 == 0o644
    p = check(run([binary, "--version", "-o", "docker=/nonexistent"], timeout=30))
    assert p.stdout.decode().splitlines()[0] == f"sandboxfs {project_version()}"
    # The unit runs the binary of its own prefix.
    for dest, prefix in ((installed["destdir"], "/usr/local"),
                         (installed["destdir_opt"], "/opt/sandboxfs")):
        with open(os.path.join(dest, prefix.lstrip("/"), "lib/systemd/system/sandboxfs@.service")) as f:
            unit = f.read()
        assert f"\nExecStart={prefix}/bin/sandboxfs -f --state=/var/lib/sandboxfs/%i " \
               f"$SANDBOXFS_OPTIONS %f\n" in unit


# ------------------------------------------------------------------ man page

def render(argv, ns=None, width=200):
    env = dict(os.environ, MANWIDTH=str(width), LC_ALL="C.UTF-8")
    argv = ["man", "--no-hyphenation", "--no-justification", *argv]
    p = ns.run(*argv, env=env) if ns else run(argv, env=env, timeout=60)
    check(p)
    return p


def test_man_page_renders_every_option_and_file(installed):
    page = os.path.join(installed["destdir"], "usr/local/share/man/man1/sandboxfs.1")
    p = render(["-l", page])
    assert p.stderr == b"", p.stderr   # no groff warnings
    text = p.stdout.decode()
    # The page's items: a line of their own, indented 7 (definition lists).
    items = {line.strip() for line in text.splitlines()
             if line.startswith(" " * 7) and not line.startswith(" " * 8)}
    headings = {line for line in text.splitlines() if line and not line[0].isspace()}
    for h in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "THE MOUNT", "LOGGING",
              "EXIT STATUS", "ENVIRONMENT", "FILES", "NOTES", "SEE ALSO"):
        assert h in headings, f"no section {h}: {sorted(headings)}"
    for opt in OPTIONS:
        assert any(i.startswith(f"{opt}=") for i in items), f"option {opt} is not an item"
    for flag in ("-f", "-d, -o debug", "-h, --help", "-V, --version", "SOURCE"):
        assert flag in items, f"{flag} is not an item"
    flat = " ".join(text.split())
    for opt, default in (("max_output", "8g"), ("image", "sandboxfs/base"),
                         ("workspace_roots", "/home:/srv:/tmp:/var/tmp"), ("config", "none")):
        par = flat[flat.index(f" {opt}="):]
        assert f"Default: {default}." in par[:600], f"{opt}: no default {default}"
    # Every file of a sandbox directory and of .sandboxfs/ has its item...
    documented = set()
    for i in items:
        documented |= {w.strip(",") for w in i.split()}
    for f in CONTROL_FILES - {"runs"}:
        assert f in documented, f"file {f} is not documented as an item"
    assert "runs/N/" in items
    for f in SBXFS_FILES - {"templates/"}:
        assert f in documented, f".sandboxfs/{f} is not documented"
    assert "templates/NAME" in items
    # ...and the files of runs/N/ are named in its paragraph.
    runs_par = text[text.index("\n       runs/N/\n"):].split("\n\n")[0]
    for f in RUN_FILES:
        assert re.search(rf"\b{f}\b", runs_par), f"runs/N/{f} is not documented"
    # The mount(8), fstab and systemd forms, and the close() caveat.
    assert "mount -t fuse.sandboxfs sandboxfs /sbx -o image=sandboxfs/base," in text
    assert "sandboxfs  /sbx  fuse.sandboxfs  image=" in text
    assert "systemctl start sandboxfs@sbx.service mounts /sbx" in flat
    notes = text[text.index("\nNOTES\n"):text.index("\nSEE ALSO\n")]
    notes = " ".join(notes.split())
    assert "bash's builtin echo" in notes
    for safe in ("/bin/echo cmd > exec", "printf '%s\\n' cmd | tee exec >/dev/null",
                 "check status or wait"):
        assert safe in notes, safe


def test_man_sandboxfs_finds_the_installed_page(installed):
    ns = Namespace([(os.path.join(installed["destdir"], "usr/local"), PREFIX)])
    try:
        p = check(ns.run("man", "-w", "sandboxfs"))
        assert p.stdout == b"/usr/local/share/man/man1/sandboxfs.1\n"
        page = os.path.join(installed["destdir"], "usr/local/share/man/man1/sandboxfs.1")
        assert render(["sandboxfs"], ns=ns).stdout == render(["-l", page]).stdout
    finally:
        ns.close()


# ------------------------------------------------------------------ mount(8)

def test_mount_t_fuse_sandboxfs(ns_mount):
    ns, mp, state = ns_mount["ns"], ns_mount["mp"], ns_mount["state"]
    p = ns.run("mount", "-t", "fuse.sandboxfs", "sandboxfs", mp,
               "-o", f"image={IMAGE},state={state}")
    assert (p.returncode, p.stdout, p.stderr) == (0, b"", b"")
    line = ns.mount_line(mp)
    assert line[0] == "sandboxfs" and line[2] == "fuse.sandboxfs", line
    assert line[3].split(",")[0] == "rw"
    instance_of(state)
    backend = read(os.path.join(ns.path(mp), ".sandboxfs", "backend")).decode()
    assert f"state: {state}\nimage: {IMAGE}\n" in backend
    use_mount(ns, mp, "job1")
    p = ns.run("umount", mp)
    assert (p.returncode, p.stderr) == (0, b"")
    assert ns.mount_line(mp) is None
    wait_gone(mp)


def test_mount_t_reports_start_up_errors(ns_mount):
    """Errors before the daemon detaches reach mount's caller on stderr."""
    ns, mp, state = ns_mount["ns"], ns_mount["mp"], ns_mount["state"]
    missing = os.path.join(ns_mount["scratch"], "missing.json")
    p = ns.run("mount", "-t", "fuse.sandboxfs", "sandboxfs", mp,
               "-o", f"state={state},config={missing}")
    assert (p.returncode, p.stdout) == (1, b"")
    assert p.stderr == f"sandboxfs: config {missing}: No such file or directory\n".encode()
    assert ns.mount_line(mp) is None and daemons_of(mp) == []


def test_fstab_line_and_mount_mountpoint(ns_mount):
    """`mount MOUNTPOINT` with the line in /etc/fstab (a temporary file bound
    on /etc/fstab inside the namespace only)."""
    ns, mp, state = ns_mount["ns"], ns_mount["mp"], ns_mount["state"]
    fstab = os.path.join(ns_mount["scratch"], "fstab")
    with open(fstab, "w") as f:
        f.write("# test fstab\n"
                f"sandboxfs {mp} fuse.sandboxfs image={IMAGE},state={state},_netdev,nofail,"
                f"x-systemd.requires=docker.service,comment=sbx 0 0\n")
    check(ns.run("mount", "--bind", fstab, "/etc/fstab"))
    p = ns.run("mount", mp)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"", b"")
    assert ns.mount_line(mp)[2] == "fuse.sandboxfs"
    instance_of(state)
    use_mount(ns, mp, "job2")
    p = ns.run("fusermount3", "-u", mp)
    assert (p.returncode, p.stderr) == (0, b"")
    wait_gone(mp)


def test_fstab_options_and_source_are_ignored(make_mount):
    """Run by hand the way mount.fuse3 runs it (SOURCE MOUNTPOINT and the
    fstab-only options): mounts, in the foreground, logging to stderr."""
    m = make_mount(extra_args=["-o", "rw,dev,suid,_netdev,noauto,auto,nofail,user,users,"
                               "defaults,comment=x,x-systemd.automount,x-gvfs-show",
                               "sandboxfs"])
    s = m.sandbox()
    out, status = s.run("echo hi")
    assert (out, status) == (b"hi\n", b"exited 0\n")
    assert f"sandboxfs: info: mounted {m.path} (instance {m.instance}," in m.log()


def test_three_positionals_refused(sbx_bin, scratch):
    p = run([sbx_bin, "a", "b", os.path.join(scratch, "c")], timeout=30)
    assert p.returncode == 1
    assert p.stderr == (f"sandboxfs: too many arguments: '{os.path.join(scratch, 'c')}' "
                        "(usage: sandboxfs [SOURCE] MOUNTPOINT [options])\n").encode()


# ------------------------------------------------------------------ syslog

class DevLog:
    """A syslog socket at /dev/log, when none is there (no syslog daemon)."""

    PATH = "/dev/log"

    def __init__(self):
        if os.path.lexists(self.PATH):
            pytest.skip("/dev/log exists (a syslog daemon, or a test run in parallel): "
                        "cannot listen in its place")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(self.PATH)
        except OSError as e:     # made in between by someone else
            self.sock.close()
            pytest.skip(f"cannot bind {self.PATH}: {e}")
        self.ino = os.stat(self.PATH).st_ino
        self.msgs = []

    def drain(self, timeout=0.0):
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return self.msgs
            self.msgs.append(self.sock.recv(65536).decode(errors="replace"))

    def close(self):
        self.sock.close()
        try:
            if os.stat(self.PATH).st_ino == self.ino:
                os.unlink(self.PATH)
        except OSError:
            pass


@pytest.fixture
def devlog():
    d = DevLog()
    yield d
    d.close()


SYSLOG_LINE = re.compile(r"^<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d sandboxfs\[(\d+)\]: (.*)$")


def test_daemonized_messages_go_to_syslog_with_the_mountpoint(ns_mount, devlog):
    ns, mp, state = ns_mount["ns"], ns_mount["mp"], ns_mount["state"]
    check(ns.run("mount", "-t", "fuse.sandboxfs", "sandboxfs", mp,
                 "-o", f"image={IMAGE},state={state}"))
    inst = instance_of(state)
    [pid] = daemons_of(mp)
    m = ns.path(mp)
    assert sbxlib.errno_of(os.mkdir, os.path.join(m, "bad name")) == errno.EINVAL

    def ours():
        lines = []
        for msg in devlog.drain(0.2):
            g = SYSLOG_LINE.match(msg)
            if g and int(g.group(2)) == pid:
                lines.append((int(g.group(1)), g.group(3)))
        return lines

    sbxlib.wait_for(lambda: len(ours()) >= 2, 10, what="two syslog lines")
    lines = ours()
    # LOG_DAEMON (3 << 3) with LOG_INFO (6), then LOG_ERR (3); each "MP: message".
    assert lines[0][0] == 30
    assert lines[0][1].startswith(f"{mp}: mounted {mp} (instance {inst}, state {state}, ")
    assert lines[1][0] == 27 and lines[1][1].startswith(f"{mp}: mkdir bad name: ")
    # .sandboxfs/log keeps the same lines (timestamp and level before them).
    ring = read(os.path.join(m, ".sandboxfs", "log")).decode().splitlines()
    assert [re.sub(r"^\S+ [a-z]+: ", f"{mp}: ", r) for r in ring] == [t for _, t in lines]
    check(ns.run("umount", mp))
    wait_gone(mp)
    msgs = [t for _, t in ours()]
    assert msgs[-1] == f"{mp}: unmounted {mp}", msgs


# ------------------------------------------------------------------ systemd

def test_systemd_units_verify(installed, scratch):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing (package systemd, scripts/setup)", pytrace=False)
    ns = Namespace([(os.path.join(installed["destdir"], "usr/local"), PREFIX)])
    try:
        unitdir = "/usr/local/lib/systemd/system"
        for inst in ("sbx", "srv-sbx"):
            p = ns.run("systemd-analyze", "verify", f"{unitdir}/sandboxfs@{inst}.service")
            assert (p.returncode, p.stdout, p.stderr) == (0, b"", b""), p
        # The example .mount unit of the docs.
        p = ns.run("systemd-analyze", "verify", os.path.join(REPO, "systemd", "sbx.mount"))
        assert (p.returncode, p.stdout, p.stderr) == (0, b"", b""), p
        # verify does check: the same unit with a missing binary fails.
        with open(ns.path(f"{unitdir}/sandboxfs@.service")) as f:
            unit = f.read()
        broken = os.path.join(scratch, "sandboxfs@.service")
        with open(broken, "w") as f:
            f.write(unit.replace("/usr/local/bin/sandboxfs", "/nonexistent/sandboxfs"))
        p = ns.run("systemd-analyze", "verify", os.path.join(scratch, "sandboxfs@sbx.service"))
        assert p.returncode != 0 and b"/nonexistent/sandboxfs" in p.stderr
    finally:
        ns.close()
    assert check(run(["systemd-escape", "--path", "/srv/sbx"])).stdout == b"srv-sbx\n"


def unit_commands(path, instance, mountpoint, options):
    """The unit's Exec lines as systemd would run them for an instance: %i,
    %f and $SANDBOXFS_OPTIONS (split at whitespace) substituted; a leading
    '-' (failure ignored) dropped. {key: [argv, ...]}."""
    out = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if not sep or not key.startswith("Exec"):
                continue
            argv = []
            for w in shlex.split(value.lstrip("-")):
                if w == "$SANDBOXFS_OPTIONS":
                    argv += options
                else:
                    argv.append(w.replace("%i", instance).replace("%f", mountpoint))
            out.setdefault(key, []).append(argv)
    return out


@pytest.mark.timeout_s(120)
def test_unit_starts_stops_and_restarts(installed, scratch):
    """The unit's own commands: ExecStartPre, ExecStart (the daemon in the
    foreground, as systemd supervises it), ExecStop ends it with status 0
    and the containers stay; a second start finds them again. /var/lib is a
    scratch directory in the namespace (the unit's state directory)."""
    varlib = os.path.join(scratch, "varlib")
    os.makedirs(os.path.join(varlib, "sandboxfs"))
    ns = Namespace([(os.path.join(installed["destdir"], "usr/local"), PREFIX), (varlib, "/var/lib")])
    mp = os.path.join(scratch, "unit mnt")    # a space: escaped \x20 by systemd
    inst = check(run(["systemd-escape", "--path", mp])).stdout.decode().strip()
    cmds = unit_commands(ns.path("/usr/local/lib/systemd/system/sandboxfs@.service"),
                         inst, mp, ["-o", f"image={IMAGE}"])
    assert set(cmds) == {"ExecStartPre", "ExecStart", "ExecStop"}
    state = os.path.join(varlib, "sandboxfs", inst)
    daemons = []
    ids = []
    try:
        for round_ in (1, 2):
            for argv in cmds["ExecStartPre"]:
                check(ns.run(*argv))
            d = subprocess.Popen(ns.argv(cmds["ExecStart"][0]), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            daemons.append(d)
            m = ns.path(mp)
            sbxlib.wait_for(lambda: ns.mount_line(mp) and
                            os.path.exists(os.path.join(m, ".sandboxfs", "version")),
                            15, what="the unit's mount")
            if round_ == 1:
                instance_of(state)
                os.mkdir(os.path.join(m, "kept"))
                ids = sbxlib.containers(f"sandboxfs.instance={instance_of(state)}")
            else:
                # Stop left the sandbox; the restarted daemon found it.
                assert sorted(os.listdir(m)) == [".sandboxfs", "kept"]
                os.rmdir(os.path.join(m, "kept"))
            for argv in cmds["ExecStop"]:
                check(ns.run(*argv))
            assert d.wait(15) == 0
            log = d.stdout.read().decode()
            assert f"sandboxfs: info: unmounted {mp}\n" in log, log
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                           "WARNING: ThreadSanitizer"):
                assert marker not in log, log
        assert len(ids) == 1
        assert sbxlib.containers(f"sandboxfs.instance={instance_of(state)}") == []
    finally:
        for d in daemons:
            if d.poll() is None:
                ns.run("umount", "-l", mp, timeout=15)
                d.kill()
                d.wait(10)
            d.stdout.close()
        ns.close()
        try:
            left = sbxlib.containers(f"sandboxfs.instance={instance_of(state)}")
            if left:
                sbxlib.docker("rm", "-f", *left, check=False, timeout=120)
        except OSError:
            pass


# ------------------------------------------------------------------ --help, --version

def test_help_lists_every_option_with_its_default(sbx_bin):
    p = check(run([sbx_bin, "--help"], timeout=30))
    text = p.stdout.decode()
    lines = text.splitlines()
    assert lines[0].endswith(" [options] [SOURCE] MOUNTPOINT")
    for opt, default in OPTIONS.items():
        at = [i for i, line in enumerate(lines) if line.startswith(f"    -o {opt}=")]
        assert len(at) == 1, f"--help has no line for {opt}"
        # The default in brackets, on the option's line or its continuation.
        entry = lines[at[0]] + " " + lines[at[0] + 1]
        if default:
            assert f"[{default}]" in " ".join(entry.split()), entry
    st = text[text.index("-o state=DIR"):text.index("-o config=")]
    assert "[$XDG_STATE_HOME/sandboxfs/" in st and "/var/lib/sandboxfs/...]" in st
    assert re.search(r"\n    -f +stay in the foreground, log to stderr\n +\[daemonize, log to syslog\]\n",
                     text)
    assert "_netdev" in text and "x-*" in text
    # libfuse's own options follow.
    assert "    -d   -o debug          enable debug output (implies -f)\n" in text


def test_version_names_the_engine(sbx_bin, scratch):
    ver = project_version()
    docker = os.path.realpath(DOCKER) if os.path.isabs(DOCKER) else shutil.which(DOCKER)
    env = dict(os.environ, PATH=os.path.dirname(docker) + ":/usr/bin:/bin")
    p = check(run([sbx_bin, "--version"], timeout=30, env=env))
    lines = p.stdout.decode().splitlines()
    assert lines[0] == f"sandboxfs {ver}"
    assert lines[1] == f"engine: docker {sbxlib.engine_version()} ({docker})"
    assert re.fullmatch(r"libfuse 3\.\d+\.\d+", lines[2])
    assert len(lines) == 3 and p.stderr == b""

    p = check(run([sbx_bin, "-V", "-o", "docker=/nonexistent/docker"], timeout=30))
    assert p.stdout.decode().splitlines()[:2] == [f"sandboxfs {ver}", "engine: not found"]

    # A client that never answers: bounded (5 s).
    hang = os.path.join(scratch, "hangs")
    with open(hang, "w") as f:
        f.write("#!/bin/sh\nexec sleep 60\n")
    os.chmod(hang, 0o755)
    t0 = time.monotonic()
    p = check(run([sbx_bin, "--version", f"--docker={hang}"], timeout=30))
    took = time.monotonic() - t0
    assert p.stdout.decode().splitlines()[1] == \
        f"engine: hangs ({hang}) not answering: hangs version: no answer from hangs within 5000 ms"
    assert 4.5 < took < (15 if SANITIZED else 8), took


# ------------------------------------------------------------------ NOTES of the man page

@pytest.mark.timeout_s(90)
def test_shell_forms_that_see_a_failing_close(make_tmpfs, make_mount):
    """sandboxfs(1), NOTES: a run that cannot start fails close(2) (here:
    ENOSPC, the state directory is full); bash's builtin echo exits 0 all
    the same, /bin/echo and tee report it."""
    if not shutil.which("bash"):
        pytest.skip("no bash")
    t = make_tmpfs("4m")
    m = make_mount(state=os.path.join(t.path, "state"))
    s = m.sandbox()
    assert s.run("echo warm\n") == (b"warm\n", b"exited 0\n")
    fill(os.path.join(t.path, "filler"))
    forms = {
        "builtin": 'echo "echo x" > "$1"',
        "/bin/echo": '/bin/echo "echo x" > "$1"',
        "tee": 'printf "echo x\\n" | tee "$1" >/dev/null',
    }
    got = {}
    for what, script in forms.items():
        p = run(["bash", "-c", f"{script}; echo status=$?", "bash", s.p("exec")], timeout=30)
        got[what] = (p.stdout.decode().strip(), "No space left on device" in p.stderr.decode())
    assert got == {
        "builtin": ("status=0", False),
        "/bin/echo": ("status=1", True),
        "tee": ("status=1", True),
    }
    os.unlink(os.path.join(t.path, "filler"))
