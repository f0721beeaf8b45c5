"""Suite files: same validation style as devices.yaml."""

from __future__ import annotations

import pytest

from farm.cli import main
from farm.config.suites import find_suite, load_suite
from tests.conftest import REPO, assert_config_error


def test_shipped_suites_are_valid():
    for name in ("smoke", "qresnet50"):
        suite = load_suite(find_suite(name, REPO / "suites"))
        assert suite.name == name and suite.model.builtin


def test_suite_fields(write):
    path = write("s.yaml", """
        name: mine
        model: {path: m.onnx}
        inputs: {seed: 3, count: 2, shape: [1, 3, 8, 8], dtype: float32}
        correctness: {max_lsb: 2, min_exact: 0.5}
        latency: {repeat: 5, warmup: 0}
        devices: [x86]
    """)
    s = load_suite(path)
    assert s.model.path == path.parent / "m.onnx"
    assert s.inputs.shape == (1, 3, 8, 8) and s.inputs.count == 2
    assert s.correctness.max_lsb == 2 and s.correctness.min_exact == 0.5
    assert s.latency.repeat == 5 and s.devices == ("x86",)


@pytest.mark.parametrize("text, line, fragment", [
    ("model: {builtin: tinyconv, path: x.onnx}\n", 1, "exactly one of"),
    ("model: {builtin: tinyconv}\ncorrectness: {min_exact: 2}\n", 2, "'min_exact' is 2.0, out of range"),
    ("model: {builtin: tinyconv}\ninputs:\n  shape: [1, -3]\n", 3, "positive integers"),
    ("model: {builtin: tinyconv}\ninputs: {dtype: float128}\n", 2, "'dtype' is 'float128'"),
    ("model: {builtin: tinyconv}\nlatency:\n  repeat: 0\n", 3, "'repeat' is 0"),
    ("model: {builtin: tinyconv}\nlatency:\n  repaet: 3\n", 3, "did you mean 'repeat'"),
    ("name: x\n", 1, "has no 'model'"),
    ("model: {builtin: tinyconv}\ninputs: {low: 1, high: 0}\n", 2, "must be above 'low'"),
])
def test_suite_errors(write, text, line, fragment):
    assert_config_error(load_suite, write("s.yaml", text), line, fragment)


def test_unknown_builtin_is_reported_at_its_line(write, capsys):
    """config reads the name, the models stage knows the builders: the error still points at the line."""
    path = write("s.yaml", "name: s\nmodel: {builtin: nope}\n")
    assert main(["run", "--suite", str(path), "--devices", str(REPO / "devices.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: unknown builtin model 'nope'" in err and "tinyconv" in err


def test_unknown_suite_name_lists_known_ones(capsys):
    assert main(["run", "--suite", "nonexistent", "--devices", str(REPO / "devices.yaml")]) == 2
    err = capsys.readouterr().err
    assert "no suite named 'nonexistent'" in err and "smoke" in err


def test_unknown_device_selector(capsys):
    assert main(["run", "--suite", "smoke", "--device", "toaster",
                 "--devices", str(REPO / "devices.yaml")]) == 2
    assert "no device or tag 'toaster'" in capsys.readouterr().err
