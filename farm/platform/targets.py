"""A device's TargetSpec → a TVM target, plus how its library is linked."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from typing import Any

from farm.config.devices import Device
from farm.errors import ConfigError, error_line
from farm.platform.host import host_info
from farm.platform.procs import quiet_stderr
from farm.platform.toolchain import APT_FOR, CROSS_CC, triple_problem

_DEFAULT_TRIPLE = {"arm": "aarch64-linux-gnu"}


def target_dict(device: Device) -> dict[str, Any]:
    """The TVM target of a device as a plain dict (stable, hashable into the cache key)."""
    spec = device.target
    if spec.tag:
        return {"tag": spec.tag}
    out: dict[str, Any] = {"kind": "llvm", "num-cores": device.threads}
    mcpu = host_info().llvm_cpu if spec.mcpu == "host" else spec.mcpu
    if mcpu:
        out["mcpu"] = mcpu
    triple = spec.mtriple or _DEFAULT_TRIPLE.get(spec.family)
    if triple:
        problem = triple_problem(triple)
        if problem:
            raise ConfigError(f"{problem}, so no code can be built for '{device.name}'",
                              "fix the target's mtriple (e.g. aarch64-linux-gnu)", file=device.file,
                              line=device.line)
        out["mtriple"] = triple
    if spec.mattr:
        out["mattr"] = list(spec.mattr)
    problem = _llvm_problem(out.get("mtriple"), out.get("mcpu"), tuple(spec.mattr))
    if problem:
        raise ConfigError(f"{problem[0]} of '{device.name}' {problem[1]}", problem[2], file=device.file,
                          line=device.line)
    return out


@functools.cache
def _llvm_problem(triple: str | None, mcpu: str | None, mattr: tuple[str, ...]) -> tuple[str, str, str] | None:
    """(what, is wrong, what to do) when LLVM does not know the CPU or a feature: TVM takes both
    silently, and LLVM then builds for a generic CPU or drops the feature with a warning."""
    import tvm
    from tvm.target import codegen

    if mcpu and not codegen.llvm_is_valid_cpu(mcpu, triple or ""):
        return (f"mcpu '{mcpu}'", "is not a CPU LLVM knows",
                "use an LLVM CPU name such as znver3, cascadelake, cortex-a76")
    base = {"kind": "llvm", **({"mtriple": triple} if triple else {}), **({"mcpu": mcpu} if mcpu else {})}
    for attr in mattr:  # known iff enabling it shows it among the CPU's features
        with quiet_stderr():  # LLVM's own "not a recognized feature" warning: ours replaces it
            features = codegen.llvm_get_cpu_features(tvm.target.Target({**base, "mattr": ["+" + attr[1:]]}))
        if attr[1:] not in features:
            return (f"mattr '{attr}'", f"is not a feature LLVM knows for {triple or 'x86-64'}",
                    f"use LLVM feature names (llc -mtriple={triple or 'x86_64-linux-gnu'} -mattr=help lists them)")
    return None


def make_target(device: Device):
    """Build the tvm.target.Target (target_dict has rejected what LLVM does not know)."""
    import tvm

    d = target_dict(device)
    try:
        target = tvm.target.Target(d)
    except Exception as e:  # TVM raises TVMError/ValueError with a multi-line message
        raise ConfigError(f"TVM rejects the target of '{device.name}': {error_line(e)}",
                          "fix the target attributes", file=device.file, line=device.line) from None
    return target


def export_fn(device: Device) -> Callable | None:
    """The `fcompile` for export_library: None links with the host compiler."""
    cc = CROSS_CC.get(device.target.family)
    if cc is None:
        return None
    if shutil.which(cc) is None:
        raise ConfigError(f"cross compiler {cc} for '{device.name}' is not installed",
                          f"apt-get install {APT_FOR[cc]}", file=device.file, line=device.line)
    from tvm.support import cc as tvm_cc

    return tvm_cc.cross_compiler(cc)
