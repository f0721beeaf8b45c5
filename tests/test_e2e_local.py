"""End to end through a real TVM tracker and rpc_server on loopback, started and stopped by farm."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from farm.cli import main
from farm.platform.host import host_info
from farm.results.store import Store
from tests.conftest import HOST_ONLY, REPO


def test_smoke_on_host(write, shared_data, capsys, no_orphans):
    devices = write("devices.yaml", HOST_ONLY)
    argv = ["run", "--suite", "smoke", "--devices", str(devices), "--data-dir", str(shared_data)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "host" in out and "pass" in out
    store = Store(shared_data / "results.db")
    run = store.run()
    results = {r.check: r for r in store.results(run["id"])}
    assert run["status"] == "done" and run["host_cpu"] and run["tvm_version"]
    assert results["correctness"].status == "pass"
    assert results["correctness"].metrics["exact"] >= 0.95
    lat = results["latency"].metrics
    assert lat["n"] == 20 and lat["median"] > 0 and lat["p90"] >= lat["median"] and "cov" in lat
    assert results["latency-fp32"].status == "pass"
    assert results["latency-fp32"].metrics["int8_over_fp32"] > 0
    assert any("farm_dot" in s for s in results["compile"].metrics["lowering"]["schedules"]) \
        or "avx2" not in host_info().features  # a dot-product template where the host has one
    # a second run compiles nothing
    assert main(argv) == 0
    again = {r.check: r for r in store.results(store.run()["id"])}
    assert again["compile"].metrics["cached"] is True


def test_wrong_answer_fails_with_exit_1(write, shared_data, capsys, monkeypatch):
    """References that disagree with the device (shifted past the output's range, injected into
    both ONNX Runtime's and the exact one): correctness fails as wrong-answer, exit 1, reason kept."""
    import farm.run.runner as runner

    def shifted(reference):
        def wrong(*args, **kwargs):
            refs = reference(*args, **kwargs)
            return None if refs is None else [[o + (np.ptp(o) + 1.0) for o in outs] for outs in refs]
        return wrong

    original = runner.reference_outputs
    wrong_refs = shifted(lambda *args: original(*args)[0])
    monkeypatch.setattr(runner, "reference_outputs", lambda *args: (wrong_refs(*args), None))
    monkeypatch.setattr(runner, "exact_outputs", shifted(runner.exact_outputs))
    devices = write("devices.yaml", HOST_ONLY)
    suite = write("strict.yaml", """
        model: {builtin: tinyconv}
        inputs: {seed: 1}
        latency: {enabled: false}
    """)
    rc = main(["run", "--suite", str(suite), "--devices", str(devices), "--data-dir", str(shared_data)])
    out = capsys.readouterr().out
    store = Store(shared_data / "results.db")
    corr = [r for r in store.results(store.run()["id"]) if r.check == "correctness"][0]
    assert rc == 1 and corr.status == "fail" and corr.kind == "wrong-answer" and corr.reason
    assert "fail" in out


def test_unavailable_device_is_skipped_with_reason(write, shared_data, capsys):
    devices = write("devices.yaml", HOST_ONLY + """
  - name: future
    target: {family: x86, mcpu: host}
    transport: {kind: local}
    requires: [avx9000]
""")
    rc = main(["run", "--suite", "smoke", "--devices", str(devices), "--data-dir", str(shared_data),
               "--device", "future"])
    assert rc == 0
    store = Store(shared_data / "results.db")
    res = {r.check: r for r in store.results(store.run()["id"])}
    assert res["compile"].status == "pass"  # compile-only
    assert res["correctness"].status == "skipped" and "avx9000" in res["correctness"].reason
    assert "avx9000" in capsys.readouterr().out


def _start_slow_run(write, data: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """A `farm run` subprocess, returned once correctness is recorded and latency is running."""
    devices = write("devices.yaml", HOST_ONLY)
    slow = write("slow.yaml", """
        model: {builtin: tinyconv}
        latency: {repeat: 100000, number: 50}
    """)
    proc = subprocess.Popen(
        [sys.executable, "-m", "farm.cli", "run", "--suite", str(slow), "--devices", str(devices),
         "--data-dir", str(data)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (data / "results.db").exists():
            store = Store(data / "results.db")
            runs = store.db.execute("SELECT id FROM runs WHERE status='running'").fetchall()
            done = [r for run in runs for r in store.results(run[0]) if r.check == "correctness"]
            store.close()
            if done:
                break
        time.sleep(0.5)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "farm should have started a tracker and a server"
    return proc, children


def _all_gone(children: list[psutil.Process], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]:
            return True
        time.sleep(0.2)
    return False


def test_sigint_leaves_no_process_and_keeps_results(write, shared_data):
    proc, children = _start_slow_run(write, shared_data)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert _all_gone(children)
    store = Store(shared_data / "results.db")
    run = store.db.execute("SELECT * FROM runs ORDER BY started DESC LIMIT 1").fetchone()
    assert run["status"] == "interrupted"
    assert any(r.check == "correctness" for r in store.results(run["id"]))


def test_sigkill_of_farm_takes_children_down(write, shared_data):
    """Even a farm killed with SIGKILL leaves no tracker or server behind (the guard)."""
    proc, children = _start_slow_run(write, shared_data)
    proc.kill()
    proc.communicate(timeout=30)
    assert _all_gone(children)
    # and the run it left is not shown as still running: the next open of the store settles it
    with Store(shared_data / "results.db") as store:
        assert store.run()["status"] == "crashed"


def test_up_status_down(write, shared_data, capsys):
    """`farm up` keeps a tracker and servers running between runs; `farm down` stops them."""
    devices = write("devices.yaml", HOST_ONLY)
    data = shared_data / "up"
    assert main(["up", "--devices", str(devices), "--data-dir", str(data)]) == 0
    try:
        assert main(["status", "--data-dir", str(data)]) == 0
        assert "host" in capsys.readouterr().out
        assert main(["run", "--suite", "smoke", "--devices", str(devices), "--data-dir", str(data)]) == 0
        assert main(["status", "--data-dir", str(data)]) == 0  # the run left the farm up
    finally:
        assert main(["down", "--data-dir", str(data)]) == 0
    assert main(["status", "--data-dir", str(data)]) == 1


def test_emulated_devices_take_fewer_samples_and_no_fp32_baseline(write, shared_data):
    """An emulator's timing says little about hardware: emulated_repeat samples, fp32 skipped."""
    devices = write("devices.yaml", HOST_ONLY + "    emulated: true\n")
    suite = write("s.yaml", """
        model: {builtin: tinyconv}
        latency: {repeat: 12, emulated_repeat: 2}
    """)
    rc = main(["run", "--suite", str(suite), "--devices", str(devices), "--data-dir", str(shared_data)])
    assert rc == 0
    store = Store(shared_data / "results.db")
    res = {r.check: r for r in store.results(store.run()["id"])}
    assert res["latency"].metrics["n"] == 2 and res["latency"].emulated
    assert res["latency-fp32"].status == "skipped" and "emulated" in res["latency-fp32"].reason
