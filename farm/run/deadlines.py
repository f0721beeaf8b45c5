"""Deadlines that fit the work: a device call may take what the same device already showed it
needs for it — one inference's time, measured on the device just before, times the calls the
step plans, times a safety factor, plus a floor — so a hang on a 10 ms model is noticed in
seconds. The suite's `timeouts:` stay the upper bounds (and bound the first inference, which has
nothing measured before it)."""

from __future__ import annotations

from dataclasses import dataclass

from farm.config.suites import LatencySpec

SAFETY = 3.0  # a shared machine can run a step several times slower than it did a moment ago
FLOOR = 10.0  # seconds: session round trips, the first call's set-up, a scheduler's hiccup
# TVM's time_evaluator grows `number` by the golden ratio until one repeat lasts min_repeat_ms:
# the first repeat's ramp costs up to ~4 × min_repeat_ms, each later one up to ~1.6 ×
RAMP_FIRST, RAMP_EACH = 4.2, 1.7


@dataclass(frozen=True)
class Deadline:
    seconds: float
    basis: str  # how it was derived: the reason of a timeout says it


def _fit(expected: float, what: str, bound: float) -> Deadline:
    derived = FLOOR + SAFETY * expected
    if derived >= bound:
        return Deadline(bound, f"the suite's bound {bound:g} s")
    return Deadline(derived, f"{SAFETY:g} × {what} + {FLOOR:g} s; the suite allows {bound:g} s")


def inference(one: float | None, bound: float) -> Deadline:
    """One more inference, after one that took `one` seconds (None: nothing measured yet)."""
    if one is None:
        return Deadline(bound, f"the suite's bound {bound:g} s (no inference measured yet)")
    return _fit(one, f"the {one:.3g} s one inference took", bound)


def measurement(one: float, spec: LatencySpec, bound: float, calls: float) -> Deadline:
    """A latency measurement that costs `calls` inferences' worth (LoadedModel.timed_calls) of a
    model whose one inference took `one` seconds."""
    ramp = spec.min_repeat_ms / 1e3 * (RAMP_FIRST + RAMP_EACH * (spec.repeat - 1)) if spec.min_repeat_ms else 0.0
    ramp_note = f" + {ramp:.3g} s for min_repeat_ms" if ramp else ""
    return _fit(calls * one + ramp, f"({calls:g} calls × {one:.3g} s{ramp_note})", bound)
