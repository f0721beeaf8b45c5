"""The float32 network behind a quantized ONNX model, for the fp32 latency baseline.

Builtin models keep the float model they were quantized from. For a user's file we fold the
quantization away: a DequantizeLinear of a constant becomes the float constant, a
QuantizeLinear → DequantizeLinear pair on an activation becomes the float tensor itself."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from farm.errors import FarmError, NoBaseline, error_line
from farm.models.qoperator import has_qoperators, qoperator_to_qdq
from farm.models.registry import ModelFiles, load_onnx, write_atomic
from farm.models.tflite import is_tflite


def fold_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float copy of a QDQ (or QOperator) model; raises FarmError if quantized ops remain.

    QuantizeLinear → DequantizeLinear becomes Clip to the quantized range (the importer may have
    dropped a ReLU that the range implies); ops that moved quantized data (MaxPool, Flatten, ...)
    run on the float tensor instead."""
    model = qoperator_to_qdq(model) if has_qoperators(model) else _copy(model)
    inits = {i.name: i for i in model.graph.initializer}
    floats: dict[str, str] = {}  # quantized tensor or dequantized activation → its float stand-in
    extra: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and all(i in inits for i in node.input if i):
            extra.append(numpy_helper.from_array(_dequantize(node, inits), node.output[0]))
        elif node.op_type == "DequantizeLinear" and node.input[0] in floats:
            floats[node.output[0]] = floats[node.input[0]]
        elif node.op_type == "QuantizeLinear" and all(i in inits for i in node.input[1:] if i):
            lo, hi = _range(node, inits)
            names = [f"{node.output[0]}__{k}" for k in ("min", "max", "float")]
            extra += [numpy_helper.from_array(np.float32(lo), names[0]),
                      numpy_helper.from_array(np.float32(hi), names[1])]
            nodes.append(helper.make_node("Clip", [floats.get(node.input[0], node.input[0]), *names[:2]],
                                          [names[2]], name=names[2]))
            floats[node.output[0]] = names[2]
        else:
            moved = any(i in floats for i in node.input)
            node.input[:] = [floats.get(i, i) for i in node.input]
            nodes.append(node)
            if moved:  # it ran on quantized data; now its outputs are float
                floats.update({o: o for o in node.output})
    nodes += [helper.make_node("Identity", [floats[o.name]], [o.name])
              for o in model.graph.output if floats.get(o.name, o.name) != o.name]
    used = {i for n in nodes for i in n.input}
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in nodes) or \
            any(o.type.tensor_type.elem_type != onnx.TensorProto.FLOAT for o in model.graph.output):
        raise NoBaseline("cannot derive a float32 model: quantize/dequantize nodes with non-constant "
                        "parameters or integer outputs remain")
    new_inits = [i for i in list(model.graph.initializer) + extra if i.name in used]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(new_inits)
    del model.graph.value_info[:]
    return model


def _range(node: onnx.NodeProto, inits: dict) -> tuple[float, float]:
    """The real interval a QuantizeLinear can represent (per-tensor: its scalar bounds)."""
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    has_zp = len(node.input) > 2 and node.input[2]
    zp = numpy_helper.to_array(inits[node.input[2]]) if has_zp else np.uint8(0)
    if scale.size != 1:
        raise NoBaseline("cannot derive a float32 model: an activation is quantized per axis")
    info = np.iinfo(zp.dtype)
    z = float(zp.reshape(-1)[0])
    return (info.min - z) * float(scale.reshape(-1)[0]), (info.max - z) * float(scale.reshape(-1)[0])


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _dequantize(node: onnx.NodeProto, inits: dict) -> np.ndarray:
    x = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    zp = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) \
        if len(node.input) > 2 and node.input[2] else np.zeros_like(scale)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * x.ndim
    if scale.size > 1:
        shape[axis] = -1
    return ((x - zp.reshape(shape)) * scale.reshape(shape)).astype(np.float32)


def fp32_model(model: ModelFiles, cache_dir: Path) -> Path:
    """The float32 ONNX file for `model`: its own, or one derived (and cached) by `fold_qdq`."""
    if model.fp32_path is not None:
        return model.fp32_path
    digest = hashlib.sha256(model.path.read_bytes()).hexdigest()[:16]
    if is_tflite(model.path):
        return _derived_tflite(model, cache_dir / f"{model.name}-{digest}-fp32-derived.tflite")
    out = cache_dir / f"{model.name}-{digest}-fp32-derived.onnx"
    if not out.exists():
        derived = fold_qdq(load_onnx(model.path))
        try:
            onnx.checker.check_model(derived)
        except Exception as e:  # onnx raises several types for malformed graphs
            raise FarmError(f"the float32 model derived from {model.path.name} is invalid "
                            f"({error_line(e)})", "give the suite `fp32_baseline: false`") from None
        write_atomic(out, derived.SerializeToString())
    return out


def _derived_tflite(model: ModelFiles, out: Path) -> Path:
    from farm.models.tflite_float import float_tflite

    if not out.exists():
        write_atomic(out, float_tflite(model.path))
    return out
