"""Shared fixtures: tiny models built once per session, the host device, compile-and-run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from farm.config.devices import load_devices

REPO = Path(__file__).resolve().parent.parent


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
