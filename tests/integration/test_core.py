"""The core of sandboxfs (issue 2): mount, sandbox life cycle, exec / output /
status / auth over real containers. Every assertion is the exact byte string,
errno or status line that docs/interface.md documents."""

import base64
import errno
import hashlib
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import threading
import time

import pytest

from sbxlib import (CONTROL_FILES, DOCKER, IMAGE, LOG_LINE, PODMAN, REPO, Sandbox, cat, docker, engine_version,
                    errname, errno_of, fuse_mounted, grep_tree, inspect, inspect_raw,
                    proc_cmdlines, read, unique_name, wait_for, write)


def assert_errno(expected, fn, *args, **kwargs):
    got = errno_of(fn, *args, **kwargs)
    assert got == expected, f"{fn.__name__}{args}: expected {errname(expected)}, got {errname(got)}"


def project_version():
    with open(os.path.join(REPO, "meson.build")) as f:
        return re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)


def secret_value():
    return "Sx" + secrets.token_hex(12)


# ------------------------------------------------------------------ the mount

def test_version_file(mount):
    assert read(mount.p(".sandboxfs", "version")) == f"sandboxfs {project_version()}\n".encode()


def test_backend_file(mount):
    text = read(mount.p(".sandboxfs", "backend")).decode()
    assert text.endswith("\n")
    kv = dict(line.split(": ", 1) for line in text.splitlines())
    assert {"cli", "engine", "instance", "state", "image"} <= set(kv)
    assert kv["instance"] == mount.instance
    assert kv["state"] == mount.state
    assert kv["image"] == IMAGE
    assert kv["engine"] == engine_version()
    assert os.path.basename(kv["cli"]) == os.path.basename(DOCKER)


def test_instance_id_and_fstype(mount):
    assert re.fullmatch(r"[0-9a-f]{16}", mount.instance or ""), mount.instance
    assert fuse_mounted(mount.path)


def test_tree_modes(mount):
    s = mount.sandbox()
    expect = {
        mount.path: 0o555,
        mount.p(".sandboxfs"): 0o555,
        mount.p(".sandboxfs", "version"): 0o444,
        mount.p(".sandboxfs", "backend"): 0o444,
        mount.p(".sandboxfs", "log"): 0o444,
        s.path: 0o755,
        s.p("exec"): 0o666,
        s.p("output"): 0o444, s.p("stdout"): 0o444, s.p("stderr"): 0o444,
        s.p("status"): 0o444, s.p("wait"): 0o444, s.p("info"): 0o444,
        s.p("auth"): 0o600,
        s.p("env"): 0o644, s.p("workdir"): 0o644, s.p("timeout"): 0o644,
        s.p("ctl"): 0o222,
        s.p("runs"): 0o555,
    }
    for path, mode in expect.items():
        st = os.stat(path)
        kind = stat.S_ISDIR if mode == 0o555 or path == s.path else stat.S_ISREG
        assert kind(st.st_mode), f"{path}: wrong file type {oct(st.st_mode)}"
        assert stat.S_IMODE(st.st_mode) == mode, f"{path}: mode {oct(stat.S_IMODE(st.st_mode))}, expected {oct(mode)}"
    # Generated files report size 0 (like procfs).
    assert os.stat(s.p("status")).st_size == 0
    assert os.stat(s.p("info")).st_size == 0


# ------------------------------------------------------------------ mkdir / ls

def test_mkdir_creates_running_labelled_container(mount):
    name = unique_name()
    os.mkdir(mount.p(name))
    mount.sandboxes.append(name)
    assert stat.S_ISDIR(os.stat(mount.p(name)).st_mode)
    info = inspect(mount.container(name))
    assert info is not None, f"no container {mount.container(name)}"
    assert info["State"]["Running"] is True
    assert info["Name"] == ("" if PODMAN else "/") + mount.container(name)
    labels = info["Config"]["Labels"]
    assert labels["sandboxfs.instance"] == mount.instance
    assert labels["sandboxfs.sandbox"] == name
    assert labels["sandboxfs.mountpoint"] == mount.path
    assert info["Config"]["Image"] == IMAGE + (":latest" if PODMAN else "")


def test_container_is_hardened(sbx):
    info = sbx.inspect()
    hc = info["HostConfig"]
    if PODMAN:   # podman lists each capability it drops
        st = docker("exec", sbx.container, "grep", "CapEff", "/proc/self/status").stdout
        assert st.split() == [b"CapEff:", b"0000000000000000"], st
    else:
        assert "ALL" in [c.upper() for c in (hc.get("CapDrop") or [])]
    assert any(o.startswith("no-new-privileges") for o in (hc.get("SecurityOpt") or []))
    assert hc["PidsLimit"] == 512
    assert hc["NetworkMode"] == "none"
    assert hc["Init"] is True
    assert info["Config"]["Cmd"] == ["sleep", "2147483647"]


def test_ls_lists_the_sandboxes(mount):
    a, b = mount.sandbox(), mount.sandbox()
    assert mount.names() == {a.name, b.name}
    os.rmdir(a.path)
    assert mount.names() == {b.name}


def test_sandbox_lists_control_files(sbx):
    assert set(os.listdir(sbx.path)) == CONTROL_FILES
    assert os.listdir(sbx.p("runs")) == []


@pytest.mark.parametrize("name", [
    "-x", ".hidden", "_x", "a b", "x" * 64, "\u00e9", "a:b", "a*b", "a$b", "a\\b", "tab\tname",
], ids=lambda n: repr(n)[:20])
def test_invalid_name_is_einval_and_creates_nothing(mount, name):
    before = mount.names()
    assert_errno(errno.EINVAL, os.mkdir, mount.p(name))
    assert not os.path.lexists(mount.p(name))
    assert mount.names() == before
    assert mount.containers() == []


def test_name_of_63_characters_works(mount):
    name = "a" + "b" * 61 + "9"
    assert len(name) == 63
    s = mount.sandbox(name)
    assert name in mount.names()
    assert s.inspect()["State"]["Running"] is True
    assert s.run("echo ok\n") == (b"ok\n", b"exited 0\n")


def test_mkdir_existing_is_eexist(mount):
    s = mount.sandbox()
    assert_errno(errno.EEXIST, os.mkdir, s.path)
    assert len(mount.containers()) == 1


def test_refused_mkdir_is_logged_with_reason(mount):
    before = read(mount.p(".sandboxfs", "log")).decode()
    assert_errno(errno.EINVAL, os.mkdir, mount.p("-bad-name"))
    after = read(mount.p(".sandboxfs", "log")).decode()
    new = [line for line in after[len(before):].splitlines() if line]
    assert new, "no line added to .sandboxfs/log"
    assert all(LOG_LINE.match(line) for line in new), new
    line = [x for x in new if "-bad-name" in x]
    assert line, f"no log line names the sandbox: {new}"
    # The same line goes to the daemon's stderr (foreground).
    reason = line[0].split(" ", 1)[1]
    assert reason in mount.log()


def test_rmdir_then_mkdir_same_name_is_a_fresh_sandbox(mount):
    s = mount.sandbox()
    assert s.run("echo one\n") == (b"one\n", b"exited 0\n")
    old_id = s.inspect()["Id"]
    os.rmdir(s.path)
    os.mkdir(s.path)
    assert s.status() == b"idle\n"
    assert os.listdir(s.p("runs")) == []
    assert s.inspect()["Id"] != old_id


# ------------------------------------------------------------------ runs

def test_status_idle_and_empty_output_before_first_run(sbx):
    assert sbx.status() == b"idle\n"
    t0 = time.monotonic()
    assert cat(sbx.p("output"), timeout=5) == b""
    assert cat(sbx.p("stdout"), timeout=5) == b""
    assert cat(sbx.p("stderr"), timeout=5) == b""
    assert cat(sbx.p("wait"), timeout=5) == b"idle\n"
    assert time.monotonic() - t0 < 4


def test_exec_echo(sbx):
    sbx.exec("echo hi\n")
    assert sbx.output() == b"hi\n"
    assert sbx.status() == b"exited 0\n"


@pytest.mark.parametrize("cmd,status", [
    ("true\n", b"exited 0\n"),
    ("exit 3\n", b"exited 3\n"),
    ("false\n", b"exited 1\n"),
    ("no-such-command-sandboxfs\n", b"exited 127\n"),
    ("exit 255\n", b"exited 255\n"),
    ("sh -c 'kill -TERM $$'\n", b"exited 143\n"),
])
def test_exit_status(sbx, cmd, status):
    sbx.exec(cmd)
    sbx.output()
    assert sbx.status() == status


def test_missing_command_reports_on_output(sbx):
    out, st = sbx.run("no-such-command-sandboxfs\n")
    assert st == b"exited 127\n"
    assert b"no-such-command-sandboxfs" in out and b"not found" in out


def test_output_interleaves_stdout_and_stderr(sbx):
    # Sleeps make the arrival order certain: stdout and stderr are two pipes.
    out, st = sbx.run("echo a; sleep 0.3; echo b >&2; sleep 0.3; echo c\n")
    assert out == b"a\nb\nc\n"
    assert st == b"exited 0\n"


def test_multiline_script(sbx):
    script = ("x=1\n"
              "if [ \"$x\" = 1 ]; then\n"
              "  echo one\n"
              "fi\n"
              "for i in 1 2 3; do\n"
              "  echo \"i=$i\"\n"
              "done\n"
              "f() { echo \"f:$1\"; }\n"
              "f arg\n")
    assert sbx.run(script) == (b"one\ni=1\ni=2\ni=3\nf:arg\n", b"exited 0\n")


def test_command_of_300kb_variable(sbx):
    cmd = "v='" + "a" * 300_000 + "'\necho ${#v}\n"
    assert len(cmd) > 300_000
    assert sbx.run(cmd) == (b"300000\n", b"exited 0\n")


def test_command_of_300kb_heredoc(sbx):
    body = "".join(f"line {i:06d} " + "z" * 60 + "\n" for i in range(4200))
    assert len(body) > 300_000
    cmd = ": <<'EOF'\n" + body + "EOF\necho done\n"
    assert sbx.run(cmd) == (b"done\n", b"exited 0\n")


def test_command_of_more_than_1mib(sbx):
    rnd = base64.b64encode(os.urandom(800_000)).decode()
    body = "".join(rnd[i:i + 76] + "\n" for i in range(0, len(rnd), 76))
    assert len(body) > 1 << 20
    cmd = "md5sum <<'EOF'\n" + body + "EOF\n" + "echo end\n"
    want = hashlib.md5(body.encode()).hexdigest().encode() + b"  -\nend\n"
    assert sbx.run(cmd, timeout=120) == (want, b"exited 0\n")


def test_command_with_a_single_line_over_1mib(sbx):
    # One 1.2 MiB line: far beyond the kernel's 128 KiB limit for one argument.
    cmd = "v=" + "q" * (1_200_000) + "; echo ${#v}\n"
    assert sbx.run(cmd, timeout=120) == (b"1200000\n", b"exited 0\n")


def test_output_streams_before_the_run_ends(mount, sbx):
    sbx.exec("echo first; sleep 6; echo second\n")
    t0 = time.monotonic()
    r = mount.reader(sbx.p("output"))
    r.wait_data(lambda b: b.startswith(b"first\n"), timeout=5)
    assert time.monotonic() - t0 < 5.5
    assert r.data() == b"first\n"
    assert r.proc.poll() is None, "cat output ended although the run is live"
    assert sbx.status() == b"running\n"
    assert r.wait_exit(20) == 0
    assert r.data() == b"first\nsecond\n"
    assert sbx.status() == b"exited 0\n"


def test_binary_output_of_1mib_is_byte_exact(sbx):
    sbx.exec("head -c 1048576 /dev/urandom > /tmp/r; cat /tmp/r\n")
    out = sbx.output(timeout=60)
    assert sbx.status() == b"exited 0\n"
    want = docker("exec", sbx.container, "cat", "/tmp/r").stdout
    assert len(want) == 1 << 20
    assert len(out) == len(want)
    assert out == want


def test_nul_and_invalid_utf8_are_exact(sbx):
    out, st = sbx.run("printf '\\000\\377\\376abc\\n\\300\\200\\000'\n")
    assert out == b"\x00\xff\xfeabc\n\xc0\x80\x00"
    assert st == b"exited 0\n"


# ------------------------------------------------------------------ auth

def test_auth_is_applied_listed_by_name_and_masked(sbx):
    value = secret_value()
    sbx.write("auth", f"KEY={value}\n")
    assert sbx.read("auth") == b"KEY\n"
    # The run sees the exact value...
    out, st = sbx.run("echo ${#KEY}; case \"$KEY\" in Sx*) echo prefix-ok;; esac\n")
    assert (out, st) == (f"{len(value)}\nprefix-ok\n".encode(), b"exited 0\n")
    # ...and where it prints it, output shows it masked.
    assert sbx.run("echo $KEY\n") == (b"***\n", b"exited 0\n")
    # (stdout and stderr are two pipes: order across them holds only with a gap)
    assert sbx.run("echo \"<$KEY>\"; sleep 0.2; echo \"$KEY\" >&2\n") == (b"<***>\n***\n",
                                                                        b"exited 0\n")


def test_auth_values_shorter_than_4_bytes_are_not_masked(sbx):
    sbx.write("auth", "SHORT=abc\nFOUR=wxyz\n")
    assert sbx.read("auth") == b"SHORT\nFOUR\n"
    assert sbx.run("echo $SHORT $FOUR\n") == (b"abc ***\n", b"exited 0\n")


@pytest.mark.timeout_s(90)
def test_secret_never_appears_outside_the_run(mount, sbx):
    value = secret_value()
    needle = value.encode()
    sbx.write("auth", f"TOKEN={value}\n")
    seen = []
    stop = threading.Event()

    def scan():
        while not stop.is_set():
            for pid, cmdline in proc_cmdlines():
                if needle in cmdline:
                    seen.append((pid, cmdline.replace(b"\0", b" ")))
            time.sleep(0.02)

    scanner = threading.Thread(target=scan, daemon=True)
    scanner.start()
    try:
        sbx.exec("echo \"t=$TOKEN\"; sleep 3; echo end\n")
        wait_for(lambda: sbx.status() == b"running\n", 10, what="status running")
        # While the run is live: not in docker inspect.
        assert needle not in inspect_raw(sbx.container)
        out = sbx.output(timeout=30)
    finally:
        stop.set()
        scanner.join(5)
    assert seen == [], f"the secret is in the argv of {seen}"
    assert out == b"t=***\nend\n"
    assert sbx.status() == b"exited 0\n"
    assert needle not in inspect_raw(sbx.container)
    assert needle not in read(sbx.p("info"))
    assert needle not in read(mount.p(".sandboxfs", "log"))
    assert needle not in mount.log_bytes()
    assert grep_tree(mount.state, needle) == []
    assert needle not in read(sbx.p("auth"))


def test_auth_truncate_replaces_append_adds_empty_clears(sbx):
    sbx.write("auth", "AA=aaaa1111\n")
    assert sbx.read("auth") == b"AA\n"
    sbx.write("auth", "BB=bbbb2222\n", mode="a")
    assert sbx.read("auth") == b"AA\nBB\n"
    assert sbx.run("echo ${AA:-none} ${BB:-none}\n") == (b"*** ***\n", b"exited 0\n")
    sbx.write("auth", "CC=cccc3333\n")
    assert sbx.read("auth") == b"CC\n"
    assert sbx.run("echo ${AA:-none} ${BB:-none} ${CC:-none}\n") == (b"none none ***\n", b"exited 0\n")
    sbx.write("auth", "")            # : > auth
    assert sbx.read("auth") == b""
    assert sbx.run("echo ${CC:-none}\n") == (b"none\n", b"exited 0\n")


def test_auth_skips_blank_and_comment_lines(sbx):
    sbx.write("auth", "# a comment\n\nK1=vvvv1111\n   \n#K2=x\n")
    assert sbx.read("auth") == b"K1\n"


@pytest.mark.parametrize("payload,mode", [
    ("not a valid line\n", "w"),
    ("1BAD=xxxx\n", "a"),
    ("=novalue\n", "a"),
    ("GOOD=vvvv5555\nbad line\n", "a"),
    ("LAST=xxxx6666\nno-newline-and-bad", "w"),
    ("BAD-KEY=xxxx\n", "w"),
])
def test_malformed_auth_is_einval_and_changes_nothing(sbx, payload, mode):
    value = "kkkk" + secrets.token_hex(4)
    sbx.write("auth", f"KEY={value}\n")
    assert_errno(errno.EINVAL, sbx.write, "auth", payload, mode)
    assert sbx.read("auth") == b"KEY\n"
    assert sbx.run("echo ${#KEY} ${GOOD:-none} ${LAST:-none}\n") == \
        (f"{len(value)} none none\n".encode(), b"exited 0\n")


# ------------------------------------------------------------------ rmdir

def test_rmdir_removes_container_and_directory(mount):
    s = mount.sandbox()
    s.run("echo x\n")
    cid = s.inspect()["Id"]
    os.rmdir(s.path)
    assert s.name not in mount.names()
    assert_errno(errno.ENOENT, os.stat, s.path)
    # The container goes in the background (docs/interface.md).
    wait_for(lambda: inspect(cid) is None and mount.containers() == [], 30,
             what="the container removed")


def test_rmdir_during_a_live_run(mount):
    s = mount.sandbox()
    s.exec("echo started; sleep 60\n")
    r = mount.reader(s.p("output"))
    r.wait_data(b"started\n", 10)
    t0 = time.monotonic()
    cid = s.inspect()["Id"]
    os.rmdir(s.path)
    assert time.monotonic() - t0 < 15
    assert s.name not in mount.names()
    wait_for(lambda: inspect(cid) is None, 30, what="the container removed")
    assert r.wait_exit(5) == 0
    assert r.data() == b"started\n"


# ------------------------------------------------------------------ refused operations

def _places(mount, s):
    return {"root": mount.path, "sandbox": s.path, "dot": mount.p(".sandboxfs"),
            "runs": s.p("runs")}


@pytest.mark.parametrize("where", ["root", "sandbox", "dot", "runs"])
def test_creating_a_plain_file_is_eperm(mount, where):
    s = mount.sandbox()
    d = _places(mount, s)[where]
    before = set(os.listdir(d))
    assert_errno(errno.EPERM, os.open, os.path.join(d, "newfile"),
                 os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    assert_errno(errno.EPERM, write, os.path.join(d, "newfile2"), "x\n")
    assert set(os.listdir(d)) == before
    assert mount.names() == {s.name}


@pytest.mark.parametrize("where", ["root", "sandbox"])
def test_mknod_symlink_link_rename_unlink_are_eperm(mount, where):
    s = mount.sandbox()
    d = _places(mount, s)[where]
    before = set(os.listdir(d))
    assert_errno(errno.EPERM, os.mkfifo, os.path.join(d, "fifo"))
    assert_errno(errno.EPERM, os.mknod, os.path.join(d, "node"), 0o644 | stat.S_IFREG)
    assert_errno(errno.EPERM, os.symlink, "/etc/passwd", os.path.join(d, "sym"))
    assert_errno(errno.EPERM, os.link, s.p("status"), os.path.join(d, "hard"))
    assert set(os.listdir(d)) == before
    if where == "root":
        assert_errno(errno.EPERM, os.rename, s.path, mount.p(s.name + "-renamed"))
        assert_errno(errno.EPERM, os.unlink, mount.p(".sandboxfs", "version"))
    else:
        assert_errno(errno.EPERM, os.rename, s.p("status"), s.p("status2"))
        assert_errno(errno.EPERM, os.rename, s.p("status"), s.p("output"))
        assert_errno(errno.EPERM, os.unlink, s.p("status"))
        assert_errno(errno.EPERM, os.unlink, s.p("exec"))
    assert mount.names() == {s.name}
    assert set(os.listdir(s.path)) == CONTROL_FILES


def test_mkdir_and_rmdir_inside_are_eperm(mount):
    s = mount.sandbox()
    s.run("true\n")
    assert_errno(errno.EPERM, os.mkdir, s.p("sub"))
    assert_errno(errno.EPERM, os.mkdir, s.p("runs", "7"))
    assert_errno(errno.EPERM, os.mkdir, mount.p(".sandboxfs", "sub"))
    assert_errno(errno.EPERM, os.rmdir, s.p("runs"))
    assert_errno(errno.EPERM, os.rmdir, s.p("runs", "1"))
    assert_errno(errno.EPERM, os.rmdir, mount.p(".sandboxfs"))
    assert set(os.listdir(s.path)) == CONTROL_FILES
    assert os.listdir(s.p("runs")) == ["1"]


@pytest.mark.parametrize("fname", ["status", "output", "stdout", "stderr", "wait", "info"])
def test_opening_a_read_only_file_for_writing_is_eacces(sbx, fname):
    assert_errno(errno.EACCES, os.open, sbx.p(fname), os.O_WRONLY)
    assert_errno(errno.EACCES, os.open, sbx.p(fname), os.O_RDWR)
    assert_errno(errno.EACCES, os.truncate, sbx.p(fname), 0)


@pytest.mark.parametrize("fname", ["version", "backend", "log"])
def test_dot_sandboxfs_files_are_read_only(mount, fname):
    assert_errno(errno.EACCES, os.open, mount.p(".sandboxfs", fname), os.O_WRONLY)


def test_opening_ctl_for_reading_is_eacces(sbx):
    assert_errno(errno.EACCES, os.open, sbx.p("ctl"), os.O_RDONLY)
    assert_errno(errno.EACCES, os.open, sbx.p("ctl"), os.O_RDWR)


def test_run_files_are_read_only(sbx):
    sbx.run("echo x\n")
    for f in ("cmd", "output", "status", "started"):
        assert_errno(errno.EACCES, os.open, sbx.p("runs", "1", f), os.O_WRONLY)


def test_chmod_chown_utimes_are_eperm(mount):
    s = mount.sandbox()
    for p in (s.p("exec"), s.p("status"), s.path, mount.p(".sandboxfs", "version")):
        assert_errno(errno.EPERM, os.chmod, p, 0o777)
        assert_errno(errno.EPERM, os.chown, p, 1, 1)
        assert_errno(errno.EPERM, os.utime, p, (0, 0))
    assert stat.S_IMODE(os.stat(s.p("exec")).st_mode) == 0o666


def test_missing_names_are_enoent(mount):
    s = mount.sandbox()
    for p in (mount.p("nope"), s.p("nope"), s.p("runs", "1"), s.p("runs", "0"),
              mount.p(".sandboxfs", "nope"), mount.p("nope", "exec")):
        assert_errno(errno.ENOENT, os.stat, p)
    assert_errno(errno.ENOENT, os.rmdir, mount.p("nope"))


# ------------------------------------------------------------------ outside changes

def test_external_docker_rm_removes_the_directory(mount):
    s = mount.sandbox()
    other = mount.sandbox()
    docker("rm", "-f", s.container)
    wait_for(lambda: s.name not in mount.names(), 5, what="the directory to disappear")
    assert_errno(errno.ENOENT, os.stat, s.path)
    assert mount.names() == {other.name}
    # The name can be used again.
    os.mkdir(s.path)
    assert s.run("echo again\n") == (b"again\n", b"exited 0\n")


def test_external_docker_kill_mid_run(mount):
    s = mount.sandbox()
    s.exec("echo up; sleep 60\n")
    r = mount.reader(s.p("output"))
    r.wait_data(b"up\n", 10)
    docker("kill", s.container)
    wait_for(lambda: s.status() == b"lost\n", 5, what="status lost")
    assert r.wait_exit(5) == 0
    assert r.data() == b"up\n"
    assert s.name in mount.names()
    assert_errno(errno.EHOSTDOWN, os.open, s.p("exec"), os.O_WRONLY)
    assert_errno(errno.EHOSTDOWN, write, s.p("exec"), "echo no\n")
    assert s.info()["state"] == "exited"
    assert s.status() == b"lost\n"


@pytest.mark.timeout_s(60)
@pytest.mark.skipif(PODMAN, reason="DOCKER_HOST is docker's; podman is local")
def test_unreachable_engine_is_econnrefused(make_mount):
    m = make_mount(env={"DOCKER_HOST": "unix:///nonexistent.sock", "DOCKER_CONTEXT": None})
    backend = read(m.p(".sandboxfs", "backend")).decode()
    assert "engine: unreachable\n" in backend
    name = unique_name()
    t0 = time.monotonic()
    assert_errno(errno.ECONNREFUSED, os.mkdir, m.p(name))
    assert time.monotonic() - t0 < 5
    assert name not in m.names()
    lines = [x for x in read(m.p(".sandboxfs", "log")).decode().splitlines() if name in x]
    assert lines, "no reason in .sandboxfs/log"
    assert LOG_LINE.match(lines[-1])
    assert name in m.log()
    # Still refused, still bounded, the second time.
    t0 = time.monotonic()
    assert_errno(errno.ECONNREFUSED, os.mkdir, m.p(name))
    assert time.monotonic() - t0 < 5


@pytest.mark.timeout_s(90)
def test_missing_image_is_enomedium(make_mount):
    m = make_mount(image="sandboxfs/does-not-exist")
    name = unique_name()
    t0 = time.monotonic()
    assert_errno(errno.ENOMEDIUM, os.mkdir, m.p(name))
    assert time.monotonic() - t0 < 45
    assert name not in m.names()
    assert m.containers() == []
    lines = [x for x in read(m.p(".sandboxfs", "log")).decode().splitlines() if name in x]
    assert lines and LOG_LINE.match(lines[-1]), lines
    assert name in m.log()


def test_foreign_container_of_the_same_name_is_eexist_and_untouched(mount):
    name = unique_name("foreign")
    foreign = mount.container(name)
    other = "sandboxfs-test-other-" + unique_name()
    try:
        docker("run", "-d", "--network", "none", "--name", foreign, IMAGE, "sleep", "300")
        docker("run", "-d", "--network", "none", "--name", other,
               "--label", "sandboxfs.instance=0000000000000000",
               "--label", "sandboxfs.sandbox=x", IMAGE, "sleep", "300")
        assert_errno(errno.EEXIST, os.mkdir, mount.p(name))
        assert name not in mount.names()
        s = mount.sandbox()
        s.run("true\n")
        os.rmdir(s.path)
        assert inspect(foreign)["State"]["Running"] is True
        assert inspect(other)["State"]["Running"] is True
        assert name not in mount.names()
    finally:
        docker("rm", "-f", foreign, other, check=False)


# ------------------------------------------------------------------ options

@pytest.mark.parametrize("form", ["-o", "--long"])
def test_docker_option_selects_the_cli(make_mount, form):
    cli = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")
    if PODMAN:
        cli = DOCKER
    args = ["-o", f"docker={cli}"] if form == "-o" else [f"--docker={cli}"]
    m = make_mount(extra_args=args)
    backend = read(m.p(".sandboxfs", "backend")).decode()
    assert f"cli: {cli}\n" in backend
    s = m.sandbox()
    assert s.run("echo via-cli\n") == (b"via-cli\n", b"exited 0\n")


def test_unusable_cli_is_fatal_at_start(make_mount):
    m = make_mount(extra_args=["-o", "docker=/nonexistent/docker"], wait=False)
    m.expect_exit = True
    rc = m.wait_exit(10)
    assert rc == 1
    assert not fuse_mounted(m.path)
    assert "/nonexistent/docker" in m.log()


def test_state_directory_in_use_is_fatal(make_mount):
    first = make_mount()
    second = make_mount(state=first.state, wait=False)
    second.expect_exit = True
    rc = second.wait_exit(10)
    assert rc not in (None, 0)
    assert not fuse_mounted(second.path)
    assert second.log().strip() != ""
    s = first.sandbox()
    assert s.run("echo still-fine\n") == (b"still-fine\n", b"exited 0\n")


@pytest.mark.timeout_s(90)
def test_restarted_daemon_finds_its_sandboxes(make_mount):
    first = make_mount()
    s = first.sandbox()
    assert s.run("echo before\n") == (b"before\n", b"exited 0\n")
    cid = s.inspect()["Id"]
    problems = first.stop()
    assert problems == []
    assert s.inspect()["State"]["Running"] is True, "unmounting must leave the container"
    second = make_mount(state=first.state)
    assert second.instance == first.instance
    assert second.names() == {s.name}
    s2 = Sandbox(second, s.name)
    assert s2.inspect()["Id"] == cid
    assert s2.run("echo after\n") == (b"after\n", b"exited 0\n")


# ------------------------------------------------------------------ blocked readers

def test_ctrl_c_ends_a_blocked_cat_of_output(mount, sbx):
    sbx.exec("sleep 30\n")
    wait_for(lambda: sbx.status() == b"running\n", 10, what="status running")
    r = mount.reader(sbx.p("output"))
    time.sleep(1)
    assert r.proc.poll() is None, "cat output should block while the run is silent"
    t0 = time.monotonic()
    r.proc.send_signal(signal.SIGINT)
    r.wait_exit(2)
    assert time.monotonic() - t0 < 2
    assert sbx.status() == b"running\n"


@pytest.mark.slow
@pytest.mark.timeout_s(180)
def test_200_blocked_readers_all_get_the_bytes(mount, sbx, tmp_path):
    n = 200
    sbx.exec("sleep 8; echo done\n")
    outs, procs = [], []
    for i in range(n):
        f = open(tmp_path / f"r{i}", "wb")
        outs.append(f)
        procs.append(mount.spawn(["timeout", "-s", "KILL", "60", "cat", sbx.p("output")],
                                 stdout=f, stderr=subprocess.STDOUT))
    time.sleep(0.5)
    # Listing and status stay fast while 200 reads wait.
    for _ in range(5):
        t0 = time.monotonic()
        names = mount.names()
        st = sbx.status()
        ls = set(os.listdir(sbx.path))
        assert time.monotonic() - t0 < 1.0
        assert names == {sbx.name} and ls == set(CONTROL_FILES)
        if st != b"running\n":
            break
        time.sleep(0.2)
    still = sum(1 for p in procs if p.poll() is None)
    assert still == n or sbx.status() != b"running\n", f"only {still} of {n} readers wait"
    for p in procs:
        p.wait(60)
    for f in outs:
        f.close()
    bad = [(i, p.returncode, (tmp_path / f"r{i}").read_bytes()[:100])
           for i, p in enumerate(procs)
           if p.returncode != 0 or (tmp_path / f"r{i}").read_bytes() != b"done\n"]
    assert bad == [], f"{len(bad)} readers failed, e.g. {bad[:5]}"
    assert sbx.status() == b"exited 0\n"
