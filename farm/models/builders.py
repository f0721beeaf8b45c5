"""Float32 ONNX networks built deterministically in code (there is no model hub here).

Weights are seeded He-normal with batch norm already folded into conv bias, so the
networks are the exact layer shapes of their namesakes with reproducible values.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Graph:
    """Accumulates nodes and initializers; names are generated in order, so builds are stable."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True,
             gain: float = 1.0, group: int = 1) -> str:
        fan_in = cin // group * k * k
        w = self.rng.normal(0, gain * np.sqrt(2.0 / fan_in), (cout, cin // group, k, k))
        b = self.rng.normal(0, 0.05, cout)
        y = self.op("Conv", [x, self.const("w", w), self.const("b", b)], kernel_shape=[k, k],
                    strides=[stride, stride], pads=[k // 2] * 4, group=group)
        return self.op("Relu", [y]) if relu else y

    def gemm(self, x: str, cin: int, cout: int) -> str:
        w = self.rng.normal(0, np.sqrt(1.0 / cin), (cout, cin))
        b = self.rng.normal(0, 0.05, cout)
        return self.op("Gemm", [x, self.const("w", w), self.const("b", b)], transB=1)

    def model(self, name: str, x: str, shape: list[int], y: str, out_dim: int) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, [shape[0], out_dim])],
            initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="farm")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def tinyconv(seed: int = 0) -> onnx.ModelProto:
    """A small conv net touching every op class of ResNet: conv, relu, max pool, residual add,
    global average pool, flatten, dense. Input 1x3x32x32, 10 classes."""
    g = _Graph(seed)
    x = "input"
    y = g.conv(x, 3, 16, 3)
    y = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    r = g.conv(g.conv(y, 16, 16, 3), 16, 16, 3, relu=False, gain=0.5)
    y = g.op("Relu", [g.op("Add", [y, r])])
    y = g.conv(y, 16, 32, 3, stride=2)
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])])
    return g.model("tinyconv", x, [1, 3, 32, 32], g.gemm(y, 32, 10), 10)


def _bottleneck(g: _Graph, x: str, cin: int, width: int, stride: int) -> str:
    cout = width * 4
    y = g.conv(x, cin, width, 1)
    y = g.conv(y, width, width, 3, stride=stride)  # v1.5 puts the stride on the 3x3
    y = g.conv(y, width, cout, 1, relu=False, gain=0.3)  # small residual branch keeps depth stable
    short = x if (stride == 1 and cin == cout) else g.conv(x, cin, cout, 1, stride, relu=False)
    return g.op("Relu", [g.op("Add", [short, y])])


def resnet50(seed: int = 0) -> onnx.ModelProto:
    """ResNet-50 (v1.5 layer shapes, as in the ONNX model zoo), 1x3x224x224 → 1000 logits."""
    g = _Graph(seed)
    x = "input"
    y = g.conv(x, 3, 64, 7, stride=2)
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(blocks):
            y = _bottleneck(g, y, cin, width, stride if i == 0 else 1)
            cin = width * 4
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])])
    return g.model("resnet50", x, [1, 3, 224, 224], g.gemm(y, 2048, 1000), 1000)


def tinymobilenet(seed: int = 0) -> onnx.ModelProto:
    """A tiny MobileNet-v1-style net: conv, depthwise 3x3 + pointwise 1x1 blocks with ReLU6 (Clip),
    average pool, flatten, dense. Input 1x3x32x32, 10 classes."""
    g = _Graph(seed)
    lo, hi = g.const("relu6_min", np.array(0.0)), g.const("relu6_max", np.array(6.0))

    def relu6(y: str) -> str:
        return g.op("Clip", [y, lo, hi])

    y = relu6(g.conv("input", 3, 16, 3, stride=2, relu=False))
    cin = 16
    for cout, stride in [(32, 1), (64, 2)]:
        y = relu6(g.conv(y, cin, cin, 3, stride=stride, relu=False, group=cin))
        y = relu6(g.conv(y, cin, cout, 1, relu=False))
        cin = cout
    y = g.op("Flatten", [g.op("AveragePool", [y], kernel_shape=[8, 8])])
    return g.model("tinymobilenet", "input", [1, 3, 32, 32], g.gemm(y, cin, 10), 10)
