"""Several processes recording into one results store at once (farm matrix workers, pytest-xdist
workers): WAL and the busy timeout make every row land."""

from __future__ import annotations

import os
import subprocess
import sys

from farm.config.paths import REPO
from farm.results.store import Store
from tests.history_helpers import write_run

WRITER = """
import sys
from farm.results.store import CheckResult, Store
store = Store(__import__("pathlib").Path(sys.argv[1]))
for i in range(int(sys.argv[3])):
    store.record("run", CheckResult(device=sys.argv[2], suite="s", check=f"c{i}", status="pass",
                                    metrics={"i": i, "pad": "x" * 2000}))
store.close()
"""


def test_concurrent_writers_lose_no_row(tmp_path):
    db = tmp_path / "results.db"
    write_run(db, "run", [])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), f"dev{k}", "150"], env=env,
                              stderr=subprocess.PIPE, text=True) for k in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    store = Store(db)
    try:
        rows = store.results("run")
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()
    assert len(rows) == 450
    want = {(f"dev{k}", i) for k in range(3) for i in range(150)}
    assert {(r.device, r.metrics["i"]) for r in rows} == want


OPENER = """
import sys, time
from pathlib import Path
from farm.results.store import Store
start = float(sys.argv[2])
while time.time() < start:  # every opener starts at one moment
    pass
Store(Path(sys.argv[1])).close()
"""


def test_farms_opening_one_new_database_at_once_all_succeed(tmp_path):
    """Each opener adds the columns a new database lacks; under the write lock only the first does."""
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for attempt in range(3):
        db = tmp_path / f"new{attempt}.db"
        start = time.time() + 1.5
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(db), str(start)], env=env,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errors
        with Store(db) as store:
            columns = {r["name"] for r in store.db.execute("PRAGMA table_info(runs)")}
        assert {"plan", "owner"} <= columns
