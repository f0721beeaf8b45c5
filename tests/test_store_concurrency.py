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
