"""ONNX Runtime as the independent reference, and seeded inputs for a model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort

from farm.config.suites import MAX_INPUT_BYTES, InputSpec
from farm.errors import FarmError, error_line
from farm.models.qoperator import has_qoperators, qoperator_to_qdq

_T = onnx.TensorProto
_ONNX_DTYPES = {_T.FLOAT: "float32", _T.FLOAT16: "float16", _T.DOUBLE: "float64", _T.BOOL: "bool",
                _T.UINT8: "uint8", _T.INT8: "int8", _T.UINT16: "uint16", _T.INT16: "int16",
                _T.UINT32: "uint32", _T.INT32: "int32", _T.UINT64: "uint64", _T.INT64: "int64"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str


def model_inputs(model: onnx.ModelProto, sizes: Mapping[str, tuple[int, ...]] | None = None) -> list[TensorInfo]:
    """Graph inputs that are not initializers; an unknown dim takes its size from `sizes` (the
    shapes of the input files), else an unknown batch dim becomes 1 and any other is an error (the
    import and the kernels need every size)."""
    out = []
    for vi in graph_inputs(model):
        tt = vi.type.tensor_type
        dims = list(tt.shape.dim)
        given = (sizes or {}).get(vi.name)
        if given is not None and len(given) == len(dims):
            shape = tuple(d.dim_value if d.dim_value > 0 else g for d, g in zip(dims, given, strict=True))
            out.append(TensorInfo(vi.name, shape, _dtype(vi)))
            continue
        for axis, d in enumerate(dims[1:], start=1):
            if d.dim_value <= 0:
                name = d.dim_param or "?"
                shape = [x.dim_value if x.dim_value > 0 else (x.dim_param or "?") for x in dims]
                raise FarmError(f"input '{vi.name}' has a dynamic size '{name}' on axis {axis} (shape {shape}); "
                                "farm compiles for fixed shapes",
                                "give input files of the shape to compile (--inputs, or the suite's inputs: files:), "
                                "or fix it in the model: python -m onnxruntime.tools.make_dynamic_shape_fixed "
                                f"--input_name {vi.name} --input_shape "
                                f"{','.join(str(s) if isinstance(s, int) else f'<{s}>' for s in [1, *shape[1:]])} "
                                "in.onnx fixed.onnx")
        out.append(TensorInfo(vi.name, tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims), _dtype(vi)))
    return out


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds (an initializer listed as an input has a default value)."""
    inits = {i.name for i in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def has_dynamic_dims(model: onnx.ModelProto) -> bool:
    return any(d.dim_value <= 0 for vi in graph_inputs(model) for d in vi.type.tensor_type.shape.dim)


def _dtype(vi: onnx.ValueInfoProto) -> str:
    elem = vi.type.tensor_type.elem_type
    if elem not in _ONNX_DTYPES:
        known = elem in _T.DataType.values()  # a damaged file may hold any number
        kind = _T.DataType.Name(elem) if known else f"number {elem} (no such type)"
        raise FarmError(f"input '{vi.name}' is of ONNX type {kind}, which farm cannot feed",
                        "give the model inputs of a numeric numpy type")
    return _ONNX_DTYPES[elem]


def make_inputs(infos: list[TensorInfo], spec: InputSpec) -> list[dict[str, np.ndarray]]:
    """`spec.count` seeded input sets; the suite may override shape and dtype of a single input."""
    _check_size(infos, spec)
    rng = np.random.default_rng(spec.seed)
    sets = []
    for _ in range(spec.count):
        feed = {}
        for info in infos:
            shape = spec.shape if (spec.shape and len(infos) == 1) else info.shape
            dtype = spec.dtype if (spec.dtype and len(infos) == 1) else info.dtype
            if np.issubdtype(np.dtype(dtype), np.integer):
                lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
                feed[info.name] = rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
            else:
                feed[info.name] = rng.uniform(spec.low, spec.high, shape).astype(dtype)
        sets.append(feed)
    return sets


def _check_size(infos: list[TensorInfo], spec: InputSpec) -> None:
    """All input sets together within MAX_INPUT_BYTES, checked before any is made: the suite
    checks this when it gives a shape; here the model's own shapes count."""
    one = sum(math.prod(spec.shape if (spec.shape and len(infos) == 1) else i.shape) *
              np.dtype(spec.dtype if (spec.dtype and len(infos) == 1) else i.dtype).itemsize for i in infos)
    if spec.count * one > MAX_INPUT_BYTES:
        raise FarmError(f"{spec.count} input set(s) of {one / 2**20:.1f} MiB each take more than "
                        f"{MAX_INPUT_BYTES / 2**30:g} GiB", "lower the suite's `inputs: count:`")


def ort_session(source: str | bytes, level: ort.GraphOptimizationLevel) -> ort.InferenceSession:
    """An ONNX Runtime CPU session of a model file or its bytes at one graph-optimization level."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.log_severity_level = 3
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def run_reference(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """ONNX Runtime with graph optimizations off: QDQ runs as dequantize → float op → quantize,
    the exact semantics of the model (its fused int8 kernels may saturate on non-VNNI CPUs)."""
    try:
        source: str | bytes = str(path)
        model = onnx.load(str(path))
        if has_qoperators(model):  # ORT's QLinear kernels may saturate; their spec is the QDQ form
            source = qoperator_to_qdq(model).SerializeToString()
        sess = ort_session(source, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        return [sess.run(None, feed) for feed in feeds]
    except Exception as e:  # ORT raises its own exception types for bad graphs and feeds
        raise FarmError(f"ONNX Runtime cannot run {path}: {error_line(e)}",
                        "check the model and the suite's input shape/dtype") from None


def reference_outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> tuple[list[list[np.ndarray]], str | None]:
    """ONNX Runtime's outputs; where ORT cannot run the model (an opset newer than its kernels, as
    in ONNX's own node tests) those of ONNX's reference evaluator, the spec's Python implementation,
    with a note saying so. When neither runs it, ORT's error."""
    try:
        return run_reference(path, feeds), None
    except FarmError as ort_error:
        from onnx.reference import ReferenceEvaluator

        try:
            evaluator = ReferenceEvaluator(onnx.load(str(path)))
            refs = [[np.asarray(o) for o in evaluator.run(None, feed)] for feed in feeds]
        except Exception:  # the evaluator's own errors for ops and types it lacks
            raise ort_error from None
        why = ort_error.what.split(" : ")[-1]  # ORT's "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : why"
        return refs, f"ONNX reference evaluator (ONNX Runtime {ort.__version__} cannot run this model: {why})"


def output_steps(model: onnx.ModelProto) -> list[float | None]:
    """Quantization step of each graph output: the scale of the DequantizeLinear producing it, 1
    for an integer output, None for a float output of unknown grid."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    steps: list[float | None] = []
    for out in model.graph.output:
        elem = out.type.tensor_type.elem_type
        node = producers.get(out.name)
        if np.issubdtype(np.dtype(_ONNX_DTYPES.get(elem, "float32")), np.integer):
            steps.append(1.0)
        elif node is not None and node.op_type == "DequantizeLinear" and node.input[1] in inits:
            scale = onnx.numpy_helper.to_array(inits[node.input[1]])
            steps.append(float(scale) if scale.size == 1 else None)
        else:
            steps.append(None)
    return steps
