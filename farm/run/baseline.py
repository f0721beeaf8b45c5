"""The fp32 baseline of an int8 suite: the same network in float32, compiled and timed on the same
device, recorded as its own check with the int8/fp32 latency ratio."""

from __future__ import annotations

from pathlib import Path

from farm.compile.build import Artifact, compile_model
from farm.config.devices import Device
from farm.errors import FarmError
from farm.models.fp32 import fp32_model
from farm.run.metrics import LatencyStats

CHECK = "latency-fp32"


def compile_fp32(model, device: Device, data_dir: Path) -> Artifact | FarmError:
    """The compiled float32 network, or the error that prevented it (recorded, not raised)."""
    try:
        path = fp32_model(model, data_dir / "models")
        return compile_model(path, device, data_dir / "cache")
    except FarmError as e:
        return e


def time_fp32(session, art: Artifact, inputs: list, latency, int8_median: float | None,
              result) -> None:
    """Load and time the float32 library; record CHECK with the int8/fp32 ratio."""
    model = session.load(art.lib)
    stats = LatencyStats.of(model.time(inputs, latency))
    ratio = int8_median / stats.median if int8_median and stats.median > 0 else None
    result(CHECK, "pass", metrics={**stats.__dict__, "int8_over_fp32": ratio,
                                   "compile_seconds": round(art.compile_seconds, 3),
                                   "artifact": art.key})
