"""Compilation in a child process: a compile that hangs is killed at its timeout, and one that
crashes TVM (a segfault in codegen) becomes a compile error instead of taking the farm down.

Run as `python -m farm.compile.worker REQUEST RESPONSE` (pickle files)."""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

from farm.compile.build import Artifact, CompileError, compile_model
from farm.config.devices import Device
from farm.errors import FarmError
from farm.platform.procs import Child, python_module


def compile_isolated(model_path: Path, device: Device, cache_root: Path, timeout: float,
                     log: Path) -> Artifact:
    """compile_model in a child process, bounded by `timeout` seconds."""
    with tempfile.TemporaryDirectory(prefix="farm-compile-") as tmp:
        req, resp = Path(tmp) / "request.pkl", Path(tmp) / "response.pkl"
        req.write_bytes(pickle.dumps((model_path, device, cache_root)))
        child = Child(f"compile-{device.name}", python_module("farm.compile.worker", str(req), str(resp)),
                      log)
        deadline = time.monotonic() + timeout
        while child.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if child.alive():
            child.stop()
            raise CompileError(f"compiling for '{device.name}' took longer than {timeout:g} s",
                               "raise timeouts.compile in the suite or the device")
        child.stop()  # reaps the guard and anything the compiler left running
        if not resp.exists():
            raise CompileError(f"the compiler crashed while building for '{device.name}' "
                               f"(exit {child.proc.returncode}): {child.tail(3)}",
                               f"see {log}")
        status, value = pickle.loads(resp.read_bytes())
    if status == "ok":
        return value
    kind, what, todo, file, line, logged = value
    if logged:  # the failing step's whole output went to the log
        todo = f"{todo}; the full output is in {log}" if todo else f"the full output is in {log}"
    raise (CompileError if kind == "compile" else FarmError)(what, todo, file=file, line=line)


def main(argv: list[str]) -> int:
    req, resp = Path(argv[0]), Path(argv[1])
    model_path, device, cache_root = pickle.loads(req.read_bytes())
    try:
        result = ("ok", compile_model(model_path, device, cache_root))
    except FarmError as e:
        kind = "compile" if isinstance(e, CompileError) else "config"
        detail = getattr(e, "detail", "")
        if detail:  # stderr is the compile log
            print(f"{e.format()}\n\n{detail}", file=sys.stderr, flush=True)
        result = ("error", (kind, e.what, e.todo, e.file, e.line, bool(detail)))
    tmp = resp.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(result))
    os.replace(tmp, resp)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
