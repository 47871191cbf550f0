"""Fixtures for the sandboxfs integration tests: real mounts, real containers.

    sbx_bin     the daemon (SANDBOXFS_BIN, else <repo>/build/sandboxfs); fails if missing
    make_mount  factory: make_mount(extra_args=[], env={}, image=..., wait=True, state=None)
    mount       one mount with the defaults (image sandboxfs/base)
    sbx         one sandbox (a fresh name) in `mount`
    scratch     a fresh host directory of the test, removed afterwards
    make_dockerd  factory of isolated second dockerds (sbxlib.Dockerd), torn down
                afterwards; request it before make_mount so that mounts using
                it are torn down while it still runs
    make_tmpfs  factory of small tmpfs mounts (sbxlib.Tmpfs), unmounted afterwards

Every test runs under a time bound (120 s, or @pytest.mark.timeout_s(N)): at
the bound SIGALRM raises in the test; if the test is stuck in a system call
on the mount, a watchdog kills its daemons shortly after, which fails every
request blocked on their FUSE connections. Teardown, even after a failure,
kills the test's readers, rmdirs every sandbox, unmounts, waits for the daemon
to exit (status 0 expected, no sanitizer report) and removes the containers of
the mount's instance; containers still there after the rmdirs are reported as
a failure of that test. At the end of the session, any container of any
instance this session created fails the run.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import threading

import pytest

import sbxlib
from sbxlib import IMAGE, Dockerd, Mount, REPO, SANITIZED, Tmpfs

DEFAULT_BOUND = int(os.environ.get("SANDBOXFS_TEST_BOUND", "120"))
WATCHDOG_GRACE = 15


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "timeout_s(n): time bound of the test in seconds (default 120)")


# ------------------------------------------------------------------ time bounds

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    marker = item.get_closest_marker("timeout_s")
    bound = int(marker.args[0]) if marker else DEFAULT_BOUND
    if SANITIZED:
        bound *= 3          # instrumented daemons are slower
    fired = []

    def on_alarm(signum, frame):
        fired.append(True)
        raise sbxlib.TimeBoundExceeded(f"the test exceeded its time bound of {bound} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(bound)
    watchdog = threading.Timer(bound + WATCHDOG_GRACE, sbxlib.abort_all_mounts)
    watchdog.daemon = True
    watchdog.start()
    try:
        outcome = yield
    finally:
        signal.alarm(0)
        watchdog.cancel()
        signal.signal(signal.SIGALRM, old)
    # The exception of the alarm can land where pluggy swallows it (a return
    # in a finally): make sure a test that overran never passes.
    if fired and outcome.excinfo is None:
        raise sbxlib.TimeBoundExceeded(f"the test exceeded its time bound of {bound} s")


# ------------------------------------------------------------------ temp dirs

_BASE = {}


def tmp_base():
    """The directory of this session's mounts (SANDBOXFS_TEST_TMPDIR if set).
    Not pytest's tmp_path: its clean-up of old runs could walk into a mount."""
    if "dir" not in _BASE:
        parent = os.environ.get("SANDBOXFS_TEST_TMPDIR")
        if parent:
            os.makedirs(parent, exist_ok=True)
            _BASE["dir"] = os.path.realpath(tempfile.mkdtemp(prefix="py", dir=parent))
        else:
            _BASE["dir"] = os.path.realpath(tempfile.mkdtemp(prefix="sandboxfs-test."))
    return _BASE["dir"]


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="session")
def sbx_bin():
    path = os.environ.get("SANDBOXFS_BIN") or os.path.join(REPO, "build", "sandboxfs")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"the sandboxfs daemon is not at {path}: build it (scripts/setup, "
                    f"or ninja -C build) or set SANDBOXFS_BIN", pytrace=False)
    return path


@pytest.fixture
def make_mount(sbx_bin):
    """Factory of mounts: make_mount(extra_args=[], env={}, image=IMAGE,
    wait=True, state=None, mountpoint=None). mountpoint reuses an existing
    directory (a second daemon on the mount point of a first). env entries
    set to None are removed from the daemon's environment. With wait=False the caller checks the outcome."""
    mounts = []

    def factory(extra_args=(), env=None, image=IMAGE, wait=True, state=None, mountpoint=None):
        full_env = dict(os.environ)
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v
        m = Mount(sbx_bin, tmp_base(), list(extra_args), full_env, image, state, mountpoint)
        mounts.append(m)
        m.start(wait=wait)
        return m

    yield factory

    problems = []
    for m in reversed(mounts):
        try:
            problems += [f"{m.path}: {p}" for p in m.teardown()]
        except Exception as e:  # noqa: BLE001 - keep cleaning the others
            problems.append(f"{m.path}: teardown failed: {e!r}")
            m.abort()
    if problems:
        logs = "\n".join(f"--- daemon log of {m.path}:\n{m.log_tail(30)}" for m in mounts)
        pytest.fail("teardown found problems:\n  " + "\n  ".join(problems) + "\n" + logs,
                    pytrace=False)


@pytest.fixture
def mount(make_mount):
    return make_mount()


@pytest.fixture
def sbx(mount):
    return mount.sandbox()


@pytest.fixture(scope="session", autouse=True)
def _session_leftovers():
    """Fail the run if any container of any instance made by this session is
    left on the engine at the end (the per-test teardown removes and reports
    them; this catches what slipped through)."""
    yield
    left = {}
    for inst in sorted(sbxlib.ALL_INSTANCES):
        ids = sbxlib.containers(f"sandboxfs.instance={inst}")
        if ids:
            left[inst] = ids
            sbxlib.docker("rm", "-f", *ids, check=False, timeout=120)
    base = _BASE.get("dir")
    if base and not sbxlib.mounts_under(base):
        shutil.rmtree(base, ignore_errors=True)
    if left:
        pytest.fail(f"containers left on the engine at the end of the session: {left}",
                    pytrace=False)


@pytest.fixture(scope="session")
def image():
    return IMAGE


@pytest.fixture(scope="session", autouse=True)
def _podman_setup():
    """With SANDBOXFS_TEST_ENGINE=podman: a containers.conf of the session's
    own (CONTAINERS_CONF, inherited by the daemons), and the base image
    loaded from docker when podman lacks it."""
    if not sbxlib.PODMAN:
        yield
        return
    if not shutil.which("podman"):
        pytest.exit("SANDBOXFS_TEST_ENGINE=podman but podman is not installed", 2)
    conf = os.path.join(tmp_base(), "containers.conf")
    with open(conf, "w") as f:
        f.write(sbxlib.PODMAN_CONF)
    old = os.environ.get("CONTAINERS_CONF")
    os.environ["CONTAINERS_CONF"] = conf
    if sbxlib.docker("image", "exists", IMAGE, check=False).returncode != 0:
        save = subprocess.Popen(["docker", "save", "sandboxfs/base"], stdout=subprocess.PIPE)
        sbxlib.docker("load", input=save.stdout.read(), timeout=120)
        save.wait(60)
    yield
    if old is None:
        os.environ.pop("CONTAINERS_CONF", None)
    else:
        os.environ["CONTAINERS_CONF"] = old


@pytest.fixture
def scratch():
    """A fresh host directory of this test (config files, workspaces), under
    the session's directory (not pytest's tmp_path, whose clean-up of old
    runs may race with a parallel session); removed at teardown."""
    d = os.path.realpath(tempfile.mkdtemp(prefix="x", dir=tmp_base()))
    yield d
    if not sbxlib.mounts_under(d):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_dockerd():
    """Factory of second dockerds: make_dockerd(load=True) starts one (its
    own socket, data root and network namespace) with the test image loaded.
    Teardown kills it and its containers, unmounts and removes its directory."""
    if not (shutil.which("dockerd") and shutil.which("unshare")):
        pytest.skip("dockerd or unshare is not installed")
    if sbxlib.PODMAN:
        pytest.skip("a second dockerd: docker only")
    engines = []

    def factory(load=True):
        e = Dockerd()
        engines.append(e)
        e.start()
        if load:
            e.load_image(IMAGE)
        return e

    yield factory
    for e in reversed(engines):
        try:
            e.teardown()
        except Exception:  # noqa: BLE001 - keep cleaning the others
            pass


@pytest.fixture
def make_tmpfs():
    """Factory of small tmpfs mounts: make_tmpfs(size="4m") returns a Tmpfs
    (its .path); unmounted and removed at teardown."""
    made = []

    def factory(size="4m"):
        t = Tmpfs(tmp_base(), size)
        made.append(t)
        return t

    yield factory
    for t in reversed(made):
        t.teardown()


@pytest.fixture(scope="module")
def swarm():
    """A two-node Docker Swarm of this module's own (swarmlib.Swarm: two
    isolated dockerds joined over a veth pair), taken down completely at the
    end, also when building it failed half-way."""
    if not all(shutil.which(p) for p in ("dockerd", "unshare", "nsenter", "ip")):
        pytest.skip("dockerd, unshare, nsenter or ip is not installed")
    import swarmlib
    s = swarmlib.Swarm()
    s.up()
    dirs, veths = [d.dir for d in s.nodes], s.veth
    try:
        yield s
    finally:
        s.down()
        left = swarmlib.leftovers(dirs, veths)
        assert not left, f"the swarm left behind {left}"
