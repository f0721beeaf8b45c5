"""The fp32 baseline of an int8 suite: the same network in float32, compiled and timed on the same
device, recorded as its own check with the int8/fp32 latency ratio."""

from __future__ import annotations

from farm.compile.build import Artifact
from farm.run.metrics import LatencyStats


def fp32_metrics(samples: list[float], art: Artifact, unit: str, int8_median: float | None) -> dict:
    """The metrics of Check.LATENCY_FP32 from the float32 library's timings, with the int8/fp32 ratio."""
    stats = LatencyStats.of(samples)
    ratio = int8_median / stats.median if int8_median and stats.median > 0 else None
    return {**stats.__dict__, "int8_over_fp32": ratio, "unit": unit,
            "compile_seconds": round(art.compile_seconds, 3), "artifact": art.key}
