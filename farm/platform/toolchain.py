"""Whether this machine can build (and emulate) code for a device, found out by doing the work:
a tiny C library linked the way TVM's export_library links a model, a tiny program run on the
emulator. A tool that is installed but cannot work (the aarch64 cross gcc without its C library:
`ld: cannot find crti.o`) is caught here, with the tool's own words and the package to install.

Answers are cached per process, keyed by the tool binary's path and modification time."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CROSS_CC = {"arm": "aarch64-linux-gnu-gcc"}
# The compiler and the target's C library (crt*.o, libc.so/.a): apt installs the second only as
# a Recommends of the first, so a --no-install-recommends machine lacks it.
APT_FOR = {"aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu libc6-dev-arm64-cross"}
HOST_APT = "gcc"
PROBE_TIMEOUT = 60.0
PROBE_OK = "farm-probe-ok"
_LIBRARY_C = "int farm_probe(int x) { return x + 1; }\n"
_PROGRAM_C = f'#include <stdio.h>\nint main(void) {{ puts("{PROBE_OK}"); return 0; }}\n'
# The lines of compiler / linker output that say what went wrong; the first one is the cause
# (collect2's "ld returned 1 exit status" comes after it and says nothing).
_ERROR = re.compile(r"error|cannot find|undefined reference|not found|no such file|fatal|"
                    r"unrecognized|invalid|killed|segmentation", re.IGNORECASE)
_TOOL_PATH = re.compile(r"^/\S*/([^/\s:]+):")
_NOISE = re.compile(r"ld returned \d+ exit status|^compilation error:?$|^command line:", re.IGNORECASE)


@dataclass(frozen=True)
class StepFailure:
    """A tool step that failed: which step, the tool's first meaningful line, all it printed."""

    step: str
    line: str
    output: str = ""

    def reason(self, todo: str = "") -> str:
        return f"{self.step} fails: {self.line}" + (f" — {todo}" if todo else "")


def first_error_line(output: str) -> str:
    """The line of a tool's output that names the cause: the first error-like line, else the
    first non-empty one."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not _NOISE.search(ln.strip())]
    line = next((ln for ln in lines if _ERROR.search(ln)), lines[0] if lines else "")
    return _TOOL_PATH.sub(r"\1:", line)  # "/usr/lib/gcc-cross/.../bin/ld: x" -> "ld: x"


def run_step(argv: list[str], step: str, cwd: Path | None = None, expect: str = "",
             timeout: float = PROBE_TIMEOUT) -> StepFailure | None:
    """Run one tool; None when it exited 0 (and printed `expect`, when given)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return StepFailure(step, f"{argv[0]} is not installed")
    except subprocess.TimeoutExpired:
        return StepFailure(step, f"no answer within {timeout:g} s")
    except OSError as e:
        return StepFailure(step, f"{argv[0]}: {e.strerror or e}")
    if proc.returncode == 0 and expect in proc.stdout:
        return None
    output = proc.stdout + proc.stderr
    return StepFailure(step, first_error_line(output) or f"exit code {proc.returncode}, no output", output)


def linker(family: str) -> tuple[str, str]:
    """(compiler, Debian packages) that export_library links a device's model with."""
    cc = CROSS_CC.get(family)
    if cc is not None:
        return cc, APT_FOR[cc]
    from tvm.support.cc import get_cc  # what TVM itself picks: $CXX, $CC, g++, gcc, ...

    return get_cc() or "gcc", HOST_APT


def link_failure(family: str) -> StepFailure | None:
    """Link a tiny shared library for the device family, as a model's library is linked."""
    if family == "hexagon":  # no shared libraries there: a static executable, probed elsewhere
        return None
    cc, _ = linker(family)
    stamp = tools_stamp(cc)
    if stamp is None:
        return StepFailure(f"linking for {family} with {cc}", f"{cc} is not installed")
    return _link_shared(stamp[0][0], stamp)


def link_problem(family: str) -> str:
    """'' when the device family's models can be linked here, else the reason and the fix."""
    failure = link_failure(family)
    if failure is None:
        return ""
    return failure.reason(f"apt-get install {linker(family)[1]} (or run scripts/bootstrap.sh as root)")


def tools_stamp(*names: str) -> tuple[tuple[str, int], ...] | None:
    """(path, mtime) of each tool on PATH, the key of a cached probe; None when one is missing."""
    paths = [shutil.which(n) for n in names]
    return None if None in paths else tuple((p, os.stat(p).st_mtime_ns) for p in paths)


@functools.cache
def _link_shared(cc: str, _stamp: tuple) -> StepFailure | None:
    with tempfile.TemporaryDirectory(prefix="farm-probe-") as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(_LIBRARY_C)
        return run_step([cc, "-shared", "-fPIC", "-o", "probe.so", str(src)],
                        f"linking a shared library with {Path(cc).name} -shared", cwd=Path(tmp))


def emulator_failure(family: str, emulator: str, cpu: str) -> StepFailure | None:
    """Build a tiny static program for the family and run it once on the user-mode emulator."""
    cc, _ = linker(family)
    stamp = tools_stamp(cc, emulator)
    if stamp is None:
        missing = next(t for t in (cc, emulator) if shutil.which(t) is None)
        return StepFailure(f"running a program under {emulator}", f"{missing} is not installed")
    return _emulate(stamp[0][0], stamp[1][0], cpu, stamp)


@functools.cache
def _emulate(cc: str, emulator: str, cpu: str, _stamp: tuple) -> StepFailure | None:
    with tempfile.TemporaryDirectory(prefix="farm-probe-") as tmp:
        (Path(tmp) / "probe.c").write_text(_PROGRAM_C)
        failed = run_step([cc, "-static", "-o", "probe", "probe.c"],
                          f"linking a static program with {Path(cc).name} -static", cwd=Path(tmp))
        return failed or run_step([emulator, "-cpu", cpu, str(Path(tmp) / "probe")],
                                  f"running a program under {Path(emulator).name} -cpu {cpu}", expect=PROBE_OK)


# Spellings of an architecture that LLVM's triple parser takes besides its targets' own names.
_ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "i486": "i386",
                 "i586": "i386", "i686": "i386"}


def triple_problem(triple: str) -> str:
    """'' when LLVM has a target for the triple's architecture, else why. Checked before TVM sees
    the triple: LLVM crashes the process (SIGSEGV) on a triple it has no target for."""
    from tvm.target import codegen

    arch = triple.split("-", 1)[0]
    arch = _ARCH_ALIASES.get(arch, arch)
    known = set(codegen.llvm_get_targets())
    base = re.sub(r"^(arm|thumb)(v\d.*)$", r"\1", arch)  # armv7a → arm, thumbv7m → thumb
    if arch in known or base in known:
        return ""
    return (f"LLVM has no target for the architecture '{arch}' of mtriple '{triple}' "
            f"(it has: {', '.join(sorted(known))})")
