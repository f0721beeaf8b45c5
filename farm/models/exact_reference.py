"""The exact semantics of a QDQ model, evaluated in float64 with numpy.

ONNX Runtime (our reference) runs dequantize → float32 op → quantize; its float32 accumulation
moves values that sit within ~1e-6 of a rounding boundary to the other side, and in a deep network
those single-level flips propagate. This interpreter computes every op in float64 (exact for the
integer-valued products of any int8 layer), so it shows what an exact integer implementation must
output. Slow and for diagnosis only: a handful of ops, NCHW, no dynamic shapes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from farm.errors import FarmError, error_line

Op = Callable[[list, dict], np.ndarray]


def _axis_shape(ndim: int, axis: int, size: int, a: dict) -> list[int]:
    if a.get("block_size"):  # blocked quantization (opset 21): scales per block along the axis
        raise FarmError("blocked quantization is not covered by the exact-semantics interpreter")
    shape = [1] * ndim
    if size > 1:
        shape[axis % ndim] = -1
    return shape


def _quantize(i, a):
    x, s = i[0], i[1]
    zp = i[2] if len(i) > 2 and i[2] is not None else np.uint8(0)
    shape = _axis_shape(x.ndim, a.get("axis", 1), s.size, a)
    info = np.iinfo(zp.dtype)
    # a tensor the model is given (a float32 input, initializer or Constant-node weight) is divided
    # in float32, as ONNX's reference QuantizeLinear and every runtime do; a computed (float64,
    # exact) value in float64
    wide = np.float32 if x.dtype == np.float32 else np.float64
    q = np.rint((x.astype(wide) / s.astype(wide).reshape(shape)).astype(np.float64)) + \
        zp.astype(np.float64).reshape(shape)
    return np.clip(q, info.min, info.max).astype(zp.dtype)


def _dequantize(i, a):
    x, s = i[0], i[1]
    zp = i[2] if len(i) > 2 and i[2] is not None else np.zeros(1, x.dtype)
    shape = _axis_shape(x.ndim, a.get("axis", 1), s.size, a)
    return (x.astype(np.float64) - zp.astype(np.float64).reshape(shape)) * \
        s.astype(np.float64).reshape(shape)


def _windows(x, kernel, strides, pads, dilations, fill):
    t, left, b, r = pads[0], pads[1], pads[2], pads[3]
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)), constant_values=fill)
    kh, kw = kernel
    dh, dw = dilations
    win = np.lib.stride_tricks.sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1),
                                                   axis=(2, 3))
    return win[:, :, ::strides[0], ::strides[1], ::dh, ::dw]


def _conv(i, a):
    x, w = i[0].astype(np.float64), i[1].astype(np.float64)
    g = a.get("group", 1)
    win = _windows(x, w.shape[2:], a.get("strides", [1, 1]), a.get("pads", [0] * 4),
                   a.get("dilations", [1, 1]), 0.0)
    n, c, oh, ow = win.shape[:4]
    win = win.reshape(n, g, c // g, oh, ow, *w.shape[2:])
    wg = w.reshape(g, w.shape[0] // g, *w.shape[1:])
    y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(n, -1, oh, ow)
    return y + (i[2].reshape(1, -1, 1, 1) if len(i) > 2 and i[2] is not None else 0.0)


def _pool(i, a, kind: str):
    x = i[0].astype(np.float64)
    k = a["kernel_shape"]
    if a.get("ceil_mode", 0):
        raise FarmError("exact reference: pooling with ceil_mode is not supported",
                        "compare against ONNX Runtime only")
    pads, strides, dil = a.get("pads", [0] * 4), a.get("strides", [1, 1]), a.get("dilations", [1, 1])
    if kind == "max":
        return _windows(x, k, strides, pads, dil, -np.inf).max(axis=(4, 5))
    total = _windows(x, k, strides, pads, dil, 0.0).sum(axis=(4, 5))
    if a.get("count_include_pad", 0):
        return total / (k[0] * k[1])
    count = _windows(np.ones((1, 1) + x.shape[2:]), k, strides, pads, dil, 0.0).sum(axis=(4, 5))
    return total / count


def _gemm(i, a):
    x = i[0].T if a.get("transA", 0) else i[0]
    w = i[1].T if a.get("transB", 0) else i[1]
    y = a.get("alpha", 1.0) * (x.astype(np.float64) @ w.astype(np.float64))
    return y + a.get("beta", 1.0) * i[2] if len(i) > 2 and i[2] is not None else y


def _clip(i, a):
    lo = i[1] if len(i) > 1 and i[1] is not None else -np.inf
    hi = i[2] if len(i) > 2 and i[2] is not None else np.inf
    return np.clip(i[0], lo, hi)


def _batchnorm(i, a):
    """Inference-mode batch norm (ONNX's reference BatchNormalization-9 is off by a few per cent)."""
    if a.get("training_mode", 0):
        raise FarmError("exact reference: BatchNormalization in training mode", "compare against ONNX Runtime only")
    x = i[0].astype(np.float64)
    s, b, mean, var = (v.astype(np.float64).reshape([1, -1] + [1] * (x.ndim - 2)) for v in i[1:5])
    return (x - mean) / np.sqrt(var + a.get("epsilon", 1e-5)) * s + b


OPS: dict[str, Op] = {
    "BatchNormalization": _batchnorm,
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda i, a: i[0].astype(np.float64) @ i[1].astype(np.float64),
    "Add": lambda i, a: i[0] + i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Relu": lambda i, a: np.maximum(i[0], 0),
    "Clip": _clip,
    "MaxPool": lambda i, a: _pool(i, a, "max"),
    "AveragePool": lambda i, a: _pool(i, a, "avg"),
    "GlobalAveragePool": lambda i, a: i[0].mean(axis=(2, 3), keepdims=True),
    "Flatten": lambda i, a: i[0].reshape(int(np.prod(i[0].shape[:a.get("axis", 1)])), -1),
    "Reshape": lambda i, a: i[0].reshape([d if d != 0 else i[0].shape[k]
                                          for k, d in enumerate(i[1].tolist())]),
    "Transpose": lambda i, a: np.transpose(i[0], a.get("perm")),
    "Identity": lambda i, a: i[0],
}


# ops that only move or select values: exact on integer tensors in any implementation
_EXACT_ON_INTEGERS = {"Transpose", "Reshape", "Split", "Concat", "Squeeze", "Unsqueeze", "Flatten", "Slice",
                      "Gather", "MaxPool", "Identity", "Pad", "Expand", "Tile", "Shape", "Cast", "Relu"}


def run_exact(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of a QDQ model (QOperator: rewrite it first) computed in float64: the ops above by
    farm's own code, every other op by ONNX's reference implementation (onnx.reference, numpy),
    fed the float64 values, so element-wise ops, resizes, softmaxes and norms run in float64 too."""
    env: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    env.update(feed)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    for node in model.graph.node:
        inputs = [env[n] if n else None for n in node.input]
        fn = OPS.get(node.op_type)
        if fn is None:
            env.update(zip(node.output, _onnx_reference_op(node, inputs, opset), strict=False))
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        env[node.output[0]] = fn(inputs, attrs)
    return [env[o.name] for o in model.graph.output]


def _onnx_reference_op(node: onnx.NodeProto, inputs: list, opset: int) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    if node.domain not in ("", "ai.onnx"):
        raise FarmError(f"exact reference: no float64 form for {node.domain}.{node.op_type}",
                        "compare against ONNX Runtime only")
    first = inputs[0] if inputs else None
    mode = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"nearest")
    selects = node.op_type in _EXACT_ON_INTEGERS or (node.op_type == "Resize" and mode == b"nearest")
    if first is not None and first.dtype.kind in "iu" and not selects:
        # e.g. Resize on uint8 (QOperator models): how its values round is the kernel's choice
        raise FarmError(f"exact reference: {node.op_type} on {first.dtype} has no exact semantics",
                        "compare against ONNX Runtime only")
    if any(x is not None and x.dtype == np.float64 for x in inputs):  # constants stored as float32
        inputs = [x.astype(np.float64) if x is not None and x.dtype.kind == "f" else x for x in inputs]
    try:
        feed = {name: x for name, x in zip(node.input, inputs, strict=True) if name}
        # a one-node model: only a model's opset picks the op's version (a bare node gets the newest)
        graph = helper.make_graph([node], "node", [helper.make_tensor_value_info(n, 0, None) for n in feed],
                                  [helper.make_tensor_value_info(n, 0, None) for n in node.output if n])
        evaluator = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))
        return [np.asarray(y) for y in evaluator.run(None, feed)]
    except Exception as e:  # the reference's own errors for ops, attributes and types it lacks
        raise FarmError(f"exact reference: ONNX's reference implementation cannot run {node.op_type} "
                        f"({type(e).__name__}: {error_line(e, 200)})", "compare against ONNX Runtime only") from None


def exact_outputs(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list | None:
    """Exact-semantics outputs for every input set, or None when the model has an op (or an
    attribute) this interpreter does not cover."""
    from farm.models.qoperator import has_qoperators, qoperator_to_qdq

    try:
        if has_qoperators(model):
            model = qoperator_to_qdq(model)
        if not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
            return None  # a float model: ONNX Runtime's float32 is the reference
        return [[o.astype(np.float32) for o in run_exact(model, feed)] for feed in feeds]
    except Exception:  # noqa: BLE001 - FarmError for what it declines; any other failure of this
        return None  # second opinion leaves ONNX Runtime the judge rather than stopping the run


def with_exact_semantics(vs_ort: dict, vs_exact: dict) -> dict:
    """Correctness metrics judged against the exact semantics — where ONNX Runtime's float32 is
    itself off (near-ties its accumulation moves, spread by the layers after them) the exact
    reference decides — with ONNX Runtime's figures beside them; cosine and top-1 stay against
    ONNX Runtime (top1_missed_exact: positions whose top-1 differs from the exact semantics,
    judged under a noise floor)."""
    return {**vs_ort, "exact": vs_exact["exact"], "max_lsb": vs_exact["max_lsb"], "beyond": vs_exact["beyond"],
            "exact_ort": vs_ort["exact"], "max_lsb_ort": vs_ort["max_lsb"],
            "top1_missed_exact": vs_exact["top1_missed"], "exact_reference": "float64"}
