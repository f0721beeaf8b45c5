"""The states the store records, as string enums: their values are the strings in the SQLite
files and reports, so old databases read the same and a state compares equal to its string."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A check's outcome."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIPPED = "skipped"

    @property
    def ok(self) -> bool:
        """The one ok rule: a skip (device unavailable, no baseline) is no failure of the code."""
        return self in (Status.PASS, Status.SKIPPED)


class Kind(StrEnum):
    """Which part failed. The transports raise DeviceFailure with kind 'device' or 'timeout'."""

    COMPILE = "compile"
    DEVICE = "device"
    TIMEOUT = "timeout"
    WRONG_ANSWER = "wrong-answer"
    UNAVAILABLE = "unavailable"
    QUARANTINED = "quarantined"
    WORKER = "worker"  # a worker process of the run died before recording the check


class RunState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    INTERRUPTED = "interrupted"
    ERROR = "error"
    CRASHED = "crashed"  # the process running it died (SIGKILL, power) before it could say


class Health(StrEnum):
    """A device's health after its last run."""

    OK = "ok"
    QUARANTINED = "quarantined"
    UNAVAILABLE = "unavailable"
