import os, signal, pytest, time
from sbxlib import read

@pytest.mark.timeout_s(2)
def test_stuck(mount):
    os.kill(mount.proc.pid, signal.SIGSTOP)
    r = None
    try:
        r = read(mount.p(".sandboxfs", "version"))
    except BaseException as e:
        os.write(2, f"EXC {e!r}\n".encode())
        raise
    finally:
        os.write(2, f"RESULT {r!r}\n".encode())
