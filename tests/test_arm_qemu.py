"""The emulated aarch64 board: sysroot provisioning (shared cache), the `qemu` transport through
the embedded tracker, and its failure paths. Real apt/pip/qemu/TVM throughout; the first run on a
fresh machine builds the sysroot into the shared cache (~30 s), later runs reuse it."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from farm.cli import main
from farm.config.devices import load_devices
from farm.errors import DeviceFailure, DeviceTimeout, FarmError
from farm.provision import arm64
from farm.results.store import Store, default_db
from farm.transports.base import FarmContext
from farm.transports.embedded import Farm
from farm.transports.qemu import QemuTransport

REPO = Path(__file__).resolve().parent.parent
ARM = {"family": "arm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76",
       "mattr": ["+neon", "+dotprod"]}

pytestmark = pytest.mark.skipif(shutil.which(arm64.QEMU) is None,
                                reason=f"needs {arm64.QEMU_PACKAGE} (scripts/bootstrap.sh installs it)")


@pytest.fixture(scope="module")
def sysroot() -> Path:
    """The shared sysroot, provisioned once for all tests (and all later runs)."""
    return arm64.provision().sysroot


def _devices(tmp_path: Path, transport: dict, target: dict = ARM, name: str = "arm") -> Path:
    path = tmp_path / "devices.yaml"
    path.write_text(json.dumps({"devices": [{"name": name, "target": target,
                                             "transport": {"kind": "qemu", **transport}}]}))
    return path


def _farm_processes(data_dir: Path) -> list[int]:
    """Live processes whose output goes into data_dir: every child the farm started logs there."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for fd in ("1", "2"):
            try:
                if os.readlink(proc / "fd" / fd).startswith(str(data_dir)):
                    pids.append(int(proc.name))
                    break
            except OSError:
                continue
    return pids


def _results(data_dir: Path) -> dict[str, object]:
    store = Store(default_db(data_dir))
    try:
        return {r.check: r for r in store.results(store.run(None)["id"])}
    finally:
        store.close()


def test_provision_is_idempotent(sysroot):
    marker = sysroot / arm64.MARKER
    before = marker.stat().st_mtime_ns
    again = arm64.provision()
    assert again == arm64.Provisioned(sysroot, built=False)
    assert marker.stat().st_mtime_ns == before
    assert arm64.python_in(sysroot).is_file()
    info = json.loads(marker.read_text())
    assert info["apache-tvm"] == arm64.runtime_versions()["apache-tvm"]
    assert not list(sysroot.glob("usr/lib/python3/dist-packages/tvm/**/libtvm_compiler.so"))
    assert not list(sysroot.parent.glob(f"{sysroot.name}.tmp-*"))  # no half-built leftovers


def test_concurrent_provision_waits_for_the_lock_and_reuses(tmp_path):
    """A second farm blocks on the lock while one builds, then takes the finished sysroot."""
    target = tmp_path / "sysroots" / "arm64-x"
    target.parent.mkdir()
    outcome: list = []
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # "another process is building"
        waiter = threading.Thread(target=lambda: outcome.append(arm64.provision(target)))
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive() and not outcome  # blocked, not building a second copy
        # the other builder finishes: complete sysroot renamed into place
        arm64.python_in(target).parent.mkdir(parents=True)
        arm64.python_in(target).write_text("")
    waiter.join(10.0)
    assert outcome == [arm64.Provisioned(target, built=False)]


def test_missing_tool_is_one_line_error(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "sysroot.tmp-99999"  # left by a builder that was killed
    (stale / "root").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(FarmError, match=r"'apt-get' is not installed — apt-get install apt"):
        arm64.provision(tmp_path / "sysroot")
    assert not (tmp_path / "sysroot").exists() and not stale.exists()
    assert main(["devices", "emulate", "arm64", "--sysroot", str(tmp_path / "sysroot")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "apt-get install apt" in err


def test_foreign_directory_is_never_overwritten(tmp_path):
    mine = tmp_path / "not-a-sysroot"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(FarmError, match=r"is not empty but has no /usr/bin/python3.11"):
        arm64.provision(mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_availability_names_what_is_missing(tmp_path, monkeypatch):
    registry = load_devices(_devices(tmp_path, {"cpu": "cortex-a99"}))
    ctx = FarmContext(tmp_path, tmp_path / "logs")
    avail = QemuTransport(registry.devices[0], ctx).availability()
    assert not avail.runnable and "no CPU model 'cortex-a99'" in avail.reason and "max" in avail.reason
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    avail = QemuTransport(registry.devices[0], ctx).availability()
    assert not avail.runnable and f"apt-get install {arm64.QEMU_PACKAGE}" in avail.reason


def test_unprovisioned_sysroot_is_built_on_first_use(tmp_path):
    registry = load_devices(_devices(tmp_path, {"sysroot": "not-yet"}))
    t = QemuTransport(registry.devices[0], FarmContext(tmp_path, tmp_path / "logs"))
    assert t.sysroot() == tmp_path / "not-yet"  # relative to devices.yaml
    avail = t.availability()
    assert avail.runnable and "farm devices emulate arm64" in avail.reason


def test_smoke_end_to_end_through_tracker(sysroot, tmp_path):
    data = tmp_path / "farm"
    assert main(["run", "--suite", "smoke", "--device", "arm64-qemu", "--devices",
                 str(REPO / "devices.yaml"), "--data-dir", str(data)]) == 0
    results = _results(data)
    assert results["correctness"].status == "pass", results["correctness"].reason
    assert results["correctness"].metrics["exact"] >= 0.95
    assert results["latency"].status == "pass"
    assert all(r.emulated and r.transport == "qemu" for r in results.values())
    logs = list(data.glob("logs/*/server-arm64-qemu.log"))
    assert len(logs) == 1 and "serving 'arm64-qemu'" in logs[0].read_text()
    assert _farm_processes(data) == []  # server (qemu) and tracker are gone


def _start(devices: Path, data: Path, exc: type[Exception], match: str) -> None:
    """Start the device's transport in an embedded farm, expecting it to fail; nothing may remain."""
    device = load_devices(devices).devices[0]
    with Farm(data, data / "logs", [device]) as farm:
        with pytest.raises(exc, match=match):
            farm.start(device)
        assert farm.transport(device).pids() == []
    assert _farm_processes(data) == []


def test_cpu_model_without_target_instructions_is_refused(sysroot, tmp_path):
    """cortex-a76 has dotprod but no i8mm: running i8mm code there would SIGILL."""
    devices = _devices(tmp_path, {"cpu": "cortex-a76"}, {**ARM, "mattr": ["+neon", "+i8mm"]})
    _start(devices, tmp_path / "farm", DeviceFailure,
           r"qemu CPU model 'cortex-a76' lacks i8mm, which the target of 'arm' uses: set .*cpu: max")


def test_server_that_dies_reports_its_log(sysroot, tmp_path):
    """A sysroot whose python works but has no TVM: the error carries the server's last words."""
    broken = tmp_path / "broken-sysroot"
    for part in ("lib", "usr/bin", "usr/lib/aarch64-linux-gnu", "usr/lib/python3.11"):
        (broken / part).parent.mkdir(parents=True, exist_ok=True)
        (broken / part).symlink_to(sysroot / part)
    _start(_devices(tmp_path, {"sysroot": str(broken)}), tmp_path / "farm", DeviceFailure,
           r"the RPC server for 'arm' exited: .*No module named 'tvm'")


def test_registration_timeout_names_the_log_and_stops_the_server(sysroot, tmp_path, monkeypatch):
    monkeypatch.setattr("farm.transports.qemu.QemuTransport.register_timeout", 0.5)  # import alone takes seconds
    _start(_devices(tmp_path, {}), tmp_path / "farm", DeviceTimeout,
           r"within 0 s \(server log .*server-arm\.log")


def test_sysroot_whose_python_cannot_run_is_a_device_error(tmp_path):
    bad = tmp_path / "bad-sysroot"
    arm64.python_in(bad).parent.mkdir(parents=True)
    arm64.python_in(bad).write_bytes(b"not an ELF file")
    _start(_devices(tmp_path, {"sysroot": str(bad)}), tmp_path / "farm", DeviceFailure,
           r"qemu-aarch64-static -cpu max cannot run .*bad-sysroot/usr/bin/python3.11: .+")
