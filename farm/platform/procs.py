"""Child processes the farm starts (tracker, RPC servers, emulators): each in its own process
group with its output in a log file, killed as a group, and run under farm.platform.guard so
the group dies with the farm, so no orphan survives a crash or Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Child:
    """One started process; `stop()` is idempotent and kills its whole group."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 detached: bool = False):
        self.name, self.argv, self.log = name, argv, log
        log.parent.mkdir(parents=True, exist_ok=True)
        if not detached:
            argv = [sys.executable, "-m", "farm.platform.guard", str(os.getpid()), *argv]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})}, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self, grace: float = 3.0) -> None:
        kill_group(self.proc.pid, grace)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass


def kill_group(pid: int, grace: float = 3.0) -> None:
    """SIGTERM the process group led by pid, then SIGKILL what is left after `grace` seconds.
    Members that are only zombies count as gone: reaping orphans is init's business, and in a
    container init may take its time."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            _reap(pid)
            if not group_members(pid):
                return
            time.sleep(0.05)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def identity(pid: int) -> dict | None:
    """What tells this process from a later one that reuses its pid: start time and command line."""
    import psutil

    try:
        p = psutil.Process(pid)
        return {"pid": pid, "started": p.create_time(), "cmdline": p.cmdline()}
    except psutil.Error:
        return None


def is_running(recorded) -> bool:
    """Whether the process `identity` recorded still runs (not a later one reusing its pid)."""
    try:
        return _same(identity(int(recorded["pid"])), recorded)
    except (KeyError, TypeError, ValueError):
        return False


def _same(now: dict | None, recorded: dict) -> bool:
    try:
        return now is not None and now["cmdline"] == recorded["cmdline"] and \
            abs(now["started"] - float(recorded["started"])) < 0.01
    except (KeyError, TypeError, ValueError):
        return False


def is_ours(recorded) -> bool:
    """Whether the process group that `identity` recorded (its leader's pid) is still that one: the
    leader runs with the recorded start time and command line, or the leader is gone but members of
    its group live on (Linux reuses no pid while a group holds it as its id)."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("pid"), int):
        return False
    now = identity(recorded["pid"])
    return _same(now, recorded) if now is not None else bool(group_members(recorded["pid"]))


def group_members(pgid: int, besides: int | None = None) -> list:
    """The live processes (psutil; zombies are not alive) of process group `pgid`, but `besides`."""
    import psutil

    members = []
    for p in psutil.process_iter():
        try:
            if p.pid != besides and os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p)
        except (OSError, psutil.Error):
            continue
    return members


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 for a library call that prints there (LLVM's warnings), when the
    caller reports the problem itself."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def exit_with_parent(poll: float = 0.5) -> None:
    """For a worker process the farm spawned: exit as soon as the farm is gone (its own
    children's guards then take them down)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="farm-exit-with-parent", daemon=True).start()
