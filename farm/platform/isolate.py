"""A library call that may crash the process (LiteRT's kernels abort, TVM segfaults) run in a child
process, so that a crash becomes an error with its cause instead of taking the farm down.

`run_isolated(fn, *args)` pickles a module-level function and its arguments, runs
`python -m farm.platform.isolate REQUEST RESPONSE` and returns what fn returned, or raises what it
raised (FarmErrors keep their fields); a child that dies raises Crashed with the signal."""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from farm.errors import FarmError
from farm.platform.procs import Child, python_module


class Crashed(FarmError):
    """The isolated call killed its process (a signal, or an exit without an answer)."""

    kind = "crash"

    def __init__(self, what: str, todo: str = "", *, cause: str = "", tail: str = "", **where):
        super().__init__(what, todo, **where)
        self.cause, self.tail = cause, tail  # e.g. SIGABRT, exit 1, timeout; the log's last lines


def run_isolated(fn: Callable, *args: Any, what: str, log: Path, timeout: float = 3600.0) -> Any:
    """fn(*args) in a child process bounded by `timeout` seconds; `what` names the call in errors."""
    with tempfile.TemporaryDirectory(prefix="farm-isolated-") as tmp:
        req, resp = Path(tmp) / "request.pkl", Path(tmp) / "response.pkl"
        req.write_bytes(pickle.dumps((fn.__module__, fn.__qualname__, args)))
        child = Child(what, python_module("farm.platform.isolate", str(req), str(resp)), log)
        deadline = time.monotonic() + timeout
        while child.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        timed_out = child.alive()
        child.stop()  # reaps the guard and anything the call left running
        if timed_out:
            raise Crashed(f"{what} took longer than {timeout:g} s", f"see {log}", cause="timeout")
        if not resp.exists():
            cause, tail = _cause(child.proc.returncode), child.tail(3)
            raise Crashed(f"{what} crashed ({cause}): {tail}".rstrip(": "), f"see {log}", cause=cause, tail=tail)
        ok, value = pickle.loads(resp.read_bytes())
    if ok:
        return value
    raise value


def _cause(code: int | None) -> str:
    """The guard exits with 128 + N when its child died of signal N, as shells report it."""
    if code is not None and code < 0:
        code = 128 - code
    if code is not None and code > 128:
        try:
            return signal.Signals(code - 128).name
        except ValueError:
            pass
    return f"exit {code}"


def main(argv: list[str]) -> int:
    req, resp = Path(argv[0]), Path(argv[1])
    module, name, args = pickle.loads(req.read_bytes())
    fn = importlib.import_module(module)
    for part in name.split("."):
        fn = getattr(fn, part)
    try:
        result = (True, fn(*args))
    except FarmError as e:
        result = (False, e)
    except Exception as e:  # anything else is reported as the one line it would have printed
        result = (False, FarmError(f"{type(e).__name__}: {e}"))
    tmp = resp.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(result))
    os.replace(tmp, resp)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
