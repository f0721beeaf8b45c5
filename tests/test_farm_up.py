"""`farm up` / `farm down` touch only processes this farm started, and leave none behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import psutil

from farm.cli import main
from tests.conftest import HOST_ONLY


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_down_leaves_a_process_that_only_reuses_a_recorded_pid(tmp_path, capsys):
    """A pid in farm.json that now belongs to another process (pid reuse, a planted file) is not
    killed: the recorded start time and command line must match."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        state = {"tracker": ["127.0.0.1", 9], "owner": 1,
                 "procs": [{"pid": other.pid, "started": 1.0, "cmdline": ["python", "-m", "tvm.exec.rpc_tracker"]}]}
        (tmp_path / "farm.json").write_text(json.dumps(state))
        assert main(["down", "--data-dir", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert _alive(other.pid) and f"left pid {other.pid} alone" in out
        # an older farm.json listing bare pids cannot be checked: nothing is killed either
        (tmp_path / "farm.json").write_text(json.dumps({"tracker": ["127.0.0.1", 9], "pids": [other.pid]}))
        assert main(["down", "--data-dir", str(tmp_path)]) == 0
        assert _alive(other.pid) and f"left pid {other.pid} alone" in capsys.readouterr().out
        assert not (tmp_path / "farm.json").exists()
    finally:
        other.kill()
        other.wait()


def test_up_after_its_tracker_died_stops_the_old_servers(write, tmp_path, capsys):
    devices = write("devices.yaml", HOST_ONLY)
    data = tmp_path / "data"
    argv = ["up", "--devices", str(devices), "--data-dir", str(data)]
    assert main(argv) == 0
    first = json.loads((data / "farm.json").read_text())["procs"]
    tracker, servers = first[0]["pid"], [p["pid"] for p in first[1:]]
    assert servers and all(_alive(p) for p in servers)
    try:
        os.killpg(tracker, signal.SIGKILL)  # the tracker and the workers it forked
        psutil.Process(tracker).wait(10)
        capsys.readouterr()
        assert main(argv) == 0
        assert "stopped" in capsys.readouterr().out
        assert not any(_alive(p) for p in servers)  # the first farm's server is not orphaned
        second = [p["pid"] for p in json.loads((data / "farm.json").read_text())["procs"]]
        assert all(_alive(p) for p in second)
    finally:
        assert main(["down", "--data-dir", str(data)]) == 0
    assert not any(_alive(p) for p in second)
