"""Fixtures for the sandboxfs integration tests: real mounts, real containers.

    sbx_bin     the daemon (SANDBOXFS_BIN, else <repo>/build/sandboxfs); fails if missing
    make_mount  factory: make_mount(extra_args=[], env={}, image=..., wait=True, state=None)
    mount       one mount with the defaults (image sandboxfs/base)
    sbx         one sandbox (a fresh name) in `mount`
    scratch     a fresh host directory of the test, removed afterwards

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
import tempfile
import threading

import pytest

import sbxlib
from sbxlib import IMAGE, Mount, REPO, SANITIZED

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
    wait=True, state=None). env entries set to None are removed from the
    daemon's environment. With wait=False the caller checks the outcome."""
    mounts = []

    def factory(extra_args=(), env=None, image=IMAGE, wait=True, state=None):
        full_env = dict(os.environ)
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v
        m = Mount(sbx_bin, tmp_base(), list(extra_args), full_env, image, state)
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


@pytest.fixture
def scratch():
    """A fresh host directory of this test (config files, workspaces), under
    the session's directory (not pytest's tmp_path, whose clean-up of old
    runs may race with a parallel session); removed at teardown."""
    d = os.path.realpath(tempfile.mkdtemp(prefix="x", dir=tmp_base()))
    yield d
    if not sbxlib.mounts_under(d):
        shutil.rmtree(d, ignore_errors=True)
