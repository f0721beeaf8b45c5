"""The run history in the results store: naming runs (ids, commits, last / previous / last-night)
and one check's trend over runs."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

from farm.config.suites import Check
from farm.errors import FarmError
from farm.results.states import Status
from farm.results.store import Store

KEYWORDS = ("last", "previous", "last-night")


def _finished(store: Store) -> list[dict[str, Any]]:
    """Runs that are over (any status but 'running'), newest first."""
    rows = store.db.execute("SELECT * FROM runs WHERE status != 'running' ORDER BY started DESC")
    return [dict(r) for r in rows.fetchall()]


def midnight(now: float | None = None) -> float:
    """Today's local midnight as a timestamp."""
    today = dt.datetime.fromtimestamp(now) if now is not None else dt.datetime.now()
    return today.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def resolve_run(store: Store, spec: str, now: float | None = None) -> dict[str, Any]:
    """A run named by a keyword, a run id (or unique prefix) or a git commit (prefix): the latest
    finished run of that commit. Raises FarmError saying what exists when nothing matches."""
    runs = _finished(store)
    if spec in KEYWORDS:
        if spec == "last-night":
            runs = [r for r in runs if r["started"] < midnight(now)]
        index = 1 if spec == "previous" else 0
        if len(runs) <= index:
            raise FarmError(f"no '{spec}' run in {store.path} ({len(_finished(store))} finished runs)",
                            "run `farm matrix` or `farm run` first, or name a run id")
        return runs[index]
    by_id = store.runs_with_prefix(spec)
    if len(by_id) == 1:
        return dict(by_id[0])
    if len(by_id) > 1:
        raise FarmError(f"run id prefix '{spec}' matches {len(by_id)} runs "
                        f"({', '.join(r['id'] for r in by_id[:4])}...)", "give more characters")
    by_commit = [r for r in runs if r["git_commit"] and r["git_commit"].startswith(spec)]
    if by_commit:
        return by_commit[0]
    raise FarmError(f"no run or git commit '{spec}' in {store.path}",
                    f"use a run id, a commit, or one of: {', '.join(KEYWORDS)}")


@dataclass
class Point:
    """One run's result of one (device, suite, check)."""

    run: dict[str, Any]
    status: str
    reason: str
    metrics: dict[str, Any]


def series(store: Store, suite: str, device: str, check: str = Check.LATENCY,
           limit: int = 30, until: float | None = None) -> list[Point]:
    """The check's results in finished runs (plus the run `until` names, by start time), oldest first."""
    rows = store.db.execute(
        "SELECT runs.*, results.status AS r_status, results.reason AS r_reason, results.metrics AS r_metrics "
        "FROM results JOIN runs ON runs.id = results.run_id "
        "WHERE results.suite = ? AND results.device = ? AND results.check_name = ? "
        "AND runs.started <= ? ORDER BY runs.started DESC LIMIT ?",
        (suite, device, check, until if until is not None else float("inf"), limit)).fetchall()
    points = []
    for r in reversed(rows):
        run = {k: r[k] for k in r.keys() if not k.startswith("r_")}
        points.append(Point(run, r["r_status"], r["r_reason"], json.loads(r["r_metrics"])))
    return points


MIN_HISTORY = 5  # runs needed before the run-to-run spread is trusted
DRIFT_RUNS = 10


def drift(points: list[Point]) -> float | None:
    """Relative run-to-run spread of the median over passing runs: a robust standard deviation
    (1.4826 × MAD) of the log medians; None with fewer than MIN_HISTORY runs."""
    logs = sorted(math.log(p.metrics["median"]) for p in points
                  if p.status == Status.PASS and p.metrics.get("median", 0) > 0)
    if len(logs) < MIN_HISTORY:
        return None
    mid = logs[len(logs) // 2]
    dev = sorted(abs(x - mid) for x in logs)
    return math.expm1(1.4826 * dev[len(dev) // 2])


def drifts(store: Store, keys: list[tuple[str, str, str]], until: float) -> dict[tuple[str, str, str], float]:
    """drift() per (device, suite, check) over the DRIFT_RUNS runs up to `until` (the baseline)."""
    out = {}
    for device, suite, check in keys:
        d = drift(series(store, suite, device, check, DRIFT_RUNS, until))
        if d is not None:
            out[(device, suite, check)] = d
    return out


HISTORY_HEADERS = ["run", "started", "commit", "status", "median ms", "p90 ms", "CoV", "n", "change"]


def history_rows(points: list[Point]) -> list[list[str]]:
    """Table rows of a latency (or any) series; 'change' is the median against the previous run."""
    rows, prev = [], None
    for p in points:
        median = p.metrics.get("median") if p.status == Status.PASS else None
        change = f"{median / prev - 1:+.1%}" if median and prev else ""
        rows.append([p.run["id"], dt.datetime.fromtimestamp(p.run["started"]).strftime("%Y-%m-%d %H:%M"),
                     p.run["git_commit"] or "-", p.status + (f" ({p.reason})" if p.reason else ""),
                     f"{median * 1e3:.3f}" if median else "",
                     f"{p.metrics['p90'] * 1e3:.3f}" if median and "p90" in p.metrics else "",
                     f"{p.metrics['cov']:.1%}" if median and "cov" in p.metrics else "",
                     str(p.metrics.get("n", "")) if median else "", change])
        prev = median or prev
    return rows
