"""All checks of one suite on one device: compile → bring up → correctness → latency. Every
outcome is data (a CheckResult with a kind), committed to the store as soon as it is known; a
failing device is retried, then quarantined for the rest of the run. farm.run.engine drives it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from farm.compile.build import Artifact, check_importable
from farm.compile.worker import compile_isolated
from farm.config.devices import Device
from farm.config.suites import Check, Suite, Timeouts
from farm.errors import DeviceFailure, FarmError, NoBaseline, error_line
from farm.models.exact_reference import exact_outputs, with_exact_semantics
from farm.models.fp32 import fp32_model
from farm.models.input_files import input_sets
from farm.models.original import OriginalModelRun, original_model_run
from farm.models.reference import model_inputs, output_steps, reference_outputs
from farm.models.registry import ModelFiles, at_input_shapes, build_builtin, load_onnx
from farm.models.tflite import is_tflite, litert_reference, with_litert_optimized
from farm.results.states import Health, Kind, Status
from farm.results.store import CheckResult, Store
from farm.run import baseline, deadlines
from farm.run.metrics import LatencyStats, compare, judge, mismatch, noise_floor, vs_original
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
    # join a run begun by the caller (farm matrix / pytest workers), who also finishes it
    run_id: str | None = None
    log_dir: Path | None = None  # default: <data_dir>/logs/<run_id>


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
    expected: list[list[np.ndarray]] | None = None  # outputs the input files came with (test_data_set)
    original: OriginalModelRun | None = None  # QOperator: ORT on the user's model and on farm's form
    floor: dict | None = None  # ORT's own distance from the exact semantics, where it misses the thresholds


def prepare(suite: Suite, data_dir: Path) -> PreparedSuite:
    if suite.model.builtin:
        model = build_builtin(suite.model.builtin, data_dir / "models")
    else:
        path = suite.model.path
        model = ModelFiles(path.stem, path)
    if is_tflite(model.path):  # reference: LiteRT's reference kernels
        ref = litert_reference(model.path, suite.inputs, data_dir / "logs" / f"litert-{model.name}.log")
        return PreparedSuite(suite, model, ref.feeds, ref.refs, ref.steps, optimized_refs=ref.optimized,
                             reference_note=ref.note, expected=ref.expected)
    model, proto = at_input_shapes(model, load_onnx(model.path), suite.inputs, data_dir / "models")
    check_importable(proto, model.path)
    sets = input_sets(model_inputs(proto), suite.inputs)
    refs, note = reference_outputs(model.path, sets.feeds)
    steps, exact = output_steps(proto), exact_outputs(proto, sets.feeds)
    floor = None if exact is None else \
        noise_floor(compare(refs, exact, steps, suite.correctness.max_lsb), suite.correctness)
    return PreparedSuite(suite, model, sets.feeds, refs, steps, exact, reference_note=note, expected=sets.expected,
                         original=original_model_run(proto, model.path.name, sets.feeds), floor=floor)


class Session:
    """One run's bookkeeping in this process: records results, remembers quarantined devices."""

    def __init__(self, store: Store, run_id: str, opts: RunOptions, resumed: bool):
        self.store, self.run_id, self.opts, self.resumed = store, run_id, opts, resumed
        self.results: list[CheckResult] = []
        self.quarantined: dict[str, str] = {}

    def record(self, r: CheckResult) -> CheckResult:
        self.store.record(self.run_id, r)
        self.results.append(r)
        detail = f" ({r.kind}: {r.reason})" if r.reason else ""
        self.opts.progress(f"[{r.device}] {r.suite} {r.check}: {r.status}{detail}")
        return r

    def latency_median(self, device: str, suite: str) -> float | None:
        for r in reversed(self.results):
            if (r.device, r.suite, r.check, r.status) == (device, suite, Check.LATENCY, Status.PASS):
                return r.metrics["median"]
        return None

    def earlier(self, device: str, suite: str) -> dict[str, CheckResult]:
        """Checks of the pair that an earlier attempt of this run (--resume) recorded, errors
        excluded: those are not run again."""
        if not self.resumed:
            return {}
        return {r.check: r for r in self.store.results(self.run_id)
                if r.device == device and r.suite == suite and r.status != Status.ERROR}

    def recorded(self, device: str, suite: str) -> set[str]:
        return set(self.earlier(device, suite))

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
        # compile is recorded on its own, before the device is brought up
        self.checks = [c for c in prep.suite.checks() if c != Check.COMPILE]
        self.fp32: Artifact | None = None
        # checks an earlier attempt of a resumed run finished; compile is always redone, as the
        # artifact is needed (the cache makes it cheap), but its row is kept when it passed then
        self.done: set[str] = session.recorded(device.name, prep.suite.name) - {Check.COMPILE}

    def result(self, check: Check, status: Status, **kw) -> CheckResult:
        self.done.add(check)
        return self.session.record(CheckResult.of(self.device, self.prep.suite.name, check, status, **kw))

    def fail_pending(self, status: Status, kind: str, reason: str) -> None:
        for check in self.checks:
            if check not in self.done:
                self.result(check, status, kind=kind, reason=reason)

    def __call__(self) -> None:
        name = self.device.name
        if name in self.session.quarantined:
            reason = self.session.quarantined[name]
            self.result(Check.COMPILE, Status.SKIPPED, kind=Kind.QUARANTINED, reason=reason)
            self.fail_pending(Status.ERROR, Kind.QUARANTINED, reason)
            return
        avail = self.farm.transport(self.device).availability()
        art = self.compile()
        if art is None:
            return
        if not avail.runnable and not avail.outage:  # cannot run here: skipped, with the reason
            self.fail_pending(Status.SKIPPED, Kind.UNAVAILABLE, avail.reason)
            self.session.store.set_health(name, self.session.run_id, Health.UNAVAILABLE, avail.reason)
            return
        if Check.LATENCY_FP32 in self.checks and Check.LATENCY_FP32 not in self.done:
            self.prepare_fp32(art)
        self.attempts(art)

    def prepare_fp32(self, art: Artifact) -> None:
        """Compile the fp32 baseline, or record why there is none."""
        if self.device.emulated and not self.prep.suite.fp32_baseline_emulated:
            self.result(Check.LATENCY_FP32, Status.SKIPPED, kind=Kind.UNAVAILABLE,
                        reason="no fp32 baseline on emulated devices (suite: fp32_baseline_emulated)")
        else:
            self.fp32 = self.compile_fp32()
        if self.fp32 is not None and self.fp32.key == art.key:  # same artifact: nothing to compare
            self.fp32 = None
            self.result(Check.LATENCY_FP32, Status.SKIPPED, kind=Kind.UNAVAILABLE,
                        reason="the model has no quantized operators: it computes in float already, "
                               "so it is its own fp32 baseline")

    def attempts(self, art: Artifact) -> None:
        """The device's checks, retried after a device failure, then quarantined."""
        name, progress = self.device.name, self.session.opts.progress
        causes: list[str] = []  # each attempt's: the first (a lost link) is often the telling one
        for attempt in range(self.device.retries + 1):
            try:
                self.attempt(art)
                self.session.store.set_health(name, self.session.run_id, Health.OK)
                return
            except DeviceFailure as e:
                causes.append(e.format())
                self.farm.stop(self.device)
                if attempt < self.device.retries and e.retryable:
                    wait = self.device.retry_backoff * 2 ** attempt
                    progress(f"[{name}] {e}; retrying in {wait:g} s ({attempt + 1}/{self.device.retries})")
                    time.sleep(wait)
                    continue
                history = causes[0] if len(set(causes)) == 1 else \
                    "; ".join(f"attempt {i + 1}: {c}" for i, c in enumerate(causes))
                reason = f"{history} (after {attempt + 1} attempts; quarantined for the rest of the run)"
                self.session.quarantined[name] = reason
                self.session.store.set_health(name, self.session.run_id, Health.QUARANTINED, reason)
                self.fail_pending(Status.ERROR, e.kind, reason)

    def _compile(self, path: Path, what: str) -> Artifact:
        opts = self.session.opts
        opts.progress(f"[{self.device.name}] compiling {what} for {self.device.target.describe()}")
        log = opts.log_dir / f"compile-{self.device.name}-{path.stem}.log"
        return compile_isolated(path, self.device, opts.data_dir / "cache", self.timeouts.compile, log)

    def compile(self) -> Artifact | None:
        try:
            art = self._compile(self.prep.model.path, self.prep.model.name)
        except FarmError as e:
            self.result(Check.COMPILE, Status.ERROR, kind=Kind.COMPILE, reason=e.format())
            self.fail_pending(Status.SKIPPED, Kind.COMPILE, "not compiled")
            return None
        before = self.session.earlier(self.device.name, self.prep.suite.name).get(Check.COMPILE)
        if before is not None and before.metrics.get("artifact") == art.key:
            return art  # a resumed run: this artifact's compile is recorded already
        self.result(Check.COMPILE, Status.PASS, metrics={
            "compile_seconds": round(art.compile_seconds, 3), "cached": art.cached,
            "artifact": art.key, "target": art.target, "lowering": art.meta.get("lowering")})
        return art

    def compile_fp32(self) -> Artifact | None:
        """The float32 network for the baseline; a failure is recorded, not raised."""
        try:
            path = fp32_model(self.prep.model, self.session.opts.data_dir / "models")
            return self._compile(path, f"the fp32 baseline of {self.prep.model.name}")
        except NoBaseline as e:
            self.result(Check.LATENCY_FP32, Status.SKIPPED, kind=Kind.UNAVAILABLE, reason=e.what)
            return None
        except FarmError as e:
            self.result(Check.LATENCY_FP32, Status.ERROR, kind=Kind.COMPILE, reason=e.format())
            return None

    def attempt(self, art: Artifact) -> None:
        t, transport = self.timeouts, self.farm.transport(self.device)
        self.call("bring-up", lambda: self.farm.start(self.device), t.open)
        # the device ends the session by itself after its bounds: a board is never held forever
        limit = t.session(len(self.prep.feeds), self.fp32 is not None)
        session = self.call("opening a session", lambda: transport.open(t.open, limit), t.open)
        try:
            self.session.opts.progress(f"[{self.device.name}] uploading {art.lib.name} "
                                       f"({art.lib.stat().st_size / 1e6:.1f} MB)")
            start = time.perf_counter()
            model = self.call("upload", lambda: session.load(art.lib), t.upload)
            upload_seconds = time.perf_counter() - start
            inputs = [list(feed.values()) for feed in self.prep.feeds]
            one = None
            if Check.CORRECTNESS not in self.done:
                outputs, one = self.infer(model, inputs)
                self.judge(outputs, upload_seconds)
            if Check.LATENCY in self.checks and Check.LATENCY not in self.done:
                one = one or self.infer(model, inputs[:1])[1]
                samples = self.measure(model, inputs[0], one, "latency measurement")
                stats = LatencyStats.of(samples)
                self.result(Check.LATENCY, Status.PASS, metrics={**stats.__dict__, "samples": samples,
                                                         "threads": self.device.threads,
                                                         "unit": model.time_unit, **model.time_metrics()})
            if self.fp32 is not None and Check.LATENCY_FP32 not in self.done:
                self.time_fp32(session, inputs[0])
        finally:
            session.close()

    def call(self, what: str, fn: Callable, deadline: float | deadlines.Deadline):
        """A device call, bounded by the deadline and ended early when the link is lost; a hung
        call stops the device's transport."""
        transport = self.farm.transport(self.device)
        d = deadline if isinstance(deadline, deadlines.Deadline) else deadlines.Deadline(deadline, "")
        return bounded(what, fn, d.seconds, lambda: self.farm.stop(self.device), transport.link_lost,
                       d.basis)

    def infer(self, model, inputs: list[list[np.ndarray]]) -> tuple[list[list[np.ndarray]], float]:
        """One inference per input set, each after the first bounded by what the one before took;
        (outputs, the median inference's seconds)."""
        outputs, took = [], []
        for x in inputs:
            start = time.perf_counter()
            deadline = deadlines.inference(took[-1] if took else None, self.timeouts.run)
            outputs.append(self.call("inference", _remote(lambda x=x: model.run(x), "inference"), deadline))
            took.append(time.perf_counter() - start)
        return outputs, float(np.median(took))

    def measure(self, model, inputs: list[np.ndarray], one: float, what: str) -> list[float]:
        spec = self.latency
        return self.call(what, _remote(lambda: model.time(inputs, spec), what),
                         deadlines.measurement(one, spec, self.timeouts.measure, model.timed_calls(spec)))

    def time_fp32(self, session, inputs: list[np.ndarray]) -> None:
        fp32 = self.fp32
        model = self.call("fp32 baseline upload", lambda: session.load(fp32.lib), self.timeouts.upload)
        one = self.infer(model, [inputs])[1]
        samples = self.measure(model, inputs, one, "fp32 baseline")
        median = self.session.latency_median(self.device.name, self.prep.suite.name)
        self.result(Check.LATENCY_FP32, Status.PASS, metrics=baseline.fp32_metrics(
            samples, fp32, model.time_unit, median))

    def judge(self, outputs: list[list[np.ndarray]], upload_seconds: float) -> None:
        try:
            tolerance = self.prep.suite.correctness.max_lsb
            m = compare(outputs, self.prep.refs, self.prep.steps, tolerance)
            if self.prep.exact_refs is not None:
                m = with_exact_semantics(m, compare(outputs, self.prep.exact_refs, self.prep.steps, tolerance))
            if self.prep.floor is not None:
                m["noise_floor"] = self.prep.floor
            if self.prep.optimized_refs is not None:
                m = with_litert_optimized(m, compare(outputs, self.prep.optimized_refs, self.prep.steps))
            if self.prep.reference_note:
                m["reference"] = self.prep.reference_note
        except ValueError as e:
            self.result(Check.CORRECTNESS, Status.FAIL, kind=Kind.WRONG_ANSWER, reason=str(e))
            return
        m["upload_seconds"] = round(upload_seconds, 3)
        bad = judge(m, self.prep.suite.correctness, self.prep.floor)
        if self.prep.original is not None:
            run = self.prep.original
            m["ort_original"], off = vs_original(outputs, run.original, run.form, self.prep.refs, self.prep.steps,
                                                 self.prep.suite.correctness)
            bad += off
        if self.prep.expected is not None:
            off = mismatch(outputs, self.prep.expected)
            m["expected_outputs"] = "differ" if off else "equal"
            bad += [f"outputs differ from the expected ones the input files came with: {off}"] if off else []
        self.result(Check.CORRECTNESS, Status.FAIL if bad else Status.PASS,
                    kind=Kind.WRONG_ANSWER if bad else None, reason="; ".join(bad), metrics=m)


def _remote(fn: Callable, what: str) -> Callable:
    """Errors raised by the device while running become DeviceFailure."""

    def call():
        try:
            return fn()
        except DeviceFailure:
            raise
        except Exception as e:  # noqa: BLE001 - TVM's RPC errors carry the remote traceback
            raise DeviceFailure(f"{what} failed: {error_line(e)}") from None

    return call
