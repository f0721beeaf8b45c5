"""`python -m farm.platform.guard PARENT_PID CMD...`: runs CMD in this process group and takes
the whole group down when the farm process dies, however it dies (even SIGKILL).

It polls for the parent instead of using PR_SET_PDEATHSIG: that signal fires when the spawning
*thread* exits (the farm starts servers from watchdog threads) and is not inherited across fork
(TVM's rpc_server and tracker fork workers that would outlive the farm)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from farm.platform.procs import group_members

POLL = 0.5


def _kill_group(*_args) -> None:
    """The farm is gone or stops us: the whole group goes, this guard with it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group includes us
    pgid = os.getpgid(0)
    os.killpg(pgid, signal.SIGTERM)
    time.sleep(1.0)
    os.killpg(pgid, signal.SIGKILL)


def _kill_others() -> None:
    """CMD has ended: whatever it forked goes, but this guard lives to pass on CMD's exit status."""
    import psutil

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pgid = os.getpgid(0)
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 1.0
    while True:
        others = [p for p in group_members(pgid) if p.pid != os.getpid()]
        if not others or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for p in others:
        try:
            p.kill()
        except psutil.Error:
            pass


def main(argv: list[str]) -> int:
    parent, cmd = int(argv[0]), argv[1:]
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _kill_group)
    child = subprocess.Popen(cmd)
    while os.getppid() == parent:
        try:
            code = child.wait(POLL)
            break
        except subprocess.TimeoutExpired:
            continue
    else:
        _kill_group()  # the farm is gone
    _kill_others()
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells report it


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
