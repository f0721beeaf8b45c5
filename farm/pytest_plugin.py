"""pytest plugin (entry point pytest11): farm suites as tests, one per (device, suite, check).

    pytest --farm-devices devices.yaml --farm-suite smoke -n 2 --junitxml farm.xml

With pytest-xdist the plugin's scheduler sends all tests of a device to one worker, so each device
is driven by one worker process (like TVM's Hexagon pytest plugin); the items' node ids are
farm/DEVICE/SUITE::CHECK. All workers record into one run of the results store. A skipped check
carries its reason (device unavailable, target unsupported on this host); a failed one carries the
farm's reason, not a Python traceback.
Without --farm-suite the plugin only adds its options: it collects nothing and changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the plugin loads in every pytest run: farm itself only once it is enabled
    from farm.results.states import RunState

_KEY = "farm_session"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("farm", "farm: run suites on devices as tests")
    g.addoption("--farm-suite", action="append", default=[], metavar="NAME",
                help="suite name or file to run as tests (repeatable); enables the plugin")
    g.addoption("--farm-devices", type=Path, default=None, metavar="FILE",
                help="device registry (default: ./devices.yaml or the shipped one)")
    g.addoption("--farm-device", action="append", default=[], metavar="SEL",
                help="only these device names or tags (repeatable)")
    g.addoption("--farm-data-dir", type=Path, default=None, metavar="DIR",
                help="cache, logs and results database (default: $FARM_HOME or .farm)")


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("farm_suite", default=None))


class CheckFailed(Exception):
    """A farm check that failed or errored; its message is the farm's reason."""


class FarmSession:
    """This process's view: the engine's plan, and each pair's results once it has run."""

    def __init__(self, config: pytest.Config):
        from farm.config.devices import load_devices
        from farm.config.paths import default_path
        from farm.run.engine import pick

        self.data_dir = config.getoption("farm_data_dir") or Path(os.environ.get("FARM_HOME", ".farm"))
        registry = load_devices(config.getoption("farm_devices") or default_path("devices.yaml"))
        self.plan = pick(registry, config.getoption("farm_suite"), config.getoption("farm_device"))
        self.run_id: str | None = None
        # (suite, device) → check → CheckResult, or the farm error that stopped the pair
        self.results: dict[tuple[str, str], dict | str] = {}

    def begin(self, command: str) -> None:
        from farm.results.store import Store, default_db
        from farm.run.engine import begin

        with Store(default_db(self.data_dir)) as store:
            self.run_id = begin(store, command, self.plan)

    def finish(self, status: RunState) -> None:
        from farm.results.store import Store, default_db

        with Store(default_db(self.data_dir)) as store:
            store.finish_run(self.run_id, status)

    def outcome(self, suite, device) -> dict | str:
        """check name → CheckResult of this pair (or the farm error that stopped it), running the
        pair on first use."""
        from farm.errors import FarmError
        from farm.run.engine import run_share

        key = (suite.name, device.name)
        if key not in self.results:
            try:
                outcome = run_share(self.run_id, device, [suite], self.data_dir, progress=lambda msg: None)
                self.results[key] = {r.check: r for r in outcome.results}
            except FarmError as e:
                self.results[key] = e.format()
        return self.results[key]


class FarmItem(pytest.Item):
    def __init__(self, *, suite, device, check: str, **kw):
        super().__init__(**kw)
        self.suite, self.device, self.check = suite, device, check
        self.extra_keyword_matches.update({suite.name, device.name})  # -k host, -k smoke

    def runtest(self) -> None:
        session: FarmSession = self.config.stash[_STASH]
        from farm.results.states import Status

        results = session.outcome(self.suite, self.device)
        if isinstance(results, str):
            raise CheckFailed(results)
        r = results.get(self.check)
        self.user_properties += [("device", self.device.name), ("target", self.device.target.describe()),
                                 ("emulated", self.device.emulated), ("run_id", session.run_id),
                                 ("worker", os.environ.get("PYTEST_XDIST_WORKER", "main"))]
        if r is None:
            raise CheckFailed(f"the runner recorded no '{self.check}' result")
        for key in ("median", "p90", "cov", "max_lsb", "exact"):
            if r.metrics.get(key) is not None:
                self.user_properties.append((key, r.metrics[key]))
        if isinstance(r.metrics.get("lowering"), dict):
            from farm.report.compare import fallbacks

            self.user_properties.append(("int8_fallbacks", len(fallbacks(r.metrics["lowering"]))))
        label = f"{r.kind}: {r.reason}" if r.kind else r.reason
        if r.status == Status.SKIPPED:
            pytest.skip(label)
        if r.status != Status.PASS:
            from farm.report.logs import log_tail

            tail = log_tail(session.data_dir, session.run_id, self.device.name)
            raise CheckFailed(f"{r.status} ({label})" + (" [emulated device]" if r.emulated else "")
                              + (f"\n{tail}" if tail else ""))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, CheckFailed):
            return f"{self.device.name} {self.suite.name} {self.check}: {excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"farm {self.suite.name} on {self.device.name}: {self.check}"


_STASH = pytest.StashKey[FarmSession]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not _enabled(config):
        return
    from farm.errors import FarmError

    try:
        session = FarmSession(config)
    except FarmError as e:
        raise pytest.UsageError(f"farm: {e.format()}") from None
    config.stash[_STASH] = session
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:  # the controller, or pytest without xdist: owns the run row
        session.begin("pytest " + " ".join(config.invocation_params.args))
    else:
        session.run_id = workerinput["farm_run_id"]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist controller → each worker: record into the controller's run."""
    if _enabled(node.config):
        node.workerinput["farm_run_id"] = node.config.stash[_STASH].run_id


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Whatever --dist says: every farm test of one device goes to the same worker."""
    if not _enabled(config):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class DeviceScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid.split("/")[1] if nodeid.startswith("farm/") else super()._split_scope(nodeid)

    return DeviceScheduling(config, log)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    farm = session.config.stash.get(_STASH, None)
    if farm is not None and getattr(session.config, "workerinput", None) is None and farm.run_id:
        from farm.results.states import RunState

        farm.finish(RunState.INTERRUPTED if exitstatus == pytest.ExitCode.INTERRUPTED else RunState.DONE)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With --farm-suite the session's tests are the farm checks, not the project's test files."""
    return True if _enabled(config) else None


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselection sees the items
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    if not _enabled(config):
        return

    for suite, devices in config.stash[_STASH].plan.pairs:
        for device in devices:
            for check in suite.checks():
                items.append(FarmItem.from_parent(  # xdist sends names as plain str, not Check
                    session, name=str(check), nodeid=f"farm/{device.name}/{suite.name}::{check}",
                    suite=suite, device=device, check=check))
