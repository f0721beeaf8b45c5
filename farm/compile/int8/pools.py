"""Averages: mean over axes (global average pool) and avg_pool2d, as integer sums of (a - za)
requantized by scale / count."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from farm.compile.int8 import tflite_arith
from farm.compile.int8.fixedpoint import const
from farm.compile.int8.qparams import NotLowered, OutGrid, act, shape_of
from farm.compile.int8.requant import requantize

if TYPE_CHECKING:
    from farm.compile.int8.lower import Lowering

AVG_POOL_SUM = "avg_pool_sum"  # name of the ones-kernel conv that sums average-pool windows


def lower_mean(lw: Lowering, x, out: OutGrid):
    from tvm.relax import op

    a = act(lw, x.args[0], "mean input")
    shape = shape_of(x.args[0])
    axes = [int(i) % len(shape) for i in x.attrs.axis] if x.attrs.axis is not None else list(range(len(shape)))
    n = int(np.prod([shape[i] for i in axes]))
    if lw.tflite:
        return tflite_arith.mean(lw.bb, lw.data(a), a.tensor_zp, a.tensor_scale, axes, bool(x.attrs.keepdims),
                                 n, out)
    total = op.sum(op.astype(lw.data(a), "int32"), axis=axes, keepdims=bool(x.attrs.keepdims))
    acc = lw.bb.emit(op.subtract(total, const(np.int32(n * a.tensor_zp))))
    return requantize(lw, acc, np.asarray(a.tensor_scale / (out.scale * n)), out)


def lower_avg_pool(lw: Lowering, x, out: OutGrid):
    from tvm.relax import op

    at = x.attrs
    if at.layout != "NCHW" or at.out_layout != "NCHW" or bool(at.ceil_mode):
        raise NotLowered("avg_pool2d with ceil_mode or a layout other than NCHW")
    a = act(lw, x.args[0], "avg_pool2d input")
    za = a.tensor_zp
    n, c, h, w = shape_of(x.args[0])
    kh, kw = (int(k) for k in at.pool_size)
    t, left, b, r = (int(p) for p in at.padding)
    # window sums of (a - za) as a depthwise conv with ones, padding with za (adds 0)
    lhs = lw.bb.emit(op.nn.pad(lw.data(a), [0, 0, 0, 0, t, b, left, r], pad_value=float(za)))
    ones = const(np.ones((c, 1, kh, kw), dtype=np.int8))
    conv = op.nn.conv2d(lhs, ones, strides=at.strides, padding=[0, 0, 0, 0], dilation=at.dilation, groups=c,
                        out_dtype="int32")
    conv = lw.bb.emit(conv, name_hint=AVG_POOL_SUM)
    acc = lw.bb.emit(op.subtract(conv, const(np.int32(kh * kw * za))))
    oh, ow = shape_of(x)[2:]
    if bool(at.count_include_pad):
        counts = np.full((oh, ow), kh * kw, dtype=np.float64)
    else:
        counts = window_counts(h, w, (kh, kw), [int(s) for s in at.strides], [int(d) for d in at.dilation],
                               (t, left, b, r), (oh, ow))
    m = a.tensor_scale / (out.scale * counts)
    return requantize(lw, acc, m.reshape(1, 1, oh, ow), out)


def window_counts(h: int, w: int, k: tuple[int, int], s: list[int], d: list[int],
                  pad: tuple[int, int, int, int], out: tuple[int, int]) -> np.ndarray:
    """How many real (unpadded) inputs each pooling window covers."""
    t, left, _, _ = pad
    counts = np.zeros(out, dtype=np.float64)
    for i in range(out[0]):
        rows = [i * s[0] - t + a * d[0] for a in range(k[0])]
        nr = sum(0 <= r < h for r in rows)
        for j in range(out[1]):
            cols = [j * s[1] - left + b * d[1] for b in range(k[1])]
            counts[i, j] = nr * sum(0 <= c < w for c in cols)
    return counts
