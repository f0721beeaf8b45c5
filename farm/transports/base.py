"""The one interface every transport implements (local, tracker, qemu, ssh, hexagon-sim)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from farm.config.devices import Device
from farm.config.suites import LatencySpec
from farm.platform import toolchain


@dataclass(frozen=True)
class Availability:
    """Whether the device can run here and, when not (or when something is worth knowing), why.
    An unrunnable device still gets its code built and inspected."""

    runnable: bool
    reason: str = ""
    # it runs here in principle but is down now (a lab tracker that does not answer): a run still
    # tries it, through retries and quarantine, and records an outage — never a skip
    outage: bool = False


@dataclass
class FarmContext:
    """What transports share within one farm: the embedded tracker and where files go."""

    data_dir: Path
    log_dir: Path
    tracker: tuple[str, int] | None = None
    detached: bool = False  # `farm up`: servers outlive this process


class LoadedModel(ABC):
    # what `time` returns: seconds, or the work a simulator counts ("packets", "cycles")
    time_unit: ClassVar[str] = "s"

    @abstractmethod
    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One inference; outputs as numpy arrays in graph order."""

    @abstractmethod
    def time(self, inputs: list[np.ndarray], spec: LatencySpec) -> list[float]:
        """Per-call latencies in seconds (one per repeat, each the mean of `number` calls)."""

    def time_metrics(self) -> dict:
        """Extra figures of the last `time` call to record with it (e.g. packets per kernel)."""
        return {}

    def timed_calls(self, spec: LatencySpec) -> float:
        """How many `run`s' worth of wall time one `time` call takes (its deadline is derived from
        it): the spec's calls, as TVM's time_evaluator makes them."""
        return spec.calls


class DeviceSession(ABC):
    @abstractmethod
    def load(self, lib: Path) -> LoadedModel:
        """Upload a compiled library to the device and load it."""

    def close(self) -> None:
        """Release the device (back to the tracker's pool)."""

    def __enter__(self) -> DeviceSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Transport(ABC):
    def __init__(self, device: Device, ctx: FarmContext):
        self.device, self.ctx = device, ctx

    def availability(self) -> Availability:
        """Whether the device can work here, found by doing the work before anything is started:
        the transport's own check, then linking a tiny library for the device's target (a cross
        compiler that is installed but cannot link is caught here, not at the model's build)."""
        avail = self.transport_availability()
        if avail.runnable:
            problem = toolchain.link_problem(self.device.target.family)
            if problem:
                return Availability(False, problem)
        return avail

    def transport_availability(self) -> Availability:
        """What this transport needs here (emulator, simulator, tracker, key files)."""
        return Availability(True)

    def start(self) -> None:
        """Bring the device up (start its server); called once per run before `open`."""

    def stop(self) -> None:
        """Undo `start`; must be safe to call more than once and after a failed start."""

    def check(self, say: Callable[[str], None]) -> None:
        """`farm devices check NAME`: bring the device up and down once, telling `say` each step;
        raises DeviceFailure or FarmError at the first failing step."""
        self.start()
        self.stop()
        say("ok   started and stopped")

    def link_lost(self) -> str | None:
        """Why the device's link is known dead now (its keepalives went unanswered), else None:
        polled while a device call is blocked, so the call ends with this cause in seconds."""
        return None

    def pids(self) -> list[int]:
        """Process groups this transport started (recorded by `farm up` for `farm down`)."""
        return []

    @abstractmethod
    def open(self, timeout: float, limit: float = 0.0) -> DeviceSession:
        """A session on the device, waiting at most `timeout` seconds for it. `limit`: seconds
        after which the device ends the session by itself (0: never), so a board whose farm lost
        its link is not held forever; transports whose device cannot do that ignore it."""
