"""Compilation in a child process (platform.isolate): a compile that hangs is killed at its
timeout, and one that crashes TVM (a segfault in codegen) becomes a compile error instead of taking
the farm down. The child's output is the compile log."""

from __future__ import annotations

import sys
from pathlib import Path

from farm.compile.build import Artifact, CompileError, cached_artifact, compile_model
from farm.config.devices import Device
from farm.platform.isolate import Crashed, run_isolated


def compile_isolated(model_path: Path, device: Device, cache_root: Path, timeout: float,
                     log: Path) -> Artifact:
    """compile_model in a child process, bounded by `timeout` seconds; a cache hit is taken here,
    as starting the child (TVM's import) costs more than the lookup."""
    hit = cached_artifact(model_path, device, cache_root)
    if hit is not None:
        return hit
    try:
        return run_isolated(_compile_logged, model_path, device, cache_root,
                            what=f"compiling for '{device.name}'", log=log, timeout=timeout)
    except Crashed as e:
        if e.cause == "timeout":
            raise CompileError(f"compiling for '{device.name}' took longer than {timeout:g} s",
                               "raise timeouts.compile in the suite or the device") from None
        raise CompileError(f"the compiler crashed while building for '{device.name}' ({e.cause}): {e.tail}"
                           .rstrip(": "), f"see {log}") from None
    except CompileError as e:
        if not e.detail:
            raise
        todo = f"{e.todo}; the full output is in {log}" if e.todo else f"the full output is in {log}"
        raise CompileError(e.what, todo, file=e.file, line=e.line) from None


def _compile_logged(model_path: Path, device: Device, cache_root: Path) -> Artifact:
    try:
        return compile_model(model_path, device, cache_root)
    except CompileError as e:
        if e.detail:  # the failing step's whole output, for the log (stderr is the log)
            print(f"{e.format()}\n\n{e.detail}", file=sys.stderr, flush=True)
        raise
