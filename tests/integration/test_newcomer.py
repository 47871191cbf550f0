"""What a newcomer hits (issue 10): errors a shell can see, rmdir ends runs
`killed`, errors that read like the user's shell, config errors that say
where, a second daemon refused, per-run wait and runs/latest, the README's
recipes. Driven the way a user drives them: bash, /bin/echo, ls, cat."""

import errno
import os
import subprocess
import time

import pytest

from sbxlib import IMAGE, PODMAN, cat, docker, errname, errno_of, read, wait_for, write

BASH = "/bin/bash"


def bash(script, timeout=30, env=None):
    """Runs script with bash; returns (exit status, stdout, stderr)."""
    p = subprocess.run([BASH, "-c", script], capture_output=True, timeout=timeout,
                       env=env, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def open_errno(path, flags=os.O_WRONLY):
    """The errno of opening path (None: it opened, and was closed unwritten)."""
    try:
        os.close(os.open(path, flags))
    except OSError as e:
        return e.errno
    return None


def q(path):
    return "'" + path.replace("'", "'\\''") + "'"


# ------------------------------------------------------------------ errors reach the shell

def test_stopped_sandbox_fails_at_the_redirection(sbx):
    write(sbx.p("ctl"), "stop\n")
    wait_for(lambda: sbx.info()["state"] != "running", 30, what="the container stopped")
    rc, _, err = bash(f"echo true > {q(sbx.p('exec'))}")
    assert rc != 0, "bash's builtin echo reported success for a stopped sandbox"
    assert b"Host is down" in err, err
    rc, _, err = bash(f"/bin/echo true > {q(sbx.p('exec'))}")
    assert rc != 0 and b"Host is down" in err, (rc, err)
    assert open_errno(sbx.p("exec")) == errno.EHOSTDOWN
    write(sbx.p("ctl"), "start\n")
    assert sbx.run("echo back\n") == (b"back\n", b"exited 0\n")


def test_paused_sandbox_fails_at_the_redirection(sbx):
    sbx.settle()
    docker("pause", sbx.container)
    try:
        wait_for(lambda: sbx.status() == b"paused\n", 10, what="status paused")
        rc, _, err = bash(f"echo true > {q(sbx.p('exec'))}")
        assert rc != 0, "bash's builtin echo reported success for a paused sandbox"
        assert b"Device or resource busy" in err, err
        assert open_errno(sbx.p("exec")) == errno.EBUSY
    finally:
        docker("unpause", sbx.container, check=False)
    wait_for(lambda: sbx.status() != b"paused\n", 10, what="status not paused")
    assert sbx.run("echo back\n") == (b"back\n", b"exited 0\n")


def test_invalid_template_fails_at_the_write(mount):
    path = mount.p(".sandboxfs", "templates", "newbie")
    for echo in ("echo", "/bin/echo"):
        rc, _, err = bash(f"{echo} '{{\"image\": 5}}' > {q(path)}")
        assert rc != 0, f"{echo}: an invalid template was accepted"
        assert b"Invalid argument" in err, err
        assert "newbie" not in os.listdir(mount.p(".sandboxfs", "templates"))


# ------------------------------------------------------------------ errors read like a shell's

def test_command_not_found_reads_like_sh(sbx):
    assert sbx.run("curl http://example.com\n") == (b"sh: curl: not found\n", b"exited 127\n")
    assert sbx.run("exit 3\n") == (b"", b"exited 3\n")
    # The wrapper leaves nothing behind for the command to see.
    assert sbx.run('echo "[$1]" "[$__sbx_cmd]" "$0"\n') == (b"[] [] sh\n", b"exited 0\n")
    # A command too large for an argument comes on stdin: the same words.
    big = "nosuchcmd\n" + "#" * (80 << 10) + "\n"
    assert sbx.run(big) == (b"sh: nosuchcmd: not found\n", b"exited 127\n")


# ------------------------------------------------------------------ rmdir ends runs killed

@pytest.mark.timeout_s(180)
def test_rmdir_of_a_live_run_ends_it_killed(mount):
    for i in range(5):
        s = mount.sandbox()
        n = s.exec_n("echo up; sleep 600\n")
        rd = mount.reader(s.p("runs", str(n), "output"))
        rd.wait_data(b"up\n", 15)
        # A reader of runs/N/status keeps the run object to ask after rmdir.
        fd = os.open(s.p("runs", str(n), "wait"), os.O_RDONLY)
        try:
            os.rmdir(s.path)
            mount.sandboxes.remove(s.name)
            got = os.read(fd, 64)
        finally:
            os.close(fd)
        assert got == b"killed\n", f"round {i}: {got!r}"
        assert rd.wait_exit(10) == 0


# ------------------------------------------------------------------ runs/N/wait, runs/latest

def test_run_wait_blocks_for_its_own_run(sbx):
    n1 = sbx.exec_n("sleep 1; exit 4\n")
    n2 = sbx.exec_n("echo quick\n")
    assert (n1, n2) == (1, 2)
    # The top-level wait follows run 2; runs/1/wait waits for run 1.
    t0 = time.monotonic()
    assert cat(sbx.p("runs", "1", "wait"), timeout=30) == b"exited 4\n"
    assert time.monotonic() - t0 > 0.3
    assert cat(sbx.p("runs", "2", "wait")) == b"exited 0\n"
    # Ended: answers at once, at any offset.
    with open(sbx.p("runs", "1", "wait"), "rb") as f:
        f.seek(7)
        assert f.read() == b"4\n"


def test_run_wait_is_pollable_and_interruptible(sbx):
    import select
    n = sbx.exec_n("sleep 600\n")
    fd = os.open(sbx.p("runs", str(n), "wait"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(300) == []
        # A blocked reader is interrupted by a signal: cat dies of it.
        c = subprocess.Popen(["cat", sbx.p("runs", str(n), "wait")], stdout=subprocess.PIPE)
        time.sleep(0.5)
        assert c.poll() is None
        c.terminate()
        assert c.wait(5) == -15
        write(sbx.p("ctl"), "kill\n")
        assert p.poll(10000) != []
        assert os.read(fd, 64) == b"killed\n"
    finally:
        os.close(fd)


def test_runs_latest_is_a_symlink_to_the_newest_run(sbx):
    runs = sbx.p("runs")
    assert errno_of(os.readlink, os.path.join(runs, "latest")) == errno.ENOENT
    for i in range(1, 12):
        sbx.exec_n(f"echo {i}\n")
    assert os.readlink(os.path.join(runs, "latest")) == "11"
    assert cat(os.path.join(runs, "latest", "wait")) == b"exited 0\n"
    assert cat(os.path.join(runs, "latest", "output")) == b"11\n"
    # readdir gives numeric order (ls -U), and never lists latest.
    rc, out, _ = bash(f"ls -U {q(runs)}; echo; ls -v {q(runs)}")
    assert rc == 0
    numbers = b"".join(b"%d\n" % i for i in range(1, 12))
    assert out == numbers + b"\n" + numbers, out


def test_readme_recipe_learns_the_run_number(sbx):
    script = f"""
cmd='echo from-recipe; exit 5'
exec 3<>{q(sbx.p('exec'))}
printf '%s' "$cmd" >&3
read -r n <&3
exec 3>&-
echo "$n"
cat {q(sbx.p('runs'))}/"$n"/wait
cat {q(sbx.p('runs'))}/"$n"/output
"""
    rc, out, err = bash(script)
    assert (rc, out, err) == (0, b"1\nexited 5\nfrom-recipe\n", b"")


# ------------------------------------------------------------------ start-up mistakes

def start_daemon(sbx_bin, args, timeout=20):
    p = subprocess.run([sbx_bin, "-f", *args], capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stderr.decode(errors="replace")


def test_startup_mistakes_say_what_to_do(sbx_bin, scratch):
    mp = os.path.join(scratch, "mnt")
    os.mkdir(mp)
    state = os.path.join(scratch, "state")
    rc, err = start_daemon(sbx_bin, ["-o", f"bogus=1,state={state}", mp])
    assert rc != 0 and "bogus" in err and "see sandboxfs --help" in err, err
    afile = os.path.join(scratch, "afile")
    open(afile, "w").close()
    rc, err = start_daemon(sbx_bin, ["-o", f"state={afile}", mp])
    assert (rc, err) == (1, f"sandboxfs: state directory {afile} is not a directory\n")
    conf = os.path.join(scratch, "c.json")
    with open(conf, "w") as f:
        f.write('{\n  "templates": {},\n}\n')    # a trailing comma
    rc, err = start_daemon(sbx_bin, ["-o", f"state={state},config={conf}", mp])
    assert (rc, err) == (1, f"sandboxfs: config {conf}: malformed JSON at line 3 column 1\n")
    assert not os.listdir(mp)


def test_second_daemon_on_a_live_mount_is_refused(sbx_bin, mount, scratch):
    s = mount.sandbox()
    rc, err = start_daemon(sbx_bin, ["-o", f"state={os.path.join(scratch, 'st')}", mount.path])
    assert rc == 1, err
    assert err == (f"sandboxfs: {mount.path} is already served by a running sandboxfs; "
                   f"unmount it first (fusermount3 -u {mount.path})\n")
    assert s.name in mount.names()
    assert s.run("echo still\n") == (b"still\n", b"exited 0\n")


def test_auth_written_by_a_shell_logs_one_line(sbx, mount):
    before = mount.sbx_log().decode().count(f"sandbox {sbx.name}: auth")
    rc, _, err = bash(f"echo TOKEN=abcdef > {q(sbx.p('auth'))}")
    assert (rc, err) == (0, b"")
    lines = [x for x in mount.sbx_log().decode().splitlines()
             if f"sandbox {sbx.name}: auth" in x][before:]
    assert len(lines) == 1 and lines[0].endswith("auth replaced (1 variables, 0 files)"), lines
    assert sbx.read("auth") == b"TOKEN\n"
    rc, _, _ = bash(f": > {q(sbx.p('auth'))}")
    assert rc == 0 and sbx.read("auth") == b""
    lines = [x for x in mount.sbx_log().decode().splitlines()
             if f"sandbox {sbx.name}: auth" in x][before:]
    assert len(lines) == 2 and lines[1].endswith("auth cleared"), lines


# ------------------------------------------------------------------ the engine is down

@pytest.mark.skipif(PODMAN, reason="DOCKER_HOST is docker's; podman is local")
def test_engine_down_at_mount_logs_once(make_mount, scratch):
    sock = os.path.join(scratch, "nothing.sock")
    m = make_mount(env={"DOCKER_HOST": f"unix://{sock}"})
    time.sleep(5)
    log = m.sbx_log().decode().splitlines()
    about = [x for x in log if "does not answer" in x or "events" in x]
    assert len(about) <= 2, about      # the start-up warning and the outage, once each
    assert errno_of(os.mkdir, m.p("x")) == errno.ECONNREFUSED


@pytest.mark.timeout_s(180)
def test_engine_down_fails_exec_at_open(make_dockerd, make_mount):
    eng = make_dockerd()
    m = make_mount(env={"DOCKER_HOST": eng.host})
    a = m.sandbox()
    assert a.run("echo up\n") == (b"up\n", b"exited 0\n")
    eng.stop()
    wait_for(lambda: open_errno(a.p("exec")) == errno.ECONNREFUSED, 15,
             what="exec refused with ECONNREFUSED at open")
    rc, _, err = bash(f"echo true > {q(a.p('exec'))}")
    assert rc != 0 and b"Connection refused" in err, (rc, err)
    eng.start()
    # The refusal asked the engine again: it is noticed well before the
    # backoff's end, and exec works again.
    wait_for(lambda: open_errno(a.p("exec")) is None, 30,
             what="exec accepted again")
    wait_for(lambda: a.info()["state"] == "running", 30, what="running again")
    assert a.run("echo back\n", timeout=30) == (b"back\n", b"exited 0\n")


def test_info_template_is_builtin_without_templates(sbx):
    info = sbx.info()
    assert info["template"] == "builtin"
    assert info["effective"]["template"] == "builtin"


# ------------------------------------------------------------------ already done on core: checked

def test_files_look_like_files(sbx):
    t0 = time.time()
    assert sbx.run("printf 'abc\\n%.0s' 1 2 3\n") == (b"abc\nabc\nabc\n", b"exited 0\n")
    rc, out, _ = bash(f"wc -c < {q(sbx.p('output'))}; wc -c < {q(sbx.p('runs', '1', 'stdout'))};"
                      f"wc -c < {q(sbx.p('runs', 'latest', 'output'))}")
    assert (rc, out.split()) == (0, [b"12", b"12", b"12"])
    # Pipe-like (nonseekable): no size, so that wc reads it to the end.
    assert os.stat(sbx.p("output")).st_size == 0
    st = os.stat(sbx.p("runs", "1", "output"))
    assert st.st_size == 12
    assert t0 - 5 < st.st_mtime < time.time() + 5
    assert t0 - 5 < os.stat(sbx.path).st_mtime < time.time() + 5


def test_allow_other_is_refused(sbx_bin, scratch):
    mp = os.path.join(scratch, "mnt")
    os.mkdir(mp)
    for opt in ("allow_other", "allow_root"):
        rc, err = start_daemon(sbx_bin, ["-o", f"{opt},state={os.path.join(scratch, 's')}", mp])
        assert rc == 1 and "allow_other and allow_root are refused" in err, err
