"""Debian's clang/ld.lld as a freestanding Hexagon toolchain (no Qualcomm SDK needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

from farm.errors import FarmError
from farm.platform.toolchain import PROBE_OK, run_step

BUILD_TIMEOUT = 600.0

# binary → Debian package that provides it
TOOLS = {"clang": "clang", "ld.lld": "lld"}
# -G0: no small-data section; clang puts 64-bit constants there with GP-relative relocations that
# ld.lld cannot resolve in a static executable
_CFLAGS = ["--target=hexagon-unknown-linux-musl", "-ffreestanding", "-nostdlib", "-O2",
           "-fno-builtin", "-fno-pic", "-G0", "-mhvx", "-mhvx-length=128b"]


def missing_tools() -> list[str]:
    """'binary (apt package)' for every tool not on PATH."""
    return [f"{b} (apt-get install {p})" for b, p in TOOLS.items() if shutil.which(b) is None]


def _ffi_include() -> Path:
    import tvm_ffi

    return Path(tvm_ffi.__file__).parent / "include"


def _run(cmd: list[str], what: str) -> None:
    failed = run_step(cmd, what, timeout=BUILD_TIMEOUT)
    if failed is not None:
        raise FarmError(f"{what} failed: {failed.line}", f"command: {' '.join(cmd)}")


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


# A freestanding program with the executable's system-call ABI (Linux user mode: trap0(#1), the
# number in r6): it writes PROBE_OK and exits 0. Built and run once to prove toolchain and simulator.
_PROBE_C = r"""
static long sys3(long n, long a, long b, long c) {
  register long r0 __asm__("r0") = a;
  register long r1 __asm__("r1") = b;
  register long r2 __asm__("r2") = c;
  register long r6 __asm__("r6") = n;
  __asm__ volatile("trap0(#1)" : "+r"(r0) : "r"(r1), "r"(r2), "r"(r6) : "memory");
  return r0;
}
void _start(void) {
  static const char ok[] = "PROBE_OK\n";
  sys3(64 /* write */, 1, (long)ok, sizeof ok - 1);
  sys3(93 /* exit */, 0, 0, 0);
  for (;;) {}
}
"""


def build_probe(work: Path, mcpu: str) -> Path:
    """The probe program, compiled and linked in `work` like a model's executable."""
    src, obj, exe = work / "probe.c", work / "probe.o", work / "probe.elf"
    src.write_text(_PROBE_C.replace("PROBE_OK", PROBE_OK))
    compile_c(src, obj, mcpu, [])
    link([obj], exe)
    return exe
