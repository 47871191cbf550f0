"""Claude Code and Codex in sandboxes, end to end (docs/agents.md), and the
agent loop examples.

The tests marked slow use the images of scripts/images (sandboxfs/debian,
sandboxfs/claude, sandboxfs/codex), which a session fixture builds, or finds
current (their labels), bounded in time. If the Debian mirror or the npm
registry cannot be reached (scripts/images exits 3) they are skipped, with
the reason printed on the terminal and in the summary. The example tests run
examples/agent-loop.sh, agent_loop.py and agent-loop.mjs against the base
image with shell commands as stories.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from sbxlib import REPO, grep_tree, inspect_raw, proc_cmdlines, read, unique_name, wait_for

IMAGES_BOUND = 600           # scripts/images, first build ~1-2 min here
AGENT_UID = 1000
EXAMPLES = os.path.join(REPO, "examples")

# Made-up credentials: shaped like the real ones, valid for nothing.
OAUTH_TOKEN = "sk-ant-oat01-MADEUP-" + "x7Qp" * 12
OPENAI_KEY = "sk-proj-MADEUP-" + "k3Zr" * 10


# ------------------------------------------------------------------ images

def _loud(config, text):
    """Print past pytest's output capture, on the terminal of the run."""
    capman = config.pluginmanager.get_plugin("capturemanager")
    if capman is None:
        print(text, file=sys.stderr)
        return
    with capman.global_and_fixture_disabled():
        print(text, file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def agent_images(request):
    """Build (or keep, when current) the three images; their labels."""
    env = dict(os.environ, SANDBOXFS_IMAGES_TIMEOUT=str(IMAGES_BOUND - 60))
    try:
        p = subprocess.run([os.path.join(REPO, "scripts", "images")], env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=IMAGES_BOUND)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"scripts/images did not finish within {IMAGES_BOUND}s:\n"
                    f"{(e.output or b'').decode(errors='replace')[-3000:]}", pytrace=False)
    out = p.stdout.decode(errors="replace")
    if p.returncode == 3:
        reason = ("SKIPPED: the agent images cannot be built, a package source is "
                  "unreachable: " + "; ".join(re.findall(r"UNREACHABLE: (.*)", out)))
        _loud(request.config, "\n" + "!" * 72 + "\n" + reason + "\n" + "!" * 72)
        pytest.skip(reason)
    if p.returncode != 0:
        pytest.fail(f"scripts/images failed (exit {p.returncode}):\n{out[-3000:]}", pytrace=False)
    labels = {}
    for name in ("debian", "claude", "codex"):
        q = subprocess.run(["docker", "image", "inspect", "-f", "{{json .Config.Labels}}",
                            f"sandboxfs/{name}"], stdout=subprocess.PIPE, timeout=60, check=True)
        labels[name] = json.loads(q.stdout)
    return labels


def agent_config(scratch, network="none"):
    """examples/agents.json with its workspace (and workdir) moved to a fresh
    directory of the test, owned by the agent user; network none: these
    tests show what works offline. Returns (config path, workspace)."""
    ws = os.path.join(scratch, "project")
    os.makedirs(ws)
    os.chown(ws, AGENT_UID, AGENT_UID)
    with open(os.path.join(EXAMPLES, "agents.json")) as f:
        cfg = json.load(f)
    assert sorted(cfg["templates"]) == ["claude", "codex"]
    for t in cfg["templates"].values():
        t["workspace"] = ws
        t["workdir"] = ws
        t["network"] = network
    path = os.path.join(scratch, "agents.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path, ws


@pytest.fixture
def agents(agent_images, make_mount, scratch):
    cfg, ws = agent_config(scratch)
    m = make_mount(extra_args=["-o", f"config={cfg}"])
    return m, ws


def sha256(s):
    return hashlib.sha256(s.encode()).hexdigest()


# ------------------------------------------------------------------ claude

@pytest.mark.slow
@pytest.mark.timeout_s(180)
def test_claude_version_runs_as_agent(agents, agent_images):
    m, ws = agents
    s = m.sandbox(unique_name("claude-"))
    version = agent_images["claude"]["org.sandboxfs.version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    assert s.run("claude --version\n", timeout=60) == (f"{version} (Claude Code)\n".encode(),
                                                       b"exited 0\n")
    assert s.run("id -un; id -u; echo $HOME; pwd\n") == (
        f"agent\n1000\n/home/agent\n{ws}\n".encode(), b"exited 0\n")
    eff = s.info()["effective"]
    assert (eff["template"], eff["image"], eff["user"]) == ("claude", "sandboxfs/claude", "agent")


@pytest.mark.slow
@pytest.mark.timeout_s(180)
@pytest.mark.parametrize("name", ["debian", "claude", "codex"])
def test_images_hold_no_credentials_and_the_agent_user(agent_images, name):
    script = ("ls -A /root /home/agent; grep ^agent: /etc/passwd; "
              "find / -xdev \\( -name auth.json -o -name .npmrc -o -name .credentials.json "
              "-o -name .claude.json -o -name .git-credentials \\) -print; echo end")
    p = subprocess.run(["docker", "run", "--rm", "--network", "none", f"sandboxfs/{name}",
                        "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    assert (p.returncode, p.stdout.decode()) == (0, (
        "/home/agent:\n.bash_logout\n.bashrc\n.profile\n\n/root:\n"
        "agent:x:1000:1000::/home/agent:/bin/bash\nend\n"))


@pytest.mark.slow
@pytest.mark.timeout_s(180)
def test_claude_oauth_token_reaches_the_run_and_nothing_else(agents):
    m, _ws = agents
    s = m.sandbox(unique_name("claude-"))
    needle = OAUTH_TOKEN.encode()
    # Before: the real CLI reports no login (offline: it reads its settings).
    out, _st = s.run("claude auth status\n", timeout=60)
    assert (json.loads(out)["loggedIn"], json.loads(out)["authMethod"]) == (False, "none"), out
    s.write("auth", f"CLAUDE_CODE_OAUTH_TOKEN={OAUTH_TOKEN}\n")
    assert s.read("auth") == b"CLAUDE_CODE_OAUTH_TOKEN\n"
    # Checked without printing it: its hash.
    out, st = s.run('printf %s "$CLAUDE_CODE_OAUTH_TOKEN" | sha256sum\n')
    assert (out, st) == (f"{sha256(OAUTH_TOKEN)}  -\n".encode(), b"exited 0\n")
    # Printed, it is masked.
    assert s.run('echo "token=$CLAUDE_CODE_OAUTH_TOKEN"\n') == (b"token=***\n", b"exited 0\n")
    # The CLI takes it as its login (the token is checked only by the API).
    out, st = s.run("claude auth status\n", timeout=60)
    assert st == b"exited 0\n", (out, st)
    assert (json.loads(out)["loggedIn"], json.loads(out)["authMethod"]) == (True, "oauth_token"), out
    for where, data in [("docker inspect", inspect_raw(s.container)),
                        ("info", read(s.p("info"))),
                        (".sandboxfs/log", read(m.p(".sandboxfs", "log"))),
                        ("the daemon's stderr", m.log_bytes())]:
        assert needle not in data, f"the token is in {where}"
    assert grep_tree(m.state, needle) == []
    assert [c for _, c in proc_cmdlines() if needle in c] == []


# ------------------------------------------------------------------ codex

@pytest.mark.slow
@pytest.mark.timeout_s(180)
def test_codex_auth_json_is_placed_for_agent_and_codex_is_logged_in(agents, agent_images):
    m, _ws = agents
    s = m.sandbox(unique_name("codex-"))
    version = agent_images["codex"]["org.sandboxfs.version"]
    assert s.run("codex --version\n", timeout=60) == (f"codex-cli {version}\n".encode(),
                                                      b"exited 0\n")
    # Before: not logged in (exit 1).
    out, st = s.run("codex login status\n", timeout=60)
    assert st == b"exited 1\n" and b"Not logged in" in out, (out, st)

    auth_json = json.dumps({"OPENAI_API_KEY": OPENAI_KEY})
    s.write("auth", json.dumps({"files": {"~/.codex/auth.json": auth_json}}))
    assert s.read("auth") == b"~/.codex/auth.json\n"
    # (~/.codex itself was made by codex above, with its own mode)
    out, st = s.run("stat -c '%n %U:%G' ~/.codex; stat -c '%n %a %U:%G' ~/.codex/auth.json; "
                    "sha256sum < ~/.codex/auth.json\n")
    assert (out, st) == (
        f"/home/agent/.codex agent:agent\n/home/agent/.codex/auth.json 600 agent:agent\n"
        f"{sha256(auth_json)}  -\n".encode(), b"exited 0\n")
    # The real CLI reports the key, offline (network none): it shows only a
    # shortened form of it, never the whole key.
    out, st = s.run("codex login status\n", timeout=60)
    assert st == b"exited 0\n", (out, st)
    assert re.search(rb"API key configured - sk-proj-\*\*\*\w+\n", out), out
    assert OPENAI_KEY.encode() not in out
    # Printed whole, the file is masked.
    assert s.run("cat ~/.codex/auth.json\n") == (b"***", b"exited 0\n")
    for where, data in [("docker inspect", inspect_raw(s.container)),
                        (".sandboxfs/log", read(m.p(".sandboxfs", "log"))),
                        ("the daemon's stderr", m.log_bytes())]:
        assert OPENAI_KEY.encode() not in data, f"the key is in {where}"
    assert grep_tree(m.state, OPENAI_KEY.encode()) == []


@pytest.mark.slow
@pytest.mark.timeout_s(180)
@pytest.mark.parametrize("user", ["agent", "1000", "1000:1000"])
def test_auth_files_go_to_the_template_users_home(agent_images, make_mount, scratch, user):
    cfg = os.path.join(scratch, "cfg.json")
    with open(cfg, "w") as f:
        json.dump({"templates": {"u": {"match": "u-*", "image": "sandboxfs/debian",
                                       "user": user}}}, f)
    m = make_mount(extra_args=["-o", f"config={cfg}"])
    s = m.sandbox(unique_name("u-"))
    s.write("auth", json.dumps({"files": {"~/.config/tool/key": "secret-content-1"}}))
    assert s.run("stat -c '%n %a %u:%g' ~/.config/tool/key\n") == (
        b"/home/agent/.config/tool/key 600 1000:1000\n", b"exited 0\n")


@pytest.mark.slow
@pytest.mark.timeout_s(120)
def test_auth_file_for_a_user_without_home_is_eio_with_the_reason(agent_images, make_mount,
                                                                  scratch):
    cfg = os.path.join(scratch, "cfg.json")
    with open(cfg, "w") as f:
        json.dump({"templates": {"u": {"match": "u-*", "image": "sandboxfs/debian",
                                       "user": "4242"}}}, f)
    m = make_mount(extra_args=["-o", f"config={cfg}"])
    s = m.sandbox(unique_name("u-"))
    fd = os.open(s.p("auth"), os.O_WRONLY | os.O_TRUNC)
    os.write(fd, json.dumps({"files": {"~/.codex/auth.json": "content-1234"}}).encode())
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EIO
    assert s.read("auth") == b""
    assert re.search(r"auth: placing ~/.codex/auth.json: .*Permission denied",
                     read(m.p(".sandboxfs", "log")).decode())


# ------------------------------------------------------------------ workspace

@pytest.mark.slow
@pytest.mark.timeout_s(180)
def test_git_commit_in_the_sandbox_is_on_the_host_at_the_same_path(agents):
    m, ws = agents
    s = m.sandbox(unique_name("codex-"))
    out, st = s.run("git init -q -b main . && echo hello > README && git add README && "
                    "git -c user.name=agent -c user.email=agent@sandbox commit -q -m first "
                    "&& git log --format=%s\n")
    assert (out, st) == (b"first\n", b"exited 0\n")
    # On the host, at the same path, owned by uid 1000 (the agent user).
    with open(os.path.join(ws, "README"), "rb") as f:
        assert f.read() == b"hello\n"
    for p in (os.path.join(ws, "README"), os.path.join(ws, ".git", "HEAD")):
        st_ = os.stat(p)
        assert (st_.st_uid, st_.st_gid) == (AGENT_UID, AGENT_UID), p
    log = subprocess.run(["git", "-c", f"safe.directory={ws}", "-C", ws, "log",
                          "--format=%an %s"], stdout=subprocess.PIPE, timeout=30, check=True)
    assert log.stdout == b"agent first\n"


# ------------------------------------------------------------------ the loop examples

PRD = """\
# stories: one shell command per line
echo story one
printf 'two\\n'; echo err >&2

sh -c 'exit 3'
echo four
"""


def prd_file(scratch, text=PRD):
    p = os.path.join(scratch, "prd.txt")
    with open(p, "w") as f:
        f.write(text)
    return p


def run_example(args, timeout=120):
    p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def loop_cmd(kind, mount, prd, outdir, *extra):
    if kind == "sh":
        return [os.path.join(EXAMPLES, "agent-loop.sh"), "-m", mount.path, "-o", outdir,
                *extra, prd]
    if kind == "py":
        return [sys.executable, os.path.join(EXAMPLES, "agent_loop.py"), "-m", mount.path,
                "-o", outdir, *extra, prd]
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (scripts/setup installs nodejs)", pytrace=False)
    return [node, os.path.join(EXAMPLES, "agent-loop.mjs"), "--mount", mount.path,
            "--outdir", outdir, *extra, prd]


def progress(out):
    return [re.sub(r" \(.*\)$", "", line) for line in out.splitlines()
            if line.startswith("story ")]


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("kind", ["sh", "py", "mjs"])
def test_loop_stops_at_the_first_failure(kind, mount, scratch):
    outdir = os.path.join(scratch, "out")
    extra = {"sh": ["-n", "loop-a"], "py": ["-j", "1", "-p", "loop-a", "--stop-on-failure"],
             "mjs": ["--jobs", "1", "--prefix", "loop-a", "--stop-on-failure"]}[kind]
    rc, out, err = run_example(loop_cmd(kind, mount, prd_file(scratch), outdir, *extra))
    assert rc == 1, (out, err)
    assert progress(out) == ["story 1: exited 0", "story 2: exited 0", "story 3: exited 3"]
    assert "summary: 4 stories, 2 passed, 1 failed, 1 skipped\n" in out
    assert re.search(r"^\s*4\s+skipped\s.*echo four$", out, re.M), out
    with open(os.path.join(outdir, "story-1.out"), "rb") as f:
        assert f.read() == b"story one\n"
    with open(os.path.join(outdir, "story-2.out"), "rb") as f:
        assert sorted(f.read().splitlines()) == [b"err", b"two"]
    assert not os.path.exists(os.path.join(outdir, "story-4.out"))
    assert mount.names() == set()
    # rmdir returns at once; the containers go in the background.
    wait_for(lambda: mount.containers() == [], 30, what="the loop's containers removed")


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("kind", ["sh", "py", "mjs"])
def test_loop_goes_on_and_bounds_each_story(kind, mount, scratch):
    outdir = os.path.join(scratch, "out")
    prd = prd_file(scratch, PRD + "sleep 60\necho after\n")
    extra = {"sh": ["-k", "-t", "2"], "py": ["-j", "2", "-t", "2"],
             "mjs": ["--jobs", "2", "--timeout", "2"]}[kind]
    rc, out, err = run_example(loop_cmd(kind, mount, prd, outdir, *extra))
    assert rc == 1, (out, err)
    got = sorted(progress(out))
    assert got == sorted(["story 1: exited 0", "story 2: exited 0", "story 3: exited 3",
                          "story 4: exited 0", "story 5: timeout", "story 6: exited 0"])
    assert "summary: 6 stories, 4 passed, 2 failed, 0 skipped\n" in out
    with open(os.path.join(outdir, "story-6.out"), "rb") as f:
        assert f.read() == b"after\n"
    assert mount.names() == set()
    # rmdir returns at once; the containers go in the background.
    wait_for(lambda: mount.containers() == [], 30, what="the loop's containers removed")


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("kind", ["sh", "py", "mjs"])
def test_loop_tears_down_on_ctrl_c(kind, mount, scratch):
    outdir = os.path.join(scratch, "out")
    prd = prd_file(scratch, "echo first\nsleep 60\necho never\n")
    extra = {"sh": ["-n", "loop-int"], "py": ["-j", "1", "-p", "loop-int"],
             "mjs": ["--jobs", "1", "--prefix", "loop-int"]}[kind]
    p = subprocess.Popen(loop_cmd(kind, mount, prd, outdir, *extra), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        name = "loop-int" if kind == "sh" else "loop-int-1"
        wait_for(lambda: os.path.isdir(mount.p(name, "runs", "2")), 30, what="story 2 running")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, (out, err)
    assert b"interrupted" in err
    assert mount.names() == set()
    # rmdir returns at once; the containers go in the background.
    wait_for(lambda: mount.containers() == [], 30, what="the loop's containers removed")
