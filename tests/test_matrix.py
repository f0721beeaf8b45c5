"""farm matrix: the matrix file's validation (file:line errors) and a real parallel run of the
smoke suite on two local devices, one worker process each, under one run id."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from farm.config.devices import load_devices
from farm.config.paths import REPO
from farm.errors import ConfigError
from farm.results.store import Store
from farm.run.engine import _record_lost
from farm.run.matrix import load_matrix

SUITES = REPO / "suites"


@pytest.fixture(scope="module")
def registry():
    return load_devices(REPO / "devices.yaml")


def _matrix(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


def test_the_shipped_nightly_matrix_is_valid(registry):
    m = load_matrix(SUITES / "nightly.yaml", registry, SUITES)
    smoke = dict((s.name, (s, devs)) for s, devs in m.pairs)["smoke"]
    assert smoke[0].latency.repeat == 50 and [d.name for d in smoke[1]] == [d.name for d in registry.devices]


def test_repeat_overrides_and_devices_group_per_worker(tmp_path, registry):
    m = load_matrix(_matrix(tmp_path, "entries:\n  - suite: smoke\n    devices: [x86]\n    repeat: 7\n"
                                      "  - suite: qresnet50\n    devices: [host]\nparallel: 1\n"),
                    registry, SUITES)
    assert m.parallel == 1 and m.name == "m"
    workers = m.by_device()
    assert list(workers) == ["host", "x86-avx512-vnni", "x86-avx2"]
    assert [s.name for s in workers["host"][1]] == ["smoke", "qresnet50"]
    assert workers["host"][1][0].latency.repeat == 7 and workers["host"][1][1].latency.repeat == 10


@pytest.mark.parametrize("text, line, message", [
    ("entries:\n  - suite: nosuch\n", 2, "no suite named 'nosuch'"),
    ("entries:\n  - suite: smoke\n    devices: [host, gpu]\n", 3, "no device or tag 'gpu'"),
    ("entries:\n  - suite: smoke\n    repeat: 0\n", 3, "'repeat' is 0, out of range"),
    ("entries:\n  - suite: smoke\n    repaet: 5\n", 3, "unknown key 'repaet' in matrix entry #1 — did you "
                                                      "mean 'repeat'?"),
    ("entries: []\n", 1, "the matrix has no entries"),
    ("name: x\n", 1, "matrix file has no 'entries'"),
    ("entries:\n  - smoke\n", 2, "matrix entry #1 must be a mapping"),
    ("entries:\n  - suite: smoke\nparallel: many\n", 3, "'parallel' must be an integer"),
])
def test_matrix_errors_name_file_and_line(tmp_path, registry, text, line, message):
    path = _matrix(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_matrix(path, registry, SUITES)
    assert e.value.format().startswith(f"{path}:{line}: ")
    assert message in e.value.format()


def test_matrix_error_on_the_command_line_is_one_line(tmp_path, capsys):
    from farm.cli import main

    path = _matrix(tmp_path, "entries:\n  - suite: smoke\n    devices: [gpu]\n")
    assert main(["matrix", str(path), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"farm: {path}:3: no device or tag 'gpu'") and err.count("\n") == 1


def test_a_worker_that_died_leaves_error_rows(tmp_path, registry):
    from tests.history_helpers import correctness, write_run

    m = load_matrix(_matrix(tmp_path, "entries:\n  - suite: smoke\n    devices: [x86]\n"), registry, SUITES)
    write_run(tmp_path / "r.db", "run", [correctness("host")])
    store = Store(tmp_path / "r.db")
    try:
        _record_lost(store, "run", m, {"host": -9, "x86-avx512-vnni": 0})
        rows = {(r.device, r.check): r for r in store.results("run")}
    finally:
        store.close()
    assert rows[("host", "correctness")].status == "pass"  # recorded before the crash: kept
    for check in ("compile", "latency"):
        assert rows[("host", check)].status == "error" and "exit code -9" in rows[("host", check)].reason
    assert not any(device == "x86-avx512-vnni" for device, _ in rows)


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory):
    """`farm matrix` of smoke on host and x86-avx512-vnni, as a user runs it."""
    data = tmp_path_factory.mktemp("farm-matrix")
    path = data / "two.yaml"
    path.write_text(f"entries:\n  - suite: {SUITES / 'smoke.yaml'}\n    devices: [host, x86-avx512-vnni]\n"
                    "    repeat: 12\n")
    proc = subprocess.run([sys.executable, "-m", "farm.cli", "matrix", str(path), "--data-dir", str(data),
                           "--format", "json"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=data)
    return data, proc


def test_matrix_runs_each_device_in_its_own_worker_under_one_run(matrix_run):
    import json

    from farm.transports.local import missing_features

    data, proc = matrix_run
    vnni_runs = not missing_features(load_devices(REPO / "devices.yaml").get("x86-avx512-vnni"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    run_id = out["run"]["id"]
    assert out["run"]["status"] == "done" and out["run"]["command"].endswith("--format json")
    rows = {(r["device"], r["check"]): r for r in out["results"]}
    devices = ("host", "x86-avx512-vnni")
    assert set(rows) == {(d, c) for d in devices for c in ("compile", "correctness", "latency", "latency-fp32")}
    assert rows[("host", "latency")]["metrics"]["n"] == 12  # the matrix's repeat, not the suite's 20
    if vnni_runs:
        assert rows[("x86-avx512-vnni", "latency")]["status"] == "pass"
    else:
        assert rows[("x86-avx512-vnni", "latency")]["status"] == "skipped"
        assert "avx512_vnni" in rows[("x86-avx512-vnni", "latency")]["reason"]
    # one farm per worker: each device's tracker and server logs in its own folder (a device this
    # host cannot run starts no tracker: its worker only compiles, logging in its own folder too)
    for device in ("host", "x86-avx512-vnni"):
        log = "tracker.log" if device == "host" or vnni_runs else f"compile-{device}-tinyconv-*-int8.log"
        assert list((data / "logs" / run_id / device).glob(log))
    assert (data / "logs" / run_id / "host" / "server-host.log").exists()
    # both workers were busy at the same time: their recording intervals overlap
    store = Store(data / "results.db")
    try:
        spans = [store.db.execute("SELECT MIN(recorded), MAX(recorded) FROM results WHERE run_id = ? "
                                  "AND device = ?", (run_id, d)).fetchone() for d in devices]
    finally:
        store.close()
    (a0, a1), (b0, b1) = spans
    if vnni_runs:  # a compile-only worker may well finish before the other records anything
        assert a0 < b1 and b0 < a1


def test_matrix_run_makes_an_html_report(matrix_run):
    from farm.cli import main

    data, proc = matrix_run
    assert proc.returncode == 0
    out = data / "nightly.html"
    assert main(["report", "last", "--format", "html", "-o", str(out), "--data-dir", str(data)]) == 0
    page = out.read_text()
    assert "<h2>suite smoke</h2>" in page and page.count("data:image/png;base64") == 2


def _marked_pids(mark: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mark.encode() in (proc / "environ").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_ctrl_c_stops_every_worker_and_server_and_marks_the_run_interrupted(tmp_path):
    import signal
    import uuid

    mark = f"FARM_TEST_MARK={uuid.uuid4().hex}"
    path = _matrix(tmp_path, f"entries:\n  - suite: {SUITES / 'smoke.yaml'}\n"
                             "    devices: [host, x86-avx512-vnni]\n")
    key, value = mark.split("=")
    argv = [sys.executable, "-m", "farm.cli", "matrix", str(path), "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(REPO), key: value},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)
    seen = []
    for line in proc.stderr:  # wait until a worker is past its compile: servers are starting
        seen.append(line)
        if "smoke compile:" in line:
            break
    assert len(_marked_pids(mark)) >= 3  # farm, its workers (the detection works)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, "".join(seen) + rest
    assert "interrupted" in rest
    deadline = time.monotonic() + 30
    while _marked_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _marked_pids(mark) == []  # no tracker, server or worker left behind
    store = Store(tmp_path / "results.db")
    try:
        run = store.run()
        assert run["status"] == "interrupted"
        unfinished = [r for r in store.results(run["id"]) if r.kind == "worker"]
    finally:
        store.close()
    assert all(r.status == "error" and "did not record" in r.reason for r in unfinished)
