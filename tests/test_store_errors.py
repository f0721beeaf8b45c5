"""The results store with hostile or broken input: run ids taken literally, and a corrupt,
truncated or unwritable results.db as one FarmError line (exit 2), never a traceback."""

from __future__ import annotations

from farm.results.store import Store
from tests.history_helpers import write_run


def test_run_id_prefix_is_literal(tmp_path):
    db = tmp_path / "results.db"
    write_run(db, "20260101-120000-78b4", [])
    write_run(db, "20260102-120000-1a2b", [])
    store = Store(db)
    try:
        assert store.run("20260101")["id"] == "20260101-120000-78b4"
        assert store.run("20260101-120000-78b4")["id"] == "20260101-120000-78b4"
        assert store.run("2026%78b4") is None  # LIKE wildcards matched this run
        assert store.run("2026010_-120000-1") is None
        assert store.run("%") is None and store.run("2026") is None  # two runs: not unique
    finally:
        store.close()
