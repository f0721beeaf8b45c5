"""Small float32 networks with the op classes of the models users ship, seeded like builders.py:
a YOLOv8-style detector (SiLU, Split, Concat, SPPF max pools, nearest Resize), a DBNet-style text
detector on a MobileNetV3-style backbone (HardSwish, HardSigmoid, bilinear Resize, ConvTranspose)
and an SVTR/ViT-style attention block (LayerNormalization, MatMul of two activations, Softmax, GELU).
Each is quantized by ONNX Runtime's own quantizer like the other builtins (registry.py)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from farm.models.builders import OPSET, _Graph


class _Net(_Graph):
    def silu(self, x: str) -> str:
        return self.op("Mul", [x, self.op("Sigmoid", [x])])

    def conv_silu(self, x: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
        return self.silu(self.conv(x, cin, cout, k, stride, relu=False))

    def ints(self, prefix: str, values: list[int]) -> str:
        name = self.name(prefix)
        self.inits.append(onnx.numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    def floats(self, prefix: str, values: list[float]) -> str:
        return self.const(prefix, np.array(values))

    def resize(self, x: str, scale: int, mode: str) -> str:
        attrs = {"nearest_mode": "floor"} if mode == "nearest" else {}
        return self.op("Resize", [x, "", self.floats("scales", [1, 1, scale, scale])], mode=mode, **attrs)

    def net(self, name: str, shape: list[int], y: str, out_shape: list[int]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info(y, TensorProto.FLOAT, out_shape)],
                                  initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="farm")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def _c2f(g: _Net, x: str, c: int) -> str:
    """YOLOv8's C2f: conv, split in two halves, a residual bottleneck on one, concat, conv."""
    y = g.conv_silu(x, c, c, 1)
    a, b = (g.name("split") for _ in range(2))
    g.nodes.append(helper.make_node("Split", [y, g.ints("halves", [c // 2, c // 2])], [a, b], axis=1))
    r = g.conv_silu(g.conv_silu(b, c // 2, c // 2, 3), c // 2, c // 2, 3)
    return g.conv_silu(g.op("Concat", [a, b, g.op("Add", [b, r])], axis=1), c * 3 // 2, c, 1)


def tinydetector(seed: int = 0) -> onnx.ModelProto:
    """YOLOv8-style: stem, two C2f stages, SPPF, a nearest-upsampled neck (FPN concat) and a head of
    box and class maps, sigmoid on the classes. Input 1x3x64x64 → 1x(4+8)x(16·16)."""
    g = _Net(seed)
    p1 = g.conv_silu("input", 3, 16, 3, 2)
    p2 = _c2f(g, g.conv_silu(p1, 16, 32, 3, 2), 32)  # 16x16
    p3 = _c2f(g, g.conv_silu(p2, 32, 64, 3, 2), 64)  # 8x8
    s = g.conv_silu(p3, 64, 32, 1)  # SPPF: three chained 5x5 max pools, concatenated
    pools = [s]
    for _ in range(3):
        pools.append(g.op("MaxPool", [pools[-1]], kernel_shape=[5, 5], pads=[2, 2, 2, 2]))
    s = g.conv_silu(g.op("Concat", pools, axis=1), 128, 64, 1)
    n = _c2f(g, g.conv_silu(g.op("Concat", [g.resize(s, 2, "nearest"), p2], axis=1), 96, 32, 1), 32)
    box = g.conv(g.conv_silu(n, 32, 32, 3), 32, 4, 1, relu=False)
    cls = g.op("Sigmoid", [g.conv(g.conv_silu(n, 32, 32, 3), 32, 8, 1, relu=False)])
    y = g.op("Reshape", [g.op("Concat", [box, cls], axis=1), g.ints("shape", [1, 12, 256])])
    return g.net("tinydetector", [1, 3, 64, 64], y, [1, 12, 256])


def _hswish(g: _Net, x: str) -> str:
    return g.op("HardSwish", [x])


def _se(g: _Net, x: str, c: int) -> str:
    """MobileNetV3's squeeze-excite: pool, 1x1 relu, 1x1, hard sigmoid, scale."""
    s = g.op("GlobalAveragePool", [x])
    s = g.conv(g.conv(s, c, c // 4, 1), c // 4, c, 1, relu=False)
    return g.op("Mul", [x, g.op("HardSigmoid", [s], alpha=1 / 6, beta=0.5)])


def tinydbnet(seed: int = 0) -> onnx.ModelProto:
    """DBNet-style text detector: a MobileNetV3-style backbone (hard swish, depthwise convs,
    squeeze-excite), an FPN of bilinear upsampling and adds, and the DB head (conv, two stride-2
    ConvTranspose, sigmoid). Input 1x3x64x64 → 1x1x64x64 probability map."""
    g = _Net(seed)
    c1 = _hswish(g, g.conv("input", 3, 16, 3, 2, relu=False))  # 32x32
    c2 = g.conv(g.conv(c1, 16, 16, 3, 2, group=16), 16, 24, 1, relu=False)  # 16x16
    c3 = _hswish(g, g.conv(c2, 24, 48, 1, relu=False))
    c3 = g.conv(_se(g, _hswish(g, g.conv(c3, 48, 48, 3, 2, relu=False, group=48)), 48), 48, 32, 1,
                relu=False)  # 8x8
    f3 = g.conv(c3, 32, 16, 1, relu=False)
    f2 = g.op("Add", [g.conv(c2, 24, 16, 1, relu=False), g.resize(f3, 2, "linear")])
    f = g.op("Concat", [f2, g.resize(f3, 2, "linear")], axis=1)  # 32 channels, 16x16
    h = g.conv(f, 32, 8, 3)
    for cin, cout in ((8, 8), (8, 1)):
        w = g.rng.normal(0, np.sqrt(2.0 / (cin * 4)), (cin, cout, 2, 2))
        h = g.op("ConvTranspose", [h, g.const("w", w), g.const("b", g.rng.normal(0, 0.05, cout))],
                 kernel_shape=[2, 2], strides=[2, 2])
        h = g.op("Relu", [h]) if cout > 1 else h
    y = g.op("Sigmoid", [h])
    return g.net("tinydbnet", [1, 3, 64, 64], y, [1, 1, 64, 64])


def _matmul(g: _Net, x: str, cin: int, cout: int) -> str:
    w = g.rng.normal(0, np.sqrt(1.0 / cin), (cin, cout))
    return g.op("Add", [g.op("MatMul", [x, g.const("w", w)]), g.const("b", g.rng.normal(0, 0.02, cout))])


def _layernorm(g: _Net, x: str, d: int) -> str:
    return g.op("LayerNormalization", [x, g.const("gamma", 1 + g.rng.normal(0, 0.1, d)),
                                       g.const("beta", g.rng.normal(0, 0.1, d))], axis=-1, epsilon=1e-5)


def tinyattention(seed: int = 0, d: int = 32, heads: int = 2) -> onnx.ModelProto:
    """SVTR/ViT-style: conv patch embedding to a sequence of 4x16 = 64 tokens, one pre-norm
    transformer block (multi-head attention: MatMul Q·Kᵀ and softmax · V of two activations; an MLP
    with erf GELU), a final LayerNorm and a per-token classifier with softmax, the shape of a text
    recognizer's [1, T, classes] output. Input 1x3x16x64 → 1x64x20."""
    g = _Net(seed)
    t, dh = 64, d // heads
    x = g.conv(g.conv("input", 3, 16, 3, 2), 16, d, 3, 2, relu=False)  # 1xdx4x16
    x = g.op("Transpose", [g.op("Reshape", [x, g.ints("shape", [1, d, t])])], perm=[0, 2, 1])  # 1xTxd
    h = _layernorm(g, x, d)

    def split_heads(y: str) -> str:  # 1xTxd → 1 x heads x T x dh
        return g.op("Transpose", [g.op("Reshape", [y, g.ints("shape", [1, t, heads, dh])])], perm=[0, 2, 1, 3])

    q, k, v = (split_heads(_matmul(g, h, d, d)) for _ in range(3))
    scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                          g.floats("scale", [1 / np.sqrt(dh)])])
    a = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    a = g.op("Reshape", [g.op("Transpose", [a], perm=[0, 2, 1, 3]), g.ints("shape", [1, t, d])])
    x = g.op("Add", [x, _matmul(g, a, d, d)])
    m = _matmul(g, _layernorm(g, x, d), d, 2 * d)
    gelu = g.op("Mul", [g.op("Mul", [m, g.op("Add", [g.op("Erf", [g.op("Div", [m, g.floats("sqrt2", [np.sqrt(2)])])]),
                                                     g.floats("one", [1.0])])]), g.floats("half", [0.5])])
    x = g.op("Add", [x, _matmul(g, gelu, 2 * d, d)])
    y = g.op("Softmax", [_matmul(g, _layernorm(g, x, d), d, 20)], axis=-1)
    return g.net("tinyattention", [1, 3, 16, 64], y, [1, t, 20])
