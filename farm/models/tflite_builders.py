"""Full-integer TFLite networks built deterministically in code, calibrated like TFLite's converter.

Each layer draws seeded float weights (He-normal, with a per-channel gain standing in for a folded
batch norm), runs the float layer on seeded calibration inputs in float64, and quantizes as the
TFLite converter does: int8 activations with an asymmetric per-tensor grid from the observed range
(zero points ≠ 0), conv / depthwise weights symmetric per output channel, fully-connected weights
per tensor, int32 biases on the input × weight scale, softmax output on the 1/256 grid. The
calibration values are fake-quantized after each layer, so later layers see what the int8 model
computes. (The float32 baseline is derived from the int8 file: farm/models/tflite_float.py.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farm.models import tflite_writer as w
from farm.models.tflite_writer import OP, FlatModel


@dataclass(frozen=True)
class QTensor:
    index: int  # tensor index in the model
    shape: tuple[int, ...]
    scale: float
    zp: int
    calib: np.ndarray  # float64 values of the calibration batch, on this tensor's int8 grid


def _qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 grid covering [lo, hi] ∪ {0}."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = float(np.float32(max(hi - lo, 1e-6) / 255.0))
    return scale, int(np.clip(np.round(-128 - lo / scale), -128, 127))


def _fake_quant(y: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return (np.clip(np.round(y / scale) + zp, -128, 127) - zp) * scale


def _same_pad(size: int, k: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, k: int, stride: int, padding: str, fill: float = 0.0) -> np.ndarray:
    """[N, OH, OW, C, k, k] windows of an NHWC tensor (TFLite SAME / VALID padding)."""
    if padding == "same":
        (t, b), (left, r) = _same_pad(x.shape[1], k, stride), _same_pad(x.shape[2], k, stride)
        x = np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    return win[:, ::stride, ::stride]


_ACT = {None: (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}


class QGraph:
    def __init__(self, name: str, seed: int, shape: tuple[int, ...], calib_count: int = 2):
        self.rng = np.random.default_rng(seed)
        self.model = FlatModel(name)
        self.count = 0
        scale, zp = _qparams(-1.0, 1.0)
        calib = _fake_quant(self.rng.uniform(-1, 1, (calib_count, *shape[1:])), scale, zp)
        self.input = self._tensor("input", shape, scale, zp, calib)

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def _tensor(self, name: str, shape, scale: float, zp: int, calib: np.ndarray) -> QTensor:
        return QTensor(self.model.tensor(name, shape, "int8", scale, zp), tuple(shape), scale, zp, calib)

    def _output(self, prefix: str, y: np.ndarray, act: str | None = None,
                grid: tuple[float, int] | None = None) -> QTensor:
        lo, hi = _ACT[act]
        y = np.clip(y, lo, hi)
        scale, zp = grid or _qparams(float(y.min()), float(y.max()))
        return self._tensor(self._name(prefix), (1, *y.shape[1:]), scale, zp, _fake_quant(y, scale, zp))

    def _int_const(self, prefix: str, values: list[int]) -> int:
        """An int32 constant vector (axes, shapes)."""
        arr = np.array(values, dtype=np.int32)
        return self.model.tensor(self._name(prefix), [arr.size], "int32", data=arr)

    def _op(self, code: int, ins: list[QTensor], consts: list[int], out: QTensor, options=(0, None)) -> None:
        self.model.op(code, [t.index for t in ins] + consts, [out.index], *options)

    def _weights(self, name: str, wf: np.ndarray, x: QTensor, bias: np.ndarray, axis: int | None):
        """int8 weights (per channel along `axis`, or per tensor) and the int32 bias; returns
        (constants, dequantized weights, bias as the int8 model sees it)."""
        red = tuple(i for i in range(wf.ndim) if i != axis) if axis is not None else None
        amax = np.maximum(np.abs(wf).max(axis=red), 1e-8)
        ws = (amax / 127.0).astype(np.float32)
        shape = [1] * wf.ndim
        if axis is not None:
            shape[axis] = -1
        wq = np.clip(np.round(wf / ws.reshape(shape)), -127, 127).astype(np.int8)
        wd = wq * ws.reshape(shape).astype(np.float64)
        bs = (np.float32(x.scale) * ws).astype(np.float32).reshape(-1)
        bq = np.round(bias / bs.astype(np.float64)).astype(np.int32)
        n = wf.shape[axis] if axis is not None else 1
        consts = [self.model.tensor(f"{name}_w", wf.shape, "int8", ws, np.zeros(n, int), axis or 0, wq),
                  self.model.tensor(f"{name}_b", [bias.size], "int32", np.broadcast_to(bs, bias.shape),
                                 np.zeros(bias.size, int), 0, bq)]
        return consts, wd, bq * bs.astype(np.float64)

    def conv(self, x: QTensor, cout: int, k: int, stride: int = 1, act: str | None = "relu6",
             depthwise: bool = False, padding: str = "same") -> QTensor:
        cin = x.shape[3]
        fan_in = k * k * (1 if depthwise else cin)
        gain = np.exp(self.rng.normal(0, 0.3, cout))  # a folded batch norm: channel scales differ
        if depthwise:
            wf = self.rng.normal(0, np.sqrt(2.0 / fan_in), (1, k, k, cin)) * gain
        else:
            wf = self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, k, k, cin)) * gain.reshape(-1, 1, 1, 1)
        bias = self.rng.normal(0, 0.1, cout)
        name = self._name("dwconv" if depthwise else "conv")
        consts, wd, bd = self._weights(name, wf, x, bias, 3 if depthwise else 0)
        win = _windows(x.calib, k, stride, padding)
        y = np.einsum("nhwcij,ijc->nhwc", win, wd[0]) if depthwise else \
            np.einsum("nhwcij,oijc->nhwo", win, wd)
        out = self._output(name, y + bd, act)
        code = OP.DEPTHWISE_CONV_2D if depthwise else OP.CONV_2D
        self._op(code, [x], consts, out, w.conv_options(stride, padding, act, 1 if depthwise else None))
        return out

    def fully_connected(self, x: QTensor, cout: int, act: str | None = None) -> QTensor:
        cin = x.shape[-1]
        wf = self.rng.normal(0, np.sqrt(1.0 / cin), (cout, cin))
        consts, wd, bd = self._weights(self._name("fc"), wf, x, self.rng.normal(0, 0.1, cout), None)
        out = self._output("fc", x.calib.reshape(len(x.calib), -1) @ wd.T + bd, act)
        self._op(OP.FULLY_CONNECTED, [x], consts, out, w.fc_options(act))
        return out

    def add(self, a: QTensor, b: QTensor, act: str | None = None) -> QTensor:
        out = self._output("add", a.calib + b.calib, act)
        self._op(OP.ADD, [a, b], [], out, w.add_options(act))
        return out

    def avg_pool(self, x: QTensor, k: int, stride: int, padding: str = "valid") -> QTensor:
        """TFLite's average pool keeps the input's grid."""
        win = _windows(x.calib, k, stride, padding, np.nan)
        out = self._output("avgpool", np.nanmean(win, axis=(4, 5)), grid=(x.scale, x.zp))
        self._op(OP.AVERAGE_POOL_2D, [x], [], out, w.pool_options(k, stride, padding))
        return out

    def mean(self, x: QTensor, keep_dims: bool = True) -> QTensor:
        consts = [self._int_const("axes", [1, 2])]
        out = self._output("mean", x.calib.mean(axis=(1, 2), keepdims=keep_dims))
        self._op(OP.MEAN, [x], consts, out, w.reducer_options(keep_dims))
        return out

    def reshape(self, x: QTensor, shape: list[int]) -> QTensor:
        consts = [self._int_const("shape", shape)]
        out = self._tensor(self._name("reshape"), shape, x.scale, x.zp,
                           x.calib.reshape(len(x.calib), *shape[1:]))
        self._op(OP.RESHAPE, [x], consts, out, w.reshape_options(shape))
        return out

    def softmax(self, x: QTensor) -> QTensor:
        e = np.exp(x.calib - x.calib.max(axis=-1, keepdims=True))
        out = self._output("softmax", e / e.sum(axis=-1, keepdims=True), grid=(1 / 256, -128))
        self._op(OP.SOFTMAX, [x], [], out, w.softmax_options())
        return out

    def serialize(self, *outs: QTensor) -> bytes:
        """The .tflite bytes of the model with these outputs."""
        return self.model.serialize([self.input.index], [o.index for o in outs])


def tflite_tiny(seed: int = 0) -> bytes:
    """Every op class of a MobileNet and a ResNet block in a 16x16 net: conv (ReLU6), depthwise
    (ReLU), pointwise conv (no activation), residual add (ReLU), average pool, mean, fully
    connected, softmax; outputs: probabilities and logits."""
    g = QGraph("tflite-tiny", seed, (1, 16, 16, 3))
    y = g.conv(g.input, 8, 3)
    y = g.conv(y, 8, 3, stride=2, act="relu", depthwise=True)
    y = g.conv(y, 16, 1, act=None)
    y = g.add(y, g.conv(y, 16, 1, act="relu"), act="relu")
    y = g.avg_pool(y, 2, 2)
    logits = g.fully_connected(g.mean(y, keep_dims=False), 10)
    return g.serialize(g.softmax(logits), logits)


def mobilenet_v1(seed: int = 0, alpha: float = 0.25, size: int = 224, classes: int = 1001) -> bytes:
    """MobileNet v1 (width `alpha`) as in mobilenet_v1_0.25_224_quant.tflite: 3x3 conv, 13
    depthwise + pointwise blocks with ReLU6, 7x7 average pool, 1x1 conv logits, reshape, softmax.
    The int8 logits are a second output: a check of the probabilities alone sees mostly -128."""
    g = QGraph(f"mobilenet_v1_{alpha}_{size}", seed, (1, size, size, 3))
    c = int(32 * alpha)
    y = g.conv(g.input, c, 3, stride=2)
    for width, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + \
            [(512, 1)] * 5 + [(1024, 2), (1024, 1)]:
        y = g.conv(y, c, 3, stride=stride, depthwise=True)
        c = int(width * alpha)
        y = g.conv(y, c, 1)
    y = g.avg_pool(y, y.shape[1], 1)
    logits = g.reshape(g.conv(y, classes, 1, act=None), [1, classes])
    return g.serialize(g.softmax(logits), logits)
