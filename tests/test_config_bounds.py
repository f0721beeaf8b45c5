"""Bounded config inputs (issue #19): hostile or absurd YAML is one ConfigError line with the
file:line of the culprit, before anything big is allocated, never a traceback."""

from __future__ import annotations

import pytest

from farm.cli import main
from farm.config.devices import load_devices
from farm.config.suites import load_suite
from tests.conftest import assert_config_error

DEVICE = "devices:\n  - name: a\n    target: {family: x86}\n"


def _laughs() -> str:
    """The classic "billion laughs": 9 levels of 9 aliases each, 10**9 values from ~350 bytes."""
    rows = ["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    rows += [f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    return "\n".join(rows) + "\n" + DEVICE


@pytest.mark.parametrize("text, line, fragment", [
    (_laughs(), 6, "more than 100000 values once its aliases are expanded"),  # *e: 66430 values each
    ("devices: &a [*a]\n", 1, "alias '*a' is inside the value it names"),
    ("devices:\n  - &d\n    name: a\n    target: {family: x86}\n    tags: [*d]\n", 5, "inside the value"),
    ("devices: " + "[" * 40 + "]" * 40 + "\n", 1, "deeper than 32 levels"),
])
def test_aliases_and_nesting_are_bounded(write, text, line, fragment):
    assert_config_error(load_devices, write("devices.yaml", text), line, fragment)


def test_bounded_aliases_still_work(write):
    reg = load_devices(write("devices.yaml", """
        devices:
          - {name: a, target: &x86 {family: x86}}
          - {name: b, target: *x86, tags: &t [fast]}
          - {name: c, target: *x86, tags: *t}
    """))
    assert [d.tags for d in reg.devices] == [(), ("fast",), ("fast",)]


@pytest.mark.parametrize("value, fragment", [
    ("!!int abc", "'abc' is not a valid !!int value"),
    ("!!float x", "'x' is not a valid !!float value"),
    ("!!bool maybe", "not a valid !!bool value"),
    ("!!timestamp soon", "not a valid !!timestamp value"),
    ("!!map x", "not a valid !!map value"),
    ("!custom x", "unknown YAML tag '!custom'"),
    ("1" * 5000, "(5000 characters)' is not a valid !!int value"),  # Python's int digit limit
])
def test_bad_tags_and_values(write, value, fragment):
    assert_config_error(load_devices, write("devices.yaml", DEVICE + f"    threads: {value}\n"), 4, fragment)


SUITE = "model: {builtin: tinyconv}\n"


@pytest.mark.parametrize("load, text, line, fragment", [
    (load_suite, SUITE + "inputs: {low: .nan}\n", 2, "'low' is nan, not a finite number"),
    (load_suite, SUITE + "inputs: {high: .inf}\n", 2, "'high' is inf, not a finite number"),
    (load_suite, SUITE + "inputs: {low: -.inf, high: 0}\n", 2, "'low' is -inf"),
    (load_suite, SUITE + "inputs:\n  count: 3\n  shape: [1000, 1000, 1000]\n", 4,
     "take more than 1 GiB (8 bytes an element"),
    (load_suite, SUITE + "inputs: {count: 2000, shape: [1, 3, 224, 224], dtype: float32}\n", 2,
     "take more than 1 GiB"),
    (load_suite, SUITE + "inputs: {count: 1000000000000}\n", 2, "'count' is 1000000000000, out of range"),
    (load_suite, SUITE + "timeouts: {run: .nan}\n", 2, "'run' is nan, not a finite number"),
    (load_suite, SUITE + "timeouts: {run: .inf}\n", 2, "'run' is inf"),
    (load_suite, SUITE + "timeouts: {compile: -5}\n", 2, "'compile' is -5.0, out of range"),
    (load_suite, SUITE + "timeouts: {open: 1.0e+300}\n", 2, "out of range"),
    (load_devices, DEVICE + "    timeouts: {run: .nan}\n", 4, "'run' is nan, not a finite number"),
    (load_devices, DEVICE + "    timeouts: {open: -.inf}\n", 4, "'open' is -inf"),
    (load_devices, DEVICE + "    retry_backoff: .nan\n", 4, "'retry_backoff' is nan"),
    (load_devices, DEVICE + "    transport: {kind: ssh, host: b, connect_timeout: .inf}\n", 4,
     "'connect_timeout' is inf"),
])
def test_numbers_are_finite_and_bounded(write, load, text, line, fragment):
    assert_config_error(load, write("config.yaml", text), line, fragment)


def test_inputs_within_the_limit_are_kept(write):
    spec = load_suite(write("s.yaml", SUITE + "inputs: {count: 4, shape: [1, 3, 224, 224], dtype: int8}\n")).inputs
    assert (spec.count, spec.shape, spec.dtype) == (4, (1, 3, 224, 224), "int8")


@pytest.mark.parametrize("name, fragment", [
    ('"host\\n"', "has characters other than"),  # `$` matched before the final newline
    ("x" * 300, "is 300 characters long"),
])
def test_device_names_are_bounded(write, name, fragment):
    text = f"devices:\n  - name: {name}\n    target: {{family: x86}}\n"
    assert_config_error(load_devices, write("devices.yaml", text), 2, fragment)


def test_longest_name_is_accepted(write):
    assert load_devices(write("devices.yaml", DEVICE.replace("name: a", "name: " + "a" * 64))).devices


def test_mattr_with_a_final_newline_is_rejected(write):
    text = 'devices:\n  - name: a\n    target: {family: x86, mattr: ["+avx2\\n"]}\n'
    assert_config_error(load_devices, write("devices.yaml", text), 3, "must start with + or -")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "myhost.lan"])
def test_remote_local_server_needs_allow_remote(write, host):
    text = DEVICE + f"    transport: {{kind: local, host: '{host}'}}\n"
    assert_config_error(load_devices, write("devices.yaml", text), 4, "no authentication")
    text = DEVICE + f"    transport: {{kind: local, host: '{host}', allow_remote: true}}\n"
    assert load_devices(write("devices.yaml", text)).devices[0].transport.options.host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_local_server_needs_nothing(write, host):
    text = DEVICE + f"    transport: {{kind: local, host: '{host}'}}\n"
    assert load_devices(write("devices.yaml", text)).devices[0].transport.options.host == host


def test_allow_remote_is_only_for_local(write):
    text = DEVICE + "    transport: {kind: tracker, host: h, port: 9190, allow_remote: true}\n"
    assert_config_error(load_devices, write("devices.yaml", text), 4, "unknown key 'allow_remote'")


def test_cli_one_line_for_laughs(write, capsys):
    assert main(["devices", "list", "--devices", str(write("devices.yaml", _laughs()))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "devices.yaml:6: " in err


def test_inputs_of_the_models_own_shape_are_bounded_too():
    """Without `shape:` the model's shapes decide the size: too many sets of a large input are one
    error before anything is allocated."""
    from farm.config.suites import InputSpec
    from farm.errors import FarmError
    from farm.models.reference import TensorInfo, make_inputs

    big = [TensorInfo("x", (1, 3, 1024, 1024), "float32")]  # 12 MiB a set
    assert len(make_inputs(big, InputSpec(count=2))) == 2
    with pytest.raises(FarmError, match=r"100 input set\(s\) of 12.0 MiB each take more than 1 GiB"):
        make_inputs(big, InputSpec(count=100))
