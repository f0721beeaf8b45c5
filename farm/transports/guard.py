"""`python -m farm.transports.guard PARENT_PID CMD...`: runs CMD in this process group and takes
the whole group down when the farm process dies, however it dies.

PR_SET_PDEATHSIG alone is not enough: it is not inherited across fork, and TVM's rpc_server and
tracker fork worker processes that would outlive a SIGKILLed farm."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1


def _kill_group(*_args) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group includes us
    pgid = os.getpgid(0)
    os.killpg(pgid, signal.SIGTERM)
    time.sleep(1.0)
    os.killpg(pgid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    parent, cmd = int(argv[0]), argv[1:]
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _kill_group)
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the farm died before prctl took effect
        return 1
    code = subprocess.call(cmd)
    _kill_group()  # whatever CMD forked goes with it
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
