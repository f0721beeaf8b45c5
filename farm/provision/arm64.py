"""An aarch64 sysroot for emulated boards: Debian's arm64 python3.11 plus the aarch64 TVM runtime
wheels, so `qemu-aarch64-static -L SYSROOT SYSROOT/usr/bin/python3.11` runs TVM's RPC server.

Built once per (Python, TVM, tvm-ffi) version into the shared cache (see `cache_root`), in a
temporary directory renamed into place when complete, under a file lock so concurrent farms
wait for one build instead of doing two."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from farm.errors import FarmError

PYTHON = "3.11"
DEB_ROOT = f"python{PYTHON}:arm64"
DEBS = [DEB_ROOT, "libstdc++6:arm64"]  # TVM's shared libraries are C++; python3.11 is not
# Pure-Python or aarch64 wheels the runtime and its RPC server import.
WHEEL_EXTRAS = ["numpy", "ml_dtypes", "typing_extensions", "tornado", "psutil", "cloudpickle"]
PLATFORMS = ["manylinux_2_28_aarch64", "manylinux2014_aarch64", "any"]
MARKER = ".farm-sysroot.json"  # versions and build time of a sysroot farm built
LAYOUT = 1  # bump when what goes into the sysroot changes
QEMU = "qemu-aarch64-static"
QEMU_PACKAGE = "qemu-user-static"
# Tools the build calls → the Debian package that provides each.
TOOLS = {"apt-get": "apt", "apt-cache": "apt", "dpkg": "dpkg", QEMU: QEMU_PACKAGE}
# The emulated interpreter must see only the sysroot's packages, never the host's venv; empty
# values count as unset for Python. TVM_USE_RUNTIME_LIB: import in ~8 s instead of ~18 s.
EMULATED_ENV = {"PYTHONPATH": "", "PYTHONHOME": "", "PYTHONSTARTUP": "", "PYTHONNOUSERSITE": "1",
                "TVM_USE_RUNTIME_LIB": "1"}

Progress = Callable[[str], None]


def cache_root() -> Path:
    """Shared across runs and checkouts: $FARM_CACHE, else $XDG_CACHE_HOME/farm, else ~/.cache/farm."""
    if os.environ.get("FARM_CACHE"):
        return Path(os.environ["FARM_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "farm"


def runtime_versions() -> dict[str, str]:
    """The device runs the same TVM as the host: the RPC protocol and module format must match."""
    return {"python": PYTHON, "apache-tvm": metadata.version("apache-tvm"),
            "apache-tvm-ffi": metadata.version("apache-tvm-ffi")}


def default_sysroot() -> Path:
    v = runtime_versions()
    key = f"arm64-py{v['python']}-tvm{v['apache-tvm']}-ffi{v['apache-tvm-ffi']}-l{LAYOUT}"
    return cache_root() / "sysroots" / key


def python_in(sysroot: Path) -> Path:
    return sysroot / "usr" / "bin" / f"python{PYTHON}"


def emulated_python(sysroot: Path, cpu: str, *args: str) -> list[str]:
    """argv running the sysroot's python under user-mode qemu (needs no binfmt_misc)."""
    return [QEMU, "-L", str(sysroot), "-cpu", cpu, str(python_in(sysroot)), *args]


def is_provisioned(sysroot: Path) -> bool:
    """Ours appear complete or not at all (renamed into place); one made by hand is taken as is."""
    return python_in(sysroot).is_file()


@dataclass(frozen=True)
class Provisioned:
    sysroot: Path
    built: bool  # False: it was already there
    seconds: float = 0.0


def provision(sysroot: Path | None = None, progress: Progress = lambda _m: None) -> Provisioned:
    """Make sure the sysroot exists; build it when missing. Idempotent and safe to race."""
    sysroot = sysroot or default_sysroot()
    if is_provisioned(sysroot):
        return Provisioned(sysroot, built=False)
    if sysroot.is_dir() and any(sysroot.iterdir()):
        raise FarmError(f"{sysroot} is not empty but has no {python_in(Path('/'))}, so it is not "
                        "an arm64 sysroot", "empty it, or point the device's `sysroot:` elsewhere")
    sysroot.parent.mkdir(parents=True, exist_ok=True)
    with open(sysroot.parent / f"{sysroot.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another farm building it: wait, then reuse its result
        if is_provisioned(sysroot):
            return Provisioned(sysroot, built=False)
        for stale in sysroot.parent.glob(f"{sysroot.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # its builder died: it held the lock otherwise
        start = time.monotonic()
        tmp = sysroot.parent / f"{sysroot.name}.tmp-{os.getpid()}"
        try:
            _build(tmp, progress)
            seconds = time.monotonic() - start
            (tmp / "root" / MARKER).write_text(json.dumps(
                {**runtime_versions(), "layout": LAYOUT, "build_seconds": round(seconds, 1)}))
            if sysroot.is_dir():
                sysroot.rmdir()  # empty (checked above): made by hand to hold it
            os.rename(tmp / "root", sysroot)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    progress(f"sysroot ready in {seconds:.0f} s: {sysroot}")
    return Provisioned(sysroot, built=True, seconds=seconds)


def check_tools() -> None:
    """Raise a one-line FarmError naming the first missing command and its Debian package."""
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            raise FarmError(f"cannot build the arm64 sysroot: '{tool}' is not installed",
                            f"apt-get install {package} (a Debian-based host is needed)")
    try:
        import pip  # noqa: F401 - only its presence matters
    except ImportError:
        raise FarmError(f"cannot build the arm64 sysroot: pip is missing from {sys.executable}",
                        "apt-get install python3-pip, or python -m ensurepip") from None


def _build(tmp: Path, progress: Progress) -> None:
    check_tools()
    root, debs, wheels = tmp / "root", tmp / "debs", tmp / "wheels"
    for d in (root, debs, wheels):
        d.mkdir(parents=True)
    _ensure_arm64_lists()
    packages = _deb_closure(DEBS)
    progress(f"provisioning arm64 sysroot: downloading {len(packages)} Debian packages")
    _run(["apt-get", "download", "-q", *packages], cwd=debs, what="apt-get download")
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(root)], what=f"dpkg -x {deb.name}")
    progress("provisioning arm64 sysroot: downloading the aarch64 TVM runtime wheels")
    v = runtime_versions()
    pins = [f"apache-tvm=={v['apache-tvm']}", f"apache-tvm-ffi=={v['apache-tvm-ffi']}"]
    # pip checks wheel tags against the running interpreter unless told the device's
    foreign = ["--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
               *[a for p in PLATFORMS for a in ("--platform", p)]]
    _run([sys.executable, "-m", "pip", "download", "-q", *foreign, "-d", str(wheels), *pins,
          *WHEEL_EXTRAS], what="pip download (aarch64 wheels)")
    site = root / "usr" / "lib" / "python3" / "dist-packages"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", *foreign,
          "--target", str(site), *map(str, sorted(wheels.glob("*.whl")))], what="pip install --target")
    # Runtime-only is all an RPC server needs; without the compiler library TVM loads the runtime
    # library by itself, and the sysroot is half the size.
    for lib in site.glob("tvm/**/libtvm_compiler.so"):
        lib.unlink()
    progress("provisioning arm64 sysroot: checking that the emulated python imports TVM's RPC server")
    proc = subprocess.run(emulated_python(root, "max", "-c", "import tvm.rpc.server"),
                          capture_output=True, text=True, env={**os.environ, **EMULATED_ENV})
    if proc.returncode != 0:
        raise FarmError("the new arm64 sysroot cannot import tvm under qemu: "
                        f"{last_line(proc.stderr + proc.stdout, proc.returncode)}",
                        "report this with the farm and Debian versions")


def _ensure_arm64_lists() -> None:
    """apt must know arm64 packages: add the architecture and update the lists when it does not."""
    if _ok(["apt-cache", "show", DEB_ROOT]):
        return
    if os.geteuid() != 0:
        raise FarmError(f"apt knows no {DEB_ROOT} package and farm is not root",
                        "run once as root: dpkg --add-architecture arm64 && apt-get update")
    if "arm64" not in _run(["dpkg", "--print-foreign-architectures"], what="dpkg").split():
        _run(["dpkg", "--add-architecture", "arm64"], what="dpkg --add-architecture arm64")
    _run(["apt-get", "update", "-q"], what="apt-get update")
    if not _ok(["apt-cache", "show", DEB_ROOT]):
        raise FarmError(f"apt has no {DEB_ROOT} package even after apt-get update",
                        "this host's Debian release must provide python3.11 for arm64 (bookworm)")


def _deb_closure(packages: list[str]) -> list[str]:
    """The packages and everything they need (no recommends/suggests), as `apt-get download` names."""
    out = _run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages],
               what="apt-cache depends")
    # Top-level lines are packages, indented ones their relations, <name> a virtual package.
    # Bare names are host-architecture (amd64) packages reached through Multi-Arch: foreign
    # relations (dpkg, perl, ...) or arch-all data the interpreter does not need: keep arm64 only.
    names = {ln.strip() for ln in out.splitlines() if ln and not ln[0].isspace()}
    return sorted(n for n in names if n.endswith(":arm64") and not n.startswith("<"))


def _ok(argv: list[str]) -> bool:
    return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FarmError(f"provisioning the arm64 sysroot failed in {what}: "
                        f"{last_line(proc.stderr or proc.stdout, proc.returncode)}",
                        "fix the cause and run `farm devices emulate arm64` again")
    return proc.stdout


def last_line(output: str, returncode: int) -> str:
    """What a failed command said last (its error, usually), for a one-line message."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {returncode}"
