"""A board that drops off the network is noticed in seconds: keepalives, derived deadlines and
the board-side guard — first as parts, then on a real network (a board in its own network
namespace, tests/netboard.py) whose link is cut, made to drop every packet, or whose server is
frozen, each during a latency measurement."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from farm.cli import main
from farm.config.devices import load_devices
from farm.config.suites import LatencySpec, Timeouts, load_suite
from farm.errors import DeviceFailure, DeviceTimeout
from farm.results.store import Store, default_db
from farm.run import deadlines
from farm.run.engine import run
from farm.run.runner import RunOptions
from farm.run.watchdog import bounded
from farm.transports import board_side
from farm.transports.liveness import LinkClosed, LinkWatch
from tests.netboard import NetBoard, namespaces_unavailable
from tests.sshd import devices_yaml

GUARD = Path(board_side.__file__)


# --- the parts ------------------------------------------------------------------------------------
def test_a_silent_link_is_lost_after_count_unanswered_keepalives():
    beats = []

    def probe(timeout: float) -> None:
        time.sleep(timeout)
        raise TimeoutError

    watch = LinkWatch(probe, 0.2, 3, lambda s: f"quiet for {s:.1f} s", lambda: beats.append(1)).start()
    assert watch.wait() == "quiet for 0.6 s"  # the threshold, not the jitter around it
    assert len(beats) == 3  # one heartbeat per probe, three unanswered probes


def test_a_closed_link_is_lost_at_once_and_an_answered_one_never():
    def closed(timeout: float) -> None:
        raise LinkClosed("the SSH connection closed")

    assert LinkWatch(closed, 5.0, 3, str).start().wait() == "the SSH connection closed"
    answered = LinkWatch(lambda timeout: None, 0.05, 2, str).start()
    time.sleep(0.5)
    answered.stop()
    assert answered.wait() is None


def test_a_blocked_call_ends_when_the_link_is_lost():
    release, stopped = threading.Event(), []
    lost = {"cause": None}
    threading.Timer(0.5, lambda: lost.update(cause="link lost to b (no SSH keepalive reply for 15 s)")).start()
    with pytest.raises(DeviceFailure) as e:  # not DeviceTimeout: ended by the cause, not the 60 s
        bounded("latency measurement", release.wait, 60.0, lambda: (stopped.append(1), release.set()),
                lambda: lost["cause"])
    assert type(e.value) is DeviceFailure and stopped == [1]
    assert e.value.what == "latency measurement stopped: link lost to b (no SSH keepalive reply for 15 s)"


def test_a_hung_call_times_out_with_how_its_deadline_was_derived():
    with pytest.raises(DeviceTimeout, match=r"did not finish within 0.3 s \(3 × .*\)"):
        bounded("inference", lambda: time.sleep(10), 0.3, lambda: None, basis="3 × the 0.1 s one took")


def test_deadlines_follow_what_the_device_showed():
    spec = LatencySpec(warmup=2, number=10, repeat=20)
    d = deadlines.measurement(0.010, spec, 1800.0, spec.calls)
    assert d.seconds == pytest.approx(deadlines.FLOOR + deadlines.SAFETY * 202 * 0.010)
    assert "202 calls × 0.01 s" in d.basis and "allows 1800 s" in d.basis
    slow = LatencySpec(repeat=10, min_repeat_ms=500)
    ramped = deadlines.measurement(0.001, slow, 1800.0, slow.calls)
    assert ramped.seconds > deadlines.FLOOR + deadlines.SAFETY * 10 * 0.5  # each repeat lasts 0.5 s
    assert deadlines.measurement(5.0, spec, 60.0, spec.calls).seconds == 60.0  # the suite's bound caps it
    # a simulator's one traced run, whatever the spec: its own count of inferences' worth
    from farm.transports.hexagon_sim import TRACED_RUN_COST, HexagonModel
    traced = deadlines.measurement(9.5, LatencySpec(warmup=0, repeat=1), 1800.0,
                                   HexagonModel.timed_calls(None, LatencySpec(warmup=0, repeat=1)))
    assert traced.seconds == pytest.approx(deadlines.FLOOR + deadlines.SAFETY * TRACED_RUN_COST * 9.5)
    assert traced.seconds > 25.6 * 3  # the measured traced run, with the safety factor to spare
    assert deadlines.inference(None, 600.0).seconds == 600.0
    assert deadlines.inference(0.02, 600.0).seconds == pytest.approx(deadlines.FLOOR + 0.06)


def _guard(tmp_path: Path, dead: float) -> tuple[subprocess.Popen, Path, int]:
    rundir = tmp_path / "run-x"
    rundir.mkdir()
    proc = subprocess.Popen([sys.executable, str(GUARD), "guard", str(dead), str(rundir), "sleep", "60"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline().decode()
    assert line.startswith("farm-pid=")
    return proc, rundir, int(line.split("=")[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_guard_keeps_the_server_while_heartbeats_come_and_stops_it_when_they_stop(tmp_path):
    proc, rundir, server = _guard(tmp_path, 1.0)
    for _ in range(10):  # 2 s of heartbeats: twice the guard's patience
        proc.stdin.write(b".")
        proc.stdin.flush()
        time.sleep(0.2)
    assert proc.poll() is None and _alive(server)
    assert proc.wait(10) == 0  # the beats stop; stdin stays open
    assert "no heartbeat from the farm for 1 s" in proc.stderr.read().decode()
    assert not _alive(server) and not rundir.exists()


def test_guard_stops_the_server_when_its_session_ends(tmp_path):
    proc, rundir, server = _guard(tmp_path, 60.0)
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert "the SSH session ended" in proc.stderr.read().decode()
    assert not _alive(server) and not rundir.exists()


# --- on a real network ----------------------------------------------------------------------------
LONG_SUITE = """name: long
model: {builtin: tinyconv}
inputs: {seed: 0, count: 2}
correctness: {max_lsb: 1, min_exact: 0.95}
latency: {warmup: 1, number: 1, repeat: %d, min_repeat_ms: 500}
fp32_baseline: false
devices: [all]
"""


@pytest.fixture
def netboard(tmp_path):
    why = namespaces_unavailable()
    if why:
        pytest.skip(why)
    board = NetBoard(tmp_path / "sshd")
    yield board
    board.close()


def _setup(tmp_path: Path, board: NetBoard, repeat: int, device: dict, **transport) -> tuple[Path, Path]:
    work = tmp_path / "board"
    work.mkdir()
    suite = tmp_path / "long.yaml"
    suite.write_text(LONG_SUITE % repeat)
    yaml = devices_yaml(tmp_path / "devices.yaml", board.sshd, work, device=device, **transport)
    return yaml, suite


def _no_farm_left(board: NetBoard, work: Path, within: float) -> float:
    """Seconds until the board runs no farm process and the work directory is empty."""
    start = time.monotonic()
    while board.farm_processes() or any(work.iterdir()):
        assert time.monotonic() - start < within, (board.farm_processes(), list(work.iterdir()))
        time.sleep(0.25)
    return time.monotonic() - start


class Fault:
    """Applies a fault `delay` seconds after the run records correctness (mid-measurement) and
    times how long the latency check takes to end in an error after it."""

    def __init__(self, apply, delay: float = 1.5):
        self.apply, self.delay, self.at, self.ended = apply, delay, None, None

    def progress(self, msg: str) -> None:
        if "correctness: pass" in msg and self.at is None:
            self.at = time.monotonic() + self.delay
            threading.Timer(self.delay, self.apply).start()
        if "latency: error" in msg:
            self.ended = time.monotonic()

    @property
    def took(self) -> float:
        return self.ended - self.at


def _run(suite: Path, yaml: Path, data_dir: Path, progress) -> dict:
    device = load_devices(yaml).get("board")
    outcome = run([(load_suite(suite), [device])], RunOptions(data_dir=data_dir, progress=progress))
    return {"ok": outcome.ok, **{r.check: r for r in outcome.results}}


def test_cut_link_ends_the_checks_within_a_minute_and_leaves_nothing_on_the_board(netboard, tmp_path):
    """Default keepalives (5 s × 3); the link stays cut, so the retry fails too: quarantined."""
    yaml, suite = _setup(tmp_path, netboard, 60, {"retries": 1, "retry_backoff": 2})
    data_dir, seen = tmp_path / "farm", {}
    cut_at = []

    def watch_store() -> None:  # the CLI prints its progress: the store tells the test instead
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and "latency" not in seen:
            try:
                store = Store(default_db(data_dir))
                latest = store.run(None)
                for r in store.results(latest["id"]) if latest else []:
                    seen.setdefault(r.check, (time.monotonic(), r))
                store.close()
            except Exception:  # noqa: BLE001 - the run has not made its store yet
                pass
            if "correctness" in seen and not cut_at:
                time.sleep(1.5)
                netboard.cut()
                cut_at.append(time.monotonic())
            time.sleep(0.2)

    watcher = threading.Thread(target=watch_store, daemon=True)
    watcher.start()
    rc = main(["run", "--suite", str(suite), "--devices", str(yaml), "--data-dir", str(data_dir)])
    watcher.join(10)
    took, latency = seen["latency"]
    detected = took - cut_at[0]
    print(f"\ncut link: checks ended {detected:.1f} s after the cut: {latency.reason}")
    assert rc == 1
    assert seen["correctness"][1].status == "pass"
    assert latency.status == "error" and latency.kind in ("device", "timeout")
    assert "link lost to board (no SSH keepalive reply for 15 s)" in latency.reason
    assert "quarantined" in latency.reason
    left = _no_farm_left(netboard, tmp_path / "board", 60)  # the guard's own deadline: 20 s
    print(f"cut link: the board's guard had stopped the server {detected + left:.1f} s after the cut")


def test_link_restored_before_the_retry_lets_the_retry_pass(netboard, tmp_path):
    yaml, suite = _setup(tmp_path, netboard, 30, {"retries": 1, "retry_backoff": 3}, keepalive=1)

    def progress(msg: str) -> None:
        fault.progress(msg)
        if "retrying in" in msg:
            netboard.restore()

    fault = Fault(netboard.cut)
    got = _run(suite, yaml, tmp_path / "farm", progress)
    assert got["ok"], {c: (r.status, r.reason) for c, r in got.items() if c != "ok"}
    assert got["latency"].status == "pass"
    _no_farm_left(netboard, tmp_path / "board", 30)


def test_dropped_packets_are_a_lost_link(netboard, tmp_path):
    yaml, suite = _setup(tmp_path, netboard, 30, {"retries": 0}, keepalive=1)
    how = []
    fault = Fault(lambda: how.append(netboard.drop_all()))
    got = _run(suite, yaml, tmp_path / "farm", fault.progress)
    print(f"\ndropped packets ({how[0]}): checks ended {fault.took:.1f} s after the drop")
    assert not got["ok"]
    assert "link lost to board (no SSH keepalive reply for 3 s)" in got["latency"].reason
    netboard.stop_dropping()


def test_frozen_server_times_out_at_the_derived_deadline(netboard, tmp_path):
    """The link answers (sshd is fine), the server does not: only the deadline can tell."""
    yaml, suite = _setup(tmp_path, netboard, 4, {"retries": 0}, keepalive=1)
    fault = Fault(lambda: netboard.signal_server(signal.SIGSTOP), delay=1.0)
    got = _run(suite, yaml, tmp_path / "farm", fault.progress)
    print(f"\nfrozen server: checks ended {fault.took:.1f} s after the freeze: "
          f"{got['latency'].reason}")
    assert not got["ok"]
    assert got["latency"].kind == "timeout"
    assert "latency measurement did not finish within" in got["latency"].reason
    assert "calls ×" in got["latency"].reason  # derived from the inference, not the suite's 1800 s
    netboard.signal_server(signal.SIGCONT)
    _no_farm_left(netboard, tmp_path / "board", 30)


def test_a_session_ends_by_itself_after_its_limit(registry, tmp_path):
    """TVM's session timeout, set from the suite's bounds: a board whose farm lost its link (a lab
    board farm did not start, so no guard of farm's runs there) frees itself."""
    from farm.transports.embedded import Farm

    assert Timeouts().session(4, True) == 60 + 2 * (300 + 5 * 600 + 1800)
    device = registry.get("host")
    with Farm(tmp_path, tmp_path / "logs", [device]) as farm:
        farm.start(device)
        with farm.transport(device).open(60, limit=2) as session:
            assert session.remote.cpu().exist
            time.sleep(4)
            with pytest.raises(DeviceFailure, match="session has expired"):
                session.load(GUARD)


def test_something_that_is_not_a_tracker_is_one_line(tmp_path):
    """tracker_summary speaks the tracker protocol itself: a port that answers something else is
    a DeviceFailure naming it, not a traceback (TVM's client is no longer in the way)."""
    import socket

    from farm.transports.rpc import tracker_summary

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)

        def answer() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.recv(4)
                conn.sendall(b"HTTP")  # 4 bytes, the wrong magic

        threading.Thread(target=answer, daemon=True).start()
        with pytest.raises(DeviceFailure, match=r"tracker 127.0.0.1:\d+ is not a TVM RPC tracker"):
            tracker_summary(srv.getsockname(), timeout=5.0)

