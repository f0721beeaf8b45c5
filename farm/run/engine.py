"""The run engine: how every run happens, whichever face asked for it (`farm run`, `farm matrix`,
the pytest plugin). A Plan of suite × device pairs (chosen by `pick`, the one place that applies
the fallbacks) → the run's row begun, reopened (--resume) or joined → each device's checks, in
this process or in one worker process per device → every result recorded → the row finished."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from farm.config.devices import Device, Registry, load_devices
from farm.config.paths import default_path
from farm.config.suites import InputSpec, ModelSpec, Suite, find_suite
from farm.errors import ConfigError, FarmError
from farm.models.registry import build_builtin, checked_suite, reference_name
from farm.platform.host import INTERESTING, host_info
from farm.platform.procs import exit_with_parent
from farm.platform.targets import target_dict
from farm.results.states import Kind, RunState, Status
from farm.results.store import CheckResult, Store, default_db, new_run_id
from farm.run.runner import DeviceRun, Progress, RunOptions, Session, prepare, stderr_progress
from farm.transports.embedded import Farm

Pair = tuple[Suite, tuple[Device, ...]]


@dataclass(frozen=True)
class Plan:
    """What a run does: its suite × device pairs, in order, and how they are run."""

    pairs: tuple[Pair, ...]
    asked: dict = field(default_factory=dict)  # what was asked, stored for --resume
    resume: str | None = None  # continue this run id instead of starting a new one
    processes: bool = False  # one worker process per device (farm matrix), not all in this one
    parallel: int | None = None  # worker processes at once (default: all)
    name: str = ""

    @classmethod
    def of(cls, pairs: Iterable[tuple[Suite, Iterable[Device]]], **kw) -> Plan:
        return cls(tuple((suite, tuple(devices)) for suite, devices in pairs), **kw)

    def devices(self) -> list[Device]:
        return list({d.name: d for _, devices in self.pairs for d in devices}.values())

    def by_device(self) -> dict[str, tuple[Device, list[Suite]]]:
        """device name → (device, its suites in plan order): one worker each."""
        out: dict[str, tuple[Device, list[Suite]]] = {}
        for suite, devices in self.pairs:
            for d in devices:
                out.setdefault(d.name, (d, []))[1].append(suite)
        return out


@dataclass
class RunOutcome:
    run_id: str
    results: list[CheckResult] = field(default_factory=list)
    worker_codes: dict[str, int] = field(default_factory=dict)  # device → its worker process's exit code

    @property
    def ok(self) -> bool:
        """Every check passed or was skipped, and every worker process ran to its end."""
        return all(c == 0 for c in self.worker_codes.values()) and all(r.status.ok for r in self.results)


def pick(registry: Registry, suites: Sequence[str] = (), devices: Sequence[str] = (),
         model: Path | None = None, suites_dir: Path | None = None, inputs: Sequence[Path] = ()) -> Plan:
    """The pairs of a plan: each suite (a name in suites_dir, default suites/, or a .yaml path; a
    model file runs with the default checks) on its own `devices:`. Device selectors (names or
    tags) narrow those; a suite none of whose devices is selected runs on the selected ones, as
    an explicit choice wins. Every device's target is checked before any work starts."""
    paths = [find_suite(s, suites_dir or default_path("suites")) for s in suites]
    chosen = [checked_suite(p) for p in paths]
    if model:
        if not model.exists():
            raise ConfigError(f"model file {model} does not exist", "check the path")
        for f in inputs:
            if not f.exists():
                raise ConfigError(f"input file {f} does not exist", "check the path given to --inputs")
        chosen.append(Suite(name=model.stem, file=str(model), model=ModelSpec(path=model.resolve()),
                            inputs=InputSpec(files=tuple(f.resolve() for f in inputs))))
    elif inputs:
        raise ConfigError("--inputs goes with --model", "give real inputs of a suite as `inputs: {files: …}`")
    if not chosen:
        raise ConfigError("nothing to run", "give --suite NAME or --model FILE.onnx")
    pairs = []
    for suite in chosen:
        own = registry.select(list(suite.devices))
        if devices:
            wanted = registry.select(list(devices))
            names = {d.name for d in wanted}
            own = [d for d in own if d.name in names] or wanted
        for d in own:  # a target LLVM cannot take is a config error before any work starts
            target_dict(d)
        pairs.append((suite, own))
    asked = {"suite": [str(p.resolve()) for p in paths], "model": str(model.resolve()) if model else None,
             "inputs": [str(f.resolve()) for f in inputs],
             "device": list(devices), "devices": str(Path(registry.file).resolve())}
    return Plan.of(pairs, asked=asked)


def resume_plan(row: dict, devices: Path) -> Plan:
    """The plan of an interrupted run (its row in the store) picked again from what was asked, to
    continue under the same id; `devices` is the registry of runs that did not record theirs."""
    if row["status"] == RunState.DONE:
        raise FarmError(f"run {row['id']} is already complete", "start a new run instead")
    asked = json.loads(row["plan"] or "{}")
    model = Path(asked["model"]) if asked.get("model") else None
    plan = pick(load_devices(Path(asked.get("devices", devices))), asked.get("suite", []),
                asked.get("device", []), model, inputs=[Path(f) for f in asked.get("inputs", [])])
    return replace(plan, resume=row["id"])


def begin(store: Store, command: str, plan: Plan) -> str:
    """The run's row, reopened when the plan resumes a run, else a new one; returns its id."""
    if plan.resume:
        store.reopen_run(plan.resume)
        return plan.resume
    run_id = new_run_id()
    store.begin_run(run_id, command, _host_summary(), plan.asked)
    return run_id


def run(plan: Plan | Iterable[tuple[Suite, Iterable[Device]]], opts: RunOptions) -> RunOutcome:
    """Run a plan (or bare pairs): begin its run, or join opts.run_id, whose owner finishes it;
    run every device's checks, recording each result; finish the run."""
    plan = plan if isinstance(plan, Plan) else Plan.of(plan)
    if plan.processes:  # shared model files built once, before the workers race for them
        for suite, _ in plan.pairs:
            if suite.model.builtin:
                build_builtin(suite.model.builtin, opts.data_dir / "models")
    with Store(default_db(opts.data_dir)) as store:
        run_id = opts.run_id or begin(store, opts.command, plan)
        status = RunState.INTERRUPTED
        try:
            outcome = (_in_workers if plan.processes else _in_process)(store, run_id, plan, opts)
            crashed = any(c not in (0, 1) for c in outcome.worker_codes.values())
            status = RunState.ERROR if crashed else RunState.DONE
        except FarmError:
            status = RunState.ERROR
            raise
        finally:
            if opts.run_id is None:
                store.finish_run(run_id, status)
    return outcome


def run_share(run_id: str, device: Device, suites: Sequence[Suite], data_dir: Path,
              progress: Progress = stderr_progress) -> RunOutcome:
    """One device's share of a run that another process began and finishes (a matrix worker, a
    pytest worker); its logs go to a folder of their own, as the shares run at once."""
    opts = RunOptions(data_dir=data_dir, progress=progress, run_id=run_id,
                      log_dir=data_dir / "logs" / run_id / device.name)
    return run(Plan.of((suite, [device]) for suite in suites), opts)


def _in_process(store: Store, run_id: str, plan: Plan, opts: RunOptions) -> RunOutcome:
    """Each suite on its devices inside one embedded farm, skipping pairs a resumed run finished."""
    opts = replace(opts, log_dir=opts.log_dir or opts.data_dir / "logs" / run_id)
    session = Session(store, run_id, opts, resumed=plan.resume is not None)
    with Farm(opts.data_dir, opts.log_dir, plan.devices()) as farm:
        for suite, devices in plan.pairs:
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
    # a resumed run's outcome covers the whole run, earlier attempts included
    return RunOutcome(run_id, store.results(run_id) if plan.resume else session.results)


def _in_workers(store: Store, run_id: str, plan: Plan, opts: RunOptions) -> RunOutcome:
    """One worker process per device, `plan.parallel` at once, each running its share."""
    ctx = multiprocessing.get_context("spawn")  # no forked copies of TVM's threads
    procs = {name: ctx.Process(target=_worker, args=(run_id, device, suites, opts.data_dir),
                               name=f"farm-{name}", daemon=True)
             for name, (device, suites) in plan.by_device().items()}
    try:
        waiting, running = list(procs.values()), []
        while waiting or running:
            while waiting and len(running) < (plan.parallel or len(procs)):
                running.append(waiting.pop(0))
                running[-1].start()
            multiprocessing.connection.wait([p.sentinel for p in running])
            running = [p for p in running if p.is_alive()]
    finally:
        for p in procs.values():
            if p.pid is not None and p.is_alive():
                p.terminate()  # SIGTERM: the worker's Farm stops its servers
                p.join(10)
        codes = {name: -1 if p.exitcode is None else p.exitcode for name, p in procs.items()}
        _record_lost(store, run_id, plan, codes)
    return RunOutcome(run_id, store.results(run_id), codes)


def _worker(run_id: str, device: Device, suites: list[Suite], data_dir: Path) -> None:
    """A device's worker process, which exits when the farm does: 0 all ok, 1 a check failed,
    2 a farm error, 130 interrupted."""
    exit_with_parent()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # see farm.cli.main
    try:
        outcome = run_share(run_id, device, suites, data_dir)
    except FarmError as e:
        print(f"farm: [{device.name}] {e.format()}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0 if outcome.ok else 1)


def _record_lost(store: Store, run_id: str, plan: Plan, codes: dict[str, int]) -> None:
    """A worker that died before recording a check leaves an error row, never a silent gap."""
    have = {(r.device, r.suite, r.check) for r in store.results(run_id)}
    for suite, devices in plan.pairs:
        for d in devices:
            code = codes.get(d.name, -1)
            if code == 0:
                continue
            for check in suite.checks():
                if (d.name, suite.name, check) not in have:
                    store.record(run_id, CheckResult.of(
                        d, suite.name, check, Status.ERROR, kind=Kind.WORKER,
                        reason=f"the device's worker did not record this check (exit code {code})"))


def _host_summary() -> dict[str, str]:
    h = host_info()
    return {"cpu": f"{h.cpu_model} ({h.llvm_cpu})",
            "features": " ".join(f for f in INTERESTING if f in h.features)}
