#!/usr/bin/env python
"""Where a compiled model's time goes: every kernel call of one inference timed in CPU time
(not inflated while another process holds the core), medians over rounds, grouped by kernel kind
(conv KxK with its fused epilogue, residual add, pad, pool, layout transform, ...), with GOPS for
convs and the time lost against a GOPS target. Builds through the farm's compile cache.

    PYTHONPATH=$PWD TVM_NUM_THREADS=1 python scripts/profile_kernels.py [--model qresnet50]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def kind(name: str, shapes: list[tuple]) -> str:
    """A kernel's kind from its name and argument shapes (a packed conv's weight is 6-D)."""
    weight = next((s for s in shapes if len(s) == 6), None)
    if "conv2d_packed" in name and weight:
        return f"conv{weight[2]}x{weight[3]}" + ("+add" if "qadd" in name else "")
    for k in ("qadd", "pad", "max_pool", "layout_transform", "matmul", "sum", "quantize"):
        if k in name:
            return k
    return "other"


def conv_macs(shapes: list[tuple]) -> int:
    """MACs of a packed conv call: weight [O/vo, I/4, KH, KW, vo, 4], output last (NCHW[c])."""
    w = next((s for s in shapes if len(s) == 6), None)
    if w is None:
        return 0
    out = shapes[-1]
    return w[0] * w[4] * w[1] * w[5] * w[2] * w[3] * out[2] * out[3]


def example_input(info) -> np.ndarray:
    """A seeded input of the model's shape and dtype (normal floats, or the integer type's range)."""
    rng = np.random.default_rng(0)
    dt = np.dtype(info.dtype)
    if dt.kind == "f":
        return rng.standard_normal(info.shape).astype(dt)
    return rng.integers(np.iinfo(dt).min, np.iinfo(dt).max, info.shape, dtype=dt, endpoint=True)


def profile(lib: Path, x: np.ndarray, rounds: int) -> tuple[dict[tuple, list[float]], dict[tuple, int]]:
    """(symbol, arg shapes) → per-round CPU ms of all its calls in one inference, and how many
    calls one inference makes."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
    x = tvm.runtime.tensor(x)
    vm["main"](x)
    times: dict[tuple, list[float]] = {}
    calls: dict[tuple, int] = {}
    start, now = [0.0], [0]  # start of the current call, current round

    def instrument(func, symbol, before, ret, *args):
        if before:
            start[0] = time.thread_time()
        elif not symbol.startswith("vm.builtin"):
            key = (symbol, tuple(tuple(int(d) for d in a.shape) for a in args if hasattr(a, "shape")))
            row = times.setdefault(key, [0.0] * rounds)
            row[now[0]] += (time.thread_time() - start[0]) * 1e3
            if now[0] == 0:
                calls[key] = calls.get(key, 0) + 1
        return 0

    vm.set_instrument(instrument)
    for r in range(rounds):
        now[0] = r
        vm["main"](x)
    return times, calls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qresnet50", help="a builtin's name or a model file")
    ap.add_argument("--device", default="host")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--gops", type=float, default=440.0, help="target for the 'lost' column")
    ap.add_argument("--data", type=Path, default=ROOT / ".farm")
    ap.add_argument("--lib", type=Path, help="profile this compiled model.so instead (e.g. an older build)")
    a = ap.parse_args()
    import onnx

    from farm.compile.build import compile_model
    from farm.config.devices import load_devices
    from farm.models.reference import model_inputs
    from farm.models.registry import build_builtin

    dev = dataclasses.replace(load_devices(ROOT / "devices.yaml").get(a.device), threads=1)
    path = Path(a.model) if Path(a.model).is_file() else build_builtin(a.model, a.data / "models").path
    lib = a.lib or compile_model(path, dev, a.data / "cache").lib
    times, calls = profile(lib, example_input(model_inputs(onnx.load(str(path)))[0]), a.rounds)
    med = {k: float(np.median(v)) for k, v in times.items()}
    total = sum(med.values())
    by_kind: dict[str, float] = {}
    for (name, shapes), ms in med.items():
        by_kind[kind(name, list(shapes))] = by_kind.get(kind(name, list(shapes)), 0.0) + ms
    print(f"{a.model} on {a.device}: {total:.2f} ms CPU in {len(med)} kernels ({lib})")
    for k, ms in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {k:18s} {ms:8.3f} ms  {100 * ms / total:5.1f}%")
    print(f"{'ms':>8} {'GOPS':>6} {'lost':>7} calls  kind / kernel / first and last argument shapes")
    for (name, shapes), ms in sorted(med.items(), key=lambda kv: -kv[1]):
        macs = conv_macs(list(shapes)) * calls[(name, shapes)]
        gops = f"{2 * macs / ms / 1e6:6.0f}" if macs else " " * 6
        lost = f"{ms - 2 * macs / a.gops / 1e6:7.3f}" if macs else " " * 7
        print(f"{ms:8.3f} {gops} {lost} {calls[(name, shapes)]:>5}  {kind(name, list(shapes)):12s} {name[:40]} "
              f"{shapes[0]} -> {shapes[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
