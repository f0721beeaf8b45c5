"""ONNX → Relax → (int8 lowering) → compiled library for one device, through the cache."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.compile import hexagon
from farm.compile.cache import Cache, cache_key
from farm.compile.schedules.records import load_choices, record_path
from farm.config.devices import Device
from farm.errors import FarmError, error_line
from farm.models.normalize import compiled_form
from farm.models.qoperator import has_qoperators, qoperator_to_qdq
from farm.models.reference import model_inputs
from farm.models.registry import load_onnx
from farm.models.tflite import is_tflite
from farm.platform.artifacts import ASM_NAME, EXE_NAME
from farm.platform.targets import export_fn, make_target, target_dict
from farm.platform.toolchain import first_error_line, linker

LIB_NAME = "model.so"


class CompileError(FarmError):
    """TVM could not import or build the model for a target (recorded as kind 'compile').
    `detail`: everything the failing step printed, for the compile log."""

    def __init__(self, what: str, todo: str = "", *, detail: str = "", **where):
        super().__init__(what, todo, **where)
        self.detail = detail


@dataclass
class Artifact:
    lib: Path
    key: str
    target: dict[str, Any]
    compile_seconds: float
    cached: bool
    meta: dict[str, Any] = field(default_factory=dict)


def check_importable(model, model_path: Path) -> None:
    """Refuse up front, once for all devices, a model with operators TVM's ONNX frontend lacks."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    if has_qoperators(model):
        model = qoperator_to_qdq(model)
    known = _get_convert_map()
    missing = sorted({n.op_type for n in model.graph.node if n.op_type not in known})
    if missing:
        raise FarmError(f"{model_path} uses {', '.join(missing)}, which TVM's ONNX frontend cannot import",
                        "replace those operators (or export the model with supported ones)")


def import_onnx(model_path: Path):
    """The Relax module of an ONNX model (normalized first: static shapes, constant subgraphs
    folded), with weights as constants."""
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    model = compiled_form(load_onnx(model_path), model_path.name)
    shapes = {i.name: list(i.shape) for i in model_inputs(model)}
    try:
        mod = from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    except Exception as e:  # OpNotImplemented and friends
        raise CompileError(f"TVM cannot import {model_path.name}: {error_line(e)}",
                           "the model uses an operator TVM's ONNX frontend does not support") from None
    return relax.transform.DecomposeOpsForInference()(mod)


def lower_model(model_path: Path):
    """Import and lower to integers (ONNX: exact rounding; TFLite: TFLite's fixed point)."""
    from farm.compile.int8.lower import lower_int8

    if is_tflite(model_path):
        from farm.compile.int8.tflite_lower import cancel_transposes, import_tflite

        mod, reasons = lower_int8(import_tflite(model_path), tflite=True)
        return cancel_transposes(mod), reasons
    return lower_int8(import_onnx(model_path))


def _build(model_path: Path, device: Device, out: Path, tuned: dict) -> dict[str, Any]:
    """Build into `out`; returns the lowering report (what the compute really uses) with the
    schedule applied to each kernel."""
    import tvm
    from tvm import relax

    from farm.compile.lowering_report import build_report, relax_dot_ops, relax_float_classes, relax_lookup_ops
    from farm.compile.schedules import apply_schedules

    target = make_target(device)
    mod, reasons = lower_model(model_path)
    ops = relax_dot_ops(mod, reasons) + relax_lookup_ops(mod)
    classes = relax_float_classes(mod, reasons)
    if device.target.family == "hexagon":  # no TVM runtime on the DSP: a static executable
        _step(model_path, device, "building the Hexagon executable",
              lambda: hexagon.build_executable(mod, device.target.tag, out))
        return build_report(ops, out / ASM_NAME, device.target.family, reasons, classes)
    mod, schedule, schedules = apply_schedules(mod, target, tuned)
    pipeline = tvm.transform.Sequential([relax.get_pipeline("zero"), schedule,
                                         relax.get_pipeline("default_build")])

    ex = _step(model_path, device, "TVM's build", lambda: tvm.compile(mod, target, relax_pipeline=pipeline))
    fcompile = export_fn(device)
    cc = linker(device.target.family)[0]
    _step(model_path, device, f"linking {LIB_NAME} with {cc}", lambda: ex.export_library(
        str(out / LIB_NAME), **({"fcompile": fcompile} if fcompile else {})))
    return {**build_report(ops, out / LIB_NAME, device.target.family, reasons, classes), "schedules": schedules}


def _step(model_path: Path, device: Device, step: str, work: Callable[[], Any]) -> Any:
    """Run one build step; a failure names the step and its first meaningful line, and keeps
    all that was printed as the error's detail."""
    try:
        return work()
    except FarmError:
        raise
    except Exception as e:
        text = str(e)
        tool_output = text.startswith("Compilation error")  # TVM's wording for a failed cc/ld run
        line = first_error_line(text) if tool_output else error_line(e)
        todo = (f"apt-get install {linker(device.target.family)[1]} if it is missing" if tool_output
                else "report the model and target")
        raise CompileError(f"{step} failed for '{device.name}' ({model_path.name}): {line}", todo,
                           detail=text) from None


def _recipe(model_path: Path, device: Device) -> tuple[str, dict[str, Any], dict[str, Any], dict]:
    """What decides the artifact: its cache key, target, build options and tuned schedules."""
    target = target_dict(device)
    hexagon_exe = device.target.family == "hexagon"
    tuned = {} if hexagon_exe else load_choices(record_path(target, model_path.stem))
    options: dict[str, Any] = hexagon.cache_options() if hexagon_exe else {
        "pipeline": "zero+schedules+default_build",
        "tuned": {k: c.to_json() for k, c in sorted(tuned.items())}}
    return cache_key(model_path, target, options), target, options, tuned


def _artifact(device: Device, key: str, target: dict[str, Any], meta: dict[str, Any], cached: bool) -> Artifact:
    lib = EXE_NAME if device.target.family == "hexagon" else LIB_NAME
    return Artifact(Path(meta["dir"]) / lib, key, target, meta["compile_seconds"], cached, meta)


def cached_artifact(model_path: Path, device: Device, cache_root: Path) -> Artifact | None:
    """The model's artifact for the device if the cache holds it intact, without building: cheap
    enough to ask before starting a compiler process."""
    key, target, _, _ = _recipe(model_path, device)
    meta = Cache(cache_root).lookup(key)
    return None if meta is None else _artifact(device, key, target, meta, cached=True)


def compile_model(model_path: Path, device: Device, cache_root: Path) -> Artifact:
    """Compile (or fetch from cache) the model for the device."""
    key, target, options, tuned = _recipe(model_path, device)
    cache = Cache(cache_root)
    meta = cache.lookup(key)
    if meta is not None:
        return _artifact(device, key, target, meta, cached=True)
    build_dir = cache.new_build_dir()
    start = time.perf_counter()
    try:
        lowering = _build(model_path, device, build_dir, tuned)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    meta = cache.store(key, build_dir, {"target": target, "options": options,
                                        "compile_seconds": time.perf_counter() - start,
                                        "model": model_path.name, "lowering": lowering})
    return _artifact(device, key, target, meta, cached=False)
