"""Security of runs and commands (issue 8, "Runs and commands" in
docs/security.md): a failed write runs nothing, commands are not held in
memory, a run that did not start fails the close with a precise errno, a
lost observer does not lie about the command, masking covers secrets split
across stdout and stderr and never reorders output."""

import errno
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from sbxlib import SANITIZED, cat, docker, errname, errno_of, read, wait_for


def assert_errno(expected, fn, *args, **kwargs):
    got = errno_of(fn, *args, **kwargs)
    assert got == expected, f"{fn.__name__}{args}: expected {errname(expected)}, got {errname(got)}"


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ------------------------------------------------------------------ a failed write

@pytest.mark.timeout_s(180)
def test_a_write_past_the_limit_poisons_the_handle_and_runs_nothing(sbx):
    sbx.exec("echo before\n")
    assert sbx.wait() == b"exited 0\n"
    runs_before = sorted(os.listdir(sbx.p("runs")))
    status_before = sbx.status()

    head = b"echo PART1-RAN\n"
    chunk = b"#" * ((1 << 20) - 1) + b"\n"
    fd = os.open(sbx.p("exec"), os.O_WRONLY | os.O_TRUNC)
    write_errno = None
    written = 0
    try:
        os.write(fd, head)
        written = len(head)
        while written < 300 * 1000 * 1000:
            try:
                written += os.write(fd, chunk)
            except OSError as e:
                write_errno = e.errno
                break
        # Later writes on the poisoned handle fail the same way.
        assert_errno(errno.EFBIG, os.write, fd, b"echo LATER\n")
    finally:
        close_errno = errno_of(os.close, fd)
    assert write_errno == errno.EFBIG, errname(write_errno)
    assert (256 << 20) - (1 << 20) < written <= 256 << 20
    assert close_errno == errno.EFBIG, errname(close_errno)

    time.sleep(1)
    assert sorted(os.listdir(sbx.p("runs"))) == runs_before
    assert sbx.status() == status_before
    out = docker("exec", sbx.container, "ps", "-o", "args").stdout
    assert b"PART1" not in out
    assert "nothing was run" in sbx.mount.log()


def test_dd_of_a_300_mb_command_fails_and_nothing_runs(sbx, scratch):
    src = os.path.join(scratch, "big")
    with open(src, "wb") as f:
        f.write(b"echo PART1-RAN > /tmp/part1\n")
        f.truncate(300 * 1000 * 1000)   # NUL bytes past the echo: a sparse file
    r = subprocess.run(["dd", f"if={src}", f"of={sbx.p('exec')}", "bs=1M"],
                       capture_output=True, timeout=150)
    assert r.returncode != 0
    assert b"File too large" in r.stderr, r.stderr
    time.sleep(1)
    assert os.listdir(sbx.p("runs")) == []
    assert sbx.status() == b"idle\n"
    assert docker("exec", sbx.container, "cat", "/tmp/part1", check=False).returncode != 0


# ------------------------------------------------------------------ commands are not held in RAM

@pytest.mark.timeout_s(240)
def test_four_writers_of_200_mib_keep_the_daemon_under_64_mib(sbx):
    pid = sbx.mount.proc.pid
    size = 200 << 20
    chunk = b"#" * ((1 << 20) - 1) + b"\n"
    fds = [os.open(sbx.p("exec"), os.O_WRONLY | os.O_TRUNC) for _ in range(4)]
    errors = []

    def writer(fd):
        try:
            os.write(fd, b"echo big\n")
            done = 0
            while done < size:
                done += os.write(fd, chunk)
        except OSError as e:
            errors.append(e)

    try:
        threads = [threading.Thread(target=writer, args=(fd,)) for fd in fds]
        for t in threads:
            t.start()
        peak = 0
        while any(t.is_alive() for t in threads):
            peak = max(peak, vm_rss_kib(pid))
            time.sleep(0.1)
        for t in threads:
            t.join()
        assert errors == []
        peak = max(peak, vm_rss_kib(pid))
        limit = (64 if not SANITIZED else 256) << 10
        print(f"daemon VmRSS peak with 4 x 200 MiB unclosed commands: {peak} KiB")
        assert peak < limit, f"daemon VmRSS {peak} KiB"
        # The commands are not run: the container is stopped first, so each
        # close fails with EHOSTDOWN and nothing of them stays anywhere.
        with open(sbx.p("ctl"), "w") as f:
            f.write("stop\n")
    finally:
        closes = [errno_of(os.close, fd) for fd in fds]
    assert closes == [errno.EHOSTDOWN] * 4, [errname(c) for c in closes]
    assert os.listdir(sbx.p("runs")) == []
    # Spooled commands were unlinked files: nothing is left in the state dir.
    left = subprocess.run(["find", sbx.mount.state, "-size", "+1M"], capture_output=True,
                          text=True).stdout
    assert left == ""


@pytest.mark.timeout_s(120)
def test_a_command_of_3_mib_still_runs_exactly(sbx):
    body = b"".join(b"#%07d\n" % i for i in range((3 << 20) // 9))
    cmd = b"echo start\n" + body + b"echo end\n"
    sbx.exec(cmd, chunk=128 * 1024)
    assert sbx.output() == b"start\nend\n"
    assert sbx.status() == b"exited 0\n"
    assert read(sbx.p("runs", "1", "cmd")) == cmd


# ------------------------------------------------------------------ masking the merged stream

def test_a_secret_split_across_stdout_and_stderr_is_masked_in_output(sbx):
    sbx.write("auth", "SPLIT=SECRETVALUE\n")
    sbx.exec("printf 'a SECR'; sleep 0.5; printf 'ETVALUE b' >&2; sleep 0.3; printf ' c\\n'\n")
    assert sbx.wait(30) == b"exited 0\n"
    assert sbx.read("runs", "1", "output") == b"a *** b c\n"
    assert sbx.read("runs", "1", "stdout") == b"a SECR c\n"
    assert sbx.read("runs", "1", "stderr") == b"ETVALUE b"
    assert b"SECRETVALUE" not in sbx.read("runs", "1", "output")


def test_held_back_bytes_do_not_reorder_output(sbx):
    # stdout ends on "SEC", a prefix of the secret: held back until the next
    # stdout byte; stderr's "ERR" arrives in between and must come after it.
    sbx.write("auth", "K=SECRETVALUE\n")
    sbx.exec("printf 'out SEC'; sleep 0.5; printf 'ERR\\n' >&2; sleep 0.5; printf 'Z\\n'\n")
    assert sbx.wait(30) == b"exited 0\n"
    assert sbx.read("runs", "1", "output") == b"out SECERR\nZ\n"
    assert sbx.read("runs", "1", "stdout") == b"out SECZ\n"
    assert sbx.read("runs", "1", "stderr") == b"ERR\n"


def test_while_only_one_stream_speaks_held_bytes_are_prefixes_only(sbx):
    sbx.write("auth", "K=SECRETVALUE\n")
    sbx.exec("printf 'abc SE'; sleep 1; printf 'CRETVALUE\\n'\n")
    # The live output has everything but the possible prefix "SE" (one read
    # returns what is there without waiting for more).
    def first_read():
        fd = os.open(sbx.p("runs", "1", "output"), os.O_RDONLY)
        try:
            return os.read(fd, 100)
        finally:
            os.close(fd)
    wait_for(lambda: first_read() == b"abc ", 10)
    assert sbx.wait(30) == b"exited 0\n"
    assert sbx.read("runs", "1", "output") == b"abc ***\n"
    assert sbx.read("runs", "1", "stdout") == b"abc ***\n"


# ------------------------------------------------------------------ runs that did not start

def wait_for_process(sbx, args, timeout=15):
    wait_for(lambda: any(a == args for _, a in sbx.ps()), timeout,
             what=f"'{args}' in the container")


def run_numbers(sbx):
    return sorted(os.listdir(sbx.p("runs")), key=int)


@pytest.mark.timeout_s(120)
def test_a_paused_container_shows_paused_and_refuses_exec_with_ebusy(sbx):
    sbx.exec("sleep 1001\n")
    wait_for_process(sbx, "sleep 1001")
    sbx.settle()
    docker("pause", sbx.container)
    try:
        wait_for(lambda: sbx.status() == b"paused\n", 10, what="status paused")
        info = sbx.info()
        assert info["state"] == "paused"
        assert info["latest"]["status"] == "paused"
        assert_errno(errno.EBUSY, sbx.exec, "echo should-not-run\n")
        assert run_numbers(sbx) == ["1"]
        assert "exec: the container of " + sbx.name + " is paused" in sbx.mount.log()
    finally:
        docker("unpause", sbx.container)
    wait_for(lambda: sbx.status() == b"running\n", 10, what="status running again")
    assert sbx.info()["state"] == "running"
    with open(sbx.p("ctl"), "w") as f:
        f.write("kill\n")
    assert sbx.wait(30) == b"killed\n"
    assert run_numbers(sbx) == ["1"]
    out, status = sbx.run("echo after\n")
    assert (out, status) == (b"after\n", b"exited 0\n")


def test_an_idle_paused_sandbox_reads_paused(sbx):
    sbx.settle()
    docker("pause", sbx.container)
    try:
        wait_for(lambda: sbx.status() == b"paused\n", 10, what="status paused")
        assert sbx.info()["latest"] is None
    finally:
        docker("unpause", sbx.container)
    wait_for(lambda: sbx.status() == b"idle\n", 10, what="status idle again")


def test_a_missing_workdir_fails_the_close_with_enoent(sbx):
    sbx.write("workdir", "/no/such/dir\n")
    assert_errno(errno.ENOENT, sbx.exec, "echo should-not-run\n")
    assert run_numbers(sbx) == ["1"]
    assert sbx.status() == b"lost\n"
    assert sbx.read("runs", "1", "output") == b""
    reason = sbx.info()["latest"]["reason"]
    assert reason.startswith("the run did not start: docker exec exited 126: "), reason
    assert "chdir to cwd" in reason and "/no/such/dir" in reason
    log = sbx.mount.log()
    assert f"sandbox {sbx.name} run 1: the run did not start" in log
    # The read-back of an O_RDWR handle fails the same way.
    fd = os.open(sbx.p("exec"), os.O_RDWR)
    try:
        os.write(fd, b"echo again\n")
        assert_errno(errno.ENOENT, os.read, fd, 64)
    finally:
        os.close(fd)
    sbx.write("workdir", "/tmp\n")
    assert sbx.run("pwd\n") == (b"/tmp\n", b"exited 0\n")


def test_a_run_that_did_not_start_does_not_hide_a_live_one_from_kill(sbx):
    sbx.exec("sleep 1002\n")
    wait_for_process(sbx, "sleep 1002")
    sbx.write("workdir", "/no/such/dir\n")
    assert_errno(errno.ENOENT, sbx.exec, "echo x\n")
    assert sbx.status() == b"lost\n"
    with open(sbx.p("ctl"), "w") as f:
        f.write("kill\n")
    wait_for(lambda: sbx.read("runs", "1", "status") == b"killed\n", 15, what="run 1 killed")
    assert not any(a == "sleep 1002" for _, a in sbx.ps())
    assert_errno(errno.ESRCH, sbx.write, "ctl", "kill\n")


# ------------------------------------------------------------------ a killed docker exec

def local_exec_of(marker):
    """Pids of local `docker exec` processes whose argv holds marker."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[0].endswith(b"docker") and b"exec" in argv and \
                marker.encode() in argv:
            found.append(int(p))
    return found


@pytest.mark.timeout_s(120)
def test_killing_the_local_docker_exec_reads_lost_and_ctl_kill_still_reaches_the_run(sbx):
    sbx.exec("echo started; sleep 1003\n")
    wait_for_process(sbx, "sleep 1003")
    # Output after the wrapper's marker: the daemon knows the process group.
    r = sbx.mount.reader(sbx.p("output"))
    r.wait_data(b"started\n", 15)
    pids = local_exec_of("echo started; sleep 1003\n")
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    assert sbx.wait(30) == b"lost\n"
    assert sbx.status() == b"lost\n"
    reason = sbx.info()["latest"]["reason"]
    assert reason.startswith("the docker exec observing the run died (signal 9)"), reason
    assert f"sandbox {sbx.name} run 1: the docker exec observing the run died" in \
        sbx.mount.log()
    # The command goes on inside, and ctl kill reaches its process group.
    assert any(a == "sleep 1003" for _, a in sbx.ps())
    with open(sbx.p("ctl"), "w") as f:
        f.write("kill\n")
    wait_for(lambda: not any(a == "sleep 1003" for _, a in sbx.ps()), 15,
             what="the orphaned command gone")
    out = docker("exec", sbx.container, "ps").stdout
    assert b"sleep 1003" not in out
    assert sbx.status() == b"lost\n"
    assert_errno(errno.ESRCH, sbx.write, "ctl", "kill\n")


def test_exec_racing_a_pause_fails_with_ebusy_either_way(sbx):
    # Whether the daemon heard docker's pause event yet or docker exec says
    # so itself, the close fails with EBUSY and nothing runs.
    sbx.settle()
    docker("pause", sbx.container)
    try:
        assert_errno(errno.EBUSY, sbx.exec, "echo should-not-run > /tmp/ran\n")
        runs = run_numbers(sbx)
        assert runs in ([], ["1"])
        if runs:
            assert sbx.read("runs", "1", "status") == b"lost\n"
            assert "is paused" in sbx.info()["latest"]["reason"]
            assert sbx.read("runs", "1", "output") == b""   # a reason, not output
    finally:
        docker("unpause", sbx.container)
    assert docker("exec", sbx.container, "cat", "/tmp/ran", check=False).returncode != 0


@pytest.mark.timeout_s(180)
def test_reading_a_large_cmd_back_does_not_copy_it_into_memory(sbx):
    # runs/N/cmd is served from its spool file: 8 opens of a 24 MiB command
    # do not take 192 MiB.
    line = b"#" * 1023 + b"\n"
    cmd = b"echo ok\n" + line * (24 << 10)
    sbx.exec(cmd, chunk=1 << 20)
    assert sbx.output(120) == b"ok\n"
    pid = sbx.mount.proc.pid
    fds = [os.open(sbx.p("runs", "1", "cmd"), os.O_RDONLY) for _ in range(8)]
    try:
        assert os.read(fds[0], 8) == b"echo ok\n"
        assert os.pread(fds[1], 16, len(cmd) - 16) == line[-16:]
        assert os.pread(fds[2], 16, len(cmd)) == b""
        rss = vm_rss_kib(pid)
        assert rss < ((64 if not SANITIZED else 256) << 10), f"daemon VmRSS {rss} KiB"
    finally:
        for fd in fds:
            os.close(fd)
    assert read(sbx.p("runs", "1", "cmd")) == cmd
