"""End to end on the host through the real tracker and RPC server: the compile check carries the
lowering report, the fp32 baseline is its own check, and the table shows both."""

from __future__ import annotations

from farm.config.suites import LatencySpec, ModelSpec, Suite
from farm.report.table import HEADERS, device_rows, render_lowering
from farm.run.engine import run
from farm.run.runner import RunOptions


def test_int8_suite_with_fp32_baseline(registry, tmp_path):
    fast = LatencySpec(warmup=1, number=1, repeat=3)
    suites = [Suite(name="mobile", file="-", model=ModelSpec(builtin="tinymobilenet"), latency=fast),
              Suite(name="nobase", file="-", model=ModelSpec(builtin="tinymobilenet"), latency=fast,
                    fp32_baseline=False)]
    host = registry.get("host")
    outcome = run([(s, [host]) for s in suites], RunOptions(data_dir=tmp_path, progress=lambda m: None))
    by = {(r.suite, r.check): r for r in outcome.results}
    assert outcome.ok, [(r.check, r.status, r.reason) for r in outcome.results]
    lowering = by["mobile", "compile"].metrics["lowering"]
    assert lowering["summary"]["ops"] == 6 and lowering["summary"]["int8_ops"] == 6
    fp32 = by["mobile", "latency-fp32"]
    assert fp32.status == "pass" and fp32.metrics["int8_over_fp32"] > 0
    assert fp32.metrics["artifact"] != by["mobile", "compile"].metrics["artifact"]
    assert ("nobase", "latency-fp32") not in by
    row = dict(zip(HEADERS, device_rows(outcome.results)["mobile"][0], strict=True))
    assert row["int8"].startswith("6/6 ops int8")
    assert float(row["fp32 ms"]) > 0 and float(row["int8/fp32"]) > 0
    nobase = dict(zip(HEADERS, device_rows(outcome.results)["nobase"][0], strict=True))
    assert nobase["fp32 ms"] == "" and nobase["int8/fp32"] == ""
    text = render_lowering(outcome.results)
    assert "lowering mobile on host" in text and "conv2d" in text and "avg_pool2d" in text
