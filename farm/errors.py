"""Errors the farm reports to a user as one line, never as a traceback."""

from __future__ import annotations


class FarmError(Exception):
    """A problem the user can fix: printed as one line, exit code 2."""

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
