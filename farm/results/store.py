"""The SQLite results store: one row per run, one row per (run, device, suite, check), committed
as each check finishes so an interrupted run loses nothing it had measured."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL DEFAULT 'running',
    command TEXT,
    git_commit TEXT,
    tvm_version TEXT,
    host_cpu TEXT,
    host_features TEXT,
    plan TEXT  -- JSON: what was asked (suites, devices), so `farm run --resume` can continue it
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs(id),
    device TEXT NOT NULL,
    suite TEXT NOT NULL,
    check_name TEXT NOT NULL,
    status TEXT NOT NULL,
    kind TEXT,
    reason TEXT NOT NULL DEFAULT '',
    metrics TEXT NOT NULL DEFAULT '{}',
    target TEXT,
    transport TEXT,
    emulated INTEGER NOT NULL DEFAULT 0,
    recorded REAL NOT NULL,
    UNIQUE (run_id, device, suite, check_name)
);
CREATE TABLE IF NOT EXISTS health (
    device TEXT PRIMARY KEY,
    run_id TEXT,
    checked REAL NOT NULL,
    status TEXT NOT NULL,  -- ok | quarantined | unavailable
    reason TEXT NOT NULL DEFAULT ''
);
"""

STATUSES = ("pass", "fail", "error", "skipped")


@dataclass
class CheckResult:
    """The outcome of one check on one device. Failures are data: `kind` says which part failed
    (compile, device, timeout, wrong-answer, unavailable) and `reason` says why."""

    device: str
    suite: str
    check: str  # compile | correctness | latency | ...
    status: str  # pass | fail | error | skipped
    kind: str | None = None
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    transport: str = ""
    emulated: bool = False


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, cwd=cwd, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class Store:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # a 30 s busy timeout and WAL let two farm runs share one database
        self.db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        columns = {r["name"] for r in self.db.execute("PRAGMA table_info(runs)")}
        if "plan" not in columns:  # databases written before --resume existed
            self.db.execute("ALTER TABLE runs ADD COLUMN plan TEXT")

    def close(self) -> None:
        self.db.close()

    def begin_run(self, run_id: str, command: str, host: dict[str, str], plan: dict | None = None) -> None:
        import tvm

        with self.db:
            self.db.execute(
                "INSERT INTO runs (id, started, command, git_commit, tvm_version, host_cpu, "
                "host_features, plan) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, time.time(), command, git_commit(Path(__file__).parent), tvm.__version__,
                 host["cpu"], host["features"], json.dumps(plan or {})))

    def reopen_run(self, run_id: str) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET status = 'running', finished = NULL WHERE id = ?", (run_id,))

    def set_health(self, device: str, run_id: str, status: str, reason: str = "") -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO health VALUES (?, ?, ?, ?, ?)",
                            (device, run_id, time.time(), status, reason))

    def health(self) -> dict[str, dict[str, Any]]:
        return {r["device"]: dict(r) for r in self.db.execute("SELECT * FROM health")}

    def finish_run(self, run_id: str, status: str) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET finished = ?, status = ? WHERE id = ?",
                            (time.time(), status, run_id))

    def record(self, run_id: str, r: CheckResult) -> None:
        """Insert or replace one check's result in its own transaction."""
        if r.status not in STATUSES:
            raise ValueError(f"bad status {r.status}")
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO results (run_id, device, suite, check_name, status, kind, "
                "reason, metrics, target, transport, emulated, recorded) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, r.device, r.suite, r.check, r.status, r.kind, r.reason,
                 json.dumps(r.metrics, sort_keys=True), r.target, r.transport, int(r.emulated),
                 time.time()))

    def run(self, run_id: str | None = None) -> dict[str, Any] | None:
        """A run by id (a unique prefix works), or the latest when run_id is None."""
        if run_id is None:
            row = self.db.execute("SELECT * FROM runs ORDER BY started DESC LIMIT 1").fetchone()
        else:
            rows = self.runs_with_prefix(run_id)
            row = rows[0] if len(rows) == 1 else None
        return dict(row) if row else None

    def runs_with_prefix(self, prefix: str) -> list[sqlite3.Row]:
        """Runs whose id starts with `prefix`, taken literally (LIKE would read % and _ as
        wildcards), newest first."""
        return self.db.execute("SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY started DESC",
                               (len(prefix), prefix)).fetchall()

    def results(self, run_id: str) -> list[CheckResult]:
        rows = self.db.execute("SELECT * FROM results WHERE run_id = ? ORDER BY rowid",
                               (run_id,)).fetchall()
        return [CheckResult(device=r["device"], suite=r["suite"], check=r["check_name"],
                            status=r["status"], kind=r["kind"], reason=r["reason"],
                            metrics=json.loads(r["metrics"]), target=r["target"] or "",
                            transport=r["transport"] or "", emulated=bool(r["emulated"]))
                for r in rows]


def result_dict(r: CheckResult) -> dict[str, Any]:
    return asdict(r)


def default_db(data_dir: Path) -> Path:
    return Path(os.environ.get("FARM_DB", data_dir / "results.db"))
