#!/usr/bin/env python3
"""agent_loop.py — the agent loop on a sandboxfs mount, with file I/O only.

    examples/agent_loop.py [-m MOUNT] [-j N] [-t SECONDS] [-p PREFIX]
                           [--auth FILE] [--stop-on-failure] PRD

Pre-warms N sandboxes (mkdir MOUNT/PREFIX-1 .. PREFIX-N, in parallel), then
runs the stories of PRD (one shell command per line; blank lines and # lines
skipped) across them with a thread pool: each worker owns one sandbox and
runs one story at a time there. A story's run number is read back from its
`exec` handle, so its output and status are `runs/N/...` whatever else the
sandbox does. Each story is bounded by the sandbox's `timeout` file (the run
is killed inside and its status reads `timeout`). Prints a progress line per
story and a summary table; exits 1 if a story failed, 2 on bad usage or when
a sandbox could not be made. The sandboxes are removed at the end, also on
Ctrl-C.

No SDK: everything is open/read/write/mkdir/rmdir on the mount.
"""

import argparse
import os
import queue
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def write(path, data):
    with open(path, "w") as f:
        f.write(data)


def read(path):
    with open(path) as f:
        return f.read()


def start_run(sandbox, command):
    """Write COMMAND to exec on a read-write handle; the read gives 'N\\n'."""
    fd = os.open(os.path.join(sandbox, "exec"), os.O_RDWR)
    try:
        data = command.encode()
        while data:
            data = data[os.write(fd, data):]
        return int(os.read(fd, 64))
    finally:
        os.close(fd)


def run_story(sandbox, k, story, outdir):
    t0 = time.monotonic()
    try:
        n = start_run(sandbox, story)
        run = os.path.join(sandbox, "runs", str(n))
        # output blocks until the run ends (bounded by the sandbox timeout).
        out = read(os.path.join(run, "output"))
        status = read(os.path.join(run, "status")).strip()
    except OSError as e:
        n, out, status = None, "", f"error: {e.strerror}"
    path = os.path.join(outdir, f"story-{k}.out")
    write(path, out)
    return {"k": k, "story": story, "sandbox": os.path.basename(sandbox), "run": n,
            "status": status, "seconds": time.monotonic() - t0, "output": path}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prd")
    ap.add_argument("-m", "--mount", default=os.environ.get("SANDBOXFS_MOUNT", "/sbx"))
    ap.add_argument("-j", "--jobs", type=int, default=2, help="sandboxes in parallel")
    ap.add_argument("-t", "--timeout", type=int, default=0, help="seconds per story, 0 none")
    ap.add_argument("-p", "--prefix", default=f"loop-{os.getpid()}",
                    help="sandbox names PREFIX-1..N (a template may match them)")
    ap.add_argument("--auth", help="credentials file written to every sandbox's auth")
    ap.add_argument("--stop-on-failure", action="store_true",
                    help="start no new story after one failed")
    ap.add_argument("-o", "--outdir", default=None)
    a = ap.parse_args()
    if a.jobs < 1:
        ap.error("--jobs must be at least 1")
    try:
        stories = [line.strip() for line in read(a.prd).splitlines()]
    except OSError as e:
        print(f"agent_loop: cannot read {a.prd}: {e.strerror}", file=sys.stderr)
        return 2
    stories = [s for s in stories if s and not s.startswith("#")]
    outdir = a.outdir or f"/tmp/agent-loop.{os.getpid()}"
    os.makedirs(outdir, exist_ok=True)
    auth = read(a.auth) if a.auth else None

    sandboxes, made = [os.path.join(a.mount, f"{a.prefix}-{i + 1}") for i in range(a.jobs)], []
    lock = threading.Lock()

    def prewarm(path):
        os.mkdir(path)                      # the container starts here
        with lock:
            made.append(path)
        write(os.path.join(path, "timeout"), f"{a.timeout}\n")
        if auth is not None:
            write(os.path.join(path, "auth"), auth)

    results, failed = [], threading.Event()
    # Not `with`: its exit waits for the workers, whose reads of output end
    # only when their runs do; on Ctrl-C the rmdirs below end them.
    pool = ThreadPoolExecutor(a.jobs)
    try:
        list(pool.map(prewarm, sandboxes))
        free = queue.Queue()
        for s in sandboxes:
            free.put(s)

        def worker(k, story):
            if failed.is_set() and a.stop_on_failure:
                return {"k": k, "story": story, "sandbox": "-", "run": None,
                        "status": "skipped", "seconds": 0.0, "output": "-"}
            sandbox = free.get()
            try:
                r = run_story(sandbox, k, story, outdir)
            finally:
                free.put(sandbox)
            if r["status"] != "exited 0":
                failed.set()
            with lock:
                print(f"story {k}: {r['status']} ({r['seconds']:.1f}s, {r['sandbox']} "
                      f"run {r['run']}, output {r['output']})", flush=True)
            return r

        results = list(pool.map(worker, range(1, len(stories) + 1), stories))
    except OSError as e:
        print(f"agent_loop: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for path in made:                   # rmdir ends live runs too
            try:
                os.rmdir(path)
            except OSError as e:
                print(f"agent_loop: rmdir {path}: {e.strerror}", file=sys.stderr)

    ok = sum(r["status"] == "exited 0" for r in results)
    skipped = sum(r["status"] == "skipped" for r in results)
    bad = len(results) - ok - skipped
    print(f"summary: {len(results)} stories, {ok} passed, {bad} failed, {skipped} skipped")
    print(f"{'#':>3}  {'status':<12}  {'secs':>6}  {'sandbox':<20}  story")
    for r in results:
        print(f"{r['k']:>3}  {r['status']:<12}  {r['seconds']:>6.1f}  {r['sandbox']:<20}  "
              f"{r['story']}")
    return 1 if bad else 0


def interrupted(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # Also when started with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("agent_loop: interrupted", file=sys.stderr)
        sys.exit(130)
