"""farm compare / history: the noise-aware latency verdict, correctness and lowering regressions,
and naming runs — on runs written into a real SQLite store."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from farm.cli import main
from farm.errors import FarmError
from farm.report.compare import compare_runs, latency_verdict
from farm.report.history import resolve_run
from farm.results.store import Store
from tests.history_helpers import (
    MEDIANS,
    compile_result,
    correctness,
    latency,
    lowering,
    nightly,
    samples,
    write_run,
)


@pytest.fixture
def db(tmp_path):
    return tmp_path / "results.db"


def farm(db, *args: str) -> int:
    return main([*args, "--data-dir", str(db.parent)])


def _regressions(db, base: str, head: str) -> list:
    store = Store(db)
    try:
        b, h = resolve_run(store, base), resolve_run(store, head)
        return compare_runs(b, store.results(b["id"]), h, store.results(h["id"])).regressions
    finally:
        store.close()


@pytest.mark.parametrize("seed", range(0, 40, 4))
def test_a_10_percent_slowdown_of_one_device_is_flagged_and_nothing_else(db, seed, capsys):
    nightly(db, "base", seed)
    nightly(db, "head", seed + 1, slower={"arm64-qemu": 1.10})
    assert farm(db, "compare", "base", "head", "--format", "json") == 1
    out = json.loads(capsys.readouterr().out)
    regs = [c for c in out["changes"] if c["regression"]]
    assert [(c["device"], c["check"], c["what"]) for c in regs] == [("arm64-qemu", "latency", "latency")]
    verdicts = {row["device"]: row["verdict"] for row in out["latency"]}
    assert verdicts.pop("arm64-qemu") == "slower"
    assert set(verdicts.values()) == {"unchanged"}


@pytest.mark.parametrize("seed", range(100, 140, 4))
def test_two_runs_of_the_same_build_are_not_flagged(db, seed, capsys):
    nightly(db, "base", seed)
    nightly(db, "head", seed + 1)
    assert farm(db, "compare", "base", "head") == 0
    assert "regressions: none" in capsys.readouterr().out


def test_a_speedup_is_reported_but_is_not_a_regression(db, capsys):
    nightly(db, "base", 7)
    nightly(db, "head", 8, slower={"host": 0.8})
    assert farm(db, "compare", "base", "head") == 0
    out = capsys.readouterr().out
    assert "[host] smoke latency (latency)" in out and "faster" in out


def test_verdict_uses_the_spread_noisy_and_too_few_samples_are_not_slower():
    rng = np.random.default_rng(3)
    noisy = latency_verdict(samples(rng, 1e-3, cov=0.5, n=10), samples(rng, 1.1e-3, cov=0.5, n=10))
    assert noisy.verdict in ("noisy", "unchanged") and not noisy.regression
    few = latency_verdict([1e-3, 1e-3], [2e-3, 2e-3])
    assert few.verdict == "too-few-samples" and few.p_value is None and few.ratio == pytest.approx(2)
    # a significant but tiny shift is below the minimum effect size
    tiny = latency_verdict(samples(rng, 1e-3, cov=0.005, n=50), samples(rng, 1.02e-3, cov=0.005, n=50))
    assert tiny.p_value < 0.01 and tiny.verdict == "unchanged"
    real = latency_verdict(samples(rng, 1e-3, n=30), samples(rng, 1.1e-3, n=30))
    assert real.verdict == "slower" and real.ratio == pytest.approx(1.1, abs=0.03)


def test_every_latency_like_check_is_compared(db):
    rng = np.random.default_rng(0)
    write_run(db, "base", [latency("host", samples(rng, 2e-3), check="latency-fp32")])
    write_run(db, "head", [latency("host", samples(rng, 2.4e-3), check="latency-fp32")])
    regs = _regressions(db, "base", "head")
    assert [(r.check, r.what) for r in regs] == [("latency-fp32", "latency")]


def test_correctness_regressions_are_flagged(db, capsys):
    write_run(db, "base", [correctness("host"), correctness("vnni", exact=1.0, max_lsb=0),
                           correctness("arm", exact=0.98, max_lsb=1)])
    write_run(db, "head", [correctness("host", "fail", exact=0.5, max_lsb=9, reason="max diff 9 LSB > 1"),
                           correctness("vnni", exact=0.97, max_lsb=1),
                           correctness("arm", exact=1.0, max_lsb=0)])
    assert farm(db, "compare", "base", "head") == 1
    out = capsys.readouterr().out
    regs = _regressions(db, "base", "head")
    assert {(r.device, r.what) for r in regs} == {("host", "status"), ("vnni", "correctness")}
    assert "broke: pass → fail: max diff 9 LSB > 1" in out
    assert "exact share 100.00% → 97.00% (worse)" in out and "max LSB 0 → 1 (worse)" in out
    assert "exact share 98.00% → 100.00% (better)" in out  # arm improved: listed, not a regression


def test_pass_to_skipped_is_a_change_not_a_regression(db, capsys):
    write_run(db, "base", [correctness("host")])
    skipped = correctness("host", "skipped")
    skipped.kind, skipped.reason = "unavailable", "host CPU lacks avx512_vnni"
    write_run(db, "head", [skipped])
    assert farm(db, "compare", "base", "head") == 0
    assert "pass → skipped: host CPU lacks avx512_vnni" in capsys.readouterr().out


LOWERING_BASE = lowering([("conv1", "conv2d", None), ("dense", "matmul", None), ("conv2", "conv2d", None)])
HEAD = lowering([("conv1", "conv2d", None), ("dense", "matmul", "two activation operands"), ("conv2", "conv2d", None)])


def test_an_op_that_falls_back_from_int8_is_a_regression(db, capsys):
    head = HEAD
    write_run(db, "base", [compile_result("host", LOWERING_BASE), compile_result("arm", LOWERING_BASE)])
    write_run(db, "head", [compile_result("host", head), compile_result("arm", LOWERING_BASE)])
    assert farm(db, "compare", "base", "head") == 1
    out = capsys.readouterr().out
    assert "[host] smoke compile (lowering): dense (matmul) fell back from int8 " \
        "(two activation operands)" in out
    assert "[arm]" not in out
    # and back again: an improvement, exit 0
    write_run(db, "later", [compile_result("host", LOWERING_BASE), compile_result("arm", LOWERING_BASE)])
    assert farm(db, "compare", "head", "later") == 0
    assert "dense is int8 now" in capsys.readouterr().out


def test_runs_without_a_lowering_report_skip_that_comparison(db):
    write_run(db, "base", [compile_result("host")])
    write_run(db, "head", [compile_result("host", HEAD)])
    assert _regressions(db, "base", "head") == []


def test_runs_are_named_by_keyword_prefix_and_commit(db, capsys):
    today = time.mktime(time.localtime()[:3] + (12, 0, 0, 0, 0, -1))
    write_run(db, "20250101-020000-aaaa", [correctness("host")], started=today - 2 * 86400, commit="abc123")
    write_run(db, "20250102-020000-bbbb", [correctness("host")], started=today - 86400, commit="def456")
    write_run(db, "20250103-020000-cccc", [correctness("host")], started=today, commit="def456")
    write_run(db, "20250103-030000-dddd", [correctness("host")], started=today + 60, status="running")
    store = Store(db)
    try:
        name = {spec: resolve_run(store, spec, now=today)["id"]
                for spec in ("last", "previous", "last-night", "abc", "def456", "20250101")}
        assert name == {"last": "20250103-020000-cccc", "previous": "20250102-020000-bbbb",
                        "last-night": "20250102-020000-bbbb", "abc": "20250101-020000-aaaa",
                        "def456": "20250103-020000-cccc", "20250101": "20250101-020000-aaaa"}
        with pytest.raises(FarmError, match="matches 4 runs"):
            resolve_run(store, "2025")
    finally:
        store.close()
    assert farm(db, "compare", "nope", "last") == 2
    err = capsys.readouterr().err
    assert err.startswith("farm: no run or git commit 'nope'") and "Traceback" not in err
    assert farm(db, "compare", "last", "cccc") == 2  # cccc is no id prefix → a commit → none
    assert farm(db, "compare", "last", "20250103-02") == 2
    assert "are the same run" in capsys.readouterr().err


def test_compare_without_a_database_is_a_one_line_error(tmp_path, capsys):
    assert main(["compare", "last-night", "last", "--data-dir", str(tmp_path / "none")]) == 2
    assert "no results database" in capsys.readouterr().err


def test_history_shows_the_trend(db, capsys):
    for i, factor in enumerate((1.0, 1.0, 1.5)):
        nightly(db, f"run{i}", seed=i, slower={"host": factor}, started=1.7e9 + i * 86400)
    assert farm(db, "history", "--suite", "smoke", "--device", "host") == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [ln for ln in lines if ln.startswith("run") and not ln.startswith("run ")]
    assert [r.split()[0] for r in rows] == ["run0", "run1", "run2"]
    change = rows[2].split()[-1]
    assert change.startswith("+") and 40 < float(change.strip("+%")) < 60
    assert farm(db, "history", "--suite", "smoke", "--device", "nodevice") == 2
    assert "no 'latency' results" in capsys.readouterr().err


def test_a_stable_history_keeps_the_threshold_at_the_minimum_effect(db, capsys):
    for night in range(6):
        nightly(db, f"n{night}", seed=night, started=1.7e9 + night * 86400)
    nightly(db, "head", seed=99, slower={"host": 1.10}, started=1.7e9 + 7 * 86400)
    assert farm(db, "compare", "previous", "last", "--format", "json") == 1
    rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)["latency"]}
    assert rows["host"]["verdict"] == "slower" and rows["host"]["threshold"] == "±5.0%"


def test_run_to_run_drift_in_the_history_raises_the_threshold(db, capsys):
    """On a busy machine whole runs move by ±12%: a 10% change is within that, not a regression."""
    for night in range(6):
        nightly(db, f"n{night}", seed=night, slower={d: 1.12 if night % 2 else 0.88 for d in MEDIANS},
                started=1.7e9 + night * 86400)
    nightly(db, "head", seed=99, slower={"host": 1.12 * 1.10, **{d: 1.12 for d in MEDIANS if d != "host"}},
            started=1.7e9 + 7 * 86400)
    # base (night 5) was at 1.12 too: host is 10% slower than it, the others unchanged
    assert farm(db, "compare", "previous", "last", "--format", "json") == 0
    rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)["latency"]}
    assert rows["host"]["verdict"] == "drift" and float(rows["host"]["threshold"].strip("±%")) > 30
    assert {rows[d]["verdict"] for d in MEDIANS if d != "host"} == {"unchanged"}
