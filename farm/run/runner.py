"""Runs suites on devices: compile → bring up → correctness → latency, each outcome recorded as
data (never raised) and committed to the store as soon as it is known."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from farm.compile.build import Artifact, CompileError, compile_model
from farm.compile.host import INTERESTING, host_info
from farm.config.devices import Device
from farm.config.suites import Suite
from farm.errors import FarmError
from farm.models.exact_reference import exact_outputs, with_exact_semantics
from farm.models.reference import make_inputs, model_inputs, output_steps, run_reference
from farm.models.registry import ModelFiles, build_builtin, load_onnx
from farm.results.store import CheckResult, Store, default_db, new_run_id
from farm.run import baseline
from farm.run.metrics import LatencyStats, compare, judge
from farm.transports.base import DeviceFailure, DeviceSession
from farm.transports.embedded import Farm

Progress = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class RunOptions:
    data_dir: Path = Path(".farm")
    progress: Progress = stderr_progress
    open_timeout: float = 300.0  # waiting for a free device in the tracker's queue
    command: str = ""


@dataclass
class RunOutcome:
    run_id: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status in ("pass", "skipped") for r in self.results)


@dataclass
class PreparedSuite:
    """Everything about a suite that does not depend on the device: model, inputs, reference."""

    suite: Suite
    model: ModelFiles
    feeds: list[dict[str, np.ndarray]]
    refs: list[list[np.ndarray]]
    steps: list[float | None]
    exact_refs: list[list[np.ndarray]] | None = None  # float64 exact semantics, where supported


def prepare(suite: Suite, data_dir: Path) -> PreparedSuite:
    if suite.model.builtin:
        model = build_builtin(suite.model.builtin, data_dir / "models")
    else:
        path = suite.model.path
        model = ModelFiles(path.stem, path)
    proto = load_onnx(model.path)
    feeds = make_inputs(model_inputs(proto), suite.inputs)
    return PreparedSuite(suite, model, feeds, run_reference(model.path, feeds), output_steps(proto),
                         exact_outputs(proto, feeds))


class _Recorder:
    def __init__(self, store: Store, run_id: str, outcome: RunOutcome, progress: Progress):
        self.store, self.run_id, self.outcome, self.progress = store, run_id, outcome, progress

    def __call__(self, r: CheckResult) -> CheckResult:
        self.store.record(self.run_id, r)
        self.outcome.results.append(r)
        detail = f" ({r.kind}: {r.reason})" if r.reason else ""
        self.progress(f"[{r.device}] {r.suite} {r.check}: {r.status}{detail}")
        return r


def run_device(farm: Farm, prep: PreparedSuite, device: Device, opts: RunOptions,
               record: _Recorder) -> None:
    """All checks of one suite on one device; every failure becomes a recorded result."""
    suite = prep.suite
    label = dict(device=device.name, suite=suite.name, target=device.target.describe(),
                 transport=device.transport.describe(), emulated=device.emulated)

    def result(check: str, status: str, **kw) -> CheckResult:
        return record(CheckResult(check=check, status=status, **label, **kw))

    transport = farm.transport(device)
    avail = transport.availability()
    opts.progress(f"[{device.name}] compiling {prep.model.name} for {device.target.describe()}")
    try:
        art = compile_model(prep.model.path, device, opts.data_dir / "cache")
    except (CompileError, FarmError) as e:
        result("compile", "error", kind="compile", reason=e.format())
        for check in ("correctness", "latency"):
            result(check, "skipped", kind="compile", reason="not compiled")
        return
    result("compile", "pass", metrics=_compile_metrics(art))
    with_fp32 = suite.fp32_baseline and suite.latency.enabled
    checks = ["correctness"] + (["latency"] if suite.latency.enabled else []) + \
        ([baseline.CHECK] if with_fp32 else [])
    if not avail.runnable:
        for check in checks:
            result(check, "skipped", kind="unavailable", reason=avail.reason)
        return
    fp32 = None
    if with_fp32:
        opts.progress(f"[{device.name}] compiling the fp32 baseline of {prep.model.name}")
        fp32 = baseline.compile_fp32(prep.model, device, opts.data_dir)
        if isinstance(fp32, FarmError):
            result(baseline.CHECK, "error", kind="compile", reason=fp32.format())
            fp32 = None
    try:
        farm.start(device)
        with transport.open(opts.open_timeout) as session:
            _run_checks(session, art, prep, result, fp32)
    except DeviceFailure as e:
        done = {r.check for r in record.outcome.results
                if r.device == device.name and r.suite == suite.name}
        for check in checks:
            if check not in done:
                result(check, "error", kind=e.kind, reason=str(e))


def _compile_metrics(art: Artifact) -> dict:
    return {"compile_seconds": round(art.compile_seconds, 3), "cached": art.cached,
            "artifact": art.key, "target": art.target, "lowering": art.meta.get("lowering")}


def _run_checks(session: DeviceSession, art: Artifact, prep: PreparedSuite, result,
                fp32: Artifact | None = None) -> None:
    start = time.perf_counter()
    model = session.load(art.lib)
    upload_seconds = time.perf_counter() - start
    inputs = [list(feed.values()) for feed in prep.feeds]
    try:
        outputs = [model.run(x) for x in inputs]
    except Exception as e:  # noqa: BLE001 - the remote raised: the device failed this model
        raise DeviceFailure(f"inference failed: {_last_line(e)}") from None
    try:
        m = compare(outputs, prep.refs, prep.steps)
        if prep.exact_refs is not None:
            m = with_exact_semantics(m, compare(outputs, prep.exact_refs, prep.steps))
    except ValueError as e:
        result("correctness", "fail", kind="wrong-answer", reason=str(e))
    else:
        m["upload_seconds"] = round(upload_seconds, 3)
        bad = judge(m, prep.suite.correctness)
        result("correctness", "fail" if bad else "pass", kind="wrong-answer" if bad else None,
               reason="; ".join(bad), metrics=m)
    if prep.suite.latency.enabled:
        try:
            samples = model.time(inputs[0], prep.suite.latency)
        except Exception as e:  # noqa: BLE001
            raise DeviceFailure(f"timing failed: {_last_line(e)}") from None
        stats = LatencyStats.of(samples)
        result("latency", "pass", metrics={**stats.__dict__, "samples": samples,
                                            "threads": _threads(art), "unit": model.time_unit,
                                            **model.time_metrics()})
        if fp32 is not None:
            try:
                baseline.time_fp32(session, fp32, inputs[0], prep.suite.latency, stats.median, result)
            except Exception as e:  # noqa: BLE001
                raise DeviceFailure(f"fp32 baseline failed: {_last_line(e)}") from None


def _threads(art: Artifact) -> int:
    return int(art.target.get("num-cores", 1))


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def host_summary() -> dict[str, str]:
    h = host_info()
    return {"cpu": f"{h.cpu_model} ({h.llvm_cpu})",
            "features": " ".join(f for f in INTERESTING if f in h.features)}


def run(pairs: list[tuple[Suite, list[Device]]], opts: RunOptions) -> RunOutcome:
    """Run each suite on its devices inside one embedded farm; returns every result."""
    store = Store(default_db(opts.data_dir))
    run_id = new_run_id()
    store.begin_run(run_id, opts.command, host_summary())
    outcome = RunOutcome(run_id)
    record = _Recorder(store, run_id, outcome, opts.progress)
    all_devices = list({d.name: d for _, devs in pairs for d in devs}.values())
    status = "interrupted"
    try:
        with Farm(opts.data_dir, opts.data_dir / "logs" / run_id, all_devices) as farm:
            for suite, devices in pairs:
                opts.progress(f"preparing {suite.name}: model {suite.model.describe()}, "
                              f"reference outputs from ONNX Runtime")
                prep = prepare(suite, opts.data_dir)
                for device in devices:
                    run_device(farm, prep, device, opts, record)
        status = "done"
    except FarmError:
        status = "error"
        raise
    finally:
        store.finish_run(run_id, status)
        store.close()
    return outcome
