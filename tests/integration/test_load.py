"""Load (issue 5): many concurrent clients with read-back run numbers, every
output paired exactly with its client, and the daemon's fds and memory back
to their baseline afterwards; a short run of scripts/soak."""

import os
import re
import subprocess
import threading
import time

import pytest

import sbxlib
from sbxlib import REPO, SANITIZED, proc_fds, proc_rss_kb, read, wait_for

SANDBOXES = 16
CLIENTS = 2
RUNS = 50


def resources(pid):
    return proc_fds(pid), proc_rss_kb(pid)


@pytest.mark.slow
@pytest.mark.timeout_s(300)
def test_16_sandboxes_2_clients_50_runs_paired_exactly(mount):
    pid = mount.proc.pid
    # Sandboxes made in parallel (mkdir holds a thread per docker run).
    boxes = [None] * SANDBOXES
    errors = []

    def make(i):
        try:
            boxes[i] = mount.sandbox(sbxlib.unique_name(f"load{i}-"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(f"mkdir {i}: {e!r}")
    ts = [threading.Thread(target=make, args=(i,), daemon=True) for i in range(SANDBOXES)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert errors == [] and all(boxes), errors
    time.sleep(1)
    fd0, rss0 = resources(pid)

    got = {}        # (sandbox index, client) -> [(run number, i, output)]
    lock = threading.Lock()
    t_start = time.monotonic()

    def client(si, c):
        s = boxes[si]
        mine = []
        try:
            for i in range(RUNS):
                line = f"{s.name}-{c}-{i}"
                n = s.exec_n(f"echo {line}\n")
                # Read in this thread (it is bounded by the join below), not
                # through a `cat` child: a fork while another client holds
                # an exec handle sends a spurious flush on it (see
                # test_exec_read_back_with_a_flush_from_a_forked_child).
                out = read(s.p("runs", str(n), "output"))
                mine.append((n, i, out))
        except BaseException as e:  # noqa: BLE001 - reported below
            with lock:
                errors.append(f"client {s.name}-{c}: {e!r}")
        with lock:
            got[(si, c)] = mine

    threads = [threading.Thread(target=client, args=(si, c), daemon=True)
               for si in range(SANDBOXES) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 240
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    elapsed = time.monotonic() - t_start
    assert not any(t.is_alive() for t in threads), "clients did not finish within 240 s"
    assert errors == [], errors[:10]

    total = 0
    for si, s in enumerate(boxes):
        numbers = []
        for c in range(CLIENTS):
            runs = got[(si, c)]
            assert [i for _, i, _ in runs] == list(range(RUNS))
            for n, i, out in runs:
                want = f"{s.name}-{c}-{i}\n".encode()
                assert out == want, f"{s.name} run {n}: {out!r}, expected {want!r}"
                numbers.append(n)
                total += 1
        assert sorted(numbers) == list(range(1, CLIENTS * RUNS + 1)), s.name
        assert len(os.listdir(s.p("runs"))) == CLIENTS * RUNS
    assert total == SANDBOXES * CLIENTS * RUNS

    # Spot-check the files of some runs after the fact.
    for s in boxes[:4]:
        for n in (1, CLIENTS * RUNS):
            cmd = s.read("runs", str(n), "cmd")
            assert s.read("runs", str(n), "output") == cmd[len(b"echo "):]
            assert s.read("runs", str(n), "status") == b"exited 0\n"

    # Back to the baseline once every client is done.
    slack_kb = (256 if SANITIZED else 16) * 1024

    def settled():
        fd, rss = resources(pid)
        return abs(fd - fd0) <= 4 and rss <= rss0 + slack_kb
    try:
        wait_for(settled, 10, interval=0.25, what="fds and RSS back to the baseline")
    except AssertionError:
        pass                    # reported precisely below
    fd1, rss1 = resources(pid)
    print(f"\nload: {total} runs in {elapsed:.1f} s ({total / elapsed:.1f} runs/s); "
          f"fds {fd0} -> {fd1}; rss {rss0} -> {rss1} kB; "
          f"peak {proc_rss_kb(pid, 'VmHWM')} kB")
    if abs(fd1 - fd0) > 4:
        targets = []
        for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int)[-6:]:
            try:
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
        raise AssertionError(f"the daemon's fds went from {fd0} to {fd1} after {total} runs "
                             f"and stay there; the last ones: {targets}")
    assert rss1 <= rss0 + slack_kb, f"the daemon's RSS went from {rss0} to {rss1} kB"
    assert mount.proc.poll() is None


@pytest.mark.timeout_s(60)
def test_exec_read_back_with_a_flush_from_a_forked_child(sbx):
    """A client that forks (any multi-threaded program starting processes)
    makes the kernel send a FUSE flush on its open exec handle when the
    child closes its inherited copy. That flush starts the run (as
    documented); a read-back on the client's handle at that moment must
    still return the run's number, never end-of-file."""
    got = []
    delays = [0, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.006]
    for i in range(64):
        fd = os.open(sbx.p("exec"), os.O_RDWR)
        rp, wp = os.pipe()
        pid = None
        try:
            os.write(fd, f"echo {i}\n".encode())
            pid = os.fork()
            if pid == 0:
                try:
                    os.write(wp, b"x")
                    os.close(fd)         # the flush
                finally:
                    os._exit(0)
            os.read(rp, 1)              # the child is about to close
            time.sleep(delays[i % len(delays)])
            got.append(os.read(fd, 64))
        finally:
            os.close(fd)
            os.close(rp)
            os.close(wp)
            if pid:
                os.waitpid(pid, 0)
    bad = [(i, g) for i, g in enumerate(got) if not re.fullmatch(rb"[1-9][0-9]*\n", g)]
    assert bad == [], f"{len(bad)} of {len(got)} read-backs were not a run number: {bad[:5]}"
    assert [int(g) for g in got] == list(range(1, len(got) + 1))


@pytest.mark.slow
@pytest.mark.timeout_s(150)
def test_soak_short(sbx_bin):
    env = dict(os.environ, SANDBOXFS_BIN=sbx_bin, SOAK_PROGRESS="10")
    if SANITIZED:
        env.setdefault("SOAK_MAX_RSS_GROWTH_KB", str(256 * 1024))
    p = subprocess.Popen([os.path.join(REPO, "scripts", "soak"), "30"], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=130)
    except BaseException:
        # SIGTERM makes the script clean up (rmdir, unmount, docker rm).
        p.terminate()
        try:
            p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
        raise
    text = out.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("soak: instance "):
            sbxlib.record_instance(line.split()[-1])
    print(text)
    assert p.returncode == 0, text
    last = text.strip().splitlines()[-1]
    assert last.startswith("soak: ok 30 cycles"), last
