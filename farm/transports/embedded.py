"""The embedded farm: TVM's own tracker on a free loopback port, plus the transports of the
selected devices, all stopped on exit (normal, error, Ctrl-C or SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from farm.config.devices import Device
from farm.config.transports import NEEDS_TRACKER
from farm.errors import DeviceFailure
from farm.platform.procs import Child, free_port, identity, is_ours, kill_group, python_module
from farm.transports import make_transport
from farm.transports.base import FarmContext, Transport
from farm.transports.rpc import tracker_summary

TRACKER_START_TIMEOUT = 60.0


class EmbeddedTracker:
    def __init__(self, log_dir: Path, host: str = "127.0.0.1", detached: bool = False):
        self.host, self.log_dir, self.detached = host, log_dir, detached
        self.child: Child | None = None
        self.address: tuple[str, int] | None = None

    def start(self) -> tuple[str, int]:
        port = free_port(self.host)
        # --port-end port+1: never let the tracker wander to a port we did not pick
        self.child = Child("rpc_tracker",
                           python_module("tvm.exec.rpc_tracker", "--host", self.host,
                                         "--port", str(port), "--port-end", str(port + 1)),
                           self.log_dir / "tracker.log", detached=self.detached)
        deadline = time.monotonic() + TRACKER_START_TIMEOUT
        while True:
            try:
                tracker_summary((self.host, port), timeout=2.0)
                self.address = (self.host, port)
                return self.address
            except DeviceFailure:
                if not self.child.alive() or time.monotonic() > deadline:
                    tail = self.child.tail()
                    self.stop()
                    raise DeviceFailure(f"the TVM tracker did not start: {tail}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None


def state_file(data_dir: Path) -> Path:
    return data_dir / "farm.json"


def running_farm(data_dir: Path) -> dict | None:
    """The state of a farm kept up by `farm up`, if its tracker still answers."""
    try:
        state = json.loads(state_file(data_dir).read_text())
        tracker_summary(tuple(state["tracker"]), timeout=2.0)
        return state
    except (OSError, ValueError, KeyError, TypeError, DeviceFailure):
        return None


class Farm:
    """Context manager owning the tracker and the started transports of one run."""

    def __init__(self, data_dir: Path, log_dir: Path, devices: list[Device], detached: bool = False):
        self.ctx = FarmContext(data_dir=data_dir, log_dir=log_dir, detached=detached)
        self.devices = devices
        self.tracker: EmbeddedTracker | None = None
        self.transports: dict[str, Transport] = {d.name: make_transport(d, self.ctx) for d in devices}
        self.started: list[Transport] = []
        self._old_sigterm = None

    def __enter__(self) -> Farm:
        if threading_main():
            self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
        return self

    def _ensure_tracker(self) -> None:
        if self.tracker is not None and self.tracker.child and not self.tracker.child.alive():
            # our tracker died: servers registered with it are useless, start afresh
            for t in reversed(self.started):
                t.stop()
            self.started.clear()
            self.tracker.stop()
            self.tracker, self.ctx.tracker = None, None
        if self.ctx.tracker is not None:
            return
        up = None if self.ctx.detached else running_farm(self.ctx.data_dir)
        if up:
            self.ctx.tracker = tuple(up["tracker"])
            return
        self.tracker = EmbeddedTracker(self.ctx.log_dir, detached=self.ctx.detached)
        self.ctx.tracker = self.tracker.start()

    def transport(self, device: Device) -> Transport:
        return self.transports[device.name]

    def start(self, device: Device) -> Transport:
        """Start a device's transport (once); failures propagate as DeviceFailure."""
        t = self.transports[device.name]
        if device.transport.kind in NEEDS_TRACKER:
            self._ensure_tracker()
        if t not in self.started:
            self.started.append(t)  # before start(): a half-started transport is stopped too
            t.start()
        return t

    def stop(self, device: Device) -> None:
        """Stop one device's transport (a hung or failed device); `start` brings it up again."""
        t = self.transports[device.name]
        if t in self.started:
            self.started.remove(t)
            t.stop()

    def close(self) -> None:
        for t in reversed(self.started):
            try:
                t.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass
        self.started.clear()
        if self.tracker is not None:
            self.tracker.stop()
            self.tracker = None
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def __exit__(self, *exc) -> None:
        self.close()

    def children_pids(self) -> list[int]:
        pids = [self.tracker.child.pid] if self.tracker and self.tracker.child else []
        for t in self.started:
            pids += t.pids()
        return pids


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_detached(data_dir: Path) -> tuple[list[int], list[int]]:
    """`farm down`: kill the process groups `farm up` recorded, each only while it is still the one
    recorded (platform.procs.is_ours), so a reused or planted pid is left alone; a bare pid (an
    older or hand-written farm.json) cannot be checked and is left alone too.
    Returns (stopped, left alone)."""
    path = state_file(data_dir)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return [], []
    state = state if isinstance(state, dict) else {}
    procs = [p for p in _list(state, "procs") if isinstance(p, dict) and _pid(p.get("pid"))]
    stopped = [_pid(p["pid"]) for p in procs if is_ours(p)]
    for pid in stopped:
        kill_group(pid)
    others = [_pid(p) for p in _list(state, "pids")] + [_pid(p["pid"]) for p in procs]
    left = [pid for pid in others if pid and pid not in stopped and identity(pid) is not None]
    path.unlink(missing_ok=True)
    return stopped, left


def _list(state: dict, key: str) -> list:
    value = state.get(key)
    return value if isinstance(value, list) else []


def _pid(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def write_state(data_dir: Path, tracker: tuple[str, int], pids: list[int]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_file(data_dir).with_suffix(".tmp")
    procs = [i for i in map(identity, pids) if i is not None]
    tmp.write_text(json.dumps({"tracker": list(tracker), "procs": procs, "owner": os.getpid()}))
    os.replace(tmp, state_file(data_dir))
