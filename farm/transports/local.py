"""`local`: a TVM rpc_server on this machine, started by the farm, registered with its tracker."""

from __future__ import annotations

from farm.platform.host import host_info
from farm.platform.procs import python_module
from farm.transports.base import Availability
from farm.transports.rpc import LocalServerTransport, free_servers

# LLVM target features that, when the target has them and this CPU does not, make code SIGILL.
# Keys: LLVM spelling; values: /proc/cpuinfo spelling.
ISA_FEATURES = {"avx": "avx", "avx2": "avx2", "fma": "fma", "avx512f": "avx512f",
                "avx512bw": "avx512bw", "avx512vl": "avx512vl", "avx512vnni": "avx512_vnni",
                "avxvnni": "avx_vnni", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
                "amx-int8": "amx_int8", "neon": "neon", "dotprod": "dotprod", "i8mm": "i8mm",
                "sve": "sve"}


def needed_features(device) -> set[str]:
    """Instruction-set features (in /proc/cpuinfo spelling) the device's code may use."""
    need = set(device.requires)
    if device.target.mcpu not in (None, "host"):
        import tvm
        from tvm.target import codegen

        from farm.platform.targets import target_dict

        feats = codegen.llvm_get_cpu_features(tvm.target.Target(target_dict(device)))
        need |= {ISA_FEATURES[f] for f in feats if f in ISA_FEATURES}
    need |= {ISA_FEATURES[a[1:]] for a in device.target.mattr
             if a.startswith("+") and a[1:] in ISA_FEATURES}
    return need


def missing_features(device) -> list[str]:
    """Instruction-set features the device's code may use that this host lacks."""
    return sorted(f for f in needed_features(device) if f not in host_info().features)


class LocalTransport(LocalServerTransport):
    def transport_availability(self) -> Availability:
        if host_info().machine != "x86_64":
            return Availability(False, f"this host is {host_info().machine}, not x86_64")
        missing = missing_features(self.device)
        if missing:
            return Availability(False, f"host CPU lacks {', '.join(missing)} (compile-only here)")
        return Availability(True)

    def start(self) -> None:
        addr = self.tracker_address()
        if free_servers(addr, self.device.key) > 0:
            return  # a server of `farm up` is already serving this key
        host = self.device.transport.options.host
        self.launch(python_module("tvm.exec.rpc_server", *self.server_args(host)), {})
