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

import psutil

from farm.platform.procs import group_members

POLL = 0.5


def _kill_group(*_args) -> None:
    """The farm is gone or stops us: the whole group goes, this guard with it."""
    _end_others()
    os._exit(128 + signal.SIGTERM)


def _end_others(grace: float = 1.0) -> None:
    """SIGTERM the rest of the group, and SIGKILL whoever is still there after `grace` seconds."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group includes us
    pgid = os.getpgid(0)
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while (others := group_members(pgid, besides=os.getpid())) and time.monotonic() < deadline:
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
    _end_others()  # CMD has ended: whatever it forked goes; we live on to pass on its status
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells report it


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
