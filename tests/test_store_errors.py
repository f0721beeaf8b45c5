"""The results store with hostile or broken input: run ids taken literally, and a corrupt,
truncated or unwritable results.db as one FarmError line (exit 2), never a traceback."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from farm.cli import main
from farm.results.store import Store
from tests.history_helpers import latency, write_run


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
        from farm.errors import FarmError
        from farm.report.history import resolve_run  # farm report / compare name runs this way

        assert resolve_run(store, "20260101")["id"] == "20260101-120000-78b4"
        with pytest.raises(FarmError, match="no run or git commit '2026%78b4'"):
            resolve_run(store, "2026%78b4")
    finally:
        store.close()


def _database(db: Path) -> int:
    """A results.db of several runs, checkpointed into one file; returns its size."""
    for k in range(8):
        write_run(db, f"2026010{k}-120000-00{k}0", [latency("host", [1e-3 + i * 1e-6 for i in range(300)])])
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return db.stat().st_size


def _garbage(db: Path) -> None:
    db.write_bytes(bytes(range(256)) * 20)


def _truncated(db: Path) -> None:
    size = _database(db)
    with db.open("r+b") as f:
        f.truncate(size // 2)


def _pages_overwritten(db: Path) -> None:
    """Page 1 (the schema) intact, so the store opens; the tables' pages are garbage, so it is the
    queries of `farm report` that fail."""
    size = _database(db)
    with db.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * (size - 4096))


@pytest.mark.parametrize("damage, fragment", [
    (_garbage, "is not an SQLite database"),
    (_truncated, "is corrupt or truncated"),
    (_pages_overwritten, "is corrupt or truncated"),
])
@pytest.mark.parametrize("command", [["report"], ["history", "--suite", "smoke", "--device", "host"]])
def test_corrupt_database_is_one_line(tmp_path, capsys, damage, fragment, command):
    damage(tmp_path / "results.db")
    assert main([*command, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"farm: {tmp_path / 'results.db'}: the results database {fragment}"), err
    assert " — move it aside" in err and "\n" not in err


@contextmanager
def _read_only(directory: Path):
    """`directory` unwritable for us: mode 0555, or immutable (chattr +i) for root, who ignores modes."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    if shutil.which("chattr") is None:  # e2fsprogs: scripts/bootstrap.sh installs it
        pytest.skip("chattr is not installed (apt-get install e2fsprogs)")
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
        pytest.skip(f"cannot make {directory} immutable (chattr +i) on this file system")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


@pytest.mark.parametrize("args, fragment", [
    (["report"], "results.db: the results database cannot be"),
    (["devices", "list"], "results.db: the results database cannot be"),
    (["devices", "list", "--data-dir", "{data}/new"], "cannot create the data directory {data}/new"),
])
def test_read_only_data_dir_is_one_line(tmp_path, capsys, args, fragment):
    data = tmp_path / "data"
    data.mkdir()
    _database(data / "results.db")
    args = [a.format(data=data) for a in args] + ([] if "--data-dir" in args else ["--data-dir", str(data)])
    with _read_only(data):
        assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("farm: ") and fragment.format(data=data) in err and "\n" not in err, err
    assert "writable" in err
