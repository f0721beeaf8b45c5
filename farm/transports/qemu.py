"""`qemu`: an aarch64 board emulated by qemu-user on this machine. The farm provisions the arm64
sysroot (once, shared cache), starts TVM's RPC server in the sysroot's python under
qemu-aarch64-static with a CPU model that has the target's instructions, lets it register with
the tracker under the device's key like a real board, and kills it at the end."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from farm.errors import DeviceFailure, FarmError
from farm.platform import toolchain
from farm.provision import arm64
from farm.transports.base import Availability
from farm.transports.rpc import LocalServerTransport, free_servers

# Importing tvm under emulation takes ~8 s on an idle machine; a busy 2-core one can be far slower.
PROBE_TIMEOUT = 60.0
LAUNCHER = Path(__file__).with_name("qemu_rpc_server.py")

# LLVM aarch64 features that are instructions, → (AT_HWCAP or AT_HWCAP2, bit) as Linux reports
# them (arch/arm64/include/uapi/asm/hwcap.h). Code using one the emulated CPU lacks gets SIGILL.
_AT_HWCAP, _AT_HWCAP2 = 16, 26
HWCAPS = {"fp-armv8": (_AT_HWCAP, 0), "neon": (_AT_HWCAP, 1), "aes": (_AT_HWCAP, 3),
          "sha2": (_AT_HWCAP, 6), "crc": (_AT_HWCAP, 7), "lse": (_AT_HWCAP, 8),
          "fullfp16": (_AT_HWCAP, 9), "rdm": (_AT_HWCAP, 12), "jsconv": (_AT_HWCAP, 13),
          "complxnum": (_AT_HWCAP, 14), "rcpc": (_AT_HWCAP, 15), "sha3": (_AT_HWCAP, 17),
          "sm4": (_AT_HWCAP, 19), "dotprod": (_AT_HWCAP, 20), "sve": (_AT_HWCAP, 22),
          "fp16fml": (_AT_HWCAP, 23), "sve2": (_AT_HWCAP2, 1), "i8mm": (_AT_HWCAP2, 13),
          "bf16": (_AT_HWCAP2, 14)}
# Run by the emulated python: the auxiliary vector qemu gives its guest, as "type value" lines.
_AUXV_PROBE = ("import struct\nfor t, v in struct.iter_unpack('<QQ', open('/proc/self/auxv', 'rb')"
               ".read()):\n    print(t, v)")


@functools.cache
def qemu_cpu_models() -> frozenset[str]:
    out = subprocess.run([arm64.QEMU, "-cpu", "help"], capture_output=True, text=True).stdout
    return frozenset(ln.strip() for ln in out.splitlines()[1:] if ln.strip())


def target_features(device) -> set[str]:
    """The instruction features the device's code may use (mcpu defaults plus mattr)."""
    import tvm
    from tvm.target import codegen

    from farm.platform.targets import target_dict

    return set(codegen.llvm_get_cpu_features(tvm.target.Target(target_dict(device)))) & set(HWCAPS)


def emulated_features(sysroot: Path, cpu: str) -> set[str]:
    """What the emulated CPU model offers, read from the HWCAPs qemu hands its guest."""
    argv = arm64.emulated_python(sysroot, cpu, "-S", "-c", _AUXV_PROBE)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                              env={**os.environ, **arm64.EMULATED_ENV})
    except subprocess.TimeoutExpired:
        raise DeviceFailure(f"the emulated python did not start within {PROBE_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        raise DeviceFailure(f"{arm64.QEMU} -cpu {cpu} cannot run {arm64.python_in(sysroot)}: "
                            f"{arm64.last_line(proc.stderr, proc.returncode)}")
    auxv = {int(t): int(v) for t, v in (ln.split() for ln in proc.stdout.splitlines())}
    return {f for f, (at, bit) in HWCAPS.items() if auxv.get(at, 0) >> bit & 1}


class QemuTransport(LocalServerTransport):
    register_timeout = 240.0  # importing TVM under emulation takes seconds, more on a busy host

    @property
    def cpu(self) -> str:
        return self.device.transport.options.cpu

    def sysroot(self) -> Path:
        """devices.yaml `sysroot:` (relative to that file), else the shared cache's."""
        given = self.device.transport.options.sysroot
        if not given:
            return arm64.default_sysroot()
        path = Path(given).expanduser()
        return path if path.is_absolute() else Path(self.device.file).resolve().parent / path

    def transport_availability(self) -> Availability:
        if shutil.which(arm64.QEMU) is None:
            return Availability(False, f"{arm64.QEMU} is not installed "
                                       f"(apt-get install {arm64.QEMU_PACKAGE})")
        if self.cpu not in qemu_cpu_models():
            return Availability(False, f"{arm64.QEMU} has no CPU model '{self.cpu}' "
                                       f"(it has: {', '.join(sorted(qemu_cpu_models()))})")
        failed = toolchain.emulator_failure(self.device.target.family, arm64.QEMU, self.cpu)
        if failed is not None:
            return Availability(False, failed.reason(
                f"apt-get install {toolchain.linker(self.device.target.family)[1]} {arm64.QEMU_PACKAGE}"))
        if not arm64.is_provisioned(self.sysroot()):
            return Availability(True, f"arm64 sysroot not provisioned yet: built on first use "
                                      f"(or now: farm devices emulate arm64) in {self.sysroot()}")
        return Availability(True)

    def start(self) -> None:
        addr = self.tracker_address()
        if free_servers(addr, self.device.key) > 0:
            return  # already served (e.g. a real board or another farm under the same key)
        sysroot = self._provision()
        missing = target_features(self.device) - emulated_features(sysroot, self.cpu)
        if missing:
            raise DeviceFailure(f"qemu CPU model '{self.cpu}' lacks {', '.join(sorted(missing))}, "
                                f"which the target of '{self.device.name}' uses: set transport "
                                "cpu: max (or a model that has them) in devices.yaml")
        self.launch(arm64.emulated_python(sysroot, self.cpu, str(LAUNCHER), *self.server_args("127.0.0.1")),
                    arm64.EMULATED_ENV)

    def _provision(self) -> Path:
        sysroot = self.sysroot()
        if arm64.is_provisioned(sysroot):
            return sysroot
        print(f"[{self.device.name}] provisioning the arm64 sysroot (once) in {sysroot}",
              file=sys.stderr, flush=True)
        try:
            return arm64.provision(sysroot, progress=lambda m: print(
                f"[{self.device.name}] {m}", file=sys.stderr, flush=True)).sysroot
        except FarmError as e:
            raise DeviceFailure(e.format()) from None

