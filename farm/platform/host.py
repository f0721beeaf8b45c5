"""What this machine is: CPU name and the instruction-set features that decide what can run here."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

# /proc/cpuinfo spells some features differently from LLVM and from users; normalise to these.
_ALIASES = {"avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni", "asimddp": "dotprod",
            "i8mm": "i8mm", "asimd": "neon"}
INTERESTING = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
               "avx_vnni", "amx_int8", "neon", "dotprod", "i8mm", "sve")


@dataclass(frozen=True)
class HostInfo:
    machine: str  # x86_64, aarch64
    cpu_model: str  # "AMD EPYC ..." as the kernel reports it
    llvm_cpu: str  # what LLVM calls it: znver4, skylake-avx512, ...
    features: frozenset[str]

    def summary(self) -> str:
        shown = [f for f in INTERESTING if f in self.features]
        return f"{self.cpu_model} ({self.llvm_cpu}; {' '.join(shown)})"


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model == "unknown":
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(_ALIASES.get(f, f) for f in value.split())
    return model, frozenset(flags)


@functools.lru_cache(maxsize=1)
def host_info() -> HostInfo:
    from tvm.target import codegen

    try:
        model, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        model, flags = platform.processor() or "unknown", frozenset()
    return HostInfo(platform.machine(), model, codegen.llvm_get_system_cpu(), flags)
