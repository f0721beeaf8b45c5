"""Shared fixtures: a per-session data dir (model + compile cache shared between tests), tiny
models built once, helpers to write config files, and the no-orphan check."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import psutil
import pytest

from farm.config.devices import load_devices

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    """A data dir reused across tests so builtin models and artifacts are built once."""
    return tmp_path_factory.mktemp("farmdata")


@pytest.fixture
def write(tmp_path):
    """write("name.yaml", text) → Path, with the text dedented."""

    def _write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text).lstrip("\n"))
        return p

    return _write


def assert_config_error(load, path: Path, line: int, fragment: str) -> None:
    """load(path) raises a ConfigError that names the file and line, says `fragment`, and gives
    what is wrong — what to do on one line."""
    from farm.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load(path)
    msg = err.value.format()
    assert msg.startswith(f"{path}:{line}: "), msg
    assert fragment in msg
    assert " — " in msg and "\n" not in msg, msg


@pytest.fixture
def no_orphans():
    """Fails the test if it leaves any child process of this test process behind."""
    before = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}
    yield
    left = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE:
                left.append((p.pid, p.cmdline()[:4]))
        except psutil.Error:  # exited while we looked
            pass
    assert not left, f"processes left behind: {left}"


HOST_ONLY = """
devices:
  - name: host
    target: {family: x86, mcpu: host}
    transport: {kind: local}
    tags: [x86]
"""


@pytest.fixture(scope="session")
def registry():
    return load_devices(REPO / "devices.yaml")


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("int8")


def run_lib(lib: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Run a compiled library on the host CPU (in-process VM)."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
    outs = []
    for feed in feeds:
        out = vm["main"](*[tvm.runtime.tensor(v) for v in feed.values()])
        outs.append([out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out])
    return outs
