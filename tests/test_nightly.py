"""scripts/nightly.sh end to end on the local host: first night (no baseline) passes, a night
slower than the one before fails with exit 1 and the reports say why."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from farm.config.paths import REPO
from tests.history_helpers import correctness, latency, write_run

DEVICES = """devices:
  - {name: host, target: {family: x86, mcpu: host}}
  - {name: elsewhere, target: {family: x86, mcpu: host}, requires: [no_such_cpu_feature]}
"""


def _nightly(tmp_path, data, out, device: str):
    (tmp_path / "devices.yaml").write_text(DEVICES)
    farm = tmp_path / "farm"
    farm.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m farm.cli \"$@\" "
                    f"--devices {tmp_path / 'devices.yaml'}\n")
    farm.chmod(0o755)
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(f"entries:\n  - suite: smoke\n    devices: [{device}]\n    repeat: 10\n")
    env = {**os.environ, "FARM": str(farm), "FARM_HOME": str(data), "NIGHTLY_OUT": str(out),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md")}
    return subprocess.run([str(REPO / "scripts" / "nightly.sh"), str(matrix)], env=env,
                          capture_output=True, text=True, timeout=600)


def test_nightly_script_first_night_then_a_regression(tmp_path):
    data, out = tmp_path / "farm-home", tmp_path / "out"
    first = _nightly(tmp_path, data, out, "elsewhere")  # compile only: a cheap first night
    assert first.returncode == 0, first.stderr[-3000:]
    assert "no 'last-night' run" in (out / "compare.md").read_text()
    assert (out / "report.html").exists() and (out / "junit.xml").exists()

    # pretend last night was 100× faster: tonight is a real slowdown of host's latency
    yesterday = time.time() - 86400 - 3600
    write_run(data / "results.db", "19990101-020000-aaaa", [
        correctness("host"), latency("host", [1e-5 * (1 + i / 100) for i in range(10)])],
        started=yesterday)
    second = _nightly(tmp_path, data, out, "host")
    assert second.returncode == 1, second.stderr[-3000:]
    compare = (out / "compare.md").read_text()
    assert "19990101-020000-aaaa" in compare and "[host] smoke latency (latency)" in compare
    page = (out / "report.html").read_text()
    assert "1 regression since 19990101-020000-aaaa" in page
    assert "## compare" in (tmp_path / "step-summary.md").read_text()
