"""Operating sandboxes (issue 14): ctl pause/resume, the audit log
(.sandboxfs/events, NAME/events), NAME/stats, the idle TTL and
.sandboxfs/summary. Exact lines and errnos from docs/interface.md."""

import errno
import hashlib
import json
import os
import re
import select
import time

import pytest

from sbxlib import IMAGE, Sandbox, docker, errname, errno_of, read, wait_for, write


def assert_errno(expected, fn, *args, **kwargs):
    got = errno_of(fn, *args, **kwargs)
    assert got == expected, f"{fn.__name__}{args}: expected {errname(expected)}, got {errname(got)}"


# ------------------------------------------------------------------ pause

@pytest.mark.timeout_s(60)
def test_pause_freezes_a_counter_and_resume_continues_it(mount, sbx):
    sbx.exec("i=0; while [ $i -lt 400 ]; do echo $i; i=$((i+1)); sleep 0.05; done\n")
    r = mount.reader(sbx.p("output"))
    r.wait_data(lambda b: b.count(b"\n") >= 5, 10)
    sbx.write("ctl", "pause\n")
    assert sbx.status() == b"paused\n"
    assert sbx.info()["state"] == "paused"
    assert sbx.inspect()["State"]["Paused"] is True
    time.sleep(0.3)  # what was in flight reaches the spool
    frozen = r.data()
    time.sleep(1.5)
    assert r.data() == frozen, "a paused run printed"
    # exec while paused: EBUSY and no new run.
    assert_errno(errno.EBUSY, sbx.exec, "echo no\n")
    assert sorted(os.listdir(sbx.p("runs"))) == ["1"]
    sbx.write("ctl", "pause\n")  # again: nothing to do
    sbx.write("ctl", "resume\n")
    assert sbx.inspect()["State"]["Paused"] is False
    assert sbx.status() == b"running\n"
    got = r.wait_data(lambda b: b.count(b"\n") > frozen.count(b"\n"), 5)
    last = int(frozen.split(b"\n")[-2])
    nxt = got[len(frozen):].split(b"\n")[0]
    assert int(nxt) == last + 1, "the counter goes on where it stopped"
    sbx.write("ctl", "kill\n")
    sbx.wait()
    assert_errno(errno.EINVAL, sbx.write, "ctl", "pause now\n")
    sbx.write("ctl", "stop\n")
    assert_errno(errno.EHOSTDOWN, sbx.write, "ctl", "pause\n")


# ------------------------------------------------------------------ events

def read_now(path):
    """Everything a reader gets without waiting (O_NONBLOCK: EAGAIN at the end)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    out = b""
    try:
        while True:
            try:
                b = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not b:
                break
            out += b
    finally:
        os.close(fd)
    return out


def events(path):
    """The lines of an events file as objects, without their times."""
    got = []
    for line in read_now(path).decode().splitlines():
        ev = json.loads(line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ev.pop("time"))
        got.append(ev)
    return got


def sha(b):
    return hashlib.sha256(b).hexdigest()


def no_duration(evs):
    for e in evs:
        if e["event"] == "run_ended":
            assert isinstance(e.pop("duration_ms"), int)
    return evs


@pytest.mark.timeout_s(120)
def test_events_of_a_scripted_sequence_exact_in_order_and_after_a_restart(make_mount):
    first = make_mount()
    s = first.sandbox()
    n = s.name
    secret = "s3cr3t-" + "x" * 12
    assert s.run("echo hi\n") == (b"hi\n", b"exited 0\n")
    s.write("auth", f"TOKEN={secret}\n")
    assert s.run(f"echo $TOKEN >&2; exit 3\n") == (b"***\n", b"exited 3\n")
    s.write("ctl", "stop\n")
    s.write("ctl", "start\n")
    tpl = s.info()["template"]
    cmd2 = f"echo $TOKEN >&2; exit 3\n".encode()
    want = [
        {"event": "sandbox_created", "sandbox": n, "template": tpl, "image": IMAGE},
        {"event": "run_started", "sandbox": n, "run": 1, "cmd_sha256": sha(b"echo hi\n"),
         "cmd_bytes": 8},
        {"event": "run_ended", "sandbox": n, "run": 1, "status": "exited 0", "bytes": 3,
         "stdout_bytes": 3, "stderr_bytes": 0, "truncated": False},
        {"event": "auth_changed", "sandbox": n, "names": ["TOKEN"]},
        {"event": "run_started", "sandbox": n, "run": 2, "cmd_sha256": sha(cmd2),
         "cmd_bytes": len(cmd2)},
        {"event": "run_ended", "sandbox": n, "run": 2, "status": "exited 3", "bytes": 4,
         "stdout_bytes": 0, "stderr_bytes": 4, "truncated": False},
        {"event": "sandbox_stopped", "sandbox": n, "by": "ctl"},
        {"event": "sandbox_started", "sandbox": n, "by": "ctl"},
    ]
    wait_for(lambda: len(events(first.p(".sandboxfs", "events"))) >= len(want), 5,
             what="the events written")
    assert no_duration(events(first.p(".sandboxfs", "events"))) == want
    assert no_duration(events(s.p("events"))) == want
    other = first.sandbox()
    assert events(other.p("events")) == [
        {"event": "sandbox_created", "sandbox": other.name, "template": tpl, "image": IMAGE}]
    assert first.stop() == []

    second = make_mount(state=first.state)
    s2 = Sandbox(second, n)
    adopted = [{"event": "sandbox_adopted", "sandbox": n}]
    wait_for(lambda: len(events(s2.p("events"))) >= len(want) + 1, 5, what="adoption logged")
    assert no_duration(events(s2.p("events"))) == want + adopted
    os.rmdir(s2.p())
    wait_for(lambda: events(second.p(".sandboxfs", "events"))[-1]["event"] == "sandbox_removed",
             5, what="removal logged")
    assert events(second.p(".sandboxfs", "events"))[-1] == {"event": "sandbox_removed",
                                                            "sandbox": n}
    # Never a secret: not in the files served, not in the state directory.
    assert secret not in read_now(second.p(".sandboxfs", "events")).decode()
    for root, _, files in os.walk(first.state):
        for f in files:
            if f.startswith("events"):
                assert secret.encode() not in open(os.path.join(root, f), "rb").read()


@pytest.mark.timeout_s(60)
def test_a_reader_at_the_end_of_events_waits_for_new_lines(mount, sbx):
    r = mount.reader(sbx.p("events"))
    r.wait_data(b'"sandbox_created"', 5)
    time.sleep(0.5)
    assert r.proc.poll() is None, "cat events must wait at the end"
    before = r.data()
    sbx.exec("echo follow\n")
    got = r.wait_data(lambda b: b'"run_ended"' in b, 10)
    new = got[len(before):].decode().splitlines()
    assert [json.loads(x)["event"] for x in new] == ["run_started", "run_ended"]
    assert r.proc.poll() is None
    # poll(2) says readable only when there is a line.
    fd = os.open(sbx.p("events"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                if not os.read(fd, 65536):
                    break
            except BlockingIOError:
                break
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(200) == []
        sbx.write("ctl", "pause\n")
        assert p.poll(5000) != []
        assert json.loads(os.read(fd, 65536))["event"] == "sandbox_paused"
        sbx.write("ctl", "resume\n")
    finally:
        os.close(fd)


# ------------------------------------------------------------------ stats

STATS_KEYS = ["cpu_percent", "memory_bytes", "memory_limit_bytes", "pids", "pids_limit",
              "uptime_s"]


def stats(sbx):
    text = read(sbx.p("stats")).decode()
    assert text.endswith("\n")
    pairs = [line.split(" ") for line in text.splitlines()]
    assert all(len(p) == 2 for p in pairs), text
    return [k for k, _ in pairs], {k: float(v) for k, v in pairs}


@pytest.mark.timeout_s(90)
def test_stats_show_what_the_container_really_uses(mount, sbx):
    keys, st = stats(sbx)
    assert keys == STATS_KEYS  # network "none": no net lines
    assert st["memory_limit_bytes"] == 2 << 30
    assert st["pids_limit"] == 512
    assert 0 <= st["uptime_s"] < 60
    assert st["memory_bytes"] < 50 << 20
    # dd holds a 110 MiB buffer while sleep never reads the pipe.
    sbx.exec("dd if=/dev/zero bs=115343360 count=1 | sleep 60\n")
    wait_for(lambda: stats(sbx)[1]["memory_bytes"] >= 100 << 20, 20, interval=0.5,
             what="memory_bytes >= 100 MiB")
    _, st = stats(sbx)
    assert st["pids"] >= 3  # init, sh, dd, sleep
    # A busy loop shows (the machine is shared: its share, not 100); idle shows ~0.
    sbx.write("ctl", "kill\n")
    sbx.wait()
    wait_for(lambda: stats(sbx)[1]["cpu_percent"] < 1, 10, interval=0.3,
             what="cpu_percent < 1 when idle")
    sbx.exec("while :; do :; done\n")
    wait_for(lambda: stats(sbx)[1]["cpu_percent"] >= 3, 10, interval=0.3,
             what="cpu_percent >= 3 under a busy loop")
    t0 = time.monotonic()
    for _ in range(5):
        stats(sbx)
    assert time.monotonic() - t0 < 3, "stats read every second must be cheap"
    sbx.write("ctl", "kill\n")
    sbx.wait()


# ------------------------------------------------------------------ summary

@pytest.mark.timeout_s(60)
def test_summary_is_a_fixed_width_table_of_every_sandbox(mount):
    a = mount.sandbox()
    b = mount.sandbox()
    assert a.run("exit 4\n") == (b"", b"exited 4\n")
    b.write("ctl", "stop\n")
    lines = read(mount.p(".sandboxfs", "summary")).decode().splitlines()
    assert lines[0].split() == ["SANDBOX", "STATE", "TEMPLATE", "RUNS", "LATEST", "AGE", "IDLE",
                                "CPU%", "MEM"]
    assert len({len(x) for x in lines}) == 1, "fixed width"
    rows = {x.split()[0]: x for x in lines[1:]}
    assert set(rows) == {a.name, b.name}
    ra, rb = rows[a.name].split(), rows[b.name].split()
    assert ra[1] == "running" and ra[3] == "1" and ra[4:6] == ["exited", "4"]
    assert rb[1] == "stopped" and rb[3] == "0" and rb[4] == "idle"
    assert rb[-2:] == ["-", "-"]


# ------------------------------------------------------------------ idle TTL

def running(sbx):
    return sbx.inspect()["State"]["Running"]


@pytest.mark.timeout_s(90)
def test_ttl_stops_an_idle_sandbox_and_exec_starts_it_again(mount, sbx):
    assert sbx.read("ttl") == b"0\n"
    assert_errno(errno.EINVAL, sbx.write, "ttl", "soon\n")
    sbx.write("ttl", "2\n")
    assert sbx.read("ttl") == b"2\n"
    # Only docker is asked while waiting: an open file is activity.
    wait_for(lambda: not running(sbx), 10, interval=0.2, what="the idle stop")
    # docker says stopped a moment before the daemon has recorded why.
    wait_for(lambda: sbx.info()["state"] == "stopped (idle)", 5, what="info: stopped (idle)")
    evs = events(sbx.p("events"))
    assert evs[-2:] == [{"event": "sandbox_idle", "sandbox": sbx.name, "ttl": 2, "action": "stop"},
                        {"event": "sandbox_stopped", "sandbox": sbx.name, "by": "idle"}]
    assert sbx.run("echo back\n") == (b"back\n", b"exited 0\n")
    assert running(sbx)
    assert sbx.info()["state"] == "running"
    assert events(sbx.p("events"))[-3]["event"] == "sandbox_started"
    # Stopped for idleness, then by the user: exec no longer starts it.
    wait_for(lambda: not running(sbx), 10, interval=0.2, what="the second idle stop")
    wait_for(lambda: sbx.info()["state"] == "stopped (idle)", 5, what="info: stopped (idle)")
    sbx.write("ctl", "stop\n")
    assert sbx.info()["state"] == "exited"
    assert_errno(errno.EHOSTDOWN, sbx.exec, "echo no\n")


@pytest.mark.timeout_s(90)
def test_a_run_longer_than_the_ttl_is_never_killed(mount, sbx):
    sbx.write("ttl", "1\n")
    sbx.exec("sleep 5; echo done\n")
    time.sleep(6)  # no file open meanwhile
    assert sbx.read("runs/1/output") == b"done\n"
    assert sbx.read("runs/1/status") == b"exited 0\n"
    wait_for(lambda: not running(sbx), 10, interval=0.2, what="the idle stop after the run")


@pytest.mark.timeout_s(120)
def test_ttl_survives_a_restart_and_template_on_idle_remove(make_mount):
    first = make_mount()
    s = first.sandbox()
    s.write("ttl", "4\n")
    assert first.stop() == []
    second = make_mount(state=first.state)
    s2 = Sandbox(second, s.name)
    assert s2.read("ttl") == b"4\n"
    wait_for(lambda: not running(s2), 15, interval=0.2, what="the idle stop after a restart")
    wait_for(lambda: s2.info()["state"] == "stopped (idle)", 5, what="info: stopped (idle)")
    assert s2.run("echo again\n") == (b"again\n", b"exited 0\n")

    write(second.p(".sandboxfs", "templates", "brief"),
          '{"match": "brief-*", "ttl": 2, "on_idle": "remove"}')
    assert_errno(errno.EINVAL, write, second.p(".sandboxfs", "templates", "bad"),
                 '{"match": "bad-*", "on_idle": "pause"}')
    b = second.sandbox("brief-" + s.name)
    cname = b.container
    assert json.loads(read(b.p("info")))["effective"]["ttl"] == 2
    wait_for(lambda: b.name not in second.names(), 15, interval=0.2, what="the idle removal")
    second.sandboxes.remove(b.name)
    assert docker("container", "inspect", cname, check=False).returncode != 0
    tail = [e for e in events(second.p(".sandboxfs", "events")) if e.get("sandbox") == b.name]
    assert tail[-2:] == [{"event": "sandbox_idle", "sandbox": b.name, "ttl": 2, "action": "remove"},
                         {"event": "sandbox_removed", "sandbox": b.name}]


@pytest.mark.timeout_s(60)
def test_a_container_removed_outside_is_logged_lost(mount):
    s = mount.sandbox()
    docker("rm", "-f", s.container)
    wait_for(lambda: s.name not in mount.names(), 10, what="the sandbox forgotten")
    mount.sandboxes.remove(s.name)
    wait_for(lambda: events(mount.p(".sandboxfs", "events"))[-1]["event"] == "sandbox_lost", 5,
             what="sandbox_lost logged")
    assert events(mount.p(".sandboxfs", "events"))[-1] == {
        "event": "sandbox_lost", "sandbox": s.name,
        "reason": "container removed outside sandboxfs"}
