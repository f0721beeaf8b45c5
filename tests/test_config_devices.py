"""devices.yaml validation: every mistake is one line with file:line, what and what to do."""

from __future__ import annotations

import pytest

from farm.cli import main
from farm.config.devices import load_devices
from farm.config.transports import TrackerOptions
from farm.errors import ConfigError
from tests.conftest import assert_config_error

VALID = """
devices:
  - name: a
    target: {family: x86, mcpu: host}
    transport: {kind: local}
    threads: 2
    tags: [x86, fast]
  - name: b
    target:
      family: arm
      mcpu: cortex-a76
      mattr: [+neon, +dotprod]
    transport: {kind: tracker, host: 10.1.2.3, port: 9190}
    key: rasp4
"""


def test_valid_registry(write):
    reg = load_devices(write("devices.yaml", VALID))
    a, b = reg.devices
    assert (a.name, a.threads, a.tags, a.transport.kind) == ("a", 2, ("x86", "fast"), "local")
    assert b.target.mattr == ("+neon", "+dotprod") and b.key == "rasp4"
    assert b.transport.options == TrackerOptions(host="10.1.2.3", port=9190)
    assert [d.name for d in reg.select(["fast"])] == ["a"]
    assert [d.name for d in reg.select(["all"])] == ["a", "b"]


def test_shipped_registry_is_valid():
    from tests.conftest import REPO

    names = [d.name for d in load_devices(REPO / "devices.yaml").devices]
    assert names == ["host", "x86-avx512-vnni", "x86-avx2", "arm64-qemu", "hexagon-v68-sim"]


@pytest.mark.parametrize("text, line, fragment", [
    ("devices:\n  - name: a\n    target: {family: x86}\n    colour: red\n", 4, "unknown key 'colour'"),
    ("devices:\n  - name: a\n    target: {family: x86}\n    threads: two\n", 4, "'threads' must be an integer"),
    ("devices:\n  - name: a\n    target: {family: x86}\n  - name: a\n    target: {family: x86}\n",
     4, "duplicate device name 'a' (first at line 2)"),
    ("devices:\n  - name: a\n    transport: {kind: local}\n", 2, "has no 'target'"),
    ("devices:\n  - target: {family: x86}\n", 2, "has no 'name'"),
    ("devices:\n  - name: a\n    target: {family: sparc}\n", 3, "'family' is 'sparc'"),
    ("devices:\n  - name: a\n    target: {family: x86}\n    transport: {kind: carrier-pigeon}\n",
     4, "'kind' is 'carrier-pigeon'"),
    ("devices:\n  - name: a\n    target: {family: x86}\n    transport: {kind: tracker, host: h}\n",
     4, "has no 'port'"),
    ("devices:\n  - name: a\n    target: {family: x86}\n    transport: {kind: tracker, host: h, port: 70000}\n",
     4, "'port' is 70000, out of range"),
    ("devices:\n  - name: a\n    target: {family: arm, mattr: [neon]}\n    transport: {kind: qemu}\n",
     3, "must start with + or -"),
    ("devices:\n  - name: a\n    target: {family: x86}\n    threads: 0\n", 4, "'threads' is 0"),
    ("devices:\n  - name: a\n    target: {family: arm}\n", 2, "a local device runs on this x86"),
    ("devices:\n  - name: a\n    target: {family: hexagon}\n    transport: {kind: hexagon-sim}\n",
     3, "needs a 'tag'"),
    ("devices:\n  - name: a b\n    target: {family: x86}\n", 2, "has characters other than"),
    ("devices:\n  - name: a\n    target: {family: x86}\n    transport: {kind: ssh, host: b, password: x}\n",
     4, "passwords are never stored"),
    ("devices: []\n", 1, "the device list is empty"),
    ("devices:\n  - name: a\n    target: {family: x86\n", 4, "invalid YAML"),
    ("devices:\n  - name: a\n    name: b\n", 3, "duplicate key 'name'"),
    ("boards: []\n", 1, "has no 'devices'"),
    ("- just a list\n", 1, "must be a mapping"),
])
def test_errors_name_file_and_line(write, text, line, fragment):
    assert_config_error(load_devices, write("devices.yaml", text), line, fragment)


def test_typo_gets_a_suggestion(write):
    path = write("devices.yaml", "devices:\n  - name: a\n    target: {family: x86}\n    thread: 2\n")
    with pytest.raises(ConfigError, match="did you mean 'threads'"):
        load_devices(path)


def test_cli_exit_2_and_one_line(write, capsys):
    path = write("devices.yaml", "devices:\n  - name: a\n    target: {family: x86}\n    colour: red\n")
    assert main(["devices", "list", "--devices", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{path}:4: unknown key 'colour'" in err


def test_missing_file_is_a_config_error(tmp_path, capsys):
    assert main(["devices", "list", "--devices", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read file" in capsys.readouterr().err


def test_unknown_cpu_is_rejected_at_compile_time(write):
    from farm.platform.targets import make_target

    reg = load_devices(write("devices.yaml", "devices:\n  - name: a\n    target: {family: x86, mcpu: pentium9}\n"))
    with pytest.raises(ConfigError, match="mcpu 'pentium9' of 'a' is not a CPU LLVM knows"):
        make_target(reg.devices[0])


def test_unknown_mattr_is_rejected_before_any_work(write, capfd):
    """LLVM drops a feature it does not know with a warning and builds without it: farm says so
    up front, at the device's line, and known features (+neon, -dotprod) pass."""
    from farm.platform.targets import target_dict

    text = ("devices:\n  - name: a\n    target: {family: arm, mcpu: cortex-a76, mattr: [+neon, -dotprod]}\n"
            "    transport: {kind: qemu}\n  - name: b\n"
            "    target: {family: arm, mcpu: cortex-a76, mattr: [+neon, +dotprdo]}\n    transport: {kind: qemu}\n")
    path = write("devices.yaml", text)
    a, b = load_devices(path).devices
    assert target_dict(a)["mattr"] == ["+neon", "-dotprod"]
    assert main(["run", "--suite", "smoke", "--devices", str(path), "--device", "b"]) == 2
    err = capfd.readouterr().err  # fd 2: LLVM writes there, not to sys.stderr
    assert f"{path}:5: mattr '+dotprdo' of 'b' is not a feature LLVM knows for aarch64-linux-gnu" in err
    assert "not a recognized feature" not in err  # LLVM's own warning is replaced by the line above


def test_devices_list_shows_status(capsys):
    from tests.conftest import REPO

    assert main(["devices", "list", "--devices", str(REPO / "devices.yaml")]) == 0
    out = capsys.readouterr().out
    assert "host" in out and "available" in out
