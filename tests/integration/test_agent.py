"""The agent inside every sandbox (issue 11): runs over one channel per
sandbox, byte-exact output, status lines as with docker exec, secrets only in
the run's environment, kill and timeout as frames, info's transport, the
fallback to docker exec, a hostile agent. docs/agent-protocol.md."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

from sbxlib import cat, docker, errno_of, read, wait_for

AGENT_TIMEOUT = 20


def agent_up(sbx, timeout=AGENT_TIMEOUT):
    wait_for(lambda: sbx.info().get("transport") == "agent", timeout,
             what=f"transport agent in {sbx.name}'s info")


def peek(path, n):
    """The first n bytes of a live run's file, once it has them (a read to
    end-of-file would wait for the run's end)."""
    wait_for(lambda: os.stat(path).st_size >= n, 10, what=f"{n} bytes in {path}")
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n + 1, 0)
    finally:
        os.close(fd)


def st(sbx, cmd, timeout=60):
    """exec cmd, wait for its end: the status line."""
    return sbx.run(cmd, timeout)[1]


@pytest.fixture
def asbx(mount):
    s = mount.sandbox()
    agent_up(s)
    return s


def test_info_shows_agent_transport(asbx):
    info = asbx.info()
    assert info["transport"] == "agent"
    assert "transport_reason" not in info


def test_output_status_and_streams_are_exact(asbx):
    assert st(asbx, "echo out; echo err >&2; printf 'no newline'; exit 3\n") == b"exited 3\n"
    assert asbx.read("runs", "1", "stdout") == b"out\nno newline"
    assert asbx.read("runs", "1", "stderr") == b"err\n"
    # Across the two pipes the order is as the agent read them (best effort,
    # docs/interface.md): output holds exactly both streams' bytes.
    out = asbx.read("runs", "1", "output")
    assert len(out) == 18 and sorted(out) == sorted(b"out\nno newline" + b"err\n")
    # Binary bytes, every value, byte-exact.
    assert st(asbx, "i=0; while [ $i -lt 256 ]; do printf \"\\\\$(printf %o $i)\"; "
                    "i=$((i+1)); done\n") == b"exited 0\n"
    assert asbx.read("runs", "2", "output") == bytes(range(256))


def test_large_output_is_byte_exact(asbx):
    assert st(asbx, "head -c 20000000 /dev/zero | tr '\\0' x\n", timeout=60) == b"exited 0\n"
    assert os.stat(asbx.p("runs", "1", "output")).st_size == 20000000
    with open(asbx.p("runs", "1", "output"), "rb") as f:
        assert f.read() == b"x" * 20000000


def test_signal_status_and_workdir_and_env(asbx):
    asbx.write("workdir", "/tmp\n")
    asbx.write("env", "GREETING=hello world\n")
    assert st(asbx, "pwd; echo \"$GREETING\"\n") == b"exited 0\n"
    assert asbx.read("runs", "1", "output") == b"/tmp\nhello world\n"
    assert st(asbx, "kill -9 $$\n") == b"exited 137\n"
    asbx.write("workdir", "/nonexistent\n")
    # A run that cannot start: close of exec fails EIO, status lost.
    assert errno_of(asbx.exec, "pwd\n") == errno.EIO
    assert asbx.status() == b"lost\n"
    assert "did not start" in asbx.info()["latest"]["reason"]


def test_secrets_only_in_the_runs_environment(asbx):
    secret = "s3cr3t-" + os.urandom(6).hex()
    asbx.write("auth", f"TOKEN={secret}\n")
    assert st(asbx, "sleep 30 & echo started\n") is not None
    asbx.exec("sleep 30\n")
    wait_for(lambda: asbx.status() == b"running\n", 10)
    c = asbx.container
    # The agent's own environ and cmdline, and its tmpfs: no secret.
    pids = docker("exec", c, "sh", "-c",
                  "for p in /proc/[0-9]*; do "
                  "if tr '\\0' ' ' < $p/cmdline | grep -q '^/.sandboxfs/agent serve'; then "
                  "echo ${p#/proc/}; fi; done").stdout.decode().split()
    assert pids, "the serving agent runs"
    for pid in pids:
        env = docker("exec", c, "cat", f"/proc/{pid}/environ").stdout
        cmd = docker("exec", c, "cat", f"/proc/{pid}/cmdline").stdout
        assert secret.encode() not in env + cmd
    found = docker("exec", c, "sh", "-c", f"grep -rl {secret} /.sandboxfs || true").stdout
    assert found.strip() == b""
    # The run has it (masked in output).
    assert st(asbx, "echo $TOKEN\n") == b"exited 0\n"
    assert secret.encode() not in asbx.output()


def test_kill_reaches_the_group_and_leaves_nothing(asbx):
    asbx.exec("sleep 1000 & sleep 1001; echo never\n")
    wait_for(lambda: any("sleep 1001" in a for _, a in asbx.ps()), 10)
    t = time.monotonic()
    asbx.write("ctl", "kill\n")
    assert cat(asbx.p("wait"), timeout=10) == b"killed\n"
    took = time.monotonic() - t
    assert took < 2, took
    wait_for(lambda: not any(a.startswith("sleep 100") for _, a in asbx.ps()), 5,
             what="no sleep left in ps")


def test_timeout_through_the_agent(asbx):
    asbx.write("timeout", "1\n")
    t = time.monotonic()
    assert st(asbx, "sleep 30\n") == b"timeout\n"
    assert time.monotonic() - t < 5


def test_fallback_when_the_image_has_no_shell(mount, tmp_path):
    """An image of one static binary and no /bin/sh: the agent cannot start,
    info says exec and why, the sandbox still works."""
    busybox = "/bin/busybox"
    if not os.path.exists(busybox):
        pytest.skip("needs busybox-static on the host")
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    import shutil
    shutil.copy(busybox, root / "bin" / "busybox")
    os.symlink("busybox", root / "bin" / "sleep")  # the sandbox's own command
    tar = tmp_path / "img.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
    tag = "sandboxfs-test/noshell:" + os.urandom(4).hex()
    with open(tar, "rb") as f:
        subprocess.run(["docker", "import", "-c", 'CMD ["/bin/busybox", "sleep", "100000"]',
                        "-", tag], stdin=f, check=True, capture_output=True, timeout=60)
    try:
        name = "noshell" + os.urandom(3).hex()
        tpl = f'{{"match": "{name}", "image": "{tag}"}}\n'
        with open(mount.p(".sandboxfs", "templates", name), "w") as f:
            f.write(tpl)
        mount.sandbox(name)
        info_path = mount.p(name, "info")
        wait_for(lambda: "could not start" in json.loads(read(info_path)).get(
            "transport_reason", ""), AGENT_TIMEOUT, what="transport_reason")
        info = json.loads(read(info_path))
        assert info["transport"] == "exec"
        assert info["state"] == "running"
        assert "/bin/sh" in info["transport_reason"], info["transport_reason"]
        # Runs take docker exec (which needs /bin/sh too: it exits 126, as
        # before the agent); the sandbox itself keeps working.
        write_cmd = open(mount.p(name, "exec"), "w")
        write_cmd.write("echo hi\n")
        write_cmd.close()
        assert cat(mount.p(name, "wait"), timeout=30) == b"exited 126\n"
        assert json.loads(read(info_path))["transport"] == "exec"
        os.rmdir(mount.p(name))
        os.unlink(mount.p(".sandboxfs", "templates", name))
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)


# ------------------------------------------------------------------ a hostile agent

RELAY_PID = ("for p in /proc/[0-9]*; do "
             "if tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q '^/.sandboxfs/agent connect'; "
             "then echo ${p#/proc/}; fi; done")
AGENT_PID = RELAY_PID.replace("agent connect", "agent serve")


def counting(n):
    return f"i=1; while [ $i -le {n} ]; do echo $i; i=$((i+1)); sleep 0.1; done\n"


def expected(n):
    return b"".join(b"%d\n" % i for i in range(1, n + 1))


def test_sandbox_kills_its_agent_mid_run(mount):
    a, b = mount.sandbox(), mount.sandbox()
    agent_up(a)
    agent_up(b)
    b.exec(counting(20))
    a.exec(f"echo before; sleep 0.3; kill -9 $({AGENT_PID}); sleep 3; echo after\n")
    assert cat(a.p("wait"), timeout=15) == b"lost\n"
    info = a.info()
    assert info["latest"]["reason"].startswith("the agent channel failed: "), info
    assert a.read("runs", "1", "output") == b"before\n"
    # The other sandbox's run is untouched.
    assert cat(b.p("wait"), timeout=15) == b"exited 0\n"
    assert b.read("runs", "1", "output") == expected(20)
    # The sandbox falls back to docker exec, then gets a new agent.
    assert st(a, "echo again\n") == b"exited 0\n"
    assert a.read("runs", "2", "output") == b"again\n"
    time.sleep(2.2)
    assert st(a, "echo retry\n") == b"exited 0\n"
    agent_up(a)
    assert st(a, "echo back\n") == b"exited 0\n"
    assert a.read("runs", "4", "output") == b"back\n"


def test_random_frames_close_the_channel(mount):
    """The sandbox's code writes random bytes into the channel (as an
    impostor agent would): the daemon closes it, the run ends lost with the
    reason, the sandbox uses docker exec from then on, others are untouched."""
    a, b = mount.sandbox(), mount.sandbox()
    agent_up(a)
    agent_up(b)
    b.exec(counting(20))
    a.exec(f"echo before; r=$({RELAY_PID}); head -c 65536 /dev/urandom > /proc/$r/fd/1; "
           "sleep 2; echo after\n")
    assert cat(a.p("wait"), timeout=15) == b"lost\n"
    reason = a.info()["latest"]["reason"]
    assert reason.startswith("the agent channel failed: protocol error"), reason
    assert "agent protocol error" in mount.log()
    info = a.info()
    assert info["transport"] == "exec"
    assert info["transport_reason"].startswith("protocol error"), info
    assert st(a, "echo fallback\n") == b"exited 0\n"
    assert a.read("runs", "2", "output") == b"fallback\n"
    assert cat(b.p("wait"), timeout=15) == b"exited 0\n"
    assert b.read("runs", "1", "output") == expected(20)
    assert b.info()["transport"] == "agent"


# ------------------------------------------------------------------ a daemon restart

def restart(make_mount, m1):
    os.kill(m1.proc.pid, signal.SIGKILL)
    m1.proc.wait(10)
    m1.expect_exit = True
    m2 = make_mount(state=m1.state, mountpoint=m1.path)
    return m2


@pytest.mark.timeout_s(90)
def test_run_survives_a_daemon_kill(make_mount):
    """kill -9 of the daemon in the middle of a run, and a restart on the same
    state: the run's output is exactly 1..20 and it ends exited 0."""
    m1 = make_mount()
    s = m1.sandbox()
    agent_up(s)
    s.exec("for i in $(seq 20); do echo $i; sleep 0.2; done\n")
    assert peek(s.p("runs", "1", "output"), 6) == b"1\n2\n3\n"
    m2 = restart(make_mount, m1)
    m2.sandboxes.append(s.name)
    s2 = type(s)(m2, s.name)
    assert cat(s2.p("wait"), timeout=30) == b"exited 0\n"
    assert s2.read("runs", "1", "output") == b"".join(b"%d\n" % i for i in range(1, 21))
    assert s2.read("runs", "1", "stdout") == s2.read("runs", "1", "output")
    assert s2.read("runs", "1", "stderr") == b""
    assert s2.read("runs", "1", "status") == b"exited 0\n"
    agent_up(s2)
    assert st(s2, "echo next\n") == b"exited 0\n"
    assert s2.read("runs", "2", "output") == b"next\n"


@pytest.mark.timeout_s(90)
def test_run_that_ended_while_the_daemon_was_down(make_mount):
    """The exit and the output of a run that ended while no daemon listened
    are kept by the agent and collected at the restart."""
    m1 = make_mount()
    s = m1.sandbox()
    agent_up(s)
    s.exec("echo a; sleep 1; echo b >&2; exit 7\n")
    assert peek(s.p("runs", "1", "output"), 2) == b"a\n"
    os.kill(m1.proc.pid, signal.SIGKILL)
    m1.proc.wait(10)
    m1.expect_exit = True
    time.sleep(2)
    m2 = make_mount(state=m1.state, mountpoint=m1.path)
    m2.sandboxes.append(s.name)
    s2 = type(s)(m2, s.name)
    assert cat(s2.p("wait"), timeout=30) == b"exited 7\n"
    assert s2.read("runs", "1", "output") == b"a\nb\n"
    assert s2.read("runs", "1", "stdout") == b"a\n"
    assert s2.read("runs", "1", "stderr") == b"b\n"


# ------------------------------------------------------------------ stdin

def test_stdin_defaults_to_end_of_file(asbx):
    assert st(asbx, "cat; echo done\n") == b"exited 0\n"
    assert asbx.read("runs", "1", "output") == b"done\n"
    assert asbx.info()["settings"]["stdin"] == "eof"
    assert errno_of(asbx.write, "stdin", "x") == errno.EPIPE  # it has ended
    asbx.exec("sleep 30\n")
    wait_for(lambda: asbx.status() == b"running\n", 10)
    assert errno_of(asbx.write, "stdin", "x") == errno.EOPNOTSUPP
    asbx.write("ctl", "kill\n")
    assert cat(asbx.p("wait"), timeout=10) == b"killed\n"


def test_stdin_read_loop_in_several_writes_then_eof(asbx):
    asbx.write("ctl", "stdin open\n")
    assert asbx.info()["settings"]["stdin"] == "open"
    asbx.exec("while read l; do echo \"got $l\"; done; echo end\n")
    wait_for(lambda: asbx.status() == b"running\n", 10)
    asbx.write("stdin", "one\n")
    assert peek(asbx.p("runs", "1", "output"), 8) == b"got one\n"
    with open(asbx.p("stdin"), "a") as f:  # another open, >>
        f.write("two\nthr")
    asbx.write("runs/1/stdin", "ee\n")     # and the run's own file
    assert peek(asbx.p("runs", "1", "output"), 26) == b"got one\ngot two\ngot three\n"
    assert asbx.status() == b"running\n"
    asbx.write("ctl", "eof\n")
    assert cat(asbx.p("wait"), timeout=10) == b"exited 0\n"
    assert asbx.read("runs", "1", "output") == b"got one\ngot two\ngot three\nend\n"
    assert errno_of(asbx.write, "runs/1/stdin", "late\n") == errno.EPIPE
    asbx.write("ctl", "stdin eof\n")
    assert st(asbx, "cat; echo done\n") == b"exited 0\n"
    assert asbx.read("runs", "2", "output") == b"done\n"


def test_stdin_binary_payload(asbx):
    payload = os.urandom(3 << 20)
    asbx.write("ctl", "stdin open\n")
    asbx.exec("cat > /tmp/in; wc -c < /tmp/in; md5sum /tmp/in\n")
    wait_for(lambda: asbx.status() == b"running\n", 10)
    fd = os.open(asbx.p("stdin"), os.O_WRONLY)
    try:
        view = memoryview(payload)
        while len(view):
            view = view[os.write(fd, view[:1 << 17]):]
    finally:
        os.close(fd)
    asbx.write("ctl", "eof\n")
    assert cat(asbx.p("wait"), timeout=30) == b"exited 0\n"
    out = asbx.read("runs", "1", "output").split()
    assert out[0] == str(len(payload)).encode()
    assert out[1] == hashlib.md5(payload).hexdigest().encode()


def test_ctl_stdin_refuses_nonsense(asbx):
    for bad in ("stdin\n", "stdin maybe\n", "eof now\n"):
        assert errno_of(asbx.write, "ctl", bad) == errno.EINVAL, bad
    assert asbx.info()["settings"]["stdin"] == "eof"


# ------------------------------------------------------------------ fairness and memory

def exec_wait(sbx, cmd):
    with open(sbx.p("exec"), "w") as f:
        f.write(cmd)
    with open(sbx.p("wait"), "rb") as f:
        return f.read()


def test_small_run_not_starved_by_a_large_one(asbx):
    """A 256 MiB run streams through the channel; `echo hi` beside it, in the
    same sandbox, still returns in < 50 ms — or, on a machine too loaded for
    any run to take < 50 ms, within 3x of `echo hi` alone measured just
    before."""
    alone = []
    for _ in range(3):
        t = time.monotonic()
        assert exec_wait(asbx, "echo hi\n") == b"exited 0\n"
        alone.append(time.monotonic() - t)
    base = sorted(alone)[1]
    big = len(alone) + 1
    asbx.exec("head -c 268435456 /dev/zero\n")
    wait_for(lambda: os.stat(asbx.p("runs", str(big), "output")).st_size > (8 << 20), 20)
    times = []
    for i in range(3):
        t = time.monotonic()
        assert exec_wait(asbx, "echo hi\n") == b"exited 0\n"
        times.append(time.monotonic() - t)
        assert asbx.read("runs", str(big + 1 + i), "output") == b"hi\n"
    live = os.stat(asbx.p("runs", str(big), "output")).st_size < (256 << 20)
    beside = sorted(times)[1]
    print(f"\necho hi alone {base * 1000:.1f} ms; beside a 256 MiB run "
          f"{[round(x * 1000, 1) for x in times]} ms (big run still streaming: {live})")
    # An instrumented daemon (ASan, TSan) is the bottleneck itself: the
    # bound is for real builds.
    if not os.environ.get("SANDBOXFS_SANITIZE"):
        assert beside < max(0.05, 3 * base), (base, times)


@pytest.mark.slow
@pytest.mark.timeout_s(600)
def test_daemon_and_agent_memory_with_100_sandboxes(mount):
    """Daemon RSS < 64 MiB with 100 sandboxes, each with a connected agent;
    each agent's RSS < 4 MiB."""
    boxes = [mount.sandbox() for _ in range(100)]
    for b in boxes:
        agent_up(b, 120)
    for b in boxes[:5]:
        assert st(b, "echo hi\n") == b"exited 0\n"
    with open(f"/proc/{mount.proc.pid}/status") as f:
        rss = [int(x.split()[1]) for x in f if x.startswith("VmRSS:")][0]
    out = docker("exec", boxes[0].container, "sh", "-c",
                 "for p in $(pidof agent); do grep VmRSS /proc/$p/status; done").stdout.split()
    agent = max(int(out[i + 1]) for i in range(0, len(out), 3))
    print(f"\ndaemon RSS with 100 agents: {rss / 1024:.1f} MiB; agent RSS {agent / 1024:.2f} MiB")
    assert rss < 64 * 1024
    assert agent < 4 * 1024


def test_numeric_user_gets_an_agent_named_user_falls_back(mount):
    n = "u" + os.urandom(3).hex()
    with open(mount.p(".sandboxfs", "templates", n), "w") as f:
        f.write(f'{{"match": "{n}*", "user": "1000:1000"}}\n')
    try:
        s = mount.sandbox(n + "a")
        agent_up(s)
        assert st(s, "id -u\n") == b"exited 0\n"
        assert s.read("runs", "1", "output") == b"1000\n"
        with open(mount.p(".sandboxfs", "templates", n), "w") as f:
            f.write(f'{{"match": "{n}*", "user": "nobody"}}\n')
        t = mount.sandbox(n + "b")
        wait_for(lambda: "could not start" in t.info().get("transport_reason", ""),
                 AGENT_TIMEOUT, what="the named user's fallback")
        assert st(t, "id -un\n") == b"exited 0\n"
        assert t.read("runs", "1", "output") == b"nobody\n"
    finally:
        os.unlink(mount.p(".sandboxfs", "templates", n))
