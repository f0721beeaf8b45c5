"""Errors the farm reports to a user as one line, never as a traceback."""

from __future__ import annotations


class FarmError(Exception):
    """A problem the user can fix: printed as one line; `farm` exits with exit_code."""

    exit_code = 2  # bad configuration or usage

    def __init__(self, what: str, todo: str = "", *, file: str | None = None, line: int | None = None):
        # one line, always: messages from YAML, TVM or ONNX may carry newlines
        self.what, self.todo = " ".join(what.split()), " ".join(todo.split())
        self.file, self.line = file, line
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        return f"{where}{self.what}" + (f" — {self.todo}" if self.todo else "")


class ConfigError(FarmError):
    """A devices.yaml or suite file is malformed."""


class NoBaseline(FarmError):
    """The model has no float32 counterpart that farm can derive (integer outputs, per-axis
    activations, ...): its fp32 baseline is skipped with this reason, not failed."""


class DeviceFailure(FarmError):
    """The device (not the model) failed: server gone, session refused, upload broken. Within a run
    it becomes the check's error of this kind; outside one (`farm up`) a one-line message."""

    kind = "device"
    exit_code = 1
    retryable = True  # bringing the device up again may help


class DeviceTimeout(DeviceFailure):
    kind = "timeout"


def error_line(e: BaseException, width: int = 300) -> str:
    """The one line of an exception worth showing: TVM's errors end with it (after a traceback),
    Python's start with it; an empty message gives the exception's type."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    # a traceback first, or a header such as TVM RPC's "Error caught from RPC call:": the cause is last
    header = "Traceback" in lines[0] or lines[0].endswith(":")
    line = lines[-1] if len(lines) > 1 and header else lines[0]
    return line[:width]
