"""QOperator ONNX (QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearGlobalAveragePool,
QLinearAveragePool, QLinearMul) → the equivalent QDQ graph: DequantizeLinear on each quantized
input, the float op, QuantizeLinear on the output. TVM imports that form, and the integer lowering
turns it back into integer compute. The ONNX specs define each QLinear op by exactly this float
composition (round half to even, saturate), so the rewrite keeps the model's semantics."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from farm.errors import FarmError

MS_DOMAIN = "com.microsoft"


class _Rewriter:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.inits = {i.name: i for i in model.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        self.new_inits: list[onnx.TensorProto] = []
        self.count = 0

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}__qdq{self.count}"

    def const_array(self, name: str, node: onnx.NodeProto) -> np.ndarray:
        if name not in self.inits:
            raise FarmError(f"{node.op_type} node '{node.name}' has a non-constant scale '{name}'",
                            "QOperator models need constant scales; quantize the model statically")
        return numpy_helper.to_array(self.inits[name])

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
        """Initializer holding x_scale * w_scale, the implied scale of an int32 bias."""
        scale = (self.const_array(xs, node).astype(np.float32) *
                 self.const_array(ws, node).astype(np.float32)).astype(np.float32)
        name = self.fresh(f"{node.name or node.op_type}_bias_scale")
        self.new_inits.append(numpy_helper.from_array(scale, name))
        return name

    def weight_axis(self, node: onnx.NodeProto, scale: str, axis: int) -> int | None:
        return axis if self.const_array(scale, node).size > 1 else None

    def rewrite(self, node: onnx.NodeProto) -> bool:
        i = list(node.input) + [""] * 9
        t = node.op_type
        if t == "QLinearConv":
            x = self.dq(i[0], i[1], i[2])
            w = self.dq(i[3], i[4], i[5], self.weight_axis(node, i[4], 0))
            ins = [x, w] + ([self.dq(i[8], self.bias_scale(node, i[1], i[4]), "",
                                     self.weight_axis(node, i[4], 0))] if i[8] else [])
            self.q(self.op("Conv", ins, node), i[6], i[7], node.output[0])
        elif t == "QLinearMatMul":
            a = self.dq(i[0], i[1], i[2])
            b = self.dq(i[3], i[4], i[5], self.weight_axis(node, i[4], -1))
            self.q(self.op("MatMul", [a, b], node), i[6], i[7], node.output[0])
        elif t == "QGemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            a = self.dq(i[0], i[1], i[2])
            b = self.dq(i[3], i[4], i[5], self.weight_axis(node, i[4], 0 if trans_b else 1))
            ins = [a, b] + ([self.dq(i[6], self.bias_scale(node, i[1], i[4]), "",
                                     self.weight_axis(node, i[4], 0))] if i[6] else [])
            if i[7]:
                self.q(self.op("Gemm", ins, node), i[7], i[8], node.output[0])
            else:  # no y_scale: the output is float
                self.nodes.append(helper.make_node("Gemm", ins, [node.output[0]], name=node.name,
                                                   **_attrs(node)))
        elif t in ("QLinearAdd", "QLinearMul"):
            a, b = self.dq(i[0], i[1], i[2]), self.dq(i[3], i[4], i[5])
            self.q(self.op(t.removeprefix("QLinear"), [a, b], node), i[6], i[7], node.output[0])
        elif t in ("QLinearGlobalAveragePool", "QLinearAveragePool"):
            if any(a.name == "channels_last" and a.i for a in node.attribute):
                raise FarmError(f"{t} node '{node.name}' is channels_last",
                                "export the model in NCHW layout")
            x = self.dq(i[0], i[1], i[2])
            y = self.op(t.removeprefix("QLinear"), [x], node, drop=("channels_last",))
            self.q(y, i[3], i[4], node.output[0])
        else:
            return False
        return True


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul",
                 "QLinearGlobalAveragePool", "QLinearAveragePool")


def has_qoperators(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QOPERATOR_OPS for n in model.graph.node)


def qoperator_to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model with every QOperator node replaced by its QDQ form."""
    rw = _Rewriter(model)
    for node in model.graph.node:
        if not rw.rewrite(node):
            rw.nodes.append(node)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(rw.nodes)
    out.graph.initializer.extend(rw.new_inits)
    opsets = {o.domain: o.version for o in out.opset_import}
    if opsets.get("", 0) < 13:  # per-axis DequantizeLinear needs opset 13
        raise FarmError(f"QOperator model has opset {opsets.get('', 0)}; 13 or newer is needed",
                        "re-export the model with opset >= 13")
    return out
