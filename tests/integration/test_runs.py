"""Runs in depth (issue 3): runs/N history, stdout/stderr, exec read-back,
concurrent clients, wait, timeout and ctl kill reaching inside the container,
env/workdir, auth JSON files, masking, info, poll, a container dying under a
run. Exact bytes, numbers, status lines and errnos from docs/interface.md."""

import datetime
import errno
import json
import os
import re
import secrets
import select
import signal
import subprocess
import threading
import time

import pytest

from sbxlib import (CONTROL_FILES, IMAGE, RFC3339_MS, RUN_FILES, SANITIZED, cat, docker,
                    errname, errno_of, grep_tree, inspect_raw, read, run_processes,
                    wait_for)


def assert_errno(expected, fn, *args, **kwargs):
    got = errno_of(fn, *args, **kwargs)
    assert got == expected, f"{fn.__name__}{args}: expected {errname(expected)}, got {errname(got)}"


def parse_time(b):
    t = datetime.datetime.strptime(b.decode().strip(), "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc)


def runs(sbx):
    return sorted(os.listdir(sbx.p("runs")), key=int)


def wait_for_process(sbx, args, timeout=10):
    wait_for(lambda: any(a == args for _, a in sbx.ps()), timeout, what=f"'{args}' in the container")


# ------------------------------------------------------------------ runs/N

def test_runs_are_numbered_from_1_with_exact_files(sbx):
    assert runs(sbx) == []
    cmds = ["echo one\n", "echo two >&2; exit 2\n", "printf three"]
    for c in cmds:
        sbx.exec(c)
        sbx.wait()
    assert runs(sbx) == ["1", "2", "3"]
    for n in ("1", "2", "3"):
        assert set(os.listdir(sbx.p("runs", n))) == RUN_FILES
    r = lambda n, f: read(sbx.p("runs", str(n), f))  # noqa: E731
    assert [r(1, "cmd"), r(1, "output"), r(1, "stdout"), r(1, "stderr"), r(1, "status")] == \
        [b"echo one\n", b"one\n", b"one\n", b"", b"exited 0\n"]
    assert [r(2, "cmd"), r(2, "output"), r(2, "stdout"), r(2, "stderr"), r(2, "status")] == \
        [b"echo two >&2; exit 2\n", b"two\n", b"", b"two\n", b"exited 2\n"]
    assert [r(3, "cmd"), r(3, "output"), r(3, "stdout"), r(3, "stderr"), r(3, "status")] == \
        [b"printf three", b"three", b"three", b"", b"exited 0\n"]
    for n in (1, 2, 3):
        assert RFC3339_MS.match(r(n, "started")), r(n, "started")
        assert RFC3339_MS.match(r(n, "ended")), r(n, "ended")
        assert parse_time(r(n, "started")) <= parse_time(r(n, "ended"))
    assert parse_time(r(1, "ended")) <= parse_time(r(2, "started"))
    # The top level follows the latest run.
    assert sbx.status() == b"exited 0\n"
    assert cat(sbx.p("output")) == b"three"
    assert cat(sbx.p("stdout")) == b"three"
    assert cat(sbx.p("stderr")) == b""
    # Spooled files report their size and may be read at any offset.
    assert os.stat(sbx.p("runs", "1", "output")).st_size == 4
    fd = os.open(sbx.p("runs", "1", "output"), os.O_RDONLY)
    try:
        assert os.pread(fd, 2, 1) == b"ne"
    finally:
        os.close(fd)
    assert_errno(errno.ENOENT, os.stat, sbx.p("runs", "4"))


def test_started_and_ended_times(sbx):
    before = datetime.datetime.now(datetime.timezone.utc)
    sbx.exec("sleep 2\n")
    wait_for(lambda: sbx.status() == b"running\n", 10, what="status running")
    assert sbx.read("runs", "1", "ended") == b""
    assert sbx.read("runs", "1", "status") == b"running\n"
    started = sbx.read("runs", "1", "started")
    assert RFC3339_MS.match(started), started
    assert abs((parse_time(started) - before).total_seconds()) < 60
    assert sbx.wait() == b"exited 0\n"
    ended = sbx.read("runs", "1", "ended")
    assert RFC3339_MS.match(ended), ended
    took = (parse_time(ended) - parse_time(started)).total_seconds()
    assert 1.5 <= took < 30, took


def test_stdout_and_stderr_are_split_exactly(sbx):
    sbx.exec("echo o1; sleep 0.3; echo e1 >&2; sleep 0.3; echo o2; sleep 0.3; printf e2 >&2\n")
    assert sbx.wait() == b"exited 0\n"
    assert cat(sbx.p("stdout")) == b"o1\no2\n"
    assert cat(sbx.p("stderr")) == b"e1\ne2"
    assert cat(sbx.p("output")) == b"o1\ne1\no2\ne2"
    assert sbx.read("runs", "1", "stdout") == b"o1\no2\n"
    assert sbx.read("runs", "1", "stderr") == b"e1\ne2"
    assert sbx.read("runs", "1", "output") == b"o1\ne1\no2\ne2"


def test_output_handle_binds_to_the_run_latest_at_open(mount, sbx):
    sbx.exec("sleep 2; echo one\n")
    r = mount.reader(sbx.p("output"))
    time.sleep(0.5)
    sbx.exec("echo two\n")
    assert r.wait_exit(20) == 0
    assert r.data() == b"one\n"
    assert sbx.wait() == b"exited 0\n"
    assert cat(sbx.p("output")) == b"two\n"


def test_overlapping_runs_top_level_follows_the_latest(sbx):
    n1 = sbx.exec_n("sleep 3; echo A; exit 5\n")
    n2 = sbx.exec_n("echo B\n")
    assert (n1, n2) == (1, 2)
    assert sbx.wait() == b"exited 0\n"
    assert cat(sbx.p("output")) == b"B\n"
    assert sbx.read("runs", "1", "status") == b"running\n"
    assert cat(sbx.p("runs", "1", "output")) == b"A\n"
    assert sbx.read("runs", "1", "status") == b"exited 5\n"
    assert sbx.status() == b"exited 0\n"


# ------------------------------------------------------------------ exec read-back

def test_exec_opened_read_write_returns_the_run_number(sbx):
    assert sbx.exec_n("echo first\n") == 1
    fd = os.open(sbx.p("exec"), os.O_RDWR)
    try:
        os.write(fd, b"echo sec")
        os.write(fd, b"ond\n")
        assert os.read(fd, 64) == b"2\n"
        assert os.read(fd, 64) == b""
        assert_errno(errno.EBUSY, os.write, fd, b"echo more\n")
    finally:
        os.close(fd)
    assert cat(sbx.p("runs", "2", "output")) == b"second\n"
    assert sbx.read("runs", "2", "cmd") == b"echo second\n"
    assert cat(sbx.p("runs", "1", "output")) == b"first\n"
    assert runs(sbx) == ["1", "2"], "close after the read-back must start nothing more"


def test_exec_read_without_write_and_empty_command_start_nothing(sbx):
    fd = os.open(sbx.p("exec"), os.O_RDWR)
    try:
        assert os.read(fd, 64) == b""
    finally:
        os.close(fd)
    sbx.write("exec", "")                      # : > exec
    assert runs(sbx) == []
    assert sbx.status() == b"idle\n"


@pytest.mark.slow
@pytest.mark.timeout_s(300)
def test_two_concurrent_clients_50_runs_each(sbx):
    per_client = 50
    got = {"A": [], "B": []}
    errors = []

    def client(c):
        try:
            for i in range(per_client):
                cmd = f"echo client-{c}-{i}\n"
                n = sbx.exec_n(cmd)
                out = cat(sbx.p("runs", str(n), "output"), timeout=60)
                got[c].append((n, i, out))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(f"client {c}: {e!r}")

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads), "clients did not finish in 240 s"
    assert errors == []
    numbers = [n for c in "AB" for n, _, _ in got[c]]
    assert sorted(numbers) == list(range(1, 2 * per_client + 1))
    for c in "AB":
        assert [i for _, i, _ in got[c]] == list(range(per_client))
        for n, i, out in got[c]:
            assert out == f"client-{c}-{i}\n".encode(), f"run {n} of client {c}: {out!r}"
            assert sbx.read("runs", str(n), "cmd") == f"echo client-{c}-{i}\n".encode()
            assert sbx.read("runs", str(n), "status") == b"exited 0\n"
    assert len(runs(sbx)) == 2 * per_client


# ------------------------------------------------------------------ wait

def test_wait_blocks_until_the_run_ends(mount, sbx):
    sbx.exec("sleep 2; exit 4\n")
    r = mount.reader(sbx.p("wait"))
    time.sleep(1)
    assert r.proc.poll() is None and r.data() == b"", "wait returned before the run ended"
    assert r.wait_exit(15) == 0
    assert r.data() == b"exited 4\n"
    t0 = time.monotonic()
    assert cat(sbx.p("wait"), timeout=5) == b"exited 4\n"
    assert time.monotonic() - t0 < 2


def test_ctrl_c_ends_a_blocked_cat_of_wait(mount, sbx):
    sbx.exec("sleep 30\n")
    r = mount.reader(sbx.p("wait"))
    time.sleep(1)
    assert r.proc.poll() is None
    t0 = time.monotonic()
    r.proc.send_signal(signal.SIGINT)
    r.wait_exit(2)
    assert time.monotonic() - t0 < 2
    assert sbx.status() == b"running\n"


def test_poll_and_select_report_readiness(sbx):
    sbx.exec("sleep 2; echo ready; sleep 2\n")
    wait_for(lambda: sbx.status() == b"running\n", 10, what="status running")
    fd = os.open(sbx.p("output"), os.O_RDONLY)
    wfd = os.open(sbx.p("wait"), os.O_RDONLY)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(300) == [], "output polled readable before anything arrived"
        assert select.select([wfd], [], [], 0.3)[0] == [], "wait selected readable while live"
        ev = p.poll(10_000)
        assert ev and ev[0][1] & select.POLLIN, f"no POLLIN on output within 10 s: {ev}"
        assert os.read(fd, 4096) == b"ready\n"
        assert p.poll(300) == [], "readable again although nothing new arrived"
        ev = p.poll(10_000)
        assert ev and ev[0][1] & select.POLLIN, "no POLLIN at the end of the run"
        assert os.read(fd, 4096) == b""
        assert select.select([wfd], [], [], 10)[0] == [wfd]
        assert os.read(wfd, 4096) == b"exited 0\n"
    finally:
        os.close(fd)
        os.close(wfd)


# ------------------------------------------------------------------ timeout and kill

def test_timeout_kills_the_process_group_inside(sbx):
    assert sbx.read("timeout") == b"0\n"
    sbx.write("timeout", "2\n")
    assert sbx.read("timeout") == b"2\n"
    baseline = sbx.pids()
    t0 = time.monotonic()
    sbx.exec("sleep 1001 & sleep 1002; wait\n")
    assert sbx.wait(30) == b"timeout\n"
    assert time.monotonic() - t0 < 8
    assert sbx.status() == b"timeout\n"
    assert sbx.read("runs", "1", "status") == b"timeout\n"
    wait_for(lambda: run_processes(sbx.container, baseline) == [], 5,
             what="no process of the run left in the container")
    # The timeout applies to later runs only while set.
    sbx.write("timeout", "0\n")
    assert sbx.run("sleep 3; echo survived\n") == (b"survived\n", b"exited 0\n")


@pytest.mark.parametrize("payload", ["abc\n", "-1\n", "1.5\n", "5 6\n"])
def test_invalid_timeout_is_einval(sbx, payload):
    sbx.write("timeout", "5\n")
    assert_errno(errno.EINVAL, sbx.write, "timeout", payload)
    assert sbx.read("timeout") == b"5\n"
    sbx.write("timeout", "")               # : > timeout
    assert sbx.read("timeout") == b"0\n"


@pytest.mark.parametrize("verb", ["kill", "kill\n", "kill TERM\n", "kill SIGTERM\n",
                                  "kill 9\n", "kill 15\n", "kill HUP\n"])
def test_ctl_kill_ends_the_run_inside(sbx, verb):
    baseline = sbx.pids()
    sbx.exec("sleep 1003 & sleep 1004; wait\n")
    wait_for_process(sbx, "sleep 1004")
    sbx.write("ctl", verb)
    assert sbx.wait(15) == b"killed\n"
    assert sbx.status() == b"killed\n"
    wait_for(lambda: run_processes(sbx.container, baseline) == [], 5,
             what="no process of the run left in the container")
    assert sbx.inspect()["State"]["Running"] is True


def test_ctl_kill_reaches_a_trapping_shell_with_kill(sbx):
    baseline = sbx.pids()
    sbx.exec("trap '' TERM INT HUP; sleep 1005\n")
    wait_for_process(sbx, "sleep 1005")
    sbx.write("ctl", "kill\n")
    assert sbx.wait(15) == b"killed\n"
    wait_for(lambda: run_processes(sbx.container, baseline) == [], 5,
             what="no process of the run left in the container")


def test_ctl_kill_without_a_live_run_is_esrch(sbx):
    assert_errno(errno.ESRCH, sbx.write, "ctl", "kill\n")
    assert sbx.status() == b"idle\n"
    sbx.run("true\n")
    assert_errno(errno.ESRCH, sbx.write, "ctl", "kill TERM\n")
    assert sbx.status() == b"exited 0\n"


@pytest.mark.parametrize("payload", ["bogus\n", "kill NOSUCHSIG\n", "kill 9 9\n", "stop now\n",
                                     "start x\n", "restart\n"])
def test_ctl_unknown_or_malformed_is_einval_and_changes_nothing(sbx, payload):
    sbx.exec("sleep 60\n")
    wait_for(lambda: sbx.status() == b"running\n", 10, what="status running")
    assert_errno(errno.EINVAL, sbx.write, "ctl", payload)
    time.sleep(0.5)
    assert sbx.status() == b"running\n"
    assert sbx.inspect()["State"]["Running"] is True


@pytest.mark.timeout_s(120)
def test_ctl_stop_and_start(mount, sbx):
    sbx.exec("echo up; sleep 60\n")
    r = mount.reader(sbx.p("output"))
    r.wait_data(b"up\n", 10)
    sbx.write("ctl", "stop\n")
    assert sbx.inspect()["State"]["Running"] is False
    wait_for(lambda: sbx.status() == b"lost\n", 10, what="status lost")
    assert r.wait_exit(10) == 0
    assert r.data() == b"up\n"
    assert sbx.info()["state"] == "exited"
    assert sbx.name in mount.names()
    assert_errno(errno.EHOSTDOWN, os.open, sbx.p("exec"), os.O_WRONLY)
    sbx.write("ctl", "start\n")
    assert sbx.inspect()["State"]["Running"] is True
    assert sbx.info()["state"] == "running"
    assert sbx.run("echo back\n") == (b"back\n", b"exited 0\n")
    assert runs(sbx) == ["1", "2"]


# ------------------------------------------------------------------ env, workdir

def test_env_applies_to_later_runs_and_reads_back(sbx):
    assert sbx.read("env") == b""
    sbx.write("env", "FOO=bar\nBAZ=qux quux\n")
    assert sbx.read("env") == b"FOO=bar\nBAZ=qux quux\n"
    assert sbx.run("echo \"$FOO/$BAZ\"\n") == (b"bar/qux quux\n", b"exited 0\n")
    sbx.write("env", "ADD=1\n", mode="a")
    assert sbx.read("env") == b"FOO=bar\nBAZ=qux quux\nADD=1\n"
    sbx.write("env", "ONLY=x\n")
    assert sbx.read("env") == b"ONLY=x\n"
    assert sbx.run("echo ${FOO:-unset} $ONLY\n") == (b"unset x\n", b"exited 0\n")
    assert_errno(errno.EINVAL, sbx.write, "env", "bad line\n", "a")
    assert sbx.read("env") == b"ONLY=x\n"
    sbx.write("env", "")
    assert sbx.read("env") == b""
    assert sbx.run("echo ${ONLY:-unset}\n") == (b"unset\n", b"exited 0\n")


def test_auth_wins_over_env_for_the_same_key(sbx):
    sbx.write("env", "TOK=public-value\n")
    sbx.write("auth", "TOK=private-value\n")
    assert sbx.run("echo ${#TOK}\n") == (b"13\n", b"exited 0\n")


def test_workdir_applies_to_later_runs_and_reads_back(sbx):
    assert sbx.read("workdir") == b""
    default, st = sbx.run("pwd\n")
    assert st == b"exited 0\n"
    sbx.write("workdir", "/tmp\n")
    assert sbx.read("workdir") == b"/tmp\n"
    assert sbx.run("pwd\n") == (b"/tmp\n", b"exited 0\n")
    sbx.write("workdir", "/etc")
    assert sbx.read("workdir") == b"/etc\n"
    assert_errno(errno.EINVAL, sbx.write, "workdir", "tmp\n")
    assert sbx.read("workdir") == b"/etc\n"
    assert sbx.run("pwd\n") == (b"/etc\n", b"exited 0\n")
    sbx.write("workdir", "")
    assert sbx.read("workdir") == b""
    assert sbx.run("pwd\n") == (default, b"exited 0\n")


# ------------------------------------------------------------------ auth JSON, masking

def test_auth_json_places_files_with_mode_600(mount, sbx):
    token = "js" + secrets.token_hex(8)
    content = '{"k": "fc' + secrets.token_hex(8) + '"}'
    abs_content = "abs-" + secrets.token_hex(8) + "\n"
    doc = {"env": {"JTOKEN": token},
           "files": {"/tmp/abs.txt": abs_content, "~/.cfg/app/auth.json": content}}
    sbx.write("auth", json.dumps(doc))
    assert sbx.read("auth") == b"JTOKEN\n/tmp/abs.txt\n~/.cfg/app/auth.json\n"
    c = sbx.container
    assert docker("exec", c, "stat", "-c", "%a", "/root/.cfg/app/auth.json").stdout == b"600\n"
    assert docker("exec", c, "stat", "-c", "%a", "/tmp/abs.txt").stdout == b"600\n"
    assert docker("exec", c, "cat", "/root/.cfg/app/auth.json").stdout == content.encode()
    assert docker("exec", c, "cat", "/tmp/abs.txt").stdout == abs_content.encode()
    assert sbx.run("echo ${#JTOKEN}\n") == (f"{len(token)}\n".encode(), b"exited 0\n")
    # A file's content printed by a run is masked too.
    assert sbx.run("cat ~/.cfg/app/auth.json\n") == (b"***", b"exited 0\n")
    for needle in (token.encode(), content.encode(), abs_content.strip().encode()):
        assert needle not in inspect_raw(c)
        assert needle not in read(sbx.p("info"))
        assert needle not in read(mount.p(".sandboxfs", "log"))
        assert needle not in mount.log_bytes()
        assert grep_tree(mount.state, needle) == []
    # Replacing the variables keeps the files already placed.
    sbx.write("auth", "OTHER=zzzz9999\n")
    assert sbx.read("auth").startswith(b"OTHER\n")
    assert docker("exec", c, "cat", "/root/.cfg/app/auth.json").stdout == content.encode()
    assert sbx.run("echo ${JTOKEN:-gone}\n") == (b"gone\n", b"exited 0\n")


@pytest.mark.parametrize("payload", [
    '{"env": ',
    '{"other": {}}',
    '{"env": {"1BAD": "xxxx"}}',
    '{"env": {"K": 5}}',
    '[1, 2]',
])
def test_malformed_auth_json_is_einval(sbx, payload):
    sbx.write("auth", "KEEP=kkkk1111\n")
    assert_errno(errno.EINVAL, sbx.write, "auth", payload)
    assert sbx.read("auth") == b"KEEP\n"


def test_secret_split_across_pipe_reads_is_masked(mount, sbx):
    left = "Lx" + secrets.token_hex(5)
    right = secrets.token_hex(5) + "Rz"
    value = left + right
    sbx.write("auth", f"SPLITKEY={value}\n")
    sbx.exec(f"printf 'x {left}'; sleep 1; printf '{right} y\\n'; sleep 0.3; "
             f"printf '%s\\n' \"$SPLITKEY\" >&2\n")
    assert sbx.wait(30) == b"exited 0\n"
    assert cat(sbx.p("output")) == b"x *** y\n***\n"
    assert cat(sbx.p("stdout")) == b"x *** y\n"
    assert cat(sbx.p("stderr")) == b"***\n"
    assert sbx.read("runs", "1", "output") == b"x *** y\n***\n"
    assert sbx.read("runs", "1", "stdout") == b"x *** y\n"
    assert sbx.read("runs", "1", "stderr") == b"***\n"
    assert grep_tree(mount.state, value.encode()) == []


# ------------------------------------------------------------------ info

INFO_KEYS = {"name", "container", "id", "image", "state", "created", "runs", "latest",
             "settings", "auth", "error"}


def test_info_is_the_documented_json(mount, sbx):
    raw = read(sbx.p("info"))
    info = json.loads(raw)
    assert INFO_KEYS <= set(info), f"missing keys: {INFO_KEYS - set(info)}"
    assert info["name"] == sbx.name
    assert info["container"] == sbx.container
    assert info["id"] == sbx.inspect()["Id"]
    assert info["image"] == IMAGE
    assert info["state"] == "running"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", info["created"])
    assert info["runs"] == 0
    assert info["latest"] is None
    assert info["settings"] == {"env": {}, "workdir": "", "timeout": 0, "stdin": "eof"}
    assert info["auth"] == {"env": [], "files": []}
    assert info["error"] is None

    value = "iv" + secrets.token_hex(10)
    sbx.write("env", "K=V\n")
    sbx.write("workdir", "/tmp\n")
    sbx.write("timeout", "7\n")
    sbx.write("auth", f"SEC={value}\n")
    assert sbx.run("echo marker$((6*7)); echo $SEC\n") == (b"marker42\n***\n", b"exited 0\n")
    raw = read(sbx.p("info"))
    info = json.loads(raw)
    assert INFO_KEYS <= set(info)
    assert info["runs"] == 1
    assert {k: info["latest"][k] for k in ("run", "status")} == {"run": 1, "status": "exited 0"}
    assert info["settings"] == {"env": {"K": "V"}, "workdir": "/tmp", "timeout": 7,
                                "stdin": "eof"}
    assert info["auth"] == {"env": ["SEC"], "files": []}
    assert info["error"] is None
    assert value.encode() not in raw
    assert b"marker42" not in raw, "command output must never go into info"


# ------------------------------------------------------------------ the container dies

def test_container_killed_mid_run_ends_the_stream(mount, sbx):
    sbx.exec("echo before; sleep 60\n")
    r = mount.reader(sbx.p("output"))
    w = mount.reader(sbx.p("wait"))
    r.wait_data(b"before\n", 10)
    docker("kill", sbx.container)
    assert r.wait_exit(5) == 0
    assert r.data() == b"before\n"
    assert w.wait_exit(5) == 0
    assert w.data() == b"lost\n"
    assert sbx.status() == b"lost\n"
    assert sbx.read("runs", "1", "status") == b"lost\n"
    assert sbx.read("runs", "1", "output") == b"before\n"
    assert RFC3339_MS.match(sbx.read("runs", "1", "ended"))
    latest = sbx.info()["latest"]
    assert {k: latest[k] for k in ("run", "status")} == {"run": 1, "status": "lost"}
    assert sbx.info()["state"] == "exited"
    assert set(os.listdir(sbx.path)) == CONTROL_FILES


@pytest.mark.slow
@pytest.mark.timeout_s(600)
def test_gib_of_output_is_spooled_exactly_with_small_daemon_memory(mount, sbx):
    size = 1 << 30
    sbx.exec(f"head -c {size} /dev/zero\n")
    p = subprocess.run(["timeout", "-s", "KILL", "500", "sh", "-c", 'cat "$1" | wc -c', "sh",
                        sbx.p("output")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 0, p.stderr
    assert int(p.stdout) == size
    assert sbx.status() == b"exited 0\n"
    assert os.stat(sbx.p("runs", "1", "output")).st_size == size
    with open(f"/proc/{mount.proc.pid}/status") as f:
        hwm_kb = int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M).group(1))
    limit_mib = 1024 if SANITIZED else 64
    assert hwm_kb < limit_mib * 1024, f"daemon peak RSS {hwm_kb} kB"
