"""Debian's clang/ld.lld as a freestanding Hexagon toolchain (no Qualcomm SDK needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from farm.errors import FarmError

# binary → Debian package that provides it
TOOLS = {"clang": "clang", "ld.lld": "lld"}
_CFLAGS = ["--target=hexagon-unknown-linux-musl", "-ffreestanding", "-nostdlib", "-O2",
           "-fno-builtin", "-fno-pic", "-mhvx", "-mhvx-length=128b"]


def missing_tools() -> list[str]:
    """'binary (apt package)' for every tool not on PATH."""
    return [f"{b} (apt-get install {p})" for b, p in TOOLS.items() if shutil.which(b) is None]


def _ffi_include() -> Path:
    import tvm_ffi

    return Path(tvm_ffi.__file__).parent / "include"


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
        detail = "; ".join(lines[:3]) if lines else f"exit code {res.returncode}"
        raise FarmError(f"{what} failed: {detail}", f"command: {' '.join(cmd)}")


def compile_c(src: Path, out: Path, mcpu: str, include: list[Path], defines: tuple[str, ...] = ()) -> None:
    incs = [f"-I{p}" for p in [*include, _ffi_include()]]
    _run(["clang", *_CFLAGS, f"-mcpu={mcpu}", *incs, *(f"-D{d}" for d in defines), "-c", str(src),
          "-o", str(out)],
         f"compiling {src.name} for Hexagon")


def assemble(src: Path, out: Path, mcpu: str) -> None:
    _run(["clang", *_CFLAGS, f"-mcpu={mcpu}", "-c", str(src), "-o", str(out)],
         f"assembling {src.name}")


def link(objs: list[Path], out: Path) -> None:
    _run(["ld.lld", "-static", "-e", "_start", "-o", str(out), *map(str, objs)],
         "linking the Hexagon executable")
