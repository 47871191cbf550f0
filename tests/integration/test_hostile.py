"""Hostile input (issue 5): thousands of random names to mkdir, random bytes
to every writable file, unknown ctl verbs, writes to read-only files,
symlink/link/mknod/rename in the mount. Everything is refused with a precise
errno, changes nothing, creates nothing on the engine, and the daemon lives.
The random inputs are seeded (SANDBOXFS_FUZZ_SEED, default fixed) so that a
failure can be replayed."""

import errno
import os
import random
import re
import stat

import pytest

from sbxlib import assert_errno, cat, errname, errno_of, read, write

SEED = int(os.environ.get("SANDBOXFS_FUZZ_SEED", "20261128"))
VALID_NAME = re.compile(rb"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
STATUS_LINE = re.compile(rb"(idle|running|exited \d+|timeout|killed|lost)\n")


def alive(mount):
    assert mount.proc.poll() is None, f"the daemon died:\n{mount.log_tail()}"
    assert read(mount.p(".sandboxfs", "version")).startswith(b"sandboxfs ")


# ------------------------------------------------------------------ random names

def random_names(rng, n):
    """n distinct names that are not valid sandbox names (as bytes; no NUL,
    no '/'), of many kinds."""
    bad_first = b"-._ ~!@#$%^&*()+={}[]|\\:;\"'<>,?`\t\n\x7f"
    unicode_bits = ["\u00e9", "\u4e2d\u6587", "\U0001f600", "\u202e", "\u200b", "\u0301",
                    "\uff41", "\u0430"]   # the last two look like 'a'

    def rand_bytes(lo, hi):
        return bytes(rng.choice([b for b in range(1, 256) if b != 0x2f])
                     for _ in range(rng.randint(lo, hi)))

    def valid_chars(k):
        return bytes(rng.choice(b"abcXYZ019_.-") for _ in range(k))

    kinds = [
        lambda: rand_bytes(1, 40),                                           # any bytes
        lambda: bytes([rng.choice(range(1, 32))]) + valid_chars(rng.randint(0, 10)),
        lambda: b"a" + valid_chars(rng.randint(0, 8)) + bytes([rng.choice(range(1, 32))])
        + valid_chars(rng.randint(0, 8)),                                    # control inside
        lambda: b"-" + valid_chars(rng.randint(0, 20)),                      # leading '-'
        lambda: b"." + valid_chars(rng.randint(0, 20)),                      # leading '.'
        lambda: b"_" + valid_chars(rng.randint(0, 20)),
        lambda: bytes([rng.choice(bad_first)]) + valid_chars(rng.randint(0, 20)),
        lambda: b"a" * rng.randint(64, 255),                                 # too long
        lambda: b"b" + valid_chars(rng.choice([63, 64, 100, 254, 255, 256, 300, 1023, 1024,
                                               1025, 2000, 4096])),              # too long
        lambda: (rng.choice(["a", "x1", ""]) + rng.choice(unicode_bits)
                 + rng.choice(["", "b"])).encode(),                          # unicode
        lambda: valid_chars(rng.randint(1, 5)).replace(b"-", b"a").replace(b".", b"a")
        .replace(b"_", b"a") + rng.choice([b" ", b"\t", b" x", b"\n"]),     # spaces
        lambda: rng.choice([b".", b"..", b" ", b"  ", b"\xff", b"\xc0\xaf", b"..."]),
        lambda: b"a" + bytes([rng.choice(b"*?[]{}$`;|&<>()'\"\\!#%:,=+@^~")]) + b"b",
    ]
    out = set()
    while len(out) < n:
        name = rng.choice(kinds)()
        if not name or b"/" in name or b"\0" in name:
            continue
        if VALID_NAME.fullmatch(name) and len(name) <= 63:
            continue
        out.add(name)
    return sorted(out)


@pytest.mark.timeout_s(120)
def test_random_names_are_refused_and_create_nothing(mount):
    rng = random.Random(SEED)
    names = random_names(rng, 2000)
    assert len(names) == 2000
    before = set(os.listdir(mount.path))
    root = os.fsencode(mount.path)
    wrong = []
    for name in names:
        path = root + b"/" + name
        e = errno_of(os.mkdir, path)
        if name in (b".", b".."):
            ok = (errno.EEXIST,)        # the kernel answers these itself
        elif len(name) > 255:
            ok = (errno.EINVAL, errno.ENAMETOOLONG)   # the kernel may refuse first
        else:
            ok = (errno.EINVAL,)
        if e not in ok:
            wrong.append((name, errname(e)))
            if e is None:
                mount.sandboxes.append(os.fsdecode(name))
    assert wrong == [], f"{len(wrong)} names not refused as expected: {wrong[:20]}"
    assert set(os.listdir(mount.path)) == before
    assert mount.containers() == [], "a refused name made a container"
    alive(mount)
    # Still serving normally.
    s = mount.sandbox()
    assert s.run("echo ok\n") == (b"ok\n", b"exited 0\n")


# ------------------------------------------------------------------ random bytes to settings

def random_payloads(rng, n, near_valid):
    """n payloads: raw random bytes, random printable lines, and mutations of
    near-valid inputs."""
    out = []
    for i in range(n):
        k = i % 4
        if k == 0:
            p = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif k == 1:
            p = "".join(rng.choice("abcXYZ019 _=-./#\t\\\"'{}[]:,\n") for _ in
                        range(rng.randint(1, 60))).encode()
        else:
            base = bytearray(rng.choice(near_valid))
            for _ in range(rng.randint(1, 3)):
                op = rng.randrange(3)
                pos = rng.randint(0, len(base))
                if op == 0:
                    base[pos:pos] = bytes([rng.randrange(256)])
                elif op == 1 and base:
                    del base[min(pos, len(base) - 1)]
                elif base:
                    base[min(pos, len(base) - 1)] = rng.randrange(256)
            p = bytes(base)
        out.append(p or b"x")
    return out


def plausible(fname, value):
    """Is the read-back value of a setting well-formed (docs/interface.md)?"""
    if fname == "timeout":
        return re.fullmatch(rb"\d+\n", value) is not None
    if fname == "workdir":
        return value == b"" or re.fullmatch(rb"/[^\n\0]*\n", value) is not None
    if fname == "env":
        return all(re.fullmatch(rb"[A-Za-z_][A-Za-z0-9_]*=[^\0]*", line)
                   for line in value.split(b"\n")[:-1]) and (value == b"" or value.endswith(b"\n"))
    if fname == "auth":
        return all(re.fullmatch(rb"[A-Za-z_][A-Za-z0-9_]*|\S.*", line)
                   for line in value.split(b"\n")[:-1]) and (value == b"" or value.endswith(b"\n"))
    raise ValueError(fname)


NEAR_VALID = {
    "timeout": [b"10\n", b"0\n", b"3600", b"5\n"],
    "workdir": [b"/tmp\n", b"/\n", b"/a/b c\n", b"/home"],
    "env": [b"A=1\n", b"KEY_2=some value\nB=x\n", b"# comment\n\nX=y"],
    "auth": [b"TOKEN=abcdef\n", b"A=1\nB=2\n", b'{"env": {"K": "v"}}', b"# c\nK=v"],
}


@pytest.mark.timeout_s(180)
@pytest.mark.parametrize("fname", ["auth", "env", "workdir", "timeout"])
def test_random_bytes_to_settings_are_einval_or_valid(sbx, fname):
    rng = random.Random(f"{SEED}-{fname}")
    payloads = random_payloads(rng, 300, NEAR_VALID[fname])
    path = sbx.p(fname)
    problems = []
    accepted = 0
    for p in payloads:
        before = read(path)
        mode = rng.choice("wa")
        e = errno_of(write, path, p, mode, rng.choice([None, 1, 7]))
        after = read(path)
        if e is None:
            accepted += 1
            if not plausible(fname, after):
                problems.append(f"{p!r} ({mode}) accepted, reads back {after!r}")
        elif e == errno.EINVAL:
            if after != before:
                problems.append(f"{p!r} ({mode}) refused but changed {before!r} to {after!r}")
        else:
            problems.append(f"{p!r} ({mode}): {errname(e)}")
        if len(after) > 4096:       # keep the values small: clear now and then
            write(path, b"")
    assert problems == [], f"{len(problems)} problems: {problems[:10]}"
    # Both ways were exercised.
    assert 0 < accepted < len(payloads), f"{accepted} of {len(payloads)} accepted"
    assert sbx.mount.proc.poll() is None, "the daemon died"
    for f in ("auth", "env", "workdir", "timeout"):
        write(sbx.p(f), b"")
    assert sbx.run("echo ok\n") == (b"ok\n", b"exited 0\n")


@pytest.mark.timeout_s(120)
def test_random_bytes_to_ctl_are_refused(sbx):
    rng = random.Random(f"{SEED}-ctl")
    verbs = {b"kill", b"stop", b"start", b"save"}
    payloads = random_payloads(rng, 300, [b"kill\n", b"kill TERM\n", b"kill 9", b"kil\n"])
    problems = []
    tried = 0
    for p in payloads:
        words = p.split()
        first = words[0] if words else b""
        if first in verbs - {b"kill"}:
            continue            # a valid stop/start/save would act on the container
        tried += 1
        e = errno_of(write, sbx.p("ctl"), p)
        ok = (errno.EINVAL, errno.ESRCH) if first == b"kill" else (errno.EINVAL,)
        if e not in ok:
            problems.append(f"{p!r}: {errname(e)}")
    assert tried > 250
    assert problems == [], problems[:10]
    assert sbx.mount.proc.poll() is None
    assert sbx.status() == b"idle\n"
    assert sbx.inspect()["State"]["Running"] is True
    assert sbx.run("echo ok\n") == (b"ok\n", b"exited 0\n")


@pytest.mark.parametrize("payload", [
    b"frobnicate\n", b"restart\n", b"KILL\n", b"kill TERM extra\n", b"kill NOSUCHSIG\n",
    b"kill 99999\n", b"stop now\n", b"start 1\n", b"save\n", b"save a b\n", b"save Bad:Image!\n",
    b"\n", b" \n", b"kill\0TERM\n", b"\xff\xfe\n", b"rm -rf /\n",
], ids=lambda p: repr(p)[2:22])
def test_unknown_or_malformed_ctl_is_einval(sbx, payload):
    assert_errno(errno.EINVAL, write, sbx.p("ctl"), payload)
    assert sbx.status() == b"idle\n"
    assert sbx.inspect()["State"]["Running"] is True


@pytest.mark.timeout_s(120)
def test_random_bytes_to_exec_just_start_runs(sbx):
    rng = random.Random(f"{SEED}-exec")
    write(sbx.p("timeout"), "10\n")
    seen = []
    for i in range(6):
        p = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
        n = sbx.exec_n(p)
        seen.append(n)
        assert sbx.read("runs", str(n), "cmd") == p
        cat(sbx.p("runs", str(n), "output"), timeout=30)     # until the run ends
        st = sbx.read("runs", str(n), "status")
        assert STATUS_LINE.fullmatch(st) and st != b"running\n", (p, st)
    assert seen == list(range(1, 7))
    assert sbx.run("echo ok\n") == (b"ok\n", b"exited 0\n")


# ------------------------------------------------------------------ refused operations

@pytest.mark.timeout_s(60)
def test_writes_to_read_only_files_are_eacces(mount, sbx):
    sbx.run("echo x\n")
    ro = [sbx.p(f) for f in ("output", "stdout", "stderr", "status", "wait", "info")]
    ro += [sbx.p("runs", "1", f) for f in ("cmd", "output", "stdout", "stderr", "status",
                                           "started", "ended")]
    ro += [mount.p(".sandboxfs", f) for f in ("version", "backend", "log")]
    for path in ro:
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND,
                      os.O_WRONLY | os.O_TRUNC):
            assert_errno(errno.EACCES, os.open, path, flags)
    assert_errno(errno.EACCES, os.open, sbx.p("ctl"), os.O_RDONLY)
    assert_errno(errno.EACCES, os.open, sbx.p("ctl"), os.O_RDWR)
    assert sbx.read("runs", "1", "output") == b"x\n"
    assert sbx.status() == b"exited 0\n"
    assert mount.proc.poll() is None


@pytest.mark.timeout_s(60)
def test_symlink_link_mknod_rename_are_eperm(mount, sbx):
    sbx.run("echo x\n")
    other = mount.sandbox()
    dirs = [mount.path, sbx.path, sbx.p("runs"), sbx.p("runs", "1"), mount.p(".sandboxfs")]
    for d in dirs:
        assert_errno(errno.EPERM, os.symlink, "/etc/passwd", os.path.join(d, "l"))
        assert_errno(errno.EPERM, os.link, sbx.p("status"), os.path.join(d, "h"))
        assert_errno(errno.EPERM, os.mknod, os.path.join(d, "n"), 0o644 | stat.S_IFREG)
        assert_errno(errno.EPERM, os.mkfifo, os.path.join(d, "f"))
        assert_errno(errno.EPERM, os.open, os.path.join(d, "newfile"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    assert_errno(errno.EPERM, os.rename, sbx.p("status"), sbx.p("status2"))
    assert_errno(errno.EPERM, os.rename, sbx.p("status"), other.p("status"))
    assert_errno(errno.EPERM, os.rename, sbx.path, mount.p("renamed"))
    assert_errno(errno.EPERM, os.rename, sbx.p("runs", "1"), sbx.p("runs", "9"))
    assert_errno(errno.EPERM, os.unlink, sbx.p("status"))
    assert_errno(errno.EPERM, os.unlink, sbx.p("runs", "1", "cmd"))
    assert_errno(errno.EPERM, os.rmdir, sbx.p("runs"))
    assert_errno(errno.EPERM, os.rmdir, sbx.p("runs", "1"))
    assert_errno(errno.EPERM, os.mkdir, sbx.p("sub"))
    assert_errno(errno.EPERM, os.chmod, sbx.p("status"), 0o777)
    assert sorted(os.listdir(mount.path)) == sorted([".sandboxfs", sbx.name, other.name])
    assert sbx.read("runs", "1", "output") == b"x\n"
    assert len(mount.containers()) == 2
    assert mount.proc.poll() is None
