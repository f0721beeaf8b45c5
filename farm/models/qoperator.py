"""QOperator ONNX (QLinearConv, QLinearMatMul, QGemm and the com.microsoft QLinear* family ORT's
quantizer emits: see _RULES) → the equivalent QDQ graph: DequantizeLinear on each quantized
input, the float op, QuantizeLinear on the output. TVM imports that form, and the integer lowering
turns it back into integer compute. The ONNX specs define each QLinear op by exactly this float
composition (round half to even, saturate), so the rewrite keeps the model's semantics."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from farm.errors import FarmError, error_line

MS_DOMAIN = "com.microsoft"


class _Rewriter:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.inits = {i.name: i for i in model.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        self.new_inits: list[onnx.TensorProto] = []
        self.count = 0
        self.declared: dict[str, onnx.ValueInfoProto] | None = None

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}__qdq{self.count}"

    def scale_size(self, name: str, node: onnx.NodeProto) -> int:
        """Elements of a scale: an initializer's, or a graph input's declared shape (ONNX's node
        tests feed scales as inputs); per-axis when above one."""
        if name in self.inits:
            return int(np.prod(self.inits[name].dims))
        if self.declared is None:  # scales computed in the graph (e.g. ORT's inserted casts) need inference
            g = onnx.shape_inference.infer_shapes(self.model).graph
            self.declared = {v.name: v for v in [*g.input, *g.value_info]}
        declared = self.declared.get(name)
        known = declared is not None and declared.type.tensor_type.HasField("shape")
        dims = declared.type.tensor_type.shape.dim if known else None
        if dims is None or any(not d.HasField("dim_value") for d in dims):
            raise FarmError(f"{node.op_type} node '{node.name}': the shape of its scale '{name}' is unknown",
                            "give the scale a static shape, or quantize the model statically")
        return int(np.prod([d.dim_value for d in dims]))

    def dq(self, x: str, scale: str, zp: str, axis: int | None = None) -> str:
        out = self.fresh(x)
        attrs = {"axis": axis} if axis is not None else {}
        inputs = [x, scale] + ([zp] if zp else [])
        self.nodes.append(helper.make_node("DequantizeLinear", inputs, [out], name=out, **attrs))
        return out

    def q(self, x: str, scale: str, zp: str, out: str) -> None:
        inputs = [x, scale] + ([zp] if zp else [])
        self.nodes.append(helper.make_node("QuantizeLinear", inputs, [out], name=self.fresh(out)))

    def op(self, op_type: str, inputs: list[str], node: onnx.NodeProto, drop=(), **extra) -> str:
        out = self.fresh(node.output[0])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in drop}
        attrs.update(extra)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def bias_scale(self, node: onnx.NodeProto, xs: str, ws: str) -> str:
        """x_scale * w_scale, the implied scale of an int32 bias: an initializer when both are
        constant, else a Mul in the graph."""
        name = self.fresh(f"{node.name or node.op_type}_bias_scale")
        if xs in self.inits and ws in self.inits:
            scale = (numpy_helper.to_array(self.inits[xs]).astype(np.float32) *
                     numpy_helper.to_array(self.inits[ws]).astype(np.float32))
            self.new_inits.append(numpy_helper.from_array(scale, name))
        else:
            self.nodes.append(helper.make_node("Mul", [xs, ws], [name], name=name))
        return name

    def weight_axis(self, node: onnx.NodeProto, scale: str, axis: int) -> int | None:
        return axis if self.scale_size(scale, node) > 1 else None

    def unit_scale(self, size: int | None) -> str:
        """Scale 1.0 (per-axis of `size` when given): DequantizeLinear as a plain widening to float."""
        name = self.fresh("unit_scale")
        value = np.ones(size, np.float32) if size else np.float32(1.0)
        self.new_inits.append(numpy_helper.from_array(value, name))
        return name

    def rewrite(self, node: onnx.NodeProto) -> bool:
        rule = _RULES.get(node.op_type)
        if rule is None:
            return False
        rule(self, node, list(node.input) + [""] * 9)
        return True

    def unary(self, node: onnx.NodeProto, i: list[str], op_type: str, drop=(), **extra) -> None:
        """(x, x_scale, x_zp, y_scale, y_zp) → Q(op(DQ(x)))."""
        self.q(self.op(op_type, [self.dq(i[0], i[1], i[2])], node, drop=drop, **extra), i[3], i[4],
               node.output[0])


def _conv(rw: _Rewriter, node: onnx.NodeProto, i: list[str]) -> None:
    x = rw.dq(i[0], i[1], i[2])
    w = rw.dq(i[3], i[4], i[5], rw.weight_axis(node, i[4], 0))
    ins = [x, w] + ([rw.dq(i[8], rw.bias_scale(node, i[1], i[4]), "", rw.weight_axis(node, i[4], 0))]
                    if i[8] else [])
    rw.q(rw.op("Conv", ins, node), i[6], i[7], node.output[0])


def _matmul(rw: _Rewriter, node: onnx.NodeProto, i: list[str]) -> None:
    a = rw.dq(i[0], i[1], i[2])
    b = rw.dq(i[3], i[4], i[5], rw.weight_axis(node, i[4], -1))
    rw.q(rw.op("MatMul", [a, b], node), i[6], i[7], node.output[0])


def _conv_integer(rw: _Rewriter, node: onnx.NodeProto, i: list[str]) -> None:
    """ConvInteger (x, w, x_zp, w_zp) → int32, which TVM's frontend cannot import: both widened by
    DequantizeLinear with scale 1, Conv, Cast to int32 — the integer lowering computes that conv
    in int32; in float it is exact while the sums stay below 2^24."""
    w_zps = rw.scale_size(i[3], node) if i[3] else 1
    per_channel = w_zps if w_zps > 1 else None
    x = rw.dq(i[0], rw.unit_scale(None), i[2])
    w = rw.dq(i[1], rw.unit_scale(per_channel), i[3], 0 if per_channel else None)
    y = rw.op("Conv", [x, w], node)
    rw.nodes.append(helper.make_node("Cast", [y], [node.output[0]], name=rw.fresh(node.output[0]),
                                     to=onnx.TensorProto.INT32))


def _gemm(rw: _Rewriter, node: onnx.NodeProto, i: list[str]) -> None:
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    a = rw.dq(i[0], i[1], i[2])
    b = rw.dq(i[3], i[4], i[5], rw.weight_axis(node, i[4], 0 if trans_b else 1))
    ins = [a, b] + ([rw.dq(i[6], rw.bias_scale(node, i[1], i[4]), "", rw.weight_axis(node, i[4], 0))]
                    if i[6] else [])
    if i[7]:
        rw.q(rw.op("Gemm", ins, node), i[7], i[8], node.output[0])
    else:  # no y_scale: the output is float
        rw.nodes.append(helper.make_node("Gemm", ins, [node.output[0]], name=node.name, **_attrs(node)))


def _binary(rw: _Rewriter, node: onnx.NodeProto, i: list[str]) -> None:
    a, b = rw.dq(i[0], i[1], i[2]), rw.dq(i[3], i[4], i[5])
    rw.q(rw.op(node.op_type.removeprefix("QLinear"), [a, b], node), i[6], i[7], node.output[0])


def _pool(rw: _Rewriter, node: onnx.NodeProto, i: list[str]) -> None:
    if any(a.name == "channels_last" and a.i for a in node.attribute):
        raise FarmError(f"{node.op_type} node '{node.name}' is channels_last", "export the model in NCHW layout")
    rw.unary(node, i, node.op_type.removeprefix("QLinear"), drop=("channels_last",))


def _concat(rw: _Rewriter, node: onnx.NodeProto, i: list[str]) -> None:
    """(y_scale, y_zp, then x, x_scale, x_zp for each input)."""
    ins = list(node.input)
    parts = [rw.dq(ins[k], ins[k + 1], ins[k + 2]) for k in range(2, len(ins), 3)]
    rw.q(rw.op("Concat", parts, node), ins[0], ins[1], node.output[0])


def _softmax(rw: _Rewriter, node: onnx.NodeProto, i: list[str]) -> None:
    """ORT's `opset` attribute keeps the original Softmax's semantics: before opset 13 it ran over
    the input flattened to 2-D at `axis` (default 1), from 13 on over `axis` alone (default -1)."""
    attrs = _attrs(node)
    opset = attrs.get("opset", 13)
    if opset >= 13:
        rw.unary(node, i, "Softmax", drop=("opset",))
        return
    x = rw.dq(i[0], i[1], i[2])
    flat = rw.op("Flatten", [x], node, drop=("opset", "axis"), axis=attrs.get("axis", 1))
    y = rw.op("Softmax", [flat], node, drop=("opset", "axis"), axis=1)
    shape = rw.op("Shape", [x], node, drop=("opset", "axis"))
    rw.q(rw.op("Reshape", [y, shape], node, drop=("opset", "axis")), i[3], i[4], node.output[0])


def _where(rw: _Rewriter, node: onnx.NodeProto, i: list[str]) -> None:
    """(condition, x, x_scale, x_zp, y, y_scale, y_zp, z_scale, z_zp)."""
    x, y = rw.dq(i[1], i[2], i[3]), rw.dq(i[4], i[5], i[6])
    rw.q(rw.op("Where", [i[0], x, y], node), i[7], i[8], node.output[0])


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


_RULES = {
    "QLinearConv": _conv, "QLinearMatMul": _matmul, "QGemm": _gemm, "ConvInteger": _conv_integer,
    "QLinearAdd": _binary, "QLinearMul": _binary,
    "QLinearGlobalAveragePool": _pool, "QLinearAveragePool": _pool,
    "QLinearConcat": _concat, "QLinearSoftmax": _softmax, "QLinearWhere": _where,
    "QLinearSigmoid": lambda rw, node, i: rw.unary(node, i, "Sigmoid"),
    "QLinearLeakyRelu": lambda rw, node, i: rw.unary(node, i, "LeakyRelu"),
}
QOPERATOR_OPS = tuple(_RULES)


def has_qoperators(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QOPERATOR_OPS for n in model.graph.node)


def qoperator_to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model with every QOperator node replaced by its QDQ form; a model below
    opset 13 is first converted to 13 by ONNX's version converter (per-axis DequantizeLinear
    needs 13; the com.microsoft ops keep their own version)."""
    model = _at_least_opset_13(model)
    rw = _Rewriter(model)
    for node in model.graph.node:
        if not rw.rewrite(node):
            rw.nodes.append(node)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(rw.nodes)
    out.graph.initializer.extend(rw.new_inits)
    return out


def _at_least_opset_13(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnx import version_converter

    opset = {o.domain: o.version for o in model.opset_import}.get("", 0)
    if opset >= 13:
        return model
    try:
        return version_converter.convert_version(model, 13)
    except Exception as e:  # the converter raises RuntimeError/ValueError/its own types
        raise FarmError(f"QOperator model has opset {opset}, and ONNX's version converter cannot take it "
                        f"to 13 ({error_line(e)})", "re-export the model with opset >= 13") from None
