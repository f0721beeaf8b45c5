"""Bounded config inputs (issue #19): hostile or absurd YAML is one ConfigError line with the
file:line of the culprit, before anything big is allocated, never a traceback."""

from __future__ import annotations

import pytest

from farm.cli import main
from farm.config.devices import load_devices
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


def test_cli_one_line_for_laughs(write, capsys):
    assert main(["devices", "list", "--devices", str(write("devices.yaml", _laughs()))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "devices.yaml:6: " in err
