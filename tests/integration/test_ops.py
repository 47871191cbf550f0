"""Operating sandboxes (issue 14): ctl pause/resume, the audit log
(.sandboxfs/events, NAME/events), NAME/stats, the idle TTL and
.sandboxfs/summary. Exact lines and errnos from docs/interface.md."""

import errno
import json
import os
import time

import pytest

from sbxlib import Sandbox, errname, errno_of, read, wait_for, write


def assert_errno(expected, fn, *args, **kwargs):
    got = errno_of(fn, *args, **kwargs)
    assert got == expected, f"{fn.__name__}{args}: expected {errname(expected)}, got {errname(got)}"


# ------------------------------------------------------------------ pause

@pytest.mark.timeout_s(60)
def test_pause_freezes_a_counter_and_resume_continues_it(mount, sbx):
    sbx.exec("i=0; while [ $i -lt 400 ]; do echo $i; i=$((i+1)); sleep 0.05; done\n")
    r = mount.reader(sbx.p("output"))
    r.wait_data(lambda b: b.count(b"\n") >= 5, 10)
    sbx.write("ctl", "pause\n")
    assert sbx.status() == b"paused\n"
    assert sbx.info()["state"] == "paused"
    assert sbx.inspect()["State"]["Paused"] is True
    time.sleep(0.3)  # what was in flight reaches the spool
    frozen = r.data()
    time.sleep(1.5)
    assert r.data() == frozen, "a paused run printed"
    # exec while paused: EBUSY and no new run.
    assert_errno(errno.EBUSY, sbx.exec, "echo no\n")
    assert sorted(os.listdir(sbx.p("runs"))) == ["1"]
    sbx.write("ctl", "pause\n")  # again: nothing to do
    sbx.write("ctl", "resume\n")
    assert sbx.inspect()["State"]["Paused"] is False
    assert sbx.status() == b"running\n"
    got = r.wait_data(lambda b: b.count(b"\n") > frozen.count(b"\n"), 5)
    last = int(frozen.split(b"\n")[-2])
    nxt = got[len(frozen):].split(b"\n")[0]
    assert int(nxt) == last + 1, "the counter goes on where it stopped"
    sbx.write("ctl", "kill\n")
    sbx.wait()
    assert_errno(errno.EINVAL, sbx.write, "ctl", "pause now\n")
    sbx.write("ctl", "stop\n")
    assert_errno(errno.EHOSTDOWN, sbx.write, "ctl", "pause\n")
