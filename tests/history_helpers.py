"""Runs written into a real results store, with realistic noisy latency samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from farm.results.store import CheckResult, Store
from farm.run.metrics import LatencyStats

# medians (seconds) of a plausible farm: fast x86, slow emulated boards
MEDIANS = {"host": 1.9e-3, "x86-avx512-vnni": 1.3e-3, "arm64-qemu": 24e-3, "hexagon-v68-sim": 7.5e-3}


def samples(rng: np.random.Generator, median: float, cov: float = 0.04, n: int = 30) -> list[float]:
    """Lognormal latencies: right-skewed like real timings, CoV ≈ `cov`."""
    return [float(x) for x in rng.lognormal(np.log(median), cov, n)]


def latency(device: str, xs: list[float], suite: str = "smoke", check: str = "latency") -> CheckResult:
    stats = LatencyStats.of(xs)
    return CheckResult(device=device, suite=suite, check=check, status="pass",
                       metrics={**stats.__dict__, "samples": xs}, target="x86", transport="local")


def correctness(device: str, status: str = "pass", exact: float = 1.0, max_lsb: float = 0.0,
                reason: str = "", suite: str = "smoke") -> CheckResult:
    return CheckResult(device=device, suite=suite, check="correctness", status=status,
                       kind="wrong-answer" if status == "fail" else None, reason=reason,
                       metrics={"exact": exact, "max_lsb": max_lsb, "cosine": 1.0, "top1": 1.0})


def compile_result(device: str, lowering: dict | None = None, suite: str = "smoke") -> CheckResult:
    metrics = {"compile_seconds": 1.0, "cached": False}
    if lowering is not None:
        metrics["lowering"] = lowering
    return CheckResult(device=device, suite=suite, check="compile", status="pass", metrics=metrics)


def write_run(db: Path, run_id: str, results: list[CheckResult], started: float | None = None,
              commit: str | None = None, status: str = "done") -> str:
    store = Store(db)
    try:
        store.begin_run(run_id, "test", {"cpu": "test cpu", "features": ""})
        for r in results:
            store.record(run_id, r)
        store.finish_run(run_id, status)
        if started is not None:
            store.db.execute("UPDATE runs SET started = ? WHERE id = ?", (started, run_id))
        store.db.execute("UPDATE runs SET git_commit = ? WHERE id = ?", (commit, run_id))
    finally:
        store.close()
    return run_id


def nightly(db: Path, run_id: str, seed: int, slower: dict[str, float] | None = None,
            started: float | None = None, cov: float = 0.04, n: int = 30) -> str:
    """A run of every device in MEDIANS, some made slower by a factor."""
    rng = np.random.default_rng(seed)
    results = []
    for device, median in MEDIANS.items():
        results.append(correctness(device))
        results.append(latency(device, samples(rng, median * (slower or {}).get(device, 1.0), cov, n)))
    return write_run(db, run_id, results, started)


def lowering(ops: list[tuple[str, str, str | None]], family: str = "x86") -> dict:
    """A lowering report in the shape farm.compile.lowering_report writes: ops as (name, op,
    fallback reason or None); a falling-back op computes in float32."""
    from farm.compile.lowering_report import summarize

    report = {"family": family, "kernels": {"fused_conv2d": {"vpdpbusd": 4}}, "float_ops": {},
              "ops": [{"name": name, "op": op, "inputs": ["uint8", "int8"], "out": "int32",
                       "compute": "float32" if why else "int8", **({"fallback": why} if why else {})}
                      for name, op, why in ops]}
    report["summary"] = summarize(report)
    return report
