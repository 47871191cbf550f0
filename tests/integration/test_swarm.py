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

from sbxlib import assert_errno, cat, read, unique_name, wait_for, write

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
    for b in boxes[:1] + [x for x in boxes if x.info()["node"] == swarm.node_ids[1]][:1]:
        assert b.run("echo hi; echo err >&2; exit 3") == (b"hi\nerr\n", b"exited 3\n")
        write(b.p("auth"), "TOKEN=s3cret-value\n")
        assert b.run("echo $TOKEN") == (b"[masked]\n", b"exited 0\n")
        # kill: a long run ended by ctl kill.
        b.exec("sleep 100")
        wait_for(lambda: b.status() == b"running\n", 10)
        write(b.p("ctl"), "kill\n")
        assert b.wait(15) == b"killed\n"

    # rmdir removes the container from its node and the service.
    for b in boxes:
        cid = b.info()["id"]
        os.rmdir(b.p())
        m.sandboxes.remove(b.name)
        assert where(swarm, cid) is None
    assert services(swarm, m.instance) == []
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
    out, st = b.run("grep -E '^(NoNewPrivs|CapEff|CapBnd)' /proc/self/status;"
                    "touch /x 2>/dev/null && echo rw || echo ro;"
                    "ip route | grep -c default;"
                    f"nc -w 3 {swarm.addr(0)} 2377 </dev/null && echo out || echo no-out")
    assert out == (b"CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n"
                   b"NoNewPrivs:\t1\nro\n0\nno-out\n"), out
    assert st == b"exited 0\n"


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


def test_config_without_swarm_section_refuses_placement(make_mount, scratch):
    cfg = os.path.join(scratch, "config.json")
    with open(cfg, "w") as f:
        json.dump({"templates": {"sw": {"placement": "swarm"}}}, f)
    from sbxlib import Mount, MountError  # noqa: F401
    with pytest.raises(Exception):
        make_mount(extra_args=["-o", f"config={cfg}"])
