"""The pytest plugin, loaded through the pytest11 entry point declared in pyproject.toml, in pytest
subprocesses: smoke on two devices in parallel (-n 2) with JUnit XML, reasons of skips and
failures, and no effect on an ordinary test run."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from farm.config.devices import load_devices
from farm.config.paths import REPO
from farm.results.store import Store
from farm.transports.local import missing_features


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder on sys.path holding farm's entry points as pyproject.toml declares them, so pytest
    finds the plugin the way it does once farm is installed."""
    site = tmp_path_factory.mktemp("site")
    eps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["pytest11"]
    dist = site / "farm_entry_points-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: farm-entry-points\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    return site


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("farm-data")  # one compile cache for the module


def pytest_run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{site}"}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _cases(xml: Path) -> dict[tuple[str, str], ET.Element]:
    root = ET.parse(xml).getroot()
    return {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}


def _props(case: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in case.iter("property")}


def test_smoke_on_two_devices_in_parallel_writes_junit(site, data_dir, tmp_path):
    xml = tmp_path / "farm.xml"
    proc = pytest_run(site, tmp_path, "--farm-devices", str(REPO / "devices.yaml"), "--farm-suite", "smoke",
                      "--farm-device", "host", "--farm-device", "x86-avx512-vnni",
                      "--farm-data-dir", str(data_dir), "-n", "2", "--junitxml", str(xml), "-rs", "-v")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 workers [8 items]" in proc.stdout and "DeviceScheduling" in proc.stdout
    cases = _cases(xml)
    checks = ("compile", "correctness", "latency", "latency-fp32")
    assert set(cases) == {(f"farm.{d}.smoke", c) for d in ("host", "x86-avx512-vnni") for c in checks}
    workers = {d: {_props(cases[(f"farm.{d}.smoke", c)])["worker"] for c in checks}
               for d in ("host", "x86-avx512-vnni")}
    # one worker per device, and the two devices on different workers
    assert all(len(w) == 1 for w in workers.values()) and workers["host"] != workers["x86-avx512-vnni"]
    for c in checks:
        assert cases[("farm.host.smoke", c)].find("failure") is None
        assert cases[("farm.host.smoke", c)].find("skipped") is None
    assert float(_props(cases[("farm.host.smoke", "latency")])["median"]) > 0
    vnni = cases[("farm.x86-avx512-vnni.smoke", "latency")]
    if missing_features(load_devices(REPO / "devices.yaml").get("x86-avx512-vnni")):
        assert "host CPU lacks avx512_vnni" in vnni.find("skipped").get("message")
    else:
        assert vnni.find("skipped") is None and vnni.find("failure") is None
    # every worker recorded into the one run the controller began and finished
    run_ids = {_props(c)["run_id"] for c in cases.values()}
    assert len(run_ids) == 1
    store = Store(data_dir / "results.db")
    try:
        run = store.run(run_ids.pop())
        assert run["status"] == "done" and run["command"].startswith("pytest ")
        assert len(store.results(run["id"])) == 2 * len(checks)
    finally:
        store.close()


def test_skips_and_failures_carry_the_reason(site, data_dir, tmp_path):
    (tmp_path / "devices.yaml").write_text(
        "devices:\n"
        "  - {name: host, target: {family: x86, mcpu: host}}\n"
        "  - {name: needs-x, target: {family: x86, mcpu: host}, requires: [no_such_cpu_feature]}\n")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    (tmp_path / "broken.yaml").write_text("name: broken\nmodel: {path: broken.onnx}\n")
    xml = tmp_path / "farm.xml"
    proc = pytest_run(site, tmp_path, "--farm-devices", "devices.yaml", "--farm-suite", "smoke",
                      "--farm-suite", "broken.yaml", "--farm-data-dir", str(data_dir),
                      "--junitxml", str(xml), "-k", "needs-x or broken")
    assert proc.returncode == 1, proc.stdout[-3000:]
    cases = _cases(xml)
    skipped = cases[("farm.needs-x.smoke", "correctness")].find("skipped")
    assert "unavailable: host CPU lacks no_such_cpu_feature" in skipped.get("message")
    failure = cases[("farm.host.broken", "compile")].find("failure")
    assert "is not a valid ONNX model" in failure.get("message")
    assert "Traceback" not in failure.text and "broken.onnx" in failure.text
    assert ("farm.host.smoke", "compile") not in cases  # -k deselected it


def test_bad_farm_options_are_a_usage_error(site, tmp_path):
    proc = pytest_run(site, tmp_path, "--farm-suite", "nosuch")
    assert proc.returncode == 4
    assert "farm: no suite named 'nosuch'" in proc.stderr and "Traceback" not in proc.stderr


def test_without_farm_options_the_plugin_changes_nothing(site, tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_a():\n    assert True\n\n"
                                            "def test_b():\n    assert 1 + 1 == 2\n")
    proc = pytest_run(site, tmp_path, "-n", "2", "-v")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "2 passed" in proc.stdout and "LoadScheduling" in proc.stdout and "farm/" not in proc.stdout
    helped = pytest_run(site, tmp_path, "--help")
    assert "--farm-suite" in helped.stdout  # the entry point did load the plugin
