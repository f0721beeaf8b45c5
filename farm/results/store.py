"""The SQLite results store: one row per run, one row per (run, device, suite, check), committed
as each check finishes so an interrupted run loses nothing it had measured."""

from __future__ import annotations

import functools
import json
import os
import secrets
import sqlite3
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from farm.config.devices import Device
from farm.config.suites import Check
from farm.errors import FarmError
from farm.platform.procs import identity, is_running
from farm.results.states import Health, RunState, Status

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
    status TEXT NOT NULL,  -- states.Health
    reason TEXT NOT NULL DEFAULT ''
);
"""

@dataclass
class CheckResult:
    """The outcome of one check on one device. Failures are data: `kind` says which part failed
    (compile, device, timeout, wrong-answer, unavailable) and `reason` says why."""

    device: str
    suite: str
    check: Check | str  # a Check; any string from a database a newer farm wrote
    status: Status
    kind: str | None = None  # a states.Kind
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    transport: str = ""
    emulated: bool = False

    @classmethod
    def of(cls, device: Device, suite: str, check: Check, status: Status, **kw) -> CheckResult:
        """A result of `device`, which it describes (target, transport, emulated)."""
        return cls(device=device.name, suite=suite, check=check, status=status, target=device.target.describe(),
                   transport=device.transport.describe(), emulated=device.emulated, **kw)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, cwd=cwd, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


_REPLACE = "move it aside (farm then starts an empty one) or restore it from a backup"
_WRITABLE = "make {dir} and the file writable for you, or point FARM_DB at a copy in a writable directory"
# SQLite's primary result codes that are about the database file, not about farm's SQL
_FILE_PROBLEMS = {
    sqlite3.SQLITE_CORRUPT: ("is corrupt or truncated", _REPLACE),
    sqlite3.SQLITE_NOTADB: ("is not an SQLite database", _REPLACE),
    sqlite3.SQLITE_READONLY: ("cannot be written: the file or its directory is read-only", _WRITABLE),
    sqlite3.SQLITE_CANTOPEN: ("cannot be opened", _WRITABLE),
    sqlite3.SQLITE_PERM: ("cannot be opened: permission denied", _WRITABLE),
    sqlite3.SQLITE_IOERR: ("cannot be read or written (I/O error)", "check the disk, then run again"),
    sqlite3.SQLITE_FULL: ("cannot grow: the disk is full", "free some space, then run again"),
    sqlite3.SQLITE_BUSY: ("stayed locked by another process for 30 s", "wait for the other farm command"),
}


def _file_error(path: Path, e: sqlite3.Error) -> Exception:
    """A FarmError naming the file for SQLite's errors about the file itself; any other error
    (farm's own SQL) is returned unchanged."""
    problem = _FILE_PROBLEMS.get((getattr(e, "sqlite_errorcode", None) or 0) & 0xFF)
    if problem is None:
        return e
    what, todo = problem
    return FarmError(f"the results database {what} ({e})", todo.format(dir=path.parent), file=str(path))


def _guarded(method):
    """A cursor method that raises the file's problems as `_file_error`s."""

    @functools.wraps(method)
    def call(cursor: sqlite3.Cursor, *args, **kwargs):
        try:
            return method(cursor, *args, **kwargs)
        except sqlite3.Error as e:
            raise _file_error(cursor.connection.path, e) from None

    return call


class _Cursor(sqlite3.Cursor):
    execute, executescript = _guarded(sqlite3.Cursor.execute), _guarded(sqlite3.Cursor.executescript)
    fetchone, fetchall = _guarded(sqlite3.Cursor.fetchone), _guarded(sqlite3.Cursor.fetchall)
    fetchmany, __next__ = _guarded(sqlite3.Cursor.fetchmany), _guarded(sqlite3.Cursor.__next__)


class _Connection(sqlite3.Connection):
    """A connection whose every query, including those other modules run on `Store.db`, reports
    a corrupt, unreadable or unwritable file as one FarmError line rather than a traceback."""

    def __init__(self, path: str, **kwargs):
        super().__init__(path, **kwargs)
        self.path = Path(path)

    def cursor(self, factory=_Cursor) -> sqlite3.Cursor:
        return super().cursor(factory)

    def execute(self, sql: str, parameters=()) -> sqlite3.Cursor:
        return self.cursor().execute(sql, parameters)

    def executescript(self, script: str) -> sqlite3.Cursor:
        return self.cursor().executescript(script)


def _enable_wal(path: Path, timeout: float) -> None:
    """WAL mode (the file keeps it). Setting it on a new database needs the file to itself, and
    SQLite does not wait for that (no busy handler): farms creating one database at once retry."""
    deadline = time.monotonic() + timeout
    while True:
        raw = sqlite3.connect(str(path), timeout=timeout)
        try:
            raw.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if (e.sqlite_errorcode & 0xFF) != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        finally:
            raw.close()
        time.sleep(0.02)


class Store:
    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # a 30 s busy timeout and WAL let two farm runs share one database
            _enable_wal(path, 30.0)
            self.db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, factory=_Connection)
        except OSError as e:
            raise FarmError(f"cannot create the data directory {path.parent} ({e.strerror})",
                            "create it, or point --data-dir / FARM_DB at a writable place", file=str(path)) from None
        except sqlite3.Error as e:
            raise _file_error(path, e) from None
        self.db.row_factory = sqlite3.Row
        self.db.executescript(SCHEMA)
        self._add_columns()
        self._settle_abandoned()

    # columns later than the first schema: plan (databases written before --resume existed) and
    # owner (the process running it, platform.procs.identity, as JSON)
    LATER_COLUMNS = ("plan", "owner")

    def _add_columns(self) -> None:
        """Add the later columns a database lacks, re-checked under the write lock: two farms
        opening one new database at once would otherwise both add them, and one would fail."""
        def missing() -> list[str]:
            columns = {r["name"] for r in self.db.execute("PRAGMA table_info(runs)")}
            return [c for c in self.LATER_COLUMNS if c not in columns]

        if not missing():
            return  # no lock taken: a read-only database that has them opens as before
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for column in missing():
                self.db.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _settle_abandoned(self) -> None:
        """A run still `running` whose process is gone was killed before it could finish: it is
        marked crashed (resumable), never left looking in progress."""
        for row in self.db.execute("SELECT id, owner FROM runs WHERE status = ? AND owner IS NOT NULL",
                                   (RunState.RUNNING,)).fetchall():
            if not is_running(json.loads(row["owner"])):
                try:
                    self.finish_run(row["id"], RunState.CRASHED)
                except sqlite3.Error:  # a read-only database: whoever can write settles it
                    return

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def begin_run(self, run_id: str, command: str, host: dict[str, str], plan: dict | None = None) -> None:
        import tvm

        with self.db:
            self.db.execute(
                "INSERT INTO runs (id, started, command, git_commit, tvm_version, host_cpu, "
                "host_features, plan, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, time.time(), command, git_commit(Path(__file__).parent), tvm.__version__,
                 host["cpu"], host["features"], json.dumps(plan or {}), _owner()))

    def reopen_run(self, run_id: str) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET status = ?, finished = NULL, owner = ? WHERE id = ?",
                            (RunState.RUNNING, _owner(), run_id))

    def set_health(self, device: str, run_id: str, status: Health, reason: str = "") -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO health VALUES (?, ?, ?, ?, ?)",
                            (device, run_id, time.time(), status, reason))

    def health(self) -> dict[str, dict[str, Any]]:
        return {r["device"]: dict(r) for r in self.db.execute("SELECT * FROM health")}

    def finish_run(self, run_id: str, status: RunState) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET finished = ?, status = ? WHERE id = ?",
                            (time.time(), status, run_id))

    def record(self, run_id: str, r: CheckResult) -> None:
        """Insert or replace one check's result in its own transaction."""
        Status(r.status)  # ValueError on anything else
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
                            status=Status(r["status"]), kind=r["kind"], reason=r["reason"],
                            metrics=json.loads(r["metrics"]), target=r["target"] or "",
                            transport=r["transport"] or "", emulated=bool(r["emulated"]))
                for r in rows]


def result_dict(r: CheckResult) -> dict[str, Any]:
    return asdict(r)


def default_db(data_dir: Path) -> Path:
    return Path(os.environ.get("FARM_DB", data_dir / "results.db"))


def _owner() -> str | None:
    me = identity(os.getpid())
    return json.dumps(me) if me else None
