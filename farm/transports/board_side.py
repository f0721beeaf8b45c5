"""What the farm runs on an SSH board with the board's own python (sent as `python -c`, so it uses
the standard library only and never imports farm):

- `guard DEAD RUNDIR CMD...` starts the RPC server (CMD) in a process group of its own and reads
  the farm's heartbeats on stdin, one byte per keepalive. When none has arrived for DEAD seconds,
  or stdin closes (the SSH session ended), it kills the server's whole group — TVM's server forks
  workers — and removes RUNDIR: a farm that lost its link leaves nothing running on the board.
- `sweep ROOT` removes what earlier runs left under ROOT: servers whose guard is gone (killed with
  its group) and run directories no guard watches, once older than a minute (a younger one may be
  another farm's, between making it and starting its guard).

Processes are told apart by their environment: the guard has FARM_SSH_GUARD=<run dir>, the
server and everything it forks FARM_SSH_RUN=<run dir>."""

import os
import select
import shutil
import signal
import subprocess
import sys
import time

FRESH = 60.0  # seconds a run directory without a guard is left alone


def _environs():
    """(pid, environment) of every process of this user whose environment is readable."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        env = dict(kv.split(b"=", 1) for kv in raw.split(b"\0") if b"=" in kv)
        yield int(entry), {k.decode(errors="replace"): v.decode(errors="replace") for k, v in env.items()}


def _kill(pid, sig):
    try:
        os.killpg(pid, sig)
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def sweep(root):
    root = os.path.abspath(root)
    guarded, servers = set(), {}
    for pid, env in _environs():
        if "FARM_SSH_GUARD" in env:
            guarded.add(env["FARM_SSH_GUARD"])
        run = env.get("FARM_SSH_RUN", "")
        if os.path.dirname(run) == root:
            servers.setdefault(run, []).append(pid)
    for run, pids in servers.items():
        if run not in guarded:
            for pid in pids:
                _kill(pid, signal.SIGKILL)
            print(f"killed {len(pids)} {run}", flush=True)
    now = time.time()
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not name.startswith("run-") or path in guarded or not os.path.isdir(path):
            continue
        if path in servers or now - os.stat(path).st_mtime > FRESH:
            shutil.rmtree(path, ignore_errors=True)
            print(f"stale {path}", flush=True)
    return 0


def _watch(server, dead):
    """Why the guard ends: the server exited, the farm's heartbeats stopped, or stdin closed."""
    last = time.monotonic()
    while True:
        if server.poll() is not None:
            return f"the server exited ({server.returncode})"
        ready, _, _ = select.select([0], [], [], 0.5)
        if ready:
            if not os.read(0, 4096):
                return "the SSH session ended"
            last = time.monotonic()
        elif time.monotonic() - last > dead:
            return f"no heartbeat from the farm for {dead:g} s"


def guard(dead, rundir, argv):
    with open(os.path.join(rundir, "server.log"), "ab") as log:
        server = subprocess.Popen(argv, cwd=rundir, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    print(f"farm-pid={server.pid}", flush=True)

    def stop(*_):
        raise SystemExit(1)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        why = _watch(server, dead)
    finally:
        _kill(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        _kill(server.pid, signal.SIGKILL)  # the group: workers the server forked go too
        log = _tail(os.path.join(rundir, "server.log"))
        shutil.rmtree(rundir, ignore_errors=True)
    # the farm reads this line from the channel: the directory with the log is gone
    print(f"{why}; server log: {log}", file=sys.stderr, flush=True)
    return 0


def _tail(path, lines=5):
    try:
        with open(path, errors="replace") as f:
            text = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def main(argv):
    if argv[0] == "sweep":
        return sweep(argv[1])
    return guard(float(argv[1]), argv[2], argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
