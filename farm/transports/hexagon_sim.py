"""`hexagon-sim`: runs the farm's static Hexagon executable (farm.compile.hexagon) on a simulator.

Two simulators: Debian's qemu-hexagon-static (instruction-accurate, no cycle model: performance is
reported as executed packets, counted from its translation/execution log), or the Qualcomm SDK's
hexagon-sim when HEXAGON_TOOLCHAIN / HEXAGON_SDK_ROOT point at one (cycle counts). Inputs and
outputs travel as raw files in a scratch directory that is the program's working directory."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from farm.config.suites import LatencySpec
from farm.errors import DeviceFailure, DeviceTimeout, FarmError
from farm.platform import hexagon_toolchain as toolchain
from farm.platform.artifacts import META_NAME, SDK_EXE_NAME
from farm.platform.toolchain import PROBE_OK, StepFailure, run_step, tools_stamp
from farm.transports.base import Availability, DeviceSession, LoadedModel, Transport

QEMU = "qemu-hexagon-static"
QEMU_APT = "qemu-user-static"
SDK_VARS = ("HEXAGON_TOOLCHAIN", "HEXAGON_SDK_ROOT")
RUN_TIMEOUT = 3600.0  # a full qresnet50 under the packet trace takes minutes, not hours
_EXIT_MEANING = {2: "input/output file error", 3: "a kernel reported an error"}


@dataclass(frozen=True)
class Simulator:
    """How to run an executable: `argv(exe)`; `kind` is "qemu" or "sdk"."""

    kind: str
    binary: str
    cpu: str

    def argv(self, exe: Path, trace: Path | None = None) -> list[str]:
        if self.kind == "qemu":
            # in_asm: packets of each translated block; exec,nochain: every block execution
            log = ["-d", "in_asm,exec,nochain", "-D", str(trace)] if trace else []
            return [self.binary, "-cpu", self.cpu, *log, str(exe)]
        # SDK: the semihosting build; --timing enables the cycle model; the simulator's exit code
        # is the program's
        return [self.binary, f"-m{self.cpu}", "--timing", "--simulated_returnval",
                str(exe.with_name(SDK_EXE_NAME))]


def find_sdk_sim(env: dict[str, str]) -> tuple[Path | None, str]:
    """The SDK's hexagon-sim from HEXAGON_TOOLCHAIN or HEXAGON_SDK_ROOT; (None, why) otherwise."""
    if env.get("HEXAGON_TOOLCHAIN"):
        sim = Path(env["HEXAGON_TOOLCHAIN"]) / "bin" / "hexagon-sim"
        if sim.is_file() and os.access(sim, os.X_OK):
            return sim, ""
        return None, f"HEXAGON_TOOLCHAIN is set but {sim} is not an executable file"
    if env.get("HEXAGON_SDK_ROOT"):
        root = Path(env["HEXAGON_SDK_ROOT"])
        found = sorted(root.glob("tools/HEXAGON_Tools/*/Tools/bin/hexagon-sim"))
        if found:
            return found[-1], ""  # newest tools version
        return None, (f"HEXAGON_SDK_ROOT is set but {root}/tools/HEXAGON_Tools/*/Tools/bin/"
                      "hexagon-sim does not exist")
    return None, "neither HEXAGON_TOOLCHAIN nor HEXAGON_SDK_ROOT is set (Qualcomm Hexagon SDK)"


def choose_simulator(choice: str, qemu_cpu: str, sdk_cpu: str,
                     env: dict[str, str] | None = None) -> tuple[Simulator | None, str]:
    """The simulator to use for `simulator: auto|qemu|sdk`, or None and exactly what is missing."""
    env = dict(os.environ) if env is None else env
    missing_tools = toolchain.missing_tools()
    if choice in ("auto", "sdk"):
        sim, why = find_sdk_sim(env)
        if sim is not None:
            return Simulator("sdk", str(sim), sdk_cpu), ""
        if choice == "sdk":
            return None, why
        if any(env.get(k) for k in SDK_VARS):  # the user meant the SDK: do not fall back silently
            return None, f"{why} (unset {' and '.join(SDK_VARS)} to use {QEMU})"
    qemu = shutil.which(QEMU)
    missing = ([] if qemu else [f"{QEMU} (apt-get install {QEMU_APT})"]) + missing_tools
    if missing:
        return None, "missing " + ", ".join(missing)
    return Simulator("qemu", qemu, qemu_cpu), ""


PROBE_TODO = "apt-get install clang lld qemu-user-static (or run scripts/bootstrap.sh as root)"


@functools.cache
def probe_simulator(sim: Simulator, cpu: str, _tools: tuple | None) -> StepFailure | None:
    """Build a tiny program with the executable's toolchain and ABI and run it once on the
    simulator (cached per simulator and toolchain binaries). The SDK's semihosting ABI is not
    probed (no SDK here to test a probe against)."""
    with tempfile.TemporaryDirectory(prefix="farm-probe-") as tmp:
        try:
            exe = toolchain.build_probe(Path(tmp), f"hexagon{cpu}")
        except FarmError as e:
            return StepFailure("building a Hexagon program with clang and ld.lld", e.what)
        if sim.kind != "qemu":
            return None
        return run_step(sim.argv(exe), f"running a Hexagon program under {Path(sim.binary).name}",
                        expect=PROBE_OK)


def _cpu_of(tag: str) -> str:
    """'qcom/hexagon-v68' → 'v68' (the SDK simulator's -m flag)."""
    m = re.search(r"(v\d+)$", tag or "")
    return m.group(1) if m else "v68"


class HexagonSimTransport(Transport):
    def _simulator(self) -> tuple[Simulator | None, str]:
        opts = self.device.transport.options
        return choose_simulator(opts.simulator, opts.qemu_cpu,
                                _cpu_of(self.device.target.tag))

    def transport_availability(self) -> Availability:
        sim, why = self._simulator()
        if sim is None:
            return Availability(False, why)
        failed = probe_simulator(sim, _cpu_of(self.device.target.tag), tools_stamp(*toolchain.TOOLS))
        return Availability(failed is None, failed.reason(PROBE_TODO) if failed else "")

    def open(self, timeout: float, limit: float = 0.0) -> DeviceSession:
        sim, why = self._simulator()
        if sim is None:
            raise DeviceFailure(why)
        return _Session(sim)


class _Session(DeviceSession):
    def __init__(self, sim: Simulator):
        self.sim = sim

    def load(self, lib: Path) -> LoadedModel:
        try:
            meta = json.loads((lib.parent / META_NAME).read_text())
        except (OSError, ValueError) as e:
            raise DeviceFailure(f"{lib.parent / META_NAME} is unreadable ({e}); "
                                "not a farm Hexagon artifact") from None
        return HexagonModel(self.sim, lib, meta)


TRACED_RUN_COST = 8.0  # untraced runs' worth of one traced run (measured 2.7, see timed_calls)


class HexagonModel(LoadedModel):
    def __init__(self, sim: Simulator, exe: Path, meta: dict):
        self.sim, self.exe, self.meta = sim, exe, meta
        self.time_unit = "packets" if sim.kind == "qemu" else "cycles"
        self.profile: dict = {}

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="farm-hexagon-") as d:
            return self._execute(Path(d), inputs, trace=False)[0]

    def time(self, inputs: list[np.ndarray], spec: LatencySpec) -> list[float]:
        """One simulated run is deterministic: a single sample, in executed packets (qemu) or
        cycles (SDK). Per-kernel packets land in `time_metrics()`."""
        with tempfile.TemporaryDirectory(prefix="farm-hexagon-") as d:
            _, figures = self._execute(Path(d), inputs, trace=True)
        self.profile = figures
        return [float(figures["total"])]

    def time_metrics(self) -> dict:
        return {k: v for k, v in self.profile.items() if k not in ("total", "unit")}

    def timed_calls(self, spec: LatencySpec) -> float:
        """One traced simulation, whatever the spec: the packet trace made qresnet50's run 2.7×
        slower than an untraced one (25.6 s vs 9.5 s, qemu-hexagon); counted with margin."""
        return TRACED_RUN_COST

    def _execute(self, work: Path, inputs: list[np.ndarray], trace: bool):
        specs = self.meta["inputs"]
        if len(inputs) != len(specs):
            raise ValueError(f"the model takes {len(specs)} inputs, got {len(inputs)}")
        for i, (x, spec) in enumerate(zip(inputs, specs, strict=True)):
            if tuple(x.shape) != tuple(spec["shape"]):
                raise ValueError(f"input {i} has shape {x.shape}, the executable {spec['shape']}")
            np.ascontiguousarray(x, dtype=spec["dtype"]).tofile(work / f"in{i}.bin")
        counter = _TraceCounter(work / "trace.fifo") if trace and self.sim.kind == "qemu" else None
        argv = self.sim.argv(self.exe, counter.path if counter else None)
        try:
            res = subprocess.run(argv, cwd=work, capture_output=True, text=True,
                                 timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DeviceTimeout(f"{self.sim.binary} ran longer than {RUN_TIMEOUT:.0f} s") from None
        finally:
            if counter:
                counter.finish()
        if res.returncode != 0:
            tail = "; ".join(ln for ln in res.stderr.splitlines()[-3:] if ln.strip())
            meaning = _EXIT_MEANING.get(res.returncode, f"exit code {res.returncode}")
            raise RuntimeError(f"{self.exe.name} on {self.sim.kind}: {meaning}: {tail}")
        outputs = []
        for i, spec in enumerate(self.meta["outputs"]):
            arr = np.fromfile(work / f"out{i}.bin", dtype=spec["dtype"])
            outputs.append(arr.reshape(spec["shape"]))
        figures = counter.figures() if counter else (_sdk_figures(res.stdout + res.stderr)
                                                     if trace else {})
        return outputs, figures


def _sdk_figures(text: str) -> dict:
    """Total cycles (and packets, when printed) from hexagon-sim's end-of-run statistics."""
    cycles = re.findall(r"[Pp]cycles\s*=\s*(\d+)", text)
    if not cycles:
        raise RuntimeError("hexagon-sim printed no Pcycles figure; run it with --timing")
    packets = re.findall(r"Packets\s*=\s*(\d+)", text)
    out = {"total": int(cycles[-1]), "unit": "cycles"}
    if packets:
        out["packets"] = sum(int(p) for p in packets)
    return out


_ADDR = re.compile(r"^0x([0-9a-f]+):")
_EXEC = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")
KERNEL_PREFIX = "__tvm_ffi_"
DRIVER = "run_model"


class _TraceCounter:
    """Reads qemu's log through a FIFO while it runs (a full trace does not fit on disk for big
    models): packets per translated block from `in_asm`, times its executions from `exec`,
    attributed to the kernel whose `__tvm_ffi_` entry was entered last (helpers such as
    nearbyintf count for the kernel that called them; the step loop counts as 'driver')."""

    def __init__(self, path: Path):
        self.path = path
        os.mkfifo(path)
        self.counts: Counter[str] = Counter()
        self.packets_at: dict[int, int] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            with open(self.path) as f:  # blocks until qemu opens the log
                self._parse(f)
        except BaseException as e:  # noqa: BLE001 - reported by figures()
            self.error = e

    def _parse(self, lines) -> None:
        block_pc, block_packets, current = None, 0, "driver"
        counts, packets_at = self.counts, self.packets_at
        for line in lines:
            if line.startswith("Trace"):
                m = _EXEC.match(line)
                if not m:
                    continue
                symbol = line.rsplit("] ", 1)[-1].strip()
                if symbol.startswith(KERNEL_PREFIX):
                    current = symbol[len(KERNEL_PREFIX):]
                elif symbol == DRIVER:
                    current = "driver"
                counts[current] += packets_at.get(int(m.group(1), 16), 0)
            elif line.startswith("IN:"):
                block_pc, block_packets = None, 0
            elif line.startswith("0x"):
                if block_pc is None:
                    block_pc = int(_ADDR.match(line).group(1), 16)
                if "{" in line:
                    block_packets += 1
                    packets_at[block_pc] = block_packets

    def finish(self) -> None:
        if not self.thread.is_alive():
            return
        try:  # qemu never opened the log (failed to start): unblock the reader
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
        self.thread.join()

    def figures(self) -> dict:
        if self.error is not None:
            raise RuntimeError(f"reading qemu's trace failed: {self.error}")
        total = sum(self.counts.values())
        if total == 0:
            raise RuntimeError("qemu's trace counted no packets")
        return {"total": total, "unit": "packets",
                "kernel_packets": dict(self.counts.most_common())}
