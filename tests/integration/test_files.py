"""Files behave like files: every way people write one works on every
writable file of the mount, open files answer fstat, setattrs that change
nothing succeed, and a sandbox with a long history is adopted without
stalling the mount."""

import errno
import os
import shutil
import stat
import subprocess
import threading
import time

import pytest

from sbxlib import (IMAGE, SANITIZED, assert_errno, docker, read, wait_for)

TEMPLATE = '{"image": "%s"}' % IMAGE


# ------------------------------------------------------------------ writers

def _sh(script, **env):
    r = subprocess.run(["bash", "-c", script], env={**os.environ, **env},
                       capture_output=True, timeout=30)
    return r.returncode, r.stderr.decode(errors="replace")


def _src(scratch, data, mode):
    path = os.path.join(scratch, "src")
    if os.path.exists(path):
        os.chmod(path, 0o600)
        os.unlink(path)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


_CWRITER = r"""
#include <stdio.h>
int main(int argc, char **argv)
{
    FILE *f = fopen(argv[1], "w");
    if (!f) { perror("fopen"); return 1; }
    if (fputs(argv[2], f) < 0) { perror("fputs"); return 1; }
    if (fclose(f) != 0) { perror("fclose"); return 1; }
    return 0;
}
"""


@pytest.fixture(scope="module")
def cwriter(tmp_path_factory):
    d = tmp_path_factory.mktemp("cw")
    src = d / "w.c"
    src.write_text(_CWRITER)
    exe = d / "w"
    subprocess.run(["cc", "-o", str(exe), str(src)], check=True, timeout=60)
    return str(exe)


def write_way(way, path, data, mode, scratch, cwriter):
    """Writes data to path the way people do; returns (ok, detail)."""
    text = data.decode()
    if way == "shell >":
        return _sh('printf %s "$D" > "$P"', D=text, P=path)
    if way == "shell >>":
        return _sh('printf %s "$D" >> "$P"', D=text, P=path)
    if way == "cat >":
        src = _src(scratch, data, 0o644)
        return _sh('cat "$S" > "$P"', S=src, P=path)
    if way == "tee":
        return _sh('printf %s "$D" | tee "$P" >/dev/null', D=text, P=path)
    if way == "dd":
        return _sh('printf %s "$D" | dd of="$P" status=none', D=text, P=path)
    if way == "cp":
        src = _src(scratch, data, mode)
        return _sh('cp "$S" "$P"', S=src, P=path)
    if way == "install":
        src = _src(scratch, data, mode)
        return _sh('install -m "$M" "$S" "$P"', M="%o" % mode, S=src, P=path)
    if way == "python":
        try:
            with open(path, "w") as f:
                f.write(text)
            return 0, ""
        except OSError as e:
            return e.errno, str(e)
    if way == "shutil.copy":
        src = _src(scratch, data, mode)
        try:
            shutil.copy(src, path)
            return 0, ""
        except OSError as e:
            return e.errno, str(e)
    if way == "node":
        return _sh('node -e "require(\'fs\').writeFileSync(process.env.P, process.env.D)"',
                   D=text, P=path)
    if way == "stdio":
        r = subprocess.run([cwriter, path, text], capture_output=True, timeout=30)
        return r.returncode, r.stderr.decode(errors="replace")
    raise AssertionError(way)


WAYS = ["shell >", "shell >>", "cat >", "tee", "dd", "cp", "install", "python",
        "shutil.copy", "node", "stdio"]


def _need(tool):
    if not shutil.which(tool):
        pytest.fail(f"{tool} is not installed (scripts/setup installs it)")


@pytest.mark.timeout_s(300)
@pytest.mark.parametrize("way", WAYS)
def test_every_way_of_writing_works_on_every_writable_file(mount, scratch, cwriter, way):
    if way == "node":
        _need("node")
    s = mount.sandbox()
    tag = way.replace(" ", "").replace(">", "gt").replace(".", "")

    def check(fname, data, mode, expect):
        rc, why = write_way(way, s.p(fname), data, mode, scratch, cwriter)
        if way == "install":
            # install(1) removes the destination first: a control file
            # cannot be removed (EPERM, docs/interface.md), so install
            # fails and nothing changes.
            assert rc != 0 and "Operation not permitted" in why, (rc, why)
            return
        assert rc == 0, f"{way} into {fname}: exit {rc}: {why}"
        got = expect()
        assert got, f"{way} into {fname}: not applied"

    # exec: a run of exactly that command.
    before = s.info()["runs"]
    check("exec", f"echo run-{tag}".encode(), 0o666,
          lambda: wait_for(lambda: s.info()["runs"] == before + 1, 10))
    if way == "install":
        assert s.info()["runs"] == before
    else:
        assert s.wait() == b"exited 0\n"
        assert read(s.p("output")) == f"run-{tag}\n".encode()
    # env, auth, workdir, timeout: what reading them shows afterwards.
    check("env", f"E_{tag}=v-{tag}\n".encode(), 0o644,
          lambda: f"E_{tag}=v-{tag}\n".encode() in read(s.p("env")))
    check("auth", f"A_{tag}=secret-{tag}\n".encode(), 0o600,
          lambda: f"A_{tag}\n".encode() in read(s.p("auth")))
    assert f"secret-{tag}".encode() not in read(s.p("auth"))
    check("workdir", b"/tmp\n", 0o644, lambda: read(s.p("workdir")) == b"/tmp\n")
    check("timeout", b"42\n", 0o644, lambda: read(s.p("timeout")) == b"42\n")
    # ctl: an action (start of a running container changes nothing).
    rc, why = write_way(way, s.p("ctl"), b"start\n", 0o222, scratch, cwriter)
    assert (rc == 0) == (way != "install"), f"{way} into ctl: exit {rc}: {why}"
    assert s.info()["state"] == "running"
    # A template: defined at close, read back in its canonical form.
    tpath = os.path.join(mount.path, ".sandboxfs", "templates", f"t-{tag}")
    rc, why = write_way(way, tpath, TEMPLATE.encode(), 0o644, scratch, cwriter)
    if way == "install":
        # install(1) creates with mode 0600 and fchmods to it: a mode the
        # file does not have is EPERM (docs/interface.md).
        assert rc != 0 and "Operation not permitted" in why, (rc, why)
        return
    assert rc == 0, f"{way} into a template: {rc} {why}"
    assert b'"image"' in read(tpath)


def test_a_template_being_written_answers_fstat(mount, scratch):
    src = _src(scratch, TEMPLATE.encode(), 0o644)
    t1 = os.path.join(mount.path, ".sandboxfs", "templates", "by-cat")
    t2 = os.path.join(mount.path, ".sandboxfs", "templates", "by-cp")
    r = subprocess.run(["bash", "-c", f'cat "{src}" > "{t1}"'], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["cp", src, t2], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert b'"image"' in read(t1) and b'"image"' in read(t2)
    # An open file being created is fstat-able before it is defined.
    fd = os.open(os.path.join(mount.path, ".sandboxfs", "templates", "open"),
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        st = os.fstat(fd)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    finally:
        os.close(fd)
    # Closed without a byte written: nothing was defined.
    assert "open" not in os.listdir(os.path.join(mount.path, ".sandboxfs", "templates"))


def test_setattr_that_changes_nothing_succeeds_and_one_that_changes_is_eperm(sbx):
    for fname, mode in (("env", 0o644), ("auth", 0o600), ("exec", 0o666)):
        p = sbx.p(fname)
        os.chmod(p, mode)                     # what it already has
        assert_errno(errno.EPERM, os.chmod, p, 0o777)
        st = os.stat(p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same times
        assert_errno(errno.EPERM, os.utime, p, (0, 0))
        os.chown(p, st.st_uid, st.st_gid)
        assert_errno(errno.EPERM, os.chown, p, st.st_uid + 1, -1)


# ------------------------------------------------------------------ adoption

def _fake_history(spool, n):
    """A spool of n ended runs, as a daemon would have left it."""
    runs = os.path.join(spool, "runs")
    os.makedirs(runs)
    for i in range(1, n + 1):
        d = os.path.join(runs, str(i))
        os.mkdir(d)
        for name, text in (("cmd", f"echo {i}"), ("output", f"{i}\n"),
                           ("started", "2026-01-01T00:00:00.000Z\n"),
                           ("ended", "2026-01-01T00:00:01.000Z\n"),
                           ("status", "exited 0\n")):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        os.link(os.path.join(d, "output"), os.path.join(d, "stdout"))
        open(os.path.join(d, "stderr"), "w").close()


@pytest.mark.timeout_s(240)
def test_adopting_5000_runs_does_not_stall_ls_or_status(mount):
    s = mount.sandbox()
    s.run("true")
    name = "big"
    _fake_history(os.path.join(mount.state, "sandboxes", name), 5000)
    mount.sandboxes.append(name)

    worst = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            t0 = time.monotonic()
            os.listdir(mount.path)
            read(s.p("status"))
            worst.append(time.monotonic() - t0)
            time.sleep(0.005)

    t = threading.Thread(target=client, daemon=True)
    t.start()
    try:
        # A container of this mount that it does not know: its start event
        # makes the daemon adopt it, history and all.
        docker("run", "-d", "--name", mount.container(name),
               "--label", f"sandboxfs.instance={mount.instance}",
               "--label", f"sandboxfs.sandbox={name}",
               "--cap-drop", "ALL", IMAGE, "sleep", "3600")
        wait_for(lambda: name in mount.names(), 60, what="adoption of 'big'")
    finally:
        stop.set()
        t.join(10)
    assert len(os.listdir(os.path.join(mount.path, name, "runs"))) == 5000
    assert read(os.path.join(mount.path, name, "runs", "5000", "status")) == b"exited 0\n"
    assert read(os.path.join(mount.path, name, "runs", "4321", "output")) == b"4321\n"
    bound = 0.5 if SANITIZED else 0.05
    assert max(worst) < bound, f"ls + status took up to {max(worst) * 1000:.0f} ms"
    assert len(worst) > 10
