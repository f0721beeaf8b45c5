#!/usr/bin/env python
"""farm int8 vs farm fp32 vs ONNX Runtime int8 / fp32 on this host, at one thread and at all cores.

`--device` picks the farm target from devices.yaml (a local device whose instruction sets the host
has, e.g. x86-avx2 for an AVX2-only build); ONNX Runtime always runs as built for the host.

Each thread count runs in its own child process (TVM's thread pool is sized once per process,
from TVM_NUM_THREADS), all four engines on the same inputs, interleaved round by round so a load
change on the shared machine hits them alike. Prints a table with the ratios and the host's
physical floor, and writes JSON to .farm/bench/<model>-<time>.json.

    PYTHONPATH=$PWD python scripts/bench_qresnet50.py [--model tinyconv] [--rounds 5] [--device x86-avx2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Peak int8 / fp32 multiply-accumulates per cycle per core by instruction set (two vector pipes;
# Zen 4 runs 512-bit ops as two 256-bit halves, so its VNNI peak is 64, Intel's up to 128).
PEAK_MACS = {"avx512_vnni": 64, "avx2_int8": 32, "fp32_avx512": 32, "fp32_avx2": 16, "neon_int8": 32,
             "fp32_neon": 8}


def count_macs(path: Path) -> int:
    """Multiply-accumulates of the model's Conv / Gemm / MatMul nodes (after shape inference)."""
    import onnx

    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    shapes.update({t.name: list(t.dims) for t in m.graph.initializer})
    dq = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    total = 0
    for n in m.graph.node:
        if n.op_type in ("Conv", "QLinearConv"):
            w = shapes.get(dq.get(n.input[1], n.input[1])) or shapes.get(n.input[3], [])
            out = shapes.get(n.output[0], [])
            if w and out:
                total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(n.input[0], []), shapes.get(n.output[0], [])
            if a and out:
                total += int(np.prod(out)) * a[-1]
    return total


def floors(macs: int, requires: set[str] | None = None) -> dict[str, float]:
    """Physical floor in ms per core for the host's instruction sets at its clock (limited to
    `requires` when the device names the instruction sets it builds for)."""
    from farm.platform.host import host_info

    f = host_info().features
    if requires:  # e.g. x86-avx2 on an AVX512 host: the device's instruction sets, not the host's
        f = {x for x in f if x in requires or x == "fma"}
    ghz = _clock_ghz()
    int8 = "avx512_vnni" if "avx512_vnni" in f else "avx2_int8" if "avx2" in f else \
        "neon_int8" if "dotprod" in f else None
    fp32 = "fp32_avx512" if "avx512f" in f else "fp32_avx2" if "fma" in f else "fp32_neon"
    out = {"clock_ghz": ghz}
    if int8:
        out["int8_isa"], out["int8_ms"] = int8, macs / (PEAK_MACS[int8] * ghz * 1e9) * 1e3
    out["fp32_isa"], out["fp32_ms"] = fp32, macs / (PEAK_MACS[fp32] * ghz * 1e9) * 1e3
    return out


def _clock_ghz() -> float:
    try:
        mhz = [float(ln.split(":")[1]) for ln in Path("/proc/cpuinfo").read_text().splitlines()
               if ln.lower().startswith("cpu mhz")]
        return max(mhz) / 1000 if mhz else 3.0
    except OSError:
        return 3.0


def worker(model: str, device: str, threads: int, rounds: int, data: Path) -> dict:
    """In a child with TVM_NUM_THREADS=threads: compile (cached) and time the four engines."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from farm.compile.build import compile_model
    from farm.config.devices import load_devices
    from farm.models.fp32 import fp32_model
    from farm.models.reference import model_inputs
    from farm.models.registry import build_builtin, load_onnx

    dev = dataclasses.replace(load_devices(ROOT / "devices.yaml").get(device), threads=threads)
    mf = build_builtin(model, data / "models")
    paths = {"int8": mf.path, "fp32": fp32_model(mf, data / "models")}
    info = model_inputs(load_onnx(mf.path))[0]
    x = np.random.default_rng(0).standard_normal(info.shape).astype(np.float32)
    runs, outs = {}, {}
    for kind, path in paths.items():
        art = compile_model(path, dev, data / "cache")
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(art.lib)), tvm.cpu())
        t = tvm.runtime.tensor(x)
        runs[f"farm {kind}"] = lambda vm=vm, t=t: vm["main"](t)
        res = vm["main"](t)
        outs[f"farm {kind}"] = (res.numpy() if hasattr(res, "numpy") else res[0].numpy())
        outs[f"farm {kind} schedules"] = art.meta.get("lowering", {}).get("schedules", [])
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        runs[f"ort {kind}"] = lambda s=sess, n=name: s.run(None, {n: x})
        outs[f"ort {kind}"] = sess.run(None, {name: x})[0]
    samples: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            samples[k].append((time.perf_counter() - start) * 1e3)
            cpu[k].append((time.process_time() - start_cpu) * 1e3)
    ref = _reference(mf.path, x)
    return {"threads": threads, "median_ms": {k: float(np.median(v)) for k, v in samples.items()},
            "samples_ms": samples, "median_cpu_ms": {k: float(np.median(v)) for k, v in cpu.items()},
            "cpu_samples_ms": cpu,
            "int8_vs_exact_reference_max_abs": float(np.abs(outs["farm int8"] - ref).max()),
            "ort_int8_vs_exact_reference_max_abs": float(np.abs(outs["ort int8"] - ref).max()),
            "schedules": {k: len(outs[f"farm {k} schedules"]) for k in paths}}


def _reference(path: Path, x: np.ndarray) -> np.ndarray:
    """The model's exact QDQ semantics: ONNX Runtime with graph optimizations off."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qresnet50")
    ap.add_argument("--device", default="host", help="farm device of devices.yaml (local)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", default="1,all", help="comma list; 'all' = every core")
    ap.add_argument("--data", type=Path, default=ROOT / ".farm")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.model, a.device, a.worker, a.rounds, a.data)))
        return 0
    from farm.models.registry import build_builtin
    from farm.platform.host import host_info

    cores = os.cpu_count() or 1
    counts = sorted({cores if t == "all" else int(t) for t in a.threads.split(",")})
    results = []
    load_before = os.getloadavg()[0]
    for t in counts:
        # No engine's idle threads may spin while the other one runs (both spin by default, and
        # interleaved on a 2-core machine that made farm at 2 threads look 4x slower than it is).
        env = dict(os.environ, TVM_NUM_THREADS=str(t), OMP_NUM_THREADS=str(t), TVM_THREAD_POOL_SPIN_COUNT="0")
        print(f"[bench] {a.model} at {t} thread(s): compiling (cached after the first run) and timing",
              file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--model", a.model, "--device", a.device,
                              "--rounds", str(a.rounds), "--data", str(a.data), "--worker", str(t)],
                             env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    macs = count_macs(build_builtin(a.model, a.data / "models").path)
    from farm.config.devices import load_devices

    fl = floors(macs, set(load_devices(ROOT / "devices.yaml").get(a.device).requires))
    report = {"model": a.model, "device": a.device, "host": host_info().summary(), "macs": macs, "floor": fl,
              "load_note": f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after the timing, "
                           f"on {cores} cores (other work on the machine slows both engines alike)",
              "results": results, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _print(report)
    out_dir = a.data / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{a.model}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"written {path}")
    return 0


def _print(r: dict) -> None:
    fl = r["floor"]
    print(f"{r['model']} on '{r.get('device', 'host')}', {r['host']}"
          f"  ({r['macs'] / 1e9:.2f} G MACs, clock {fl['clock_ghz']:.2f} GHz)")
    print(f"note: {r['load_note']}")
    engines = ["farm int8", "farm fp32", "ort int8", "ort fp32"]
    print(f"{'threads':>7} " + " ".join(f"{e:>10}" for e in engines) +
          "  int8/ORT8  int8/fp32  int8/floor")
    for res in r["results"]:
        m, t = res["median_ms"], res["threads"]
        floor = fl.get("int8_ms", float("nan")) / t
        print(f"{t:>7} " + " ".join(f"{m[e]:>8.2f}ms" for e in engines) +
              f"  {m['farm int8'] / m['ort int8']:>9.2f}  {m['farm int8'] / m['farm fp32']:>9.2f}"
              f"  {m['farm int8'] / floor:>10.2f}")
    # CPU time (all threads of the process) is not inflated while another process holds the core:
    # on a shared machine its ratio at one thread is the steadier one
    for res in r["results"]:
        c = res.get("median_cpu_ms")
        if c:
            print(f"{res['threads']:>7} CPU time " + " ".join(f"{c[e]:>8.2f}ms" for e in engines) +
                  f"  int8/ORT8 {c['farm int8'] / c['ort int8']:.2f}")
    print(f"floor per core: int8 {fl.get('int8_isa')} {fl.get('int8_ms', float('nan')):.2f} ms, "
          f"fp32 {fl['fp32_isa']} {fl['fp32_ms']:.2f} ms")
    for res in r["results"]:
        print(f"correctness at {res['threads']} thread(s): farm int8 vs exact QDQ reference max |diff| "
              f"{res['int8_vs_exact_reference_max_abs']:.4g} (ORT optimized int8: "
              f"{res['ort_int8_vs_exact_reference_max_abs']:.4g})")


if __name__ == "__main__":
    sys.exit(main())
