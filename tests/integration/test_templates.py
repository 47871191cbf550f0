"""Templates, workspaces, hardening and several engines (issue 4): what a
sandbox is made of. Real mounts, real containers, and a second dockerd of the
test's own; every assertion is the behaviour docs/templates.md and
docs/interface.md (".sandboxfs/templates/", "ctl save", "info") document,
checked with `docker inspect` on the engine."""

import errno
import json
import os
import shutil
import stat

import pytest

from sbxlib import (IMAGE, Dockerd, Sandbox, docker, errname, errno_of, fuse_mounted, inspect,
                    read, unique_name, wait_for, write)

GIB = 1 << 30
MIB = 1 << 20

# The effective settings of a sandbox made from a template that sets nothing
# (docs/interface.md, info; docs/templates.md, Keys).
DEFAULT_EFFECTIVE = {
    "image": IMAGE, "network": "none", "memory": 2 * GIB, "cpus": 0, "pids": 512,
    "read_only": False, "init": True, "workspace": [], "cap_add": [], "env": {}, "labels": {},
    "ttl": 0, "on_idle": "stop",
}


def assert_errno(expected, fn, *args, **kwargs):
    got = errno_of(fn, *args, **kwargs)
    assert got == expected, f"{fn.__name__}{args}: expected {errname(expected)}, got {errname(got)}"


# ------------------------------------------------------------------ helpers

def tdir(m, *parts):
    return m.p(".sandboxfs", "templates", *parts)


def templates(m):
    return sorted(os.listdir(tdir(m)))


def put_template(m, name, tpl):
    """Define a template by writing its file (like `echo JSON > templates/NAME`)."""
    write(tdir(m, name), tpl if isinstance(tpl, (str, bytes)) else json.dumps(tpl))


def get_template(m, name):
    return json.loads(read(tdir(m, name)))


def refused_where(path, data):
    """Write data to path the way Python's open(path, "w") does (one open, one
    write, one close) and report which step failed: (step, errno) with step in
    'open', 'write', 'close', or (None, None) when everything succeeded."""
    if isinstance(data, str):
        data = data.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as e:
        return "open", e.errno
    step = err = None
    try:
        view = memoryview(data)
        while len(view):
            view = view[os.write(fd, view):]
    except OSError as e:
        step, err = "write", e.errno
    try:
        os.close(fd)
    except OSError as e:
        if step is None:
            step, err = "close", e.errno
    return step, err


def config_file(d, templates_obj, name="config.json"):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        json.dump({"templates": templates_obj}, f)
    return path


def labels_of(sbx):
    return sbx.inspect()["Config"]["Labels"] or {}


def env_of(sbx):
    return dict(e.split("=", 1) for e in sbx.inspect()["Config"]["Env"] or [])


def caps(names):
    """Capability names without docker's optional CAP_ prefix, upper case."""
    return sorted(c.upper()[4:] if c.upper().startswith("CAP_") else c.upper()
                  for c in (names or []))


def mounts_of(sbx):
    return {mt["Destination"]: mt for mt in sbx.inspect()["Mounts"] or []}


def new_sandbox_name(prefix, suffix=""):
    return unique_name(prefix) + suffix


def tag_image(tag):
    """A second name for the base image, so that templates can pick images."""
    docker("tag", IMAGE, tag)
    return tag


def untag_image(tag):
    docker("rmi", tag, check=False)


# ------------------------------------------------------------------ the config file

@pytest.mark.timeout_s(180)
def test_config_file_templates_are_listed_served_and_selected(make_mount, scratch):
    u = unique_name("img").lower()
    claude_img = tag_image(f"sandboxfs/test-claude-{u}")
    codex_img = tag_image(f"sandboxfs/test-codex-{u}")
    try:
        cfg = {
            "claude": {"match": "*-claude", "image": claude_img, "env": {"AGENT": "claude"},
                       "labels": {"agent": "claude"}, "pids": 100},
            "codex": {"match": "*-codex", "image": codex_img, "env": {"AGENT": "codex"},
                      "labels": {"agent": "codex"}, "pids": 200, "memory": "512m"},
            "default": {"env": {"AGENT": "none"}, "labels": {"agent": "default"}, "pids": 300},
        }
        m = make_mount(extra_args=["-o", f"config={config_file(scratch, cfg)}"])
        assert templates(m) == ["claude", "codex", "default"]
        for name, tpl in cfg.items():
            assert get_template(m, name) == tpl
            st = os.stat(tdir(m, name))
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
        st = os.stat(tdir(m))
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755

        loop = unique_name("loop-")
        cl = m.sandbox(f"{loop}-claude")
        cx = m.sandbox(f"{loop}-codex")
        other = m.sandbox(f"{loop}-other")
        expect = {
            cl: ("claude", claude_img, 100, 2 * GIB),
            cx: ("codex", codex_img, 200, 512 * MIB),
            other: ("default", IMAGE, 300, 2 * GIB),
        }
        for s, (tname, img, pids, mem) in expect.items():
            info = s.inspect()
            assert info["Config"]["Image"] == img, s.name
            assert info["HostConfig"]["PidsLimit"] == pids, s.name
            assert info["HostConfig"]["Memory"] == mem, s.name
            assert labels_of(s)["agent"] == tname, s.name
            assert env_of(s)["AGENT"] == cfg[tname]["env"]["AGENT"], s.name
            i = s.info()
            assert i["template"] == tname
            assert i["image"] == img
            eff = i["effective"]
            assert eff["template"] == tname
            assert eff["image"] == img
            assert eff["pids"] == pids and eff["memory"] == mem
            assert eff["env"] == cfg[tname]["env"] and eff["labels"] == cfg[tname]["labels"]
            # The template's env is the container's: every run sees it.
            assert s.run("echo $AGENT\n") == (cfg[tname]["env"]["AGENT"].encode() + b"\n",
                                              b"exited 0\n")
    finally:
        # Containers keep their image by id; the tags can go now.
        untag_image(claude_img)
        untag_image(codex_img)


@pytest.mark.parametrize("case", [
    "unknown-top-level-key", "unknown-template-key", "repeated-key", "malformed-json",
    "not-an-object", "bad-workspace", "workspace-slash", "bad-value", "missing-file",
])
def test_invalid_config_file_is_fatal_at_start(make_mount, scratch, case):
    path = os.path.join(scratch, "config.json")
    text = {
        "unknown-top-level-key": '{"templates": {}, "defaults": {}}',
        "unknown-template-key": '{"templates": {"a": {"privileged": true}}}',
        "repeated-key": '{"templates": {"a": {"pids": 1, "pids": 2}}}',
        "malformed-json": '{"templates": {"a": {"pids": 1}',
        "not-an-object": '["templates"]',
        "bad-workspace": json.dumps({"templates": {"a": {
            "workspace": os.path.join(scratch, "does-not-exist")}}}),
        "workspace-slash": '{"templates": {"a": {"workspace": "/"}}}',
        "bad-value": '{"templates": {"a": {"network": "host"}}}',
        "missing-file": None,
    }[case]
    if text is not None:
        with open(path, "w") as f:
            f.write(text)
    m = make_mount(extra_args=["-o", f"config={path}"], wait=False)
    m.expect_exit = True
    rc = m.wait_exit(10)
    assert rc is not None, "sandboxfs did not exit on an invalid config file"
    assert rc != 0
    assert not fuse_mounted(m.path)
    log = m.log()
    assert log.strip() != "", "no message on stderr"
    assert path in log, f"the message does not name the config file: {log!r}"


# ------------------------------------------------------------------ hardening

def test_default_sandbox_is_hardened(mount):
    s = mount.sandbox()
    info = s.inspect()
    hc = info["HostConfig"]
    assert hc["CapDrop"] == ["ALL"]
    assert not hc.get("CapAdd")
    assert hc["SecurityOpt"] == ["no-new-privileges"]
    assert hc["PidsLimit"] == 512
    assert hc["Memory"] == 2147483648
    assert hc["NanoCpus"] == 0
    assert hc["NetworkMode"] == "none"
    assert hc["Init"] is True
    assert hc["Privileged"] is False
    assert hc["ReadonlyRootfs"] is False
    assert not hc.get("Binds")
    # Only the agent's private tmpfs (docs/agent-protocol.md).
    assert hc.get("Tmpfs") == {"/.sandboxfs": "exec,mode=0700,size=64m"}, hc.get("Tmpfs")
    assert (info["Mounts"] or []) == [], info["Mounts"]
    assert "docker.sock" not in json.dumps(info)
    assert info["Config"]["User"] == ""
    labels = labels_of(s)
    assert set(k for k in labels if k.startswith("sandboxfs.")) == \
        {"sandboxfs.instance", "sandboxfs.sandbox", "sandboxfs.mountpoint"}
    # No network but the loopback inside.
    out, st = s.run("cat /proc/net/dev\n")
    assert st == b"exited 0\n"
    assert b"eth0" not in out and b"lo:" in out
    # No capability: root inside cannot chown.
    out, st = s.run("touch /x && chown 1:1 /x\n")
    assert st == b"exited 1\n", out
    assert b"Operation not permitted" in out


@pytest.mark.timeout_s(90)
def test_template_settings_reach_docker(mount):
    tpl = {"match": "hard-*", "pids": 64, "memory": "256m", "cpus": 0.5, "network": "bridge",
           "read_only": True, "cap_add": ["NET_BIND_SERVICE"], "user": "1000:1000",
           "labels": {"team": "x"}, "env": {"FOO": "bar"}}
    put_template(mount, "hard", tpl)
    s = mount.sandbox(new_sandbox_name("hard-"))
    info = s.inspect()
    hc = info["HostConfig"]
    assert hc["PidsLimit"] == 64
    assert hc["Memory"] == 256 * MIB
    assert hc["NanoCpus"] == 500000000
    assert hc["NetworkMode"] == "bridge"
    assert hc["ReadonlyRootfs"] is True
    assert "/tmp" in (hc.get("Tmpfs") or {}), hc.get("Tmpfs")
    assert caps(hc["CapAdd"]) == ["NET_BIND_SERVICE"]
    # Always applied, whatever the template.
    assert hc["CapDrop"] == ["ALL"]
    assert hc["SecurityOpt"] == ["no-new-privileges"]
    assert hc["Privileged"] is False
    assert hc["Init"] is True
    assert info["Config"]["User"] == "1000:1000"
    assert labels_of(s)["team"] == "x"
    assert "FOO=bar" in info["Config"]["Env"]
    assert "docker.sock" not in json.dumps(info)

    out, st = s.run("echo FOO=$FOO; id -u; id -g\n")
    assert (out, st) == (b"FOO=bar\n1000\n1000\n", b"exited 0\n")
    out, st = s.run("echo hello > /tmp/w && cat /tmp/w\n")
    assert (out, st) == (b"hello\n", b"exited 0\n")
    out, st = s.run("touch /cannot-write 2>&1; echo rc=$?\n")
    assert st == b"exited 0\n"
    assert b"Read-only file system" in out and out.endswith(b"rc=1\n"), out
    out, st = s.run("cat /proc/net/dev\n")
    assert b"eth0" in out, "network bridge: the container should have an interface"

    eff = s.info()["effective"]
    assert eff == {**DEFAULT_EFFECTIVE, "template": "hard", "network": "bridge",
                   "memory": 256 * MIB, "cpus": 0.5, "pids": 64, "read_only": True,
                   "cap_add": ["CAP_NET_BIND_SERVICE"], "user": "1000:1000",
                   "labels": {"team": "x"}, "env": {"FOO": "bar"}}


def test_template_workdir(mount):
    put_template(mount, "wd", {"match": "wd-*", "workdir": "/tmp"})
    s = mount.sandbox(new_sandbox_name("wd-"))
    # The template's workdir is the default working directory of runs ...
    assert s.run("pwd\n") == (b"/tmp\n", b"exited 0\n")
    assert s.info()["effective"]["workdir"] == "/tmp"
    # ... and the container's (`--workdir`, docs/templates.md).
    assert s.inspect()["Config"]["WorkingDir"] == "/tmp"


def test_template_init_false_and_no_limits(mount):
    put_template(mount, "loose", {"match": "loose-*", "init": False, "memory": 0, "pids": 0})
    s = mount.sandbox(new_sandbox_name("loose-"))
    hc = s.inspect()["HostConfig"]
    assert not hc.get("Init")
    assert hc["Memory"] == 0
    assert not hc.get("PidsLimit")
    assert hc["CapDrop"] == ["ALL"]
    assert hc["SecurityOpt"] == ["no-new-privileges"]
    assert s.run("echo ok\n") == (b"ok\n", b"exited 0\n")
    eff = s.info()["effective"]
    assert eff == {**DEFAULT_EFFECTIVE, "template": "loose", "init": False, "memory": 0,
                   "pids": 0}


def test_memory_in_bytes_and_units(mount):
    put_template(mount, "bytes", {"match": "mb-*", "memory": 300000000})
    put_template(mount, "gig", {"match": "mg-*", "memory": "1g"})
    a = mount.sandbox(new_sandbox_name("mb-"))
    b = mount.sandbox(new_sandbox_name("mg-"))
    assert a.inspect()["HostConfig"]["Memory"] == 300000000
    assert b.inspect()["HostConfig"]["Memory"] == GIB
    assert a.info()["effective"]["memory"] == 300000000
    assert b.info()["effective"]["memory"] == GIB


# ------------------------------------------------------------------ workspaces

def test_workspace_is_shared_both_ways_at_the_same_path(mount, scratch):
    ws = os.path.join(scratch, "project")
    os.makedirs(ws)
    with open(os.path.join(ws, "from-host.txt"), "wb") as f:
        f.write(b"written on the host\n")
    put_template(mount, "ws", {"match": "ws-*", "workspace": ws})
    s = mount.sandbox(new_sandbox_name("ws-"))
    mt = mounts_of(s)[ws]
    assert mt["Type"] == "bind" and mt["Source"] == ws and mt["RW"] is True
    assert s.run(f"cat {ws}/from-host.txt\n") == (b"written on the host\n", b"exited 0\n")
    assert s.run(f"printf 'written inside\\n' > {ws}/from-inside.txt\n") == (b"", b"exited 0\n")
    with open(os.path.join(ws, "from-inside.txt"), "rb") as f:
        assert f.read() == b"written inside\n"
    # Changes after creation are visible too, both ways.
    with open(os.path.join(ws, "from-host.txt"), "ab") as f:
        f.write(b"more\n")
    assert s.run(f"cat {ws}/from-host.txt\n") == (b"written on the host\nmore\n",
                                                  b"exited 0\n")
    assert s.info()["effective"]["workspace"] == [ws]


def test_read_only_workspace_and_a_list_of_two(mount, scratch):
    rw = os.path.join(scratch, "rw")
    ro = os.path.join(scratch, "ro")
    os.makedirs(rw)
    os.makedirs(ro)
    with open(os.path.join(ro, "data"), "w") as f:
        f.write("ro data\n")
    put_template(mount, "ro", {"match": "ro-*", "workspace": f"{ro}:ro"})
    put_template(mount, "two", {"match": "two-*", "workspace": [f"{rw}:rw", f"{ro}:ro"]})

    s = mount.sandbox(new_sandbox_name("ro-"))
    mt = mounts_of(s)[ro]
    assert mt["Source"] == ro and mt["RW"] is False
    assert s.run(f"cat {ro}/data\n") == (b"ro data\n", b"exited 0\n")
    out, st = s.run(f"echo x > {ro}/new\n")
    assert st != b"exited 0\n" and st.startswith(b"exited "), (out, st)
    assert b"Read-only file system" in out
    assert not os.path.exists(os.path.join(ro, "new"))
    assert s.info()["effective"]["workspace"] == [f"{ro}:ro"]

    t = mount.sandbox(new_sandbox_name("two-"))
    mts = mounts_of(t)
    assert set(mts) == {rw, ro}
    assert mts[rw]["RW"] is True and mts[ro]["RW"] is False
    assert t.run(f"echo both > {rw}/f && cat {ro}/data\n") == (b"ro data\n", b"exited 0\n")
    with open(os.path.join(rw, "f")) as f:
        assert f.read() == "both\n"
    out, st = t.run(f"echo x > {ro}/new\n")
    assert st != b"exited 0\n"
    assert t.info()["effective"]["workspace"] == [rw, f"{ro}:ro"]


# ------------------------------------------------------------------ refused templates

def refused_cases(m, scratch):
    """(label, JSON text, where the EINVAL is documented to come)."""
    missing = os.path.join(scratch, "does-not-exist")
    cases = [
        ("workspace-is-the-mount", {"workspace": m.path}, "write"),
        ("workspace-under-the-mount", {"workspace": m.p(".sandboxfs")}, "write"),
        ("workspace-ancestor-root", {"workspace": "/"}, "write"),
        ("workspace-ancestor-of-the-mount", {"workspace": os.path.dirname(m.path)}, "write"),
        ("workspace-state-dir", {"workspace": m.state}, "write"),
        ("workspace-under-state-dir", {"workspace": os.path.join(m.state, "sandboxes")}, "write"),
        ("workspace-run", {"workspace": "/run"}, "write"),
        ("workspace-var-run", {"workspace": "/var/run"}, "write"),
        ("workspace-the-socket", {"workspace": "/run/docker.sock"}, "write"),
        ("workspace-in-a-list", {"workspace": [scratch, "/run:ro"]}, "write"),
        ("workspace-missing", {"workspace": missing}, "write"),
        ("workspace-relative", {"workspace": "relative/path"}, "write"),
        ("network-host", {"network": "host"}, "write"),
        ("privileged", {"privileged": True}, "write"),
        ("unknown-key", {"image": IMAGE, "volumes": ["/x"]}, "write"),
        ("cap-add-all", {"cap_add": ["ALL"]}, "write"),
        ("cap-add-sys-admin", {"cap_add": ["SYS_ADMIN"]}, "write"),
        ("label-sandboxfs-instance", {"labels": {"sandboxfs.instance": "0000000000000000"}},
         "write"),
        ("label-sandboxfs-other", {"labels": {"sandboxfs.anything": "x"}}, "write"),
        ("pids-wrong-type", {"pids": "many"}, "write"),
        ("read-only-wrong-type", {"read_only": "yes"}, "write"),
        ("cpus-out-of-range", {"cpus": 5000}, "write"),
        ("memory-garbage", {"memory": "lots"}, "write"),
        ("env-not-object", {"env": ["A=b"]}, "write"),
        ("not-an-object", ["image"], "write"),
    ]
    out = [(label, json.dumps(obj), where) for label, obj, where in cases]
    out += [
        ("repeated-key", '{"pids": 1, "pids": 2}', "write"),
        ("malformed-json", '{"image": "sandboxfs/base", ', "close"),
        ("malformed-json-garbage", 'not json at all', "close"),
    ]
    return out


@pytest.mark.timeout_s(120)
def test_refused_templates_are_einval_and_change_nothing(mount, scratch):
    keep = {"match": "keep-*", "env": {"KEEP": "1"}}
    put_template(mount, "keep", keep)
    before = templates(mount)
    assert before == ["keep"]
    for label, text, where in refused_cases(mount, scratch):
        # A new template...
        name = f"bad-{label}"
        got = refused_where(tdir(mount, name), text)
        assert got == (where, errno.EINVAL), \
            f"{label}: {text}: expected EINVAL at {where}, got {got[0]} {errname(got[1])}"
        assert templates(mount) == before, f"{label}: the template list changed"
        assert_errno(errno.ENOENT, os.stat, tdir(mount, name))
        # ... and the replacement of an existing one.
        got = refused_where(tdir(mount, "keep"), text)
        assert got == (where, errno.EINVAL), f"{label} (replacing): got {got}"
        assert get_template(mount, "keep") == keep, f"{label}: the template was changed"
        assert templates(mount) == before
        log = read(mount.p(".sandboxfs", "log")).decode()
        assert name in log, f"{label}: no reason in .sandboxfs/log"
    # Nothing was persisted either: a sandbox still gets the good template.
    s = mount.sandbox(new_sandbox_name("keep-"))
    assert s.info()["template"] == "keep"
    assert env_of(s)["KEEP"] == "1"


@pytest.mark.parametrize("name", ["-dash", "a b", "x" * 64])
def test_template_name_outside_the_rule_is_einval(mount, name):
    got = refused_where(tdir(mount, name), json.dumps({"pids": 10}))
    assert got == ("write", errno.EINVAL), got
    assert templates(mount) == []


def test_templates_dir_refuses_mkdir_rename_link(mount):
    put_template(mount, "a", {"pids": 10})
    assert_errno(errno.EPERM, os.mkdir, tdir(mount, "sub"))
    assert_errno(errno.EPERM, os.rename, tdir(mount, "a"), tdir(mount, "b"))
    assert_errno(errno.EPERM, os.link, tdir(mount, "a"), tdir(mount, "b"))
    assert_errno(errno.EPERM, os.symlink, "a", tdir(mount, "b"))
    assert templates(mount) == ["a"]
    assert_errno(errno.ENOENT, os.unlink, tdir(mount, "nope"))
    assert_errno(errno.ENOENT, read, tdir(mount, "nope"))


# ------------------------------------------------------------------ runtime definitions

@pytest.mark.timeout_s(120)
def test_runtime_add_replace_delete(mount):
    assert templates(mount) == []
    v1 = {"match": "rt-*", "labels": {"v": "1"}, "env": {"V": "1"}}
    # Written like a shell does, in pieces.
    write(tdir(mount, "x"), json.dumps(v1, indent=2), chunk=7)
    assert templates(mount) == ["x"]
    assert get_template(mount, "x") == v1
    a = mount.sandbox(new_sandbox_name("rt-"))
    assert labels_of(a)["v"] == "1"
    assert a.info()["template"] == "x"

    v2 = {"match": "rt-*", "labels": {"v": "2"}, "env": {"V": "2"}}
    put_template(mount, "x", v2)
    assert templates(mount) == ["x"]
    assert get_template(mount, "x") == v2
    b = mount.sandbox(new_sandbox_name("rt-"))
    assert labels_of(b)["v"] == "2"
    assert b.run("echo $V\n") == (b"2\n", b"exited 0\n")
    # Existing sandboxes keep what they were made with.
    assert labels_of(a)["v"] == "1"
    assert a.info()["effective"]["labels"] == {"v": "1"}
    assert a.run("echo $V\n") == (b"1\n", b"exited 0\n")

    os.unlink(tdir(mount, "x"))
    assert templates(mount) == []
    assert_errno(errno.ENOENT, os.stat, tdir(mount, "x"))
    assert_errno(errno.ENOENT, read, tdir(mount, "x"))
    assert_errno(errno.ENOENT, os.unlink, tdir(mount, "x"))
    c = mount.sandbox(new_sandbox_name("rt-"))
    assert "v" not in labels_of(c)
    assert "V" not in env_of(c)
    assert c.info()["template"] != "x"
    assert labels_of(a)["v"] == "1" and labels_of(b)["v"] == "2"


@pytest.mark.timeout_s(150)
def test_runtime_changes_survive_a_restart(make_mount, scratch):
    cfg = {
        "cfgkeep": {"match": "pk-*", "labels": {"from": "config-keep"}},
        "cfgdel": {"match": "pd-*", "labels": {"from": "config-del"}},
        "cfgrepl": {"match": "pr-*", "labels": {"from": "config-repl"}},
    }
    args = ["-o", f"config={config_file(scratch, cfg)}"]
    first = make_mount(extra_args=args)
    assert templates(first) == ["cfgdel", "cfgkeep", "cfgrepl"]
    rtkeep = {"match": "rk-*", "labels": {"from": "runtime-keep"}}
    put_template(first, "rtkeep", rtkeep)
    put_template(first, "rtdel", {"match": "rd-*"})
    os.unlink(tdir(first, "rtdel"))
    os.unlink(tdir(first, "cfgdel"))
    repl = {"match": "pr-*", "labels": {"from": "runtime-repl"}}
    put_template(first, "cfgrepl", repl)
    assert templates(first) == ["cfgkeep", "cfgrepl", "rtkeep"]
    assert os.path.isfile(os.path.join(first.state, "templates.json"))
    s = first.sandbox(new_sandbox_name("rk-"))
    assert s.info()["template"] == "rtkeep"
    assert first.stop() == []

    second = make_mount(extra_args=args, state=first.state)
    assert templates(second) == ["cfgkeep", "cfgrepl", "rtkeep"]
    assert get_template(second, "cfgkeep") == cfg["cfgkeep"]
    assert get_template(second, "cfgrepl") == repl
    assert get_template(second, "rtkeep") == rtkeep
    assert_errno(errno.ENOENT, os.stat, tdir(second, "cfgdel"))
    assert_errno(errno.ENOENT, os.stat, tdir(second, "rtdel"))
    for prefix, origin in [("pk-", "config-keep"), ("pr-", "runtime-repl"),
                           ("rk-", "runtime-keep")]:
        t = second.sandbox(new_sandbox_name(prefix))
        assert labels_of(t)["from"] == origin, prefix
    for prefix in ("pd-", "rd-"):
        t = second.sandbox(new_sandbox_name(prefix))
        assert "from" not in labels_of(t), prefix
    # The sandbox of the first daemon is found again, its template not recorded.
    adopted = Sandbox(second, s.name)
    assert s.name in second.names()
    info = adopted.info()
    assert info["template"] == "(adopted)"
    assert info["effective"] is None
    # A template defined again after its deletion is back.
    put_template(second, "cfgdel", cfg["cfgdel"])
    assert get_template(second, "cfgdel") == cfg["cfgdel"]


# ------------------------------------------------------------------ selection

@pytest.mark.timeout_s(150)
def test_first_matching_template_wins_else_default(make_mount, scratch):
    cfg = {
        "t1": {"match": "g-a*", "labels": {"pick": "t1"}},
        "t2": {"match": "g-*", "labels": {"pick": "t2"}},
        "default": {"labels": {"pick": "default"}},
        "t3": {"match": "g-ab*", "labels": {"pick": "t3"}},
    }
    m = make_mount(extra_args=["-o", f"config={config_file(scratch, cfg)}"])

    def pick(name):
        """The template a new sandbox NAME gets: (info's "template", its label)."""
        s = m.sandbox(name)
        return s.info()["template"], labels_of(s).get("pick")

    u = unique_name("")
    assert pick(f"g-abc{u}") == ("t1", "t1")   # t1, t2 and t3 match: the first in order
    assert pick(f"g-xyz{u}") == ("t2", "t2")
    assert pick(f"other{u}") == ("default", "default")
    # Runtime definitions come after the config file's, in the order made ...
    put_template(m, "r1", {"match": "g-*", "labels": {"pick": "r1"}})
    put_template(m, "r2", {"match": "h-*", "labels": {"pick": "r2"}})
    put_template(m, "r3", {"match": "h-*", "labels": {"pick": "r3"}})
    assert pick(f"g-q{u}") == ("t2", "t2")
    assert pick(f"h-q{u}") == ("r2", "r2")
    # ... and replacing one keeps its place.
    put_template(m, "t1", {"match": "g-*", "labels": {"pick": "t1b"}})
    assert pick(f"g-r{u}") == ("t1", "t1b")
    put_template(m, "r2", {"match": "h-*", "labels": {"pick": "r2b"}})
    assert pick(f"h-r{u}") == ("r2", "r2b")
    # Without a default, no match gets the built-in defaults.
    os.unlink(tdir(m, "default"))
    s = m.sandbox(f"none{u}")
    assert "pick" not in labels_of(s)
    eff = s.info()["effective"]
    assert {k: v for k, v in eff.items() if k != "template"} == DEFAULT_EFFECTIVE


# ------------------------------------------------------------------ info

def test_info_shows_template_and_effective_settings(mount):
    put_template(mount, "inf", {"match": "inf-*", "env": {"A": "b"}, "labels": {"l": "v"}})
    s = mount.sandbox(new_sandbox_name("inf-"))
    info = s.info()
    assert info["template"] == "inf"
    assert info["image"] == IMAGE
    assert info["effective"] == {**DEFAULT_EFFECTIVE, "template": "inf", "env": {"A": "b"},
                                 "labels": {"l": "v"}}
    put_template(mount, "default", {"pids": 77})
    d = mount.sandbox(new_sandbox_name("nomatch-"))
    assert d.info()["template"] == "default"
    assert d.info()["effective"] == {**DEFAULT_EFFECTIVE, "template": "default", "pids": 77}
    # Built-in defaults when no template applies at all.
    os.unlink(tdir(mount, "default"))
    b = mount.sandbox(new_sandbox_name("builtin-"))
    info = b.info()
    assert info["effective"]["template"] == info["template"]
    assert {k: v for k, v in info["effective"].items() if k != "template"} == DEFAULT_EFFECTIVE


# ------------------------------------------------------------------ ctl save

@pytest.mark.timeout_s(150)
def test_ctl_save_makes_an_image_a_template_can_use(mount):
    image = f"sandboxfs/test-saved-{unique_name('').lower()}"
    ref = f"{image}:v1"
    made = []
    try:
        s = mount.sandbox()
        assert s.run("echo saved-content > /saved.txt\n") == (b"", b"exited 0\n")
        s.write("ctl", f"save {ref}\n")
        img = json.loads(docker("image", "inspect", ref).stdout)[0]
        put_template(mount, "saved", {"match": "sv-*", "image": ref})
        t = mount.sandbox(new_sandbox_name("sv-"))
        made.append(t)
        assert t.inspect()["Config"]["Image"] == ref
        assert t.info()["image"] == ref
        assert t.run("cat /saved.txt\n") == (b"saved-content\n", b"exited 0\n")
        # A plain container of the image is not one of the mount's.
        assert t.name in mount.names() and len(mount.names()) == 2
        # Malformed actions change nothing.
        for bad in ("save\n", f"save {ref} extra\n", "save -x\n", "save a\x01b\n"):
            assert_errno(errno.EINVAL, s.write, "ctl", bad)
        # "The image does not carry this mount's labels": docker commit keeps
        # the container's labels unless overridden; an empty value is no
        # label of this mount.
        labels = img["Config"].get("Labels") or {}
        ours = {k: v for k, v in labels.items() if k.startswith("sandboxfs.") and v}
        assert ours == {}, f"the image carries the mount's labels: {ours}"
    finally:
        for t in made:
            try:
                os.rmdir(t.path)
            except OSError:
                pass
        docker("rmi", "-f", ref, check=False)


@pytest.mark.parametrize("ref", ["::x", "/x", "Upper/Case:v1"])
def test_ctl_save_malformed_reference_is_einval(sbx, ref):
    """Malformed per docker's reference grammar: EINVAL (docs/interface.md,
    ctl save), not an engine errno, and no image."""
    assert_errno(errno.EINVAL, sbx.write, "ctl", f"save {ref}\n")
    assert sbx.info()["state"] == "running"


# ------------------------------------------------------------------ docker=PATH

@pytest.mark.parametrize("cli", ["/usr/bin/docker", "/usr/local/bin/docker"])
def test_docker_cli_path(make_mount, scratch, cli):
    if not os.access(cli, os.X_OK):
        pytest.skip(f"{cli} is not installed")
    ws = os.path.join(scratch, "ws")
    os.makedirs(ws)
    cfg = {"w": {"match": "w-*", "workspace": ws, "env": {"VIA": cli}, "cap_add": ["CHOWN"]}}
    m = make_mount(extra_args=["-o", f"docker={cli}", "-o", f"config={config_file(scratch, cfg)}"])
    assert f"cli: {cli}\n" in read(m.p(".sandboxfs", "backend")).decode()
    s = m.sandbox()
    assert s.run("echo round-trip\n") == (b"round-trip\n", b"exited 0\n")
    t = m.sandbox(new_sandbox_name("w-"))
    assert t.run(f"echo $VIA > {ws}/via\n") == (b"", b"exited 0\n")
    with open(os.path.join(ws, "via")) as f:
        assert f.read() == cli + "\n"
    assert caps(t.inspect()["HostConfig"]["CapAdd"]) == ["CHOWN"]
    # The events stream works with this CLI too.
    docker("rm", "-f", t.container)
    wait_for(lambda: t.name not in m.names(), 5, what=f"{t.name} to disappear")


# ------------------------------------------------------------------ a second engine

class Engine(Dockerd):
    """The second engine of this module: sbxlib.Dockerd plus look-ups."""

    def names(self):
        out = self.docker("ps", "-a", "--format", "{{.Names}}").stdout.decode()
        return set(out.split())

    def inspect(self, container):
        p = self.docker("inspect", "--type", "container", container, check=False)
        return json.loads(p.stdout)[0] if p.returncode == 0 else None


@pytest.fixture(scope="module")
def engine2():
    """A second dockerd of the module's own (own socket, data root and network
    namespace) with the base image loaded; torn down after the module."""
    if not (shutil.which("dockerd") and shutil.which("unshare")):
        pytest.skip("dockerd or unshare is not installed")
    e = Engine()
    try:
        e.start()
        e.load_image(IMAGE)
        e.docker("image", "inspect", IMAGE)
        yield e
    finally:
        e.teardown()


@pytest.mark.slow
@pytest.mark.timeout_s(180)
def test_second_engine_places_sandboxes_there(engine2, make_mount):
    m = make_mount()
    put_template(m, "far", {"match": "far-*", "engine": engine2.host})
    assert get_template(m, "far") == {"match": "far-*", "engine": engine2.host}
    far = m.sandbox(new_sandbox_name("far-"))
    near = m.sandbox(new_sandbox_name("near-"))
    # far lives on the second engine only, near on the default one only.
    assert far.container in engine2.names()
    assert inspect(far.container) is None, "a far sandbox must not be on the default engine"
    assert near.container not in engine2.names()
    assert inspect(near.container)["State"]["Running"] is True
    fi = engine2.inspect(far.container)
    assert fi["State"]["Running"] is True
    assert fi["Config"]["Labels"]["sandboxfs.instance"] == m.instance
    assert fi["HostConfig"]["CapDrop"] == ["ALL"]
    assert fi["HostConfig"]["NetworkMode"] == "none"
    assert far.info()["template"] == "far"
    assert far.info()["id"] == fi["Id"]
    assert m.names() == {far.name, near.name}
    # Runs there: exec, output, status, kill.
    assert far.run("echo far away; exit 3\n") == (b"far away\n", b"exited 3\n")
    assert near.run("echo near\n") == (b"near\n", b"exited 0\n")
    far.exec("sleep 60\n")
    wait_for(lambda: far.status() == b"running\n", 10, what="status running")
    far.write("ctl", "kill\n")
    assert far.wait(20) == b"killed\n"
    # ctl save commits on the sandbox's engine.
    ref = f"sandboxfs/test-far-{unique_name('').lower()}:v1"
    far.write("ctl", f"save {ref}\n")
    assert engine2.docker("image", "inspect", ref, check=False).returncode == 0
    assert docker("image", "inspect", ref, check=False).returncode != 0
    # Removed outside sandboxfs on the second engine: the directory goes
    # (the daemon follows that engine's events).
    engine2.docker("rm", "-f", far.container)
    wait_for(lambda: far.name not in m.names(), 5, what=f"{far.name} to disappear")
    # rmdir removes from the second engine.
    far2 = m.sandbox(new_sandbox_name("far-"))
    assert far2.container in engine2.names()
    os.rmdir(far2.path)
    # rmdir returns at once; the container goes in the background.
    wait_for(lambda: far2.container not in engine2.names(), 30, what="far2's container removed")
    assert far2.name not in m.names()
    assert m.names() == {near.name}
    assert inspect(near.container)["State"]["Running"] is True
    os.rmdir(near.path)
    assert engine2.docker("ps", "-aq", "--filter", f"label=sandboxfs.instance={m.instance}"
                          ).stdout.strip() == b""


@pytest.mark.slow
@pytest.mark.timeout_s(180)
def test_second_engine_sandboxes_are_adopted_after_restart(engine2, make_mount, scratch):
    cfg = {"far": {"match": "far-*", "engine": engine2.host}}
    args = ["-o", f"config={config_file(scratch, cfg)}"]
    first = make_mount(extra_args=args)
    far = first.sandbox(new_sandbox_name("far-"))
    assert far.run("echo one\n") == (b"one\n", b"exited 0\n")
    assert first.stop() == []
    assert engine2.inspect(far.container)["State"]["Running"] is True
    second = make_mount(extra_args=args, state=first.state)
    assert second.names() == {far.name}
    f2 = Sandbox(second, far.name)
    assert f2.info()["template"] == "(adopted)"
    assert f2.run("echo two\n") == (b"two\n", b"exited 0\n")
    engine2.docker("rm", "-f", far.container)
    wait_for(lambda: far.name not in second.names(), 5, what=f"{far.name} to disappear")


@pytest.mark.slow
def test_engine_socket_of_a_template_is_refused_as_workspace(engine2, mount):
    put_template(mount, "far", {"match": "far-*", "engine": engine2.host})
    got = refused_where(tdir(mount, "bad"), json.dumps({"workspace": engine2.dir}))
    assert got == ("write", errno.EINVAL), got
    assert templates(mount) == ["far"]
