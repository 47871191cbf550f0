"""A two-node Docker Swarm built on this machine, for the swarm tests and
for scripts/swarm-up (standard library only).

Each node is a dockerd of its own (sbxlib.Dockerd: its own socket, data
root, exec root, started under `unshare --net`), so the host's engine never
enters swarm mode and nothing of the swarm is visible outside the two
network namespaces. A veth pair joins the namespaces: one end is moved into
each dockerd's namespace (`ip link set ... netns PID`) and given an address
of a private /30 (10.231.X.1 and .2, X random per swarm so parallel swarms
do not collide). Node 1 runs `docker swarm init` advertising .1, node 2
joins with the worker token. Both daemons set "no-new-privileges": a swarm
service cannot ask for it (docs/scale-out.md), so the nodes must.

down() removes everything — swarm state (leave --force on each node, then
the data roots), the veth (it dies with the namespaces, and is deleted by
name in case it was never moved), the dockerds and their containerds —
whatever state up() reached.
"""

import json
import os
import random
import subprocess
import time

from sbxlib import IMAGE, Dockerd

NODE_DAEMON = {"no-new-privileges": True}


def _ip(*args, check=True):
    r = subprocess.run(["ip", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {r.stderr.decode(errors='replace')}")
    return r


def _nsip(pid, *args):
    r = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if r.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} in {pid}: "
                             f"{r.stderr.decode(errors='replace')}")
    return r


def _own_netns(pid):
    """Whether pid already left this process's network namespace."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    except OSError:
        return False


class Swarm:
    def __init__(self):
        self.net = random.randrange(0, 256)
        tag = f"{os.getpid() % 100000}{random.randrange(100):02d}"
        self.veth = (f"sbxsw{tag}a", f"sbxsw{tag}b")
        self.nodes = []      # Dockerd, node 1 (manager) first
        self.node_ids = []   # swarm node ids, same order

    def addr(self, i):
        return f"10.231.{self.net}.{i + 1}"

    @property
    def manager(self):
        return self.nodes[0]

    def up(self, image=IMAGE, timeout=120):
        try:
            self._up(image, timeout)
        except BaseException:
            self.down()
            raise
        return self

    def _up(self, image, timeout):
        for _ in range(2):
            d = Dockerd()
            self.nodes.append(d)
            with open(os.path.join(d.dir, "daemon.json"), "w") as f:
                json.dump(NODE_DAEMON, f)
            d.start(timeout)
        self._link()
        m = self.manager
        m.docker("swarm", "init", "--advertise-addr", self.addr(0),
                 "--listen-addr", f"{self.addr(0)}:2377", timeout=60)
        token = m.docker("swarm", "join-token", "-q", "worker").stdout.decode().strip()
        self.nodes[1].docker("swarm", "join", "--token", token, "--advertise-addr",
                             self.addr(1), "--listen-addr", f"{self.addr(1)}:2377",
                             f"{self.addr(0)}:2377", timeout=60)
        for d in self.nodes:
            self.node_ids.append(d.docker("info", "--format", "{{.Swarm.NodeID}}")
                                 .stdout.decode().strip())
            d.load_image(image)
        self.wait_ready(timeout)

    def _link(self):
        """The veth pair between the two namespaces (it dies with either)."""
        a, b = self.veth
        # An old pair outlives a killed node while its shims keep the old
        # namespace: deleting one end deletes both.
        for i, name in enumerate(self.veth):
            if self.nodes[i].running():
                subprocess.run(["nsenter", "-t", str(self.nodes[i].proc.pid), "-n", "ip",
                                "link", "del", name], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=30)
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        for i, name in enumerate(self.veth):
            pid = self.nodes[i].proc.pid
            _ip("link", "set", name, "netns", str(pid))
            _nsip(pid, "addr", "add", f"{self.addr(i)}/30", "dev", name)
            _nsip(pid, "link", "set", name, "up")
            _nsip(pid, "link", "set", "lo", "up")

    def kill_node(self, i):
        """SIGKILL node i's dockerd (a node failure); its namespace, and
        with it the veth, goes away."""
        d = self.nodes[i]
        d.proc.kill()
        d.proc.wait(30)
        d._kill_group()  # its containerd too

    def restart_node(self, i, timeout=90):
        """Start node i's dockerd again on its directories (it keeps its
        swarm membership), link it again and wait until the manager sees
        every node Ready. A start whose containerd does not come up (seen
        under load) is tried again, up to three times."""
        d = self.nodes[i]
        for attempt in range(3):
            d.stop(30)
            d._kill_group()
            # A swarm member does not answer before it reaches the manager:
            # link it first, then wait.
            d.launch()
            deadline = time.monotonic() + 30
            while not _own_netns(d.proc.pid):
                if time.monotonic() > deadline or not d.running():
                    break
                time.sleep(0.1)
            try:
                if not _own_netns(d.proc.pid):
                    raise AssertionError(f"dockerd did not start: {d.tail()}")
                self._link()
                d.wait_answer(timeout)
                break
            except AssertionError:
                if attempt == 2:
                    raise
                time.sleep(2)
        self.wait_ready(timeout)

    def wait_ready(self, timeout=60):
        """Until the manager lists every node Ready."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.manager.docker("node", "ls", "--format", "{{.ID}} {{.Status}}",
                                      check=False).stdout.decode()
            ready = {l.split()[0] for l in out.splitlines() if l.endswith(" Ready")}
            if all(n in ready for n in self.node_ids):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"swarm nodes not ready: {out}")
            time.sleep(0.3)

    def config(self):
        """The `swarm` section of a sandboxfs config for this swarm."""
        return {"manager": self.manager.host,
                "nodes": {nid: d.host for nid, d in zip(self.node_ids, self.nodes)}}

    def down(self):
        for d in reversed(self.nodes):
            if d.running():
                d.docker("swarm", "leave", "--force", check=False, timeout=30)
        for d in reversed(self.nodes):
            try:
                d.teardown()
            except Exception:  # noqa: BLE001 - keep cleaning the others
                pass
        # A veth still on the host (up() failed before moving it) is deleted
        # here; once moved, it died with the namespaces.
        for name in self.veth:
            if _ip("link", "show", name, check=False).returncode == 0:
                _ip("link", "del", name, check=False)
        self.nodes = []
        self.node_ids = []


def leftovers(swarm_dirs=(), veths=()):
    """What a torn-down swarm might have left: dockerd processes naming its
    directories, its veth names, directories still on disk."""
    left = []
    for d in swarm_dirs:
        if os.path.exists(d):
            left.append(d)
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if d.encode() in f.read():
                        left.append(f"pid {pid}")
            except OSError:
                pass
    for v in veths:
        if _ip("link", "show", v, check=False).returncode == 0:
            left.append(v)
    return left
