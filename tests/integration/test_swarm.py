"""Sandboxes placed across nodes by Docker Swarm (issue 15, docs/scale-out.md).

Every test runs on the module's own two-node swarm (conftest.py `swarm`:
two isolated dockerds joined over a veth pair, torn down completely). The
mount's templates say "placement": "swarm"; what the user sees is checked
through the mount, what the engines hold with `docker -H NODE inspect`.
"""

import errno
import json
import os
import signal
import subprocess
import time

import pytest

from sbxlib import Sandbox, assert_errno, read, unique_name, wait_for, write

pytestmark = pytest.mark.slow


def swarm_mount(make_mount, swarm, scratch, templates=None, state=None):
    cfg = os.path.join(scratch, "config.json")
    tpls = templates or {"sw": {"match": "*", "placement": "swarm", "memory": "256m",
                                "pids": 128}}
    with open(cfg, "w") as f:
        json.dump({"swarm": swarm.config(), "templates": tpls}, f)
    m = make_mount(extra_args=["-o", f"config={cfg}"], state=state)
    return m


def where(swarm, container_id):
    """The index of the node whose engine holds the container, or None."""
    for i, d in enumerate(swarm.nodes):
        r = d.docker("inspect", "--type", "container", "--format", "{{.Id}}", container_id,
                     check=False)
        if r.returncode == 0:
            return i
    return None


def node_inspect(swarm, i, cid):
    return json.loads(swarm.nodes[i].docker("inspect", "--type", "container", cid)
                      .stdout)[0]


def services(swarm, instance):
    out = swarm.manager.docker("service", "ls", "--filter",
                               f"label=sandboxfs.instance={instance}",
                               "--format", "{{.Name}}").stdout.decode()
    return sorted(out.split())


def test_six_sandboxes_spread_over_both_nodes(make_mount, swarm, scratch):
    m = swarm_mount(make_mount, swarm, scratch)
    boxes = [m.sandbox(f"w{i}") for i in range(6)]
    per_node = [0, 0]
    for b in boxes:
        info = b.info()
        assert info["node"] in swarm.node_ids
        i = where(swarm, info["id"])
        assert i is not None, f"{b.name}: its container is on no node"
        assert info["node"] == swarm.node_ids[i]
        per_node[i] += 1
        assert info["effective"]["placement"] == "swarm"
    # swarm's spread strategy puts 3 on each of two empty nodes.
    assert per_node == [3, 3], per_node
    assert services(swarm, m.instance) == sorted(m.container(f"w{i}") for i in range(6))
    assert m.names() == {f"w{i}" for i in range(6)}

    # exec, output, status and auth on each node.
    one_each = [next(x for x in boxes if x.info()["node"] == n) for n in swarm.node_ids]
    for b in one_each:
        b.exec("echo hi; echo err >&2; exit 3")
        assert b.wait(30) == b"exited 3\n"
        assert (b.read("stdout"), b.read("stderr")) == (b"hi\n", b"err\n")
        write(b.p("auth"), json.dumps({"env": {"TOKEN": "s3cret-value"},
                                       "files": {"/tmp/cred": "file-secret"}}))
        assert b.run("echo $TOKEN; cat /tmp/cred; echo; stat -c %a /tmp/cred") == \
            (b"***\n***\n600\n", b"exited 0\n")
        # kill: a long run ended by ctl kill.
        b.exec("sleep 100")
        wait_for(lambda: b.status() == b"running\n", 10)
        write(b.p("ctl"), "kill\n")
        assert b.wait(15) == b"killed\n"

    # rmdir removes the container from its node and the service.
    ids = [(b, b.info()["id"]) for b in boxes]
    for b in boxes:
        os.rmdir(b.p())
        m.sandboxes.remove(b.name)
    # rmdir returns at once; containers and services go in the background.
    for b, cid in ids:
        wait_for(lambda: where(swarm, cid) is None, 60, what=f"{b.name}'s container removed")
    wait_for(lambda: services(swarm, m.instance) == [], 60, what="the services removed")
    assert m.names() == set()


def test_hardening_and_no_egress(make_mount, swarm, scratch):
    m = swarm_mount(make_mount, swarm, scratch, {
        "sw": {"match": "*", "placement": "swarm", "memory": "256m", "pids": 100,
               "read_only": True}})
    b = m.sandbox()
    info = b.info()
    i = swarm.node_ids.index(info["node"])
    c = node_inspect(swarm, i, info["id"])
    hc = c["HostConfig"]
    assert hc["CapDrop"] == ["ALL"] or "ALL" in (hc["CapDrop"] or [])
    assert hc["PidsLimit"] == 100
    assert hc["Memory"] == 256 << 20
    assert hc["ReadonlyRootfs"] is True
    nets = list(c["NetworkSettings"]["Networks"])
    assert nets == [f"sandboxfs-{m.instance}-none"]
    net = json.loads(swarm.manager.docker("network", "inspect", nets[0]).stdout)[0]
    assert (net["Driver"], net["Internal"]) == ("overlay", True)
    # From inside: no new privileges, no capabilities, read-only root, and
    # no way out — no default route, and the other node's address does not
    # answer.
    b.exec("grep -E '^(NoNewPrivs|CapEff|CapBnd)' /proc/self/status;"
                    "touch /x 2>/dev/null && echo rw || echo ro;"
                    "ip route | grep -c default;"
                    f"nc -w 3 {swarm.addr(0)} 2377 </dev/null && echo out || echo no-out")
    assert b.wait(30) == b"exited 0\n"
    assert b.read("stdout") == (b"CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n"
                                b"NoNewPrivs:\t1\nro\n0\nno-out\n")
    assert b.read("stderr") == (f"nc: can't connect to remote host ({swarm.addr(0)}): "
                                "Network is unreachable\n").encode()


def test_refused_templates(make_mount, swarm, scratch):
    m = swarm_mount(make_mount, swarm, scratch)
    tdir = m.p(".sandboxfs", "templates")
    bad = [
        ({"placement": "swarm", "workspace": [scratch]}, "workspaces"),
        ({"placement": "swarm", "engine": swarm.nodes[1].host}, "no \"engine\""),
        ({"placement": "swarm", "network": "bridge"}, "network \"bridge\""),
        ({"constraints": ["node.role==worker"]}, "only with"),
        ({"placement": "elsewhere"}, "placement"),
        ({"placement": "swarm", "constraints": ["--privileged"]}, "constraints"),
    ]
    for tpl, why in bad:
        name = unique_name("t")
        assert_errno(errno.EINVAL, write, os.path.join(tdir, name), json.dumps(tpl))
        assert name not in os.listdir(tdir)
        assert why in m.log(), (why, m.log_tail(5))


@pytest.mark.parametrize("config,why", [
    ({"templates": {"sw": {"placement": "swarm"}}},
     'template sw: placement: swarm needs a "swarm" section in the config file'),
    ({"swarm": {"nodes": {}}}, "swarm: nodes: an object of NODE_ID: ENGINE_URL, one at least"),
    ({"swarm": {"nodes": {"abc": "http://x"}}}, "swarm: nodes: abc: a unix://, tcp:// or "
     "ssh:// URL"),
    ({"swarm": {"manager": 3, "nodes": {"abc": "unix:///x"}}},
     "swarm: manager: a unix://, tcp:// or ssh:// URL"),
    ({"swarm": {"nodes": {"abc": "unix:///x"}, "x": 1}}, 'swarm: unknown key "x"'),
])
def test_bad_swarm_config_refuses_to_start(sbx_bin, scratch, config, why):
    cfg = os.path.join(scratch, "config.json")
    with open(cfg, "w") as f:
        json.dump(config, f)
    mp = os.path.join(scratch, "mnt")
    os.mkdir(mp)
    p = subprocess.run([sbx_bin, "-f", "-o", f"state={scratch}/state,config={cfg}", mp],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 1
    assert p.stderr == f"sandboxfs: config {cfg}: {why}\n".encode()


def test_restarted_daemon_adopts_sandboxes_of_every_node(make_mount, swarm, scratch):
    state = os.path.join(scratch, "state")
    m = swarm_mount(make_mount, swarm, scratch, state=state)
    boxes = [m.sandbox(f"a{i}") for i in range(4)]
    nodes = {b.name: b.info()["node"] for b in boxes}
    assert set(nodes.values()) == set(swarm.node_ids)
    assert boxes[0].run("echo before") == (b"before\n", b"exited 0\n")
    m.unmount()
    m.wait_exit(15)

    m2 = swarm_mount(make_mount, swarm, scratch, state=state)
    m2.sandboxes += [b.name for b in boxes]
    assert m2.names() == set(nodes)
    for name, node in nodes.items():
        b = Sandbox(m2, name)
        assert b.info()["node"] == node
        assert b.run(f"echo {name}") == (f"{name}\n".encode(), b"exited 0\n")
    assert read(m2.p("a0", "runs", "1", "output")) == b"before\n"
    for name in nodes:
        os.rmdir(m2.p(name))
        m2.sandboxes.remove(name)
    assert services(swarm, m2.instance) == []


@pytest.mark.timeout_s(300)
def test_node_failure_loses_its_runs_only(make_mount, swarm, scratch):
    """It kills node 2's dockerd and starts it again (the tests after it
    run on the node that came back)."""
    m = swarm_mount(make_mount, swarm, scratch)
    boxes = [m.sandbox(f"f{i}") for i in range(4)]
    on2 = [b for b in boxes if b.info()["node"] == swarm.node_ids[1]]
    on1 = [b for b in boxes if b.info()["node"] == swarm.node_ids[0]]
    assert len(on1) == len(on2) == 2
    for b in boxes:
        b.exec("echo started; sleep 300")
    for b in boxes:
        wait_for(lambda b=b: b.status() == b"running\n", 10)
    readers = [subprocess.Popen(["cat", b.p("output")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for b in on2]
    try:
        t0 = time.monotonic()
        swarm.kill_node(1)
        for r in readers:
            out, _ = r.communicate(timeout=10)   # EOF within 10 s
        took = time.monotonic() - t0
        assert took < 10, took
        for b in on2:
            assert b.status() == b"lost\n"
            info = b.info()
            assert info["node"] == swarm.node_ids[1]
            assert info["latest"]["status"] == "lost"
            assert info["latest"]["reason"] == \
                "the container stopped or was removed under the run"
            assert info["error"], info
        # The other node's sandboxes are untouched: still running, and new
        # runs work.
        wait_for(lambda: on2[0].info()["node_state"] == "down", 15)
        for b in on2:
            assert b.info()["error"] == (f"swarm node {swarm.node_ids[1]} does not answer: "
                                         "runs there end lost")
        for b in on1:
            assert b.status() == b"running\n"
            assert b.info()["node_state"] == "up"
        write(on1[0].p("ctl"), "kill\n")
        assert on1[0].wait(15) == b"killed\n"
        assert on1[0].run("echo alive") == (b"alive\n", b"exited 0\n")
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
                r.wait(5)
    # The node comes back: what its engine then reports is reflected.
    swarm.restart_node(1)
    wait_for(lambda: all(b.info()["node_state"] == "up" for b in on2), 90)
    # The node's restart stopped their containers (no live-restore); swarm
    # calls the tasks failed and does not start them again (restart
    # condition none); the sandboxes say exited, and stay so.
    for b in on2:
        wait_for(lambda b=b: b.info()["state"] == "exited", 30)
    time.sleep(3)
    for b in on2:
        info = b.info()
        assert (info["state"], info["node_state"], b.status()) == ("exited", "up", b"lost\n")
        st = swarm.nodes[1].docker("inspect", "--format", "{{.State.Status}}",
                                   info["id"]).stdout
        assert st == b"exited\n"
    tasks = swarm.manager.docker("service", "ps", "--format", "{{.CurrentState}}",
                                 *[m.container(b.name) for b in on2]).stdout.decode()
    assert [t.split()[0] for t in tasks.splitlines()] == ["Failed", "Failed"], tasks
    assert m.names() == {b.name for b in boxes}
    for b in on1:
        os.rmdir(b.p())
        m.sandboxes.remove(b.name)


def test_ctl_stop_start_and_parallel_mkdir(make_mount, swarm, scratch):
    m = swarm_mount(make_mount, swarm, scratch)
    names = [f"p{i}" for i in range(4)]
    m.sandboxes += names
    procs = [subprocess.Popen(["mkdir", m.p(n)], stderr=subprocess.PIPE) for n in names]
    assert [p.wait(90) for p in procs] == [0, 0, 0, 0], [p.stderr.read() for p in procs]
    boxes = [Sandbox(m, n) for n in names]
    assert sorted(b.info()["node"] for b in boxes) == sorted(swarm.node_ids * 2)
    b = boxes[0]
    write(b.p("ctl"), "stop\n")
    wait_for(lambda: b.info()["state"] == "exited", 30)
    write(b.p("ctl"), "start\n")
    wait_for(lambda: b.info()["state"] == "running", 30)
    assert b.run("echo again") == (b"again\n", b"exited 0\n")


@pytest.mark.timeout_s(300)
def test_node_without_no_new_privileges_is_refused(make_mount, swarm, scratch):
    """After the node failure test: node 2 comes back without
    no-new-privileges in its daemon.json. A sandbox swarm puts there is
    refused with EPERM, and its service removed: never a weaker sandbox."""
    d = swarm.nodes[1]
    with open(os.path.join(d.dir, "daemon.json"), "w") as f:
        f.write("{}\n")
    swarm.restart_node(1)
    m = swarm_mount(make_mount, swarm, scratch, {
        "sw": {"match": "*", "placement": "swarm",
               "constraints": [f"node.id=={swarm.node_ids[1]}"]}})
    name = unique_name("n")
    assert_errno(errno.EPERM, os.mkdir, m.p(name))
    assert m.names() == set()
    assert services(swarm, m.instance) == []
    assert (f"mkdir {name}: node {swarm.node_ids[1]} does not hold the sandbox to "
            "no-new-privileges with no capabilities") in m.log()
