"""The README's examples, run as written (issue 10): every indented shell
block of its "Using it" section (with "Shell pitfalls") runs with bash
against a fresh mount, /sbx replaced by the mount point.  A line whose
comment starts with `→ ` must print that (compared word by word, up to
"   (" where the comment goes on in prose); every line must exit 0.

Left out: the line that starts the daemon (the fixture mounts), and the
networked template example (it needs the sandboxfs/debian image and a
network, neither of which CI has)."""

import os
import re
import subprocess

import pytest

from sbxlib import REPO

TOKEN = "s3cr3t-token-value"


def using_it_blocks():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    start = text.index("\n## Using it\n")
    end = text.index("\n## ", start + 1)
    blocks, cur = [], []
    for line in text[start:end].splitlines():
        if line.startswith("    "):
            cur.append(line[4:])
        else:
            if cur:
                blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    return blocks


def runnable(block):
    if any('"network": "bridge"' in x for x in block):
        return None
    return [x for x in block if not x.startswith("build/sandboxfs ")]


def split_comment(line):
    """(command, expected words or None)."""
    m = re.match(r"^(.*?)\s+# (.*)$", line)
    if not m or "'" in m.group(2)[:0]:
        return line, None
    cmd, comment = m.group(1), m.group(2)
    if cmd.count("'") % 2 or cmd.count('"') % 2:
        return line, None          # the # is inside quotes
    if not comment.startswith("→ "):
        return cmd, None
    want = re.split(r"\s{3,}\(", comment[2:])[0]
    return cmd, want.split()


def run_block(lines, mount_path):
    script = []
    cmds = []
    for i, line in enumerate(lines):
        cmd, want = split_comment(line)
        cmd = re.sub(r"/sbx(?=[/ ]|$)", mount_path, cmd)
        cmds.append((line, want))
        script.append(f"echo @@LINE {i}")
        script.append(cmd)
        script.append(f"echo @@RC $?")
    env = dict(os.environ, TOKEN=TOKEN)
    p = subprocess.run(["/bin/bash", "-c", "\n".join(script)], capture_output=True,
                       timeout=120, env=env, stdin=subprocess.DEVNULL)
    out = p.stdout.decode(errors="replace")
    parts = re.split(r"^@@LINE (\d+)\n", out, flags=re.M)[1:]
    results = {}
    for n, body in zip(parts[0::2], parts[1::2]):
        m = re.search(r"^@@RC (\d+)\n?\Z", body, flags=re.M)
        assert m, f"line {n} did not finish: {body!r}; stderr {p.stderr!r}"
        results[int(n)] = (int(m.group(1)), body[:m.start()])
    assert len(results) == len(lines), (out, p.stderr)
    for i, (line, want) in enumerate(cmds):
        rc, got = results[i]
        assert rc == 0, f"README line failed (exit {rc}): {line}\nstderr: {p.stderr!r}"
        if want is not None:
            assert got.split() == want, f"README line: {line}\nprinted: {got!r}"
    return p


def test_the_blocks_are_found():
    blocks = using_it_blocks()
    assert len(blocks) >= 4
    assert any(x.startswith("build/sandboxfs ") for x in blocks[0])


@pytest.mark.timeout_s(180)
def test_readme_using_it_runs_as_written(mount):
    blocks = [b for b in (runnable(x) for x in using_it_blocks()) if b]
    checked = 0
    for block in blocks:
        p = run_block(block, mount.path)
        checked += sum(1 for x in block if split_comment(x)[1] is not None)
    assert checked >= 10
    assert mount.names() == set(), "the README's examples left sandboxes behind"
