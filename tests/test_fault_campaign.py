"""The fault campaign: a two-device `farm run` under a seeded random schedule of faults — servers
and the tracker killed or stopped, the farm itself stopped, interrupted, terminated or killed —
then `farm run --resume` until the run is done. Whatever the schedule, the run ends with the
check set of an undisturbed run, each check recorded once and never measured again once it was
recorded, no run ever left looking in progress, and no process of any attempt left behind.

Twenty schedules, in the default set (about 4 minutes on 2 cores). Each prints its figures (faults
injected, resumes) for a campaign's report: `pytest -p no:xdist -s tests/test_fault_campaign.py`."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from farm.results.store import Store
from tests.conftest import REPO

DEVICES = """
devices:
  - name: host
    target: {family: x86, mcpu: host}
    transport: {kind: local}
    retries: 4
    retry_backoff: 0.1
  - name: host2
    target: {family: x86, mcpu: host}
    transport: {kind: local}
    retries: 4
    retry_backoff: 0.1
"""
# short step timeouts, so a stopped server is caught in seconds and the retry path runs
SUITE = """
model: {builtin: tinyconv}
latency: {repeat: 30, number: 5}
timeouts: {open: 30, upload: 10, run: 3, measure: 15}
"""
ACTIONS = ("kill-server", "kill-tracker", "stop-server", "stop-farm",
           "interrupt-farm", "terminate-farm", "kill-farm")
ENDS_FARM = {"interrupt-farm": signal.SIGINT, "terminate-farm": signal.SIGTERM, "kill-farm": signal.SIGKILL}
SEEDS = range(20)


@dataclass(frozen=True)
class Fault:
    action: str
    gap: int  # fired once the farm process has printed this many more progress lines
    delay: float  # (and its target is up) and this many seconds more
    hold: float  # stop-*: seconds stopped before SIGCONT


def schedule(seed: int) -> list[Fault]:
    rng = random.Random(seed)
    return [Fault(rng.choice(ACTIONS), rng.randint(0, 6), round(rng.uniform(0, 1.5), 2),
                  round(rng.uniform(0.5, 5), 1)) for _ in range(rng.randint(2, 4))]


@dataclass
class Attempt:
    """One farm process: its progress lines read as they come, its descendants remembered."""

    argv: list[str]
    lines: list[str] = field(default_factory=list)
    seen: dict[int, float] = field(default_factory=dict)  # pid → create time, every descendant

    def __post_init__(self):
        self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.farm = psutil.Process(self.proc.pid)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._watch, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def _watch(self) -> None:
        while self.proc.poll() is None:
            self.descendants()
            time.sleep(0.1)

    def descendants(self) -> list[psutil.Process]:
        try:
            found = self.farm.children(recursive=True)
        except psutil.Error:
            return []
        for p in found:
            try:
                self.seen.setdefault(p.pid, p.create_time())
            except psutil.Error:
                pass
        return found

    def module(self, name: str) -> list[psutil.Process]:
        """Descendants running `python -m name` (not the guards that carry it as an argument)."""
        out = []
        for p in self.descendants():
            try:
                if p.cmdline()[1:3] == ["-m", name]:
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def wait(self, ready) -> bool:
        """Wait until ready() holds; False if the farm ended first."""
        while not ready():
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the reader may still hold the last lines
                return ready()
            time.sleep(0.05)
        return True

    def left_behind(self) -> list[int]:
        """Descendants of this attempt still alive (not a later process reusing the pid) a few
        seconds after it ended: its guards poll for it twice a second."""
        deadline = time.monotonic() + 8
        while True:
            left = []
            for pid, started in self.seen.items():
                try:
                    p = psutil.Process(pid)
                    if abs(p.create_time() - started) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                        left.append(pid)
                except psutil.Error:
                    pass
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)


def _signal(procs: list[psutil.Process], sig: int) -> bool:
    hit = False
    for p in procs:
        try:
            p.send_signal(sig)
            hit = True
        except psutil.Error:
            pass
    return hit


def _stop_for(procs: list[psutil.Process], hold: float) -> bool:
    if not _signal(procs, signal.SIGSTOP):
        return False
    threading.Timer(hold, _signal, (procs, signal.SIGCONT)).start()
    return True


def target(fault: Fault, at: Attempt) -> list[psutil.Process]:
    if fault.action.endswith("-farm"):
        return [at.farm]
    return at.module("tvm.exec.rpc_tracker" if fault.action == "kill-tracker" else "tvm.exec.rpc_server")


def fire(fault: Fault, at: Attempt, rng: random.Random) -> bool:
    """Inject one fault; False when its target is gone (a server stopped, the farm ended)."""
    procs = target(fault, at)
    if not procs:
        return False
    if fault.action in ENDS_FARM:
        return _signal(procs, ENDS_FARM[fault.action])
    if fault.action in ("kill-server", "kill-tracker"):
        return _signal([rng.choice(procs)], signal.SIGKILL)
    one = rng.choice(procs)  # stop-*: the process and whatever it forked (a session worker)
    try:
        return _stop_for([one, *one.children(recursive=True)], fault.hold)
    except psutil.Error:
        return False


def inject(at: Attempt, faults: list[Fault], rng: random.Random, injected: list[str]) -> bool:
    """Fire the schedule's next faults at one farm process, each once its progress has moved on
    by the fault's gap and its target is up; True when one of them ended the farm."""
    while faults:
        fault, seen = faults.pop(0), len(at.lines)
        if not at.wait(lambda f=fault, n=seen: len(at.lines) >= n + f.gap and target(f, at)):
            return False  # the farm ended first: this fault is not injected
        time.sleep(fault.delay)
        if fire(fault, at, rng):
            injected.append(fault.action)
            if fault.action in ENDS_FARM:
                return True
    return False


def _rows(db: Path, run_id: str) -> dict[tuple, dict]:
    with Store(db) as store:
        rows = store.db.execute("SELECT * FROM results WHERE run_id = ?", (run_id,)).fetchall()
    return {(r["device"], r["suite"], r["check_name"]): dict(r) for r in rows}


def _new_run(db: Path, before: set[str]) -> str | None:
    if not db.exists():
        return None
    with Store(db) as store:
        ids = {r[0] for r in store.db.execute("SELECT id FROM runs")} - before
    assert len(ids) <= 1, ids
    return ids.pop() if ids else None


def _run_ids(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with Store(db) as store:
        return {r[0] for r in store.db.execute("SELECT id FROM runs")}


def _status(db: Path, run_id: str) -> str:
    with Store(db) as store:  # opening settles a run whose process died: never left `running`
        return store.run(run_id)["status"]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """The campaign's files, and the result of the same run undisturbed."""
    root = tmp_path_factory.mktemp("campaign")
    (root / "devices.yaml").write_text(DEVICES)
    (root / "suite.yaml").write_text(SUITE)
    data = root / "data"
    argv = [sys.executable, "-m", "farm.cli", "run", "--suite", str(root / "suite.yaml"),
            "--devices", str(root / "devices.yaml"), "--data-dir", str(data)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    run_id = _new_run(data / "results.db", set())
    expected = {k: r["status"] for k, r in _rows(data / "results.db", run_id).items()}
    return argv, data, expected


@pytest.mark.parametrize("seed", SEEDS)
def test_fault_campaign(seed, campaign):
    argv, data, expected = campaign
    db, rng, faults = data / "results.db", random.Random(seed), schedule(seed)
    before, run_id = _run_ids(db), None
    injected: list[str] = []
    kept: dict[tuple, dict] = {}  # checks recorded (not as errors) by an earlier attempt
    for attempt_no in range(len(faults) + 3):
        resume = [*argv[:4], "--resume", run_id, *argv[-2:]]
        at = Attempt(argv if run_id is None else resume)
        ended = inject(at, faults, rng, injected)
        code = at.proc.wait(timeout=300)
        assert not at.left_behind(), f"attempt {attempt_no} left processes behind"
        run_id = run_id or _new_run(db, before)
        if run_id is None:  # ended before its run was begun: start again
            continue
        status, rows = _status(db, run_id), _rows(db, run_id)
        for key, row in kept.items():  # a check once recorded is never measured again
            assert (rows[key]["recorded"], rows[key]["metrics"]) == (row["recorded"], row["metrics"]), key
        kept.update({k: r for k, r in rows.items() if r["status"] != "error"})
        if status == "done":  # exit 0, unless the farm was ended between finishing and exiting
            assert code == 0 or ended, "\n".join(at.lines[-5:])
            break
        assert status in ("interrupted", "crashed"), (status, code)
    else:
        pytest.fail(f"seed {seed}: the run did not finish after {attempt_no + 1} attempts")
    final = _rows(db, run_id)
    assert {k: r["status"] for k, r in final.items()} == expected, "checks lost or differing"
    print(json.dumps({"seed": seed, "faults": injected, "attempts": attempt_no + 1,
                      "resumes": attempt_no, "checks": len(final), "lost": 0, "duplicated": 0}))
