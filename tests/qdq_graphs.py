"""Hand-written QDQ graphs for op patterns ORT's quantizer folds away (ReLU, Clip between conv and
quantize), weight zero points ≠ 0, average pool with padding and two-activation MatMul."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class QDQ:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, p: str) -> str:
        self.n += 1
        return f"{p}{self.n}"

    def init(self, value: np.ndarray) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def q(self, x: str, scale: float, zp: int, dtype=np.uint8) -> str:
        return self.node("QuantizeLinear", [x, self.init(np.float32(scale)), self.init(dtype(zp))])

    def dq(self, x: str, scale, zp, dtype=np.uint8, axis: int | None = None) -> str:
        attrs = {"axis": axis} if axis is not None else {}
        return self.node("DequantizeLinear", [x, self.init(np.asarray(scale, np.float32)),
                                              self.init(np.asarray(zp, dtype))], **attrs)

    def qdq(self, x: str, scale: float, zp: int = 128) -> str:
        return self.dq(self.q(x, scale, zp), scale, zp)

    def weight(self, shape, per_channel: bool, zp: int = 0) -> str:
        w = self.rng.integers(-127, 128, shape).astype(np.int8)
        fan_in = int(np.prod(shape[1:]))
        scale = (self.rng.uniform(0.5, 1.5, shape[0]) if per_channel else np.array(1.0)) \
            / (127 * np.sqrt(fan_in))
        zps = np.full(scale.shape, zp, np.int8)
        return self.dq(self.init(w), scale.astype(np.float32), zps, np.int8,
                       axis=0 if per_channel else None)

    def model(self, x_shape, out: str, out_shape) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, "t",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
                              initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def patterns(per_channel: bool) -> onnx.ModelProto:
    """conv+ReLU, depthwise conv+Clip(0,6), avg pool (pads, count_include_pad=0), conv with weight
    zero point 3 (int8 weights plus the compensation term), reshape, MatMul on a constant, MatMul of two activations."""
    g = QDQ(1 if per_channel else 2)
    x = g.qdq("input", 2 / 255)
    y = g.node("Conv", [x, g.weight((8, 4, 3, 3), per_channel)], pads=[1, 1, 1, 1])
    y = g.qdq(g.node("Relu", [y]), 3 / 255, 0)
    y = g.node("Conv", [y, g.weight((8, 1, 3, 3), per_channel)], pads=[1, 1, 1, 1], group=8,
               strides=[2, 2])
    y = g.qdq(g.node("Clip", [y, g.init(np.float32(0.0)), g.init(np.float32(0.5))]), 0.4 / 255, 0)
    y = g.qdq(g.node("AveragePool", [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2],
                     count_include_pad=0), 0.15 / 255, 0)
    y = g.qdq(g.node("Conv", [y, g.weight((4, 8, 1, 1), per_channel, zp=3)]), 0.12 / 255)
    y = g.qdq(g.node("Reshape", [y, g.init(np.array([1, 4, 4], np.int64))]), 0.12 / 255)
    w = g.rng.integers(-127, 128, (4, 6)).astype(np.int8)
    scale = np.float32(1 / (127 * 2))
    y = g.qdq(g.node("MatMul", [y, g.dq(g.init(w), scale, np.int8(0), np.int8)]), 0.1 / 255)
    yt = g.qdq(g.node("Transpose", [y], perm=[0, 2, 1]), 0.1 / 255)
    y = g.dq(g.q(g.node("MatMul", [yt, y]), 0.012 / 255, 128), 0.012 / 255, 128)
    return g.model([1, 4, 8, 8], y, [1, 6, 6])


def constant_node_weights(seed: int = 0) -> onnx.ModelProto:
    """A float net whose weights are Constant nodes, as exporters such as Paddle's write them: ORT's
    quantizer, with no pre-processing, quantizes such weights like activations (uint8, per-tensor,
    zero point ≠ 0). Convs with padding and stride, grouped conv, depthwise conv, 1×1 conv, MatMul."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []

    def weight(shape) -> str:
        name = f"w{len(nodes)}"
        value = (rng.normal(0, 1, shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)
        shift = rng.choice([-1, 1]) * rng.uniform(0.2, 0.5) / np.sqrt(np.prod(shape[1:]))
        value += np.float32(shift)  # off-centre: the weight's zero point ≠ 128
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value)))
        return name

    def op(kind: str, inputs: list[str], **attrs) -> str:
        out = f"{kind.lower()}{len(nodes)}"
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    # 16 and 32 channels: the dot-product templates and their channel blocks (16 on VNNI, 8 on AVX2)
    y = op("Relu", [op("Conv", ["input", weight((16, 4, 3, 3))], pads=[1, 1, 1, 1], strides=[2, 2])])
    y = op("Relu", [op("Conv", [y, weight((32, 16, 3, 3))], pads=[1, 1, 1, 1])])
    y = op("Relu", [op("Conv", [y, weight((16, 16, 3, 3))], pads=[1, 1, 1, 1], group=2)])
    y = op("Relu", [op("Conv", [y, weight((16, 1, 3, 3))], pads=[0, 1, 1, 0], group=16)])
    y = op("Conv", [y, weight((6, 16, 1, 1))])
    y = op("MatMul", [op("Reshape", [y, op("Constant", [], value=numpy_helper.from_array(
        np.array([1, 6, -1], np.int64)))]), weight((9, 5))])
    g = helper.make_graph(nodes, "constant_weights",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 6, 5])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m
