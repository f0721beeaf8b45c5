"""Fault injection against real processes on loopback: what the user sees, what the database
holds (nothing lost, nothing duplicated, failures marked with a reason) and no process left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from farm.config.devices import load_devices
from farm.config.suites import load_suite
from farm.results.store import Store
from farm.run.engine import run
from farm.run.runner import RunOptions
from tests.conftest import HOST_ONLY, REPO

FAST = """
model: {builtin: tinyconv}
latency: {repeat: 30, number: 5}
"""


def _children_running(module: str) -> list[psutil.Process]:
    found = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if module in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:  # exited (or a zombie) while we looked
            pass
    return found


def _servers() -> list[psutil.Process]:
    return _children_running("tvm.exec.rpc_server")


def _tracker() -> psutil.Process:
    return _children_running("tvm.exec.rpc_tracker")[0]


def _run(write, data, suite_text, devices_text, on_message):
    registry = load_devices(write("devices.yaml", devices_text))
    suite = load_suite(write("suite.yaml", suite_text))
    messages = []

    def progress(msg: str) -> None:
        messages.append(msg)
        on_message(msg)

    outcome = run([(suite, registry.devices)], RunOptions(data_dir=data, progress=progress))
    store = Store(data / "results.db")
    rows = store.db.execute("SELECT device, suite, check_name, COUNT(*) AS n FROM results WHERE run_id = ? "
                            "GROUP BY device, suite, check_name", (outcome.run_id,)).fetchall()
    assert all(r["n"] == 1 for r in rows), "a check was recorded twice"
    results = {(r.device, r.check): r for r in store.results(outcome.run_id)}
    assert store.run(outcome.run_id)["status"] == "done"
    store.close()
    return outcome, results, messages


def _once(action):
    fired = []

    def hook(msg: str) -> None:
        if "correctness: pass" in msg and not fired:
            fired.append(msg)
            action()

    return hook


def test_server_killed_mid_suite_is_retried(write, shared_data, no_orphans):
    def kill_server():
        for p in _servers():
            os.killpg(os.getpgid(p.pid), signal.SIGKILL)

    outcome, results, messages = _run(write, shared_data, FAST, HOST_ONLY, _once(kill_server))
    assert any("retrying" in m for m in messages), messages
    assert results[("host", "correctness")].status == "pass"
    assert results[("host", "latency")].status == "pass"  # the retry brought a new server up


def test_server_killed_without_retries_is_quarantined(write, shared_data, no_orphans):
    def kill_server():
        for p in _servers():
            os.killpg(os.getpgid(p.pid), signal.SIGKILL)

    devices = HOST_ONLY + "    retries: 0\n"
    outcome, results, _ = _run(write, shared_data, FAST, devices, _once(kill_server))
    lat = results[("host", "latency")]
    assert lat.status == "error" and lat.kind == "device" and "quarantined" in lat.reason
    assert results[("host", "correctness")].status == "pass"  # measured before the fault: kept
    assert not outcome.ok
    store = Store(shared_data / "results.db")
    assert store.health()["host"]["status"] == "quarantined"


def test_tracker_stopped_mid_run_is_restarted(write, shared_data, no_orphans):
    """Tracker and servers killed after correctness: the retry must bring a new tracker up (the
    old one is dead), and latency passes through it."""
    killed, trackers_after = [], []

    def kill_tracker_and_servers():
        tracker = _tracker()
        killed.append(tracker.pid)
        tracker.kill()
        for p in _servers():
            os.killpg(os.getpgid(p.pid), signal.SIGKILL)

    fire = _once(kill_tracker_and_servers)

    def on_message(msg: str) -> None:
        fire(msg)
        if killed and "latency: pass" in msg:
            trackers_after.extend(p.pid for p in _children_running("tvm.exec.rpc_tracker"))

    outcome, results, messages = _run(write, shared_data, FAST, HOST_ONLY, on_message)
    assert results[("host", "correctness")].status == "pass"
    assert any("retrying" in m for m in messages), messages
    lat = results[("host", "latency")]
    assert lat.status == "pass", lat.reason
    assert trackers_after and killed[0] not in trackers_after  # a new tracker served the retry


def test_hung_server_times_out(write, shared_data, no_orphans):
    """A server that accepts and never answers (SIGSTOPped): the step's timeout fires."""
    def freeze():
        for p in _servers():
            for q in [p, *p.children(recursive=True)]:
                q.suspend()

    suite = FAST + "timeouts: {measure: 5, open: 20}\n"
    devices = HOST_ONLY + "    retries: 0\n"
    _, results, _ = _run(write, shared_data, suite, devices, _once(freeze))
    lat = results[("host", "latency")]
    assert lat.status == "error" and lat.kind == "timeout" and "within 5 s" in lat.reason


def test_resume_continues_without_repeating(write, shared_data):
    devices = write("devices.yaml", HOST_ONLY + """
  - name: host2
    target: {family: x86, mcpu: host}
    transport: {kind: local}
""")
    suite = write("s.yaml", FAST)
    argv = [sys.executable, "-m", "farm.cli", "run", "--suite", str(suite), "--devices", str(devices),
            "--data-dir", str(shared_data)]
    proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:  # interrupt once host2 starts: host is complete by then
        if line.startswith("[host2] compiling"):
            proc.send_signal(signal.SIGINT)
            break
    proc.communicate(timeout=60)
    store = Store(shared_data / "results.db")
    run_id = store.db.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 1").fetchone()[0]
    assert store.run(run_id)["status"] == "interrupted"
    first = {(r.device, r.check): r for r in store.results(run_id)}
    assert first[("host", "latency")].status == "pass"
    before = store.db.execute("SELECT recorded FROM results WHERE run_id=? AND device='host'", (run_id,)).fetchall()
    resumed = subprocess.run([sys.executable, "-m", "farm.cli", "run", "--resume", run_id[:15],
                              "--data-dir", str(shared_data)], cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 device(s) of" in resumed.stderr and "already done" in resumed.stderr
    after = store.db.execute("SELECT recorded FROM results WHERE run_id=? AND device='host'", (run_id,)).fetchall()
    assert [tuple(r) for r in before] == [tuple(r) for r in after]  # host not repeated
    final = {(r.device, r.check): r.status for r in store.results(run_id)}
    assert final[("host2", "latency")] == "pass" and store.run(run_id)["status"] == "done"


def test_resume_last_runs_the_checks_an_interrupt_left_out(write, shared_data):
    """Interrupted after correctness: compile and correctness are recorded, latency is not. The
    resume (named `last`) must run latency and leave the correctness row as it was."""
    devices = write("devices.yaml", HOST_ONLY)
    suite = write("s.yaml", FAST)
    argv = [sys.executable, "-m", "farm.cli", "run", "--suite", str(suite), "--devices", str(devices),
            "--data-dir", str(shared_data)]
    proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        if "correctness: pass" in line:
            proc.send_signal(signal.SIGINT)
            break
    proc.communicate(timeout=60)
    store = Store(shared_data / "results.db")
    run = store.run()
    assert run["status"] == "interrupted"
    first = {r.check: r for r in store.results(run["id"])}
    assert first["correctness"].status == "pass" and first.get("latency") is None, first
    resumed = subprocess.run([sys.executable, "-m", "farm.cli", "run", "--resume", "last",
                              "--data-dir", str(shared_data)], cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" not in resumed.stderr  # the device was not finished
    assert "correctness:" not in resumed.stderr and "latency: pass" in resumed.stderr
    final = {r.check: r for r in store.results(run["id"])}
    assert set(final) == set(load_suite(suite).checks())
    assert all(r.status == "pass" for r in final.values()), final
    assert final["correctness"].metrics == first["correctness"].metrics  # not measured again
    assert store.run(run["id"])["status"] == "done"


def test_resume_of_unknown_or_finished_run(shared_data, capsys):
    from farm.cli import main

    assert main(["run", "--resume", "nope", "--data-dir", str(shared_data)]) == 2
    assert "no run 'nope' to resume" in capsys.readouterr().err


def test_two_runs_share_one_database(write, shared_data):
    devices = write("devices.yaml", HOST_ONLY)
    suite = write("s.yaml", FAST)
    argv = [sys.executable, "-m", "farm.cli", "run", "--suite", str(suite), "--devices", str(devices),
            "--data-dir", str(shared_data)]
    procs = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0]
    store = Store(shared_data / "results.db")
    ids = [r[0] for r in store.db.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 2")]
    assert len(set(ids)) == 2
    for run_id in ids:
        assert store.run(run_id)["status"] == "done"
        assert {r.check for r in store.results(run_id)} == {"compile", "correctness", "latency", "latency-fp32"}


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage", b"not onnx at all" * 100])
def test_corrupt_model_file_is_one_line(tmp_path, content, capsys):
    from farm.cli import main

    model = tmp_path / "broken.onnx"
    model.write_bytes(content)
    rc = main(["run", "--model", str(model), "--devices", str(REPO / "devices.yaml"),
               "--data-dir", str(tmp_path / "d"), "--device", "host"])
    err = capsys.readouterr().err
    assert rc == 2 and "is not a valid ONNX model" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0 or err.strip().splitlines()[-1].startswith("farm:")


def test_model_with_an_operator_tvm_cannot_import_is_one_line(tmp_path, capsys):
    """ONNX Runtime runs Det; TVM's ONNX frontend has no converter for it: refused up front."""
    import onnx
    from onnx import TensorProto, helper

    from farm.cli import main

    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "det.onnx"
    onnx.save(model, str(path))
    rc = main(["run", "--model", str(path), "--devices", str(REPO / "devices.yaml"),
               "--data-dir", str(tmp_path / "d"), "--device", "host"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{path} uses Det, which TVM's ONNX frontend cannot import" in err
    assert "Traceback" not in err


def test_upload_that_never_completes_times_out(write, shared_data, no_orphans):
    """The board stops answering once the upload has begun: the upload's timeout fires, the
    device is recorded as timed out and quarantined, and nothing is left running."""
    fired = []

    def freeze_on_upload(msg: str) -> None:
        if "uploading" in msg and not fired:
            fired.append(msg)
            for p in _servers():
                for q in [p, *p.children(recursive=True)]:
                    q.suspend()

    suite = FAST + "timeouts: {upload: 5}\n"
    _, results, _ = _run(write, shared_data, suite, HOST_ONLY + "    retries: 0\n", freeze_on_upload)
    corr = results[("host", "correctness")]
    assert fired and corr.status == "error" and corr.kind == "timeout"
    assert "upload did not finish within 5 s" in corr.reason


@pytest.mark.parametrize("served", [False, True])
def test_a_lab_tracker_that_is_down_is_an_outage_not_a_skip(write, shared_data, tmp_path, served):
    """A `tracker` device is a board someone runs: its tracker not answering, or answering without
    the device's key, is recorded as a device error (exit 1) after the retries — not skipped as if
    the device could not run here — and the second case does not wait out the open timeout."""
    from farm.cli import main
    from farm.platform.procs import free_port
    from farm.transports.embedded import EmbeddedTracker

    tracker = EmbeddedTracker(tmp_path / "logs") if served else None
    host, port = tracker.start() if tracker else ("127.0.0.1", free_port())
    try:
        devices = write("devices.yaml", f"""
            devices:
              - name: lab
                target: {{family: x86, mcpu: haswell}}
                transport: {{kind: tracker, host: {host}, port: {port}}}
                retry_backoff: 0.1
        """)
        assert main(["run", "--suite", "smoke", "--devices", str(devices), "--data-dir", str(shared_data)]) == 1
    finally:
        if tracker:
            tracker.stop()
    with Store(shared_data / "results.db") as store:
        got = {r.check: r for r in store.results(store.run()["id"])}
    why = "lists no server with key 'lab'" if served else "does not answer"
    assert got["compile"].status == "pass"
    for check in ("correctness", "latency"):
        assert got[check].status == "error" and got[check].kind == "device" and why in got[check].reason
