"""Device probes that do the work (link for the target, run the emulator / simulator once), and
compile errors that carry the failing step's cause. Toolchains are broken on purpose by putting a
wrapper in front of the real tool on PATH: the real linker then fails with its own words."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from farm.cli import main
from farm.compile.build import CompileError
from farm.compile.worker import compile_isolated
from farm.config.devices import load_devices
from farm.models.registry import build_builtin
from farm.platform import toolchain
from farm.transports import make_transport
from farm.transports.base import FarmContext

REPO = Path(__file__).resolve().parent.parent
CROSS_GCC = "aarch64-linux-gnu-gcc"
MISSING_CRT = "/nonexistent-farm-sysroot/crti.o"


def _device(name: str):
    return load_devices(REPO / "devices.yaml").get(name)


def _wrap(bin_dir: Path, tool: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / tool
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


@pytest.fixture
def broken_cross_linker(tmp_path, monkeypatch) -> Path:
    """The real aarch64 gcc, made to link against a crti.o that is not there (what a machine
    without libc6-dev-arm64-cross does)."""
    real = shutil.which(CROSS_GCC)
    assert real, f"{CROSS_GCC} is missing: scripts/bootstrap.sh installs it"
    _wrap(tmp_path / "bin", CROSS_GCC, f'exec {real} "$@" -Wl,{MISSING_CRT}')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    return tmp_path


def test_shipped_devices_toolchains_work_here():
    """What bootstrap installs must really link and emulate (the ARM cross libc was once missing)."""
    assert toolchain.link_problem("arm") == ""
    assert toolchain.link_problem("x86") == ""
    assert toolchain.emulator_failure("arm", "qemu-aarch64-static", "max") is None
    ctx = FarmContext(Path("/tmp"), Path("/tmp/logs"))
    for name in ("arm64-qemu", "hexagon-v68-sim"):
        avail = make_transport(_device(name), ctx).availability()
        assert avail.runnable, avail.reason


def test_first_error_line_is_the_cause():
    out = ("Compilation error:\n/usr/lib/gcc-cross/aarch64-linux-gnu/12/../../../../aarch64-linux-gnu/bin/ld:"
           " cannot find crti.o: No such file or directory\ncollect2: error: ld returned 1 exit status\n\n"
           "Command line: aarch64-linux-gnu-gcc -shared -fPIC -o model.so lib0.o")
    assert toolchain.first_error_line(out) == "ld: cannot find crti.o: No such file or directory"
    assert toolchain.first_error_line("warning: x\nfoo.c:3: error: bad\n") == "foo.c:3: error: bad"
    assert toolchain.first_error_line("just one line\n") == "just one line"
    assert toolchain.first_error_line("") == ""


def test_broken_cross_linker_makes_the_arm_device_unavailable(broken_cross_linker, tmp_path, capsys):
    assert "cannot find" in toolchain.link_problem("arm")
    code = main(["devices", "check", "arm64-qemu", "--devices", str(REPO / "devices.yaml"),
                 "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert code == 2
    row = next(ln for ln in out.splitlines() if ln.startswith("arm64-qemu"))
    assert "unavailable" in row and f"cannot find {MISSING_CRT}" in row
    assert "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross" in row
    assert "FAIL available:" in out
    # the x86 devices link with the host compiler and stay available
    main(["devices", "list", "--devices", str(REPO / "devices.yaml"), "--data-dir", str(tmp_path / "data")])
    host = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("host "))
    assert " available" in host


def test_compile_error_names_the_link_step_and_logs_everything(broken_cross_linker, tmp_path):
    model = build_builtin("tinyconv", tmp_path / "models").path
    log = tmp_path / "compile.log"
    with pytest.raises(CompileError) as err:
        compile_isolated(model, _device("arm64-qemu"), tmp_path / "cache", 600, log)
    msg = err.value.format()
    assert f"linking model.so with {CROSS_GCC} failed for 'arm64-qemu'" in msg
    assert f"ld: cannot find {MISSING_CRT}: No such file or directory" in msg
    assert f"the full output is in {log}" in msg and "\n" not in msg
    text = log.read_text()
    assert "collect2: error: ld returned 1 exit status" in text
    assert f"Command line: {CROSS_GCC} -shared" in text


def test_emulator_that_cannot_run_programs_is_unavailable(tmp_path, monkeypatch):
    _wrap(tmp_path / "bin", "qemu-aarch64-static",
          'case "$*" in *help*) exec /usr/bin/qemu-aarch64-static "$@";; esac\n'
          'echo "qemu: could not open the program" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    avail = make_transport(_device("arm64-qemu"), FarmContext(tmp_path, tmp_path / "logs")).availability()
    assert not avail.runnable
    assert "running a program under qemu-aarch64-static -cpu max fails: qemu: could not open the program" \
        in avail.reason


def test_hexagon_simulator_that_runs_nothing_is_unavailable(tmp_path, monkeypatch):
    """A simulator binary that exits 0 without running the program fails the probe: the probe
    program must print its word."""
    _wrap(tmp_path / "bin", "qemu-hexagon-static", "exit 0")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    avail = make_transport(_device("hexagon-v68-sim"), FarmContext(tmp_path, tmp_path / "logs")).availability()
    assert not avail.runnable and "running a Hexagon program under qemu-hexagon-static fails" in avail.reason


def test_hexagon_compiler_that_fails_is_unavailable(tmp_path, monkeypatch):
    _wrap(tmp_path / "bin", "clang", 'echo "clang: error: unknown target hexagon" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    avail = make_transport(_device("hexagon-v68-sim"), FarmContext(tmp_path, tmp_path / "logs")).availability()
    assert not avail.runnable
    assert "building a Hexagon program with clang and ld.lld fails" in avail.reason
    assert "clang: error: unknown target hexagon" in avail.reason


@pytest.mark.parametrize("command", [["devices", "list"], ["run", "--suite", "smoke"]])
def test_triple_llvm_has_no_target_for_is_a_config_error(write, tmp_path, capsys, command):
    """LLVM segfaults the process on such a triple: farm must refuse it first, with file:line."""
    devices = write("devices.yaml", """
        devices:
          - name: bad
            target: {family: x86, mtriple: garbage-triple-xyz, mcpu: haswell}
            transport: {kind: local}
    """)
    code = main([*command, "--devices", str(devices), "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{devices}:2: LLVM has no target for the architecture 'garbage' of mtriple" in err
    assert "fix the target's mtriple" in err
    assert toolchain.triple_problem("aarch64-linux-gnu") == toolchain.triple_problem("armv7a-linux-gnueabihf") == ""
