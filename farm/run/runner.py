"""Runs suites on devices: compile → bring up → correctness → latency. Every outcome is data
(a CheckResult with a kind), committed to the store as soon as it is known; a failing device is
retried, then quarantined for the rest of the run."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from farm.compile.build import Artifact, check_importable
from farm.compile.worker import compile_isolated
from farm.config.devices import Device
from farm.config.suites import Suite, Timeouts
from farm.errors import DeviceFailure, FarmError
from farm.models.exact_reference import exact_outputs, with_exact_semantics
from farm.models.fp32 import fp32_model
from farm.models.reference import make_inputs, model_inputs, output_steps, run_reference
from farm.models.registry import ModelFiles, build_builtin, load_onnx, reference_name
from farm.models.tflite import is_tflite, litert_reference, with_litert_optimized
from farm.platform.host import INTERESTING, host_info
from farm.results.store import CheckResult, Store, default_db, new_run_id
from farm.run import baseline
from farm.run.metrics import LatencyStats, compare, judge
from farm.run.watchdog import bounded
from farm.transports.embedded import Farm

Progress = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class RunOptions:
    data_dir: Path = Path(".farm")
    progress: Progress = stderr_progress
    command: str = ""
    plan: dict = field(default_factory=dict)  # what was asked, stored for --resume
    resume: str | None = None  # continue this run id instead of starting a new one
    # join a run begun by the caller (farm matrix / pytest workers), who also finishes it
    run_id: str | None = None
    log_dir: Path | None = None  # default: <data_dir>/logs/<run_id>


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
    optimized_refs: list[list[np.ndarray]] | None = None  # TFLite: LiteRT's optimized kernels
    reference_note: str | None = None  # what the reference is when it is not the usual one


def prepare(suite: Suite, data_dir: Path) -> PreparedSuite:
    if suite.model.builtin:
        model = build_builtin(suite.model.builtin, data_dir / "models")
    else:
        path = suite.model.path
        model = ModelFiles(path.stem, path)
    if is_tflite(model.path):  # reference: LiteRT's reference kernels
        ref = litert_reference(model.path, suite.inputs, data_dir / "logs" / f"litert-{model.name}.log")
        return PreparedSuite(suite, model, ref.feeds, ref.refs, ref.steps, optimized_refs=ref.optimized,
                             reference_note=ref.note)
    proto = load_onnx(model.path)
    check_importable(proto, model.path)
    feeds = make_inputs(model_inputs(proto), suite.inputs)
    return PreparedSuite(suite, model, feeds, run_reference(model.path, feeds), output_steps(proto),
                         exact_outputs(proto, feeds))


class Session:
    """One run's bookkeeping: records results, remembers quarantined devices."""

    def __init__(self, store: Store, run_id: str, opts: RunOptions):
        self.store, self.run_id, self.opts = store, run_id, opts
        self.outcome = RunOutcome(run_id)
        self.quarantined: dict[str, str] = {}

    def record(self, r: CheckResult) -> CheckResult:
        self.store.record(self.run_id, r)
        self.outcome.results.append(r)
        detail = f" ({r.kind}: {r.reason})" if r.reason else ""
        self.opts.progress(f"[{r.device}] {r.suite} {r.check}: {r.status}{detail}")
        return r

    def latency_median(self, device: str, suite: str) -> float | None:
        for r in reversed(self.outcome.results):
            if (r.device, r.suite, r.check, r.status) == (device, suite, "latency", "pass"):
                return r.metrics["median"]
        return None

    def recorded(self, device: str, suite: str) -> set[str]:
        """Checks of the pair that an earlier attempt of this run (--resume) recorded, errors
        excluded: those are not run again."""
        if not self.opts.resume:
            return set()
        return {r.check for r in self.store.results(self.run_id)
                if r.device == device and r.suite == suite and r.status != "error"}

    def finished(self, device: str, suite: Suite) -> bool:
        """True when every check the suite plans for the device is recorded, none of them an error."""
        return set(suite.checks()) <= self.recorded(device, suite.name)


class DeviceRun:
    """All checks of one suite on one device."""

    def __init__(self, farm: Farm, prep: PreparedSuite, device: Device, session: Session):
        self.farm, self.prep, self.device, self.session = farm, prep, device, session
        self.timeouts: Timeouts = prep.suite.timeouts.merged(device.timeouts)
        spec = prep.suite.latency
        self.latency = replace(spec, repeat=spec.emulated_repeat) if device.emulated else spec
        self.checks = prep.suite.checks()[1:]  # compile is recorded on its own
        self.fp32: Artifact | None = None
        # checks an earlier attempt of a resumed run finished (compile is always redone: the
        # artifact is needed, and the cache makes it cheap)
        self.done: set[str] = session.recorded(device.name, prep.suite.name) - {"compile"}

    def result(self, check: str, status: str, **kw) -> CheckResult:
        d = self.device
        self.done.add(check)
        return self.session.record(CheckResult(
            device=d.name, suite=self.prep.suite.name, check=check, status=status,
            target=d.target.describe(), transport=d.transport.describe(), emulated=d.emulated, **kw))

    def fail_pending(self, status: str, kind: str, reason: str) -> None:
        for check in self.checks:
            if check not in self.done:
                self.result(check, status, kind=kind, reason=reason)

    def __call__(self) -> None:
        name, progress = self.device.name, self.session.opts.progress
        if name in self.session.quarantined:
            self.result("compile", "skipped", kind="quarantined", reason=self.session.quarantined[name])
            self.fail_pending("error", "quarantined", self.session.quarantined[name])
            return
        avail = self.farm.transport(self.device).availability()
        art = self.compile()
        if art is None:
            return
        if not avail.runnable:
            self.fail_pending("skipped", "unavailable", avail.reason)
            self.session.store.set_health(name, self.session.run_id, "unavailable", avail.reason)
            return
        if baseline.CHECK in self.checks and baseline.CHECK not in self.done:
            if self.device.emulated and not self.prep.suite.fp32_baseline_emulated:
                self.result(baseline.CHECK, "skipped", kind="unavailable",
                            reason="no fp32 baseline on emulated devices (suite: fp32_baseline_emulated)")
            else:
                self.fp32 = self.compile_fp32()
            if self.fp32 is not None and self.fp32.key == art.key:  # same artifact: nothing to compare
                self.fp32 = None
                self.result(baseline.CHECK, "skipped", kind="unavailable",
                            reason="the model has no quantized operators: it computes in float already, "
                                   "so it is its own fp32 baseline")
        for attempt in range(self.device.retries + 1):
            try:
                self.attempt(art)
                self.session.store.set_health(name, self.session.run_id, "ok")
                return
            except DeviceFailure as e:
                self.farm.stop(self.device)
                if attempt < self.device.retries:
                    wait = self.device.retry_backoff * 2 ** attempt
                    progress(f"[{name}] {e}; retrying in {wait:g} s ({attempt + 1}/{self.device.retries})")
                    time.sleep(wait)
                    continue
                reason = f"{e} (after {attempt + 1} attempts; quarantined for the rest of the run)"
                self.session.quarantined[name] = reason
                self.session.store.set_health(name, self.session.run_id, "quarantined", reason)
                self.fail_pending("error", e.kind, reason)

    def _compile(self, path: Path, what: str) -> Artifact:
        opts = self.session.opts
        opts.progress(f"[{self.device.name}] compiling {what} for {self.device.target.describe()}")
        log = opts.log_dir / f"compile-{self.device.name}-{path.stem}.log"
        return compile_isolated(path, self.device, opts.data_dir / "cache", self.timeouts.compile, log)

    def compile(self) -> Artifact | None:
        try:
            art = self._compile(self.prep.model.path, self.prep.model.name)
        except FarmError as e:
            self.result("compile", "error", kind="compile", reason=e.format())
            self.fail_pending("skipped", "compile", "not compiled")
            return None
        self.result("compile", "pass", metrics={
            "compile_seconds": round(art.compile_seconds, 3), "cached": art.cached,
            "artifact": art.key, "target": art.target, "lowering": art.meta.get("lowering")})
        return art

    def compile_fp32(self) -> Artifact | None:
        """The float32 network for the baseline; a failure is recorded, not raised."""
        try:
            path = fp32_model(self.prep.model, self.session.opts.data_dir / "models")
            return self._compile(path, f"the fp32 baseline of {self.prep.model.name}")
        except FarmError as e:
            self.result(baseline.CHECK, "error", kind="compile", reason=e.format())
            return None

    def attempt(self, art: Artifact) -> None:
        t, kill = self.timeouts, (lambda: self.farm.stop(self.device))
        transport = self.farm.transport(self.device)
        bounded("bring-up", lambda: self.farm.start(self.device), t.open, kill)
        session = bounded("opening a session", lambda: transport.open(t.open), t.open, kill)
        try:
            self.session.opts.progress(f"[{self.device.name}] uploading {art.lib.name} "
                                       f"({art.lib.stat().st_size / 1e6:.1f} MB)")
            start = time.perf_counter()
            model = bounded("upload", lambda: session.load(art.lib), t.upload, kill)
            upload_seconds = time.perf_counter() - start
            inputs = [list(feed.values()) for feed in self.prep.feeds]
            if "correctness" not in self.done:
                outputs = [bounded("inference", _remote(lambda x=x: model.run(x), "inference"), t.run, kill)
                           for x in inputs]
                self.judge(outputs, upload_seconds)
            if "latency" in self.checks and "latency" not in self.done:
                spec = self.latency
                samples = bounded("latency measurement", _remote(lambda: model.time(inputs[0], spec), "timing"),
                                  t.measure, kill)
                stats = LatencyStats.of(samples)
                self.result("latency", "pass", metrics={**stats.__dict__, "samples": samples,
                                                         "threads": self.device.threads,
                                                         "unit": model.time_unit, **model.time_metrics()})
            if self.fp32 is not None and baseline.CHECK not in self.done:
                spec, fp32 = self.latency, self.fp32
                median = self.session.latency_median(self.device.name, self.prep.suite.name)
                metrics = bounded("fp32 baseline", _remote(lambda: baseline.time_fp32(
                    session, fp32, inputs[0], spec, median), "fp32 baseline"), t.upload + t.measure, kill)
                self.result(baseline.CHECK, "pass", metrics=metrics)
        finally:
            session.close()

    def judge(self, outputs: list[list[np.ndarray]], upload_seconds: float) -> None:
        try:
            m = compare(outputs, self.prep.refs, self.prep.steps)
            if self.prep.exact_refs is not None:
                m = with_exact_semantics(m, compare(outputs, self.prep.exact_refs, self.prep.steps))
            if self.prep.optimized_refs is not None:
                m = with_litert_optimized(m, compare(outputs, self.prep.optimized_refs, self.prep.steps))
            if self.prep.reference_note:
                m["reference"] = self.prep.reference_note
        except ValueError as e:
            self.result("correctness", "fail", kind="wrong-answer", reason=str(e))
            return
        m["upload_seconds"] = round(upload_seconds, 3)
        bad = judge(m, self.prep.suite.correctness)
        self.result("correctness", "fail" if bad else "pass", kind="wrong-answer" if bad else None,
                    reason="; ".join(bad), metrics=m)


def _remote(fn: Callable, what: str) -> Callable:
    """Errors raised by the device while running become DeviceFailure."""

    def call():
        try:
            return fn()
        except DeviceFailure:
            raise
        except Exception as e:  # noqa: BLE001 - TVM's RPC errors carry the remote traceback
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            raise DeviceFailure(f"{what} failed: {lines[-1] if lines else type(e).__name__}") from None

    return call


def host_summary() -> dict[str, str]:
    h = host_info()
    return {"cpu": f"{h.cpu_model} ({h.llvm_cpu})",
            "features": " ".join(f for f in INTERESTING if f in h.features)}


def run(pairs: list[tuple[Suite, list[Device]]], opts: RunOptions) -> RunOutcome:
    """Run each suite on its devices inside one embedded farm; returns every result."""
    store = Store(default_db(opts.data_dir))
    owner = opts.run_id is None  # we begin and finish the run unless we joined the caller's
    if opts.resume:
        run_id = opts.resume
        store.reopen_run(run_id)
    elif owner:
        run_id = new_run_id()
        store.begin_run(run_id, opts.command, host_summary(), opts.plan)
    else:
        run_id = opts.run_id
    opts.log_dir = opts.log_dir or opts.data_dir / "logs" / run_id
    session = Session(store, run_id, opts)
    all_devices = list({d.name: d for _, devs in pairs for d in devs}.values())
    status = "interrupted"
    try:
        with Farm(opts.data_dir, opts.log_dir, all_devices) as farm:
            for suite, devices in pairs:
                todo = [d for d in devices if not session.finished(d.name, suite)]
                if len(todo) < len(devices):
                    opts.progress(f"resuming {run_id}: {len(devices) - len(todo)} device(s) of "
                                  f"{suite.name} already done")
                if not todo:
                    continue
                opts.progress(f"preparing {suite.name}: model {suite.model.describe()}, reference outputs "
                              f"from {reference_name(suite.model)}")
                prep = prepare(suite, opts.data_dir)
                for device in todo:
                    DeviceRun(farm, prep, device, session)()
        status = "done"
    except FarmError:
        status = "error"
        raise
    finally:
        if owner:
            store.finish_run(run_id, status)
        store.close()
    if opts.resume:  # the outcome covers the whole run, earlier attempts included
        session.outcome.results = Store(default_db(opts.data_dir)).results(run_id)
    return session.outcome
