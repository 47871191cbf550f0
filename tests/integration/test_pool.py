"""The warm pool and background removal (issue 12): -o pool=N and the
template key `pool`, claims by rename, rmdir by tombstone, crash safety."""

import errno
import json
import os
import random
import signal
import stat
import threading
import time

import pytest

from sbxlib import (DOCKER, assert_errno, cat, containers, docker, inspect, read, wait_for,
                    write)


def pool_text(m):
    return read(m.p(".sandboxfs", "pool")).decode()


def engine_names(m):
    """Names of every container of the mount's instance on the engine."""
    out = docker("ps", "-a", "--no-trunc", "--filter", f"label=sandboxfs.instance={m.instance}",
                 "--format", "{{.Names}}").stdout.decode().split()
    return set(out)


def slots(m):
    prefix = f"sandboxfs-{m.instance}-_pool_"
    return {n for n in engine_names(m) if n.startswith(prefix)}


def wait_pool(m, line, n, timeout=60):
    wait_for(lambda: pool_text(m) == line and len(slots(m)) == n, timeout,
             what=f"pool {line!r} with {n} pool containers")


def restart(make_mount, m, extra):
    """SIGKILL the daemon of m, start another on the same state and mount point."""
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait(10)
    m.expect_exit = True
    with pytest.raises(OSError) as e:
        os.stat(m.path)
    assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return make_mount(extra_args=extra, state=m.state, mountpoint=m.path)


@pytest.mark.timeout_s(90)
def test_pool_fills_to_its_target_and_is_never_listed(make_mount):
    m = make_mount(["-o", "pool=2"])
    st = os.stat(m.p(".sandboxfs", "pool"))
    assert stat.S_IMODE(st.st_mode) == 0o444
    assert "pool" in os.listdir(m.p(".sandboxfs"))
    wait_pool(m, "default 2/2\n", 2)
    # Never more than N: still two a while later.
    time.sleep(1.5)
    assert len(slots(m)) == 2
    assert len(containers(f"sandboxfs.pool=default")) >= 2
    assert list(m.names()) == []
    assert_errno(errno.EACCES, os.open, m.p(".sandboxfs", "pool"), os.O_WRONLY)


@pytest.mark.timeout_s(90)
def test_without_pool_nothing_is_made(make_mount):
    m = make_mount()
    assert pool_text(m) == ""
    s = m.sandbox()
    assert s.info()["pool"] is False
    assert slots(m) == set()


@pytest.mark.timeout_s(120)
def test_mkdir_claims_a_ready_container_and_falls_back(make_mount, scratch):
    cfg = os.path.join(scratch, "t.json")
    with open(cfg, "w") as f:
        json.dump({"templates": {"cold": {"match": "cold*", "pool": 0}}}, f)
    m = make_mount(["-o", f"pool=1,config={cfg}"])
    wait_pool(m, "default 1/1\n", 1)
    ready = slots(m)
    a = m.sandbox("a")
    assert a.info()["pool"] is True
    # The claimed container is the one that was ready, renamed to the sandbox.
    assert inspect(f"sandboxfs-{m.instance}-a")["Name"] == f"/sandboxfs-{m.instance}-a"
    assert ready & slots(m) == set()
    assert a.run("echo hi") == (b"hi\n", b"exited 0\n")
    # A template without a pool: a normal create, never an error.
    c = m.sandbox("cold1")
    assert c.info()["pool"] is False
    assert c.run("echo cold") == (b"cold\n", b"exited 0\n")
    # Refilled; the claimed container never comes back to the pool.
    wait_pool(m, "default 1/1\n", 1)
    cid = a.info()["id"]
    os.rmdir(a.p())
    m.sandboxes.remove("a")
    b = m.sandbox("b")
    assert b.info()["pool"] is True
    assert b.info()["id"] != cid
    wait_for(lambda: inspect(cid) is None, 30, what="the removed container gone")


@pytest.mark.timeout_s(120)
def test_rmdir_is_immediate_and_the_name_is_free_at_once(make_mount):
    m = make_mount(["-o", "pool=1"])
    wait_pool(m, "default 1/1\n", 1)
    s = m.sandbox("x")
    assert s.run("echo secret > /tmp/f; echo ok") == (b"ok\n", b"exited 0\n")
    cid = s.info()["id"]
    t0 = time.monotonic()
    os.rmdir(s.p())
    took = time.monotonic() - t0
    assert "x" not in m.names()
    os.mkdir(m.p("x"))       # the same name, right away
    s2 = type(s)(m, "x")
    assert s2.info()["id"] != cid
    assert s2.run("cat /tmp/f 2>/dev/null || echo clean") == (b"clean\n", b"exited 0\n")
    wait_for(lambda: inspect(cid) is None, 30, what="the old container removed")
    tombs = [n for n in engine_names(m) if "-_rm_" in n]
    assert tombs == []
    assert took < 2.0, took  # the container's removal is not waited for


@pytest.mark.timeout_s(150)
def test_restart_adopts_claims_and_removes_leftovers(make_mount):
    m = make_mount(["-o", "pool=2"])
    wait_pool(m, "default 2/2\n", 2)
    a = m.sandbox("a")
    assert a.info()["pool"] is True
    old_slots = slots(m)
    b = m.sandbox("b")
    cid_b = b.info()["id"]
    os.rmdir(b.p())
    m.sandboxes.remove("b")
    m2 = restart(make_mount, m, ["-o", "pool=2"])
    m2.sandboxes.append("a")
    assert sorted(m2.names()) == ["a"]
    info = json.loads(read(m2.p("a", "info")))
    assert info["pool"] is True
    assert info["template"] == "(adopted)"
    # The earlier daemon's pool containers are removed and replaced.
    wait_for(lambda: not (old_slots & slots(m2)), 30, what="old pool containers removed")
    wait_pool(m2, "default 2/2\n", 2)
    wait_for(lambda: inspect(cid_b) is None, 30, what="b's container removed")


@pytest.mark.timeout_s(120)
def test_engine_down_during_refill_is_reported_and_backs_off(scratch, make_mount):
    # scratch first: the wrapper must outlive the mount's teardown.
    flag = os.path.join(scratch, "down")
    count = os.path.join(scratch, "runs")
    wrapper = os.path.join(scratch, "docker")
    with open(wrapper, "w") as f:
        f.write(f"""#!/bin/sh
case " $* " in *" run "*)
  if [ -e {flag} ]; then
    echo x >> {count}
    echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2
    exit 1
  fi;;
esac
exec {DOCKER} "$@"
""")
    os.chmod(wrapper, 0o755)
    open(flag, "w").close()
    m = make_mount(["-o", f"pool=1,docker={wrapper}"])
    wait_for(lambda: " error: " in pool_text(m), 15, what="the refill failure reported")
    text = pool_text(m)
    assert text.startswith("default 0/1 error: "), text
    assert "Cannot connect to the Docker daemon" in text
    assert "pool default: refill failed, retrying in " in m.log()
    # Backing off: 1 s, 2 s, 4 s... not a spin.
    time.sleep(4)
    tries = len(open(count).read().split())
    assert 2 <= tries <= 4, tries
    # mkdir meanwhile falls back to a normal create, which fails plainly.
    assert_errno(errno.ECONNREFUSED, os.mkdir, m.p("y"))
    os.unlink(flag)
    wait_pool(m, "default 1/1\n", 1, timeout=45)


def crash_loop(make_mount, cycles):
    extra = ["-o", "pool=2"]
    m = make_mount(extra)
    alive, removed, uncertain = set(), set(), set()
    counter = [0]
    for cycle in range(cycles):
        stop = threading.Event()

        def client(m=m):
            rnd = random.Random(cycle)
            while not stop.is_set():
                if alive and rnd.random() < 0.45:
                    name = rnd.choice(sorted(alive))
                    try:
                        os.rmdir(m.p(name))
                    except OSError:
                        uncertain.add(name)
                        alive.discard(name)
                        return
                    alive.discard(name)
                    removed.add(name)
                else:
                    name = f"c{counter[0]}"
                    counter[0] += 1
                    try:
                        os.mkdir(m.p(name))
                    except OSError:
                        uncertain.add(name)
                        return
                    alive.add(name)

        th = threading.Thread(target=client, daemon=True)
        th.start()
        time.sleep(random.uniform(0.05, 1.2))
        m = restart(make_mount, m, extra)
        stop.set()
        th.join(30)
        assert not th.is_alive()
    m.sandboxes += sorted(alive | uncertain)
    listed = set(m.names())
    assert alive <= listed, alive - listed
    assert listed <= alive | uncertain, listed - alive - uncertain
    prefix = f"sandboxfs-{m.instance}-"

    def settled():
        names = engine_names(m)
        tombs = {n for n in names if n.startswith(prefix + "_rm_")}
        gone = all(prefix + n not in names for n in removed)
        sandboxes = {n[len(prefix):] for n in names
                     if n.startswith(prefix) and not n.startswith(prefix + "_")}
        return (not tombs and gone and sandboxes == listed and len(slots(m)) == 2
                and pool_text(m) == "default 2/2\n")

    wait_for(settled, 90, interval=0.5, what="removals done, no orphan, pool refilled")
    for n in alive:
        assert json.loads(read(m.p(n, "info")))["name"] == n


@pytest.mark.timeout_s(300)
def test_crash_loop_keeps_the_namespace_and_the_pool(make_mount):
    crash_loop(make_mount, 4)


@pytest.mark.slow
@pytest.mark.timeout_s(1800)
def test_crash_loop_50_cycles(make_mount):
    crash_loop(make_mount, 50)
