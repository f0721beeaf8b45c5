"""`farm matrix`: suites × devices from a matrix file, one worker process per device, all results
under one run id in the shared SQLite history.

A matrix file (suites/nightly.yaml):

    name: nightly
    entries:
      - suite: smoke              # suite name (suites/NAME.yaml) or a .yaml path
        devices: [x86, arm64-qemu] # names or tags; default: the suite's own `devices`
        repeat: 50                 # overrides the suite's latency.repeat
    parallel: 2                    # devices run at once (default: all); local devices share the
                                   # host's cores, so their latencies disturb each other
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from farm.config.devices import Device, Registry
from farm.config.schema import Node
from farm.config.suites import Suite, find_suite
from farm.config.yamlsrc import load_yaml
from farm.errors import ConfigError, FarmError
from farm.models.registry import checked_suite
from farm.results.store import CheckResult, Store, default_db, new_run_id


@dataclass(frozen=True)
class Matrix:
    name: str
    file: str
    pairs: tuple[tuple[Suite, tuple[Device, ...]], ...]
    parallel: int | None = None

    def by_device(self) -> dict[str, tuple[Device, list[Suite]]]:
        """device name → (device, its suites in matrix order): one worker each."""
        out: dict[str, tuple[Device, list[Suite]]] = {}
        for suite, devices in self.pairs:
            for d in devices:
                out.setdefault(d.name, (d, []))[1].append(suite)
        return out


def load_matrix(path: str | Path, registry: Registry, suites_dir: Path) -> Matrix:
    """Read and validate a matrix file against the device registry; errors name file:line."""
    src = load_yaml(path)
    root = Node(src, (), src.data, "matrix file")
    name = root.get("name", str, Path(path).stem)
    items = root.get("entries", list, required=True)
    parallel = root.number("parallel", int, None, lo=1)
    root.done()
    if not items:
        raise src.error(("entries",), "the matrix has no entries", "add `- suite: NAME` items")
    pairs = []
    for i, data in enumerate(items):
        node = Node(src, ("entries", i), data, f"matrix entry #{i + 1}")
        suite_name = node.get("suite", str, required=True)
        here = Path(path).resolve().parent  # suites beside the matrix file win
        try:
            suite = checked_suite(find_suite(suite_name, here if (here / f"{suite_name}.yaml").exists()
                                          else suites_dir))
        except ConfigError as e:
            if e.file and e.file != src.file and e.line:  # a problem inside the suite file itself
                raise
            raise node.error("suite", e.what, e.todo) from None
        selectors = node.str_list("devices", list(suite.devices))
        for j, sel in enumerate(selectors):
            if not any(d.matches(sel) for d in registry.devices):
                names = ", ".join(d.name for d in registry.devices)
                raise src.error(("entries", i, "devices", j), f"no device or tag '{sel}' in "
                                f"{registry.file}", f"use one of: {names}")
        repeat = node.number("repeat", int, None, lo=1)
        node.done()
        if repeat is not None:
            suite = replace(suite, latency=replace(suite.latency, repeat=repeat))
        pairs.append((suite, tuple(registry.select(selectors))))
    return Matrix(name, src.file, tuple(pairs), parallel)


@dataclass
class MatrixOutcome:
    run_id: str
    ok: bool
    worker_codes: dict[str, int]


def _worker(run_id: str, device: Device, suites: list[Suite], data_dir: Path) -> None:
    """One device's share of the matrix, in its own process, which exits when the farm does."""
    from farm.platform.procs import exit_with_parent
    from farm.run.runner import RunOptions, run

    exit_with_parent()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # see farm.cli.main
    opts = RunOptions(data_dir=data_dir, run_id=run_id,
                      log_dir=data_dir / "logs" / run_id / device.name)
    try:
        outcome = run([(s, [device]) for s in suites], opts)
    except FarmError as e:
        print(f"farm: [{device.name}] {e.format()}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0 if outcome.ok else 1)


def run_matrix(matrix: Matrix, data_dir: Path, command: str = "") -> MatrixOutcome:
    """Run every device's suites in parallel worker processes under one run id."""
    from farm.models.registry import build_builtin
    from farm.run.runner import host_summary

    for suite, _ in matrix.pairs:  # build shared model files once, before workers race for them
        if suite.model.builtin:
            build_builtin(suite.model.builtin, data_dir / "models")
    store = Store(default_db(data_dir))
    run_id = new_run_id()
    store.begin_run(run_id, command, host_summary())
    ctx = multiprocessing.get_context("spawn")  # no forked copies of TVM's threads
    procs = {name: ctx.Process(target=_worker, args=(run_id, dev, suites, data_dir),
                               name=f"farm-{name}", daemon=True)
             for name, (dev, suites) in matrix.by_device().items()}
    status = "interrupted"
    try:
        waiting, running = list(procs.values()), []
        while waiting or running:
            while waiting and len(running) < (matrix.parallel or len(procs)):
                running.append(waiting.pop(0))
                running[-1].start()
            multiprocessing.connection.wait([p.sentinel for p in running])
            running = [p for p in running if p.is_alive()]
        status = "done"
    finally:
        for p in procs.values():
            if p.pid is not None and p.is_alive():
                p.terminate()  # SIGTERM: the worker's Farm stops its servers
                p.join(10)
        codes = {name: -1 if p.exitcode is None else p.exitcode for name, p in procs.items()}
        _record_lost(store, run_id, matrix, codes)
        crashed = status == "done" and any(c not in (0, 1) for c in codes.values())
        store.finish_run(run_id, "error" if crashed else status)
        results = store.results(run_id)
        store.close()
    ok = all(c == 0 for c in codes.values()) and all(r.status in ("pass", "skipped") for r in results)
    return MatrixOutcome(run_id, ok, codes)


def _record_lost(store: Store, run_id: str, matrix: Matrix, codes: dict[str, int]) -> None:
    """A worker that died before recording a check leaves an error row, never a silent gap."""
    have = {(r.device, r.suite, r.check) for r in store.results(run_id)}
    for suite, devices in matrix.pairs:
        checks = suite.checks()
        for d in devices:
            code = codes.get(d.name, -1)
            if code == 0:
                continue
            for check in checks:
                if (d.name, suite.name, check) not in have:
                    store.record(run_id, CheckResult(
                        device=d.name, suite=suite.name, check=check, status="error", kind="worker",
                        reason=f"the device's worker did not record this check (exit code {code})",
                        target=d.target.describe(), transport=d.transport.describe(),
                        emulated=d.emulated))
