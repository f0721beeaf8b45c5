"""Resize on integers: quantize(resize(dequantize(a))) for NCHW nearest and linear resizes.

The source indices and weights of every output row and column are computed here in float64 from
ONNX's coordinate transformations (the model's semantics, not a kernel's float32 arithmetic), so
the integer form is exact by construction:

- nearest: two `take`s of the integers (data movement), requantized only where the grids differ;
- linear (upsampling): separable weights that are dyadic, w = n / 2^k — a 2× FPN upsample has
  quarters — make the interpolated value an integer in units of 2^-(kh+kw); one requantize by
  s_a / (s_o · 2^(kh+kw)) then rounds it as the float64 semantics do, ties included. Weights
  that are not dyadic within MAX_SHIFT bits (align_corners at most sizes) have no exact integer
  form and stay float, with that reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from farm.compile.int8.elementwise import lower_move
from farm.compile.int8.fixedpoint import const
from farm.compile.int8.qparams import NotLowered, OutGrid, QParam, act, centred, shape_of
from farm.compile.int8.requant import requantize

if TYPE_CHECKING:
    from farm.compile.int8.lower import Lowering

MAX_SHIFT = 8  # bits of a dyadic weight's denominator, per axis

_ROUND = {
    "round": lambda x: np.floor(x + 0.5), "round_prefer_floor": lambda x: np.ceil(x - 0.5),
    "round_prefer_ceil": lambda x: np.floor(x + 0.5), "floor": np.floor, "ceil": np.ceil,
}


def source_coordinates(mode: str, n_in: int, n_out: int) -> np.ndarray:
    """ONNX's x_original of every output position along one axis (scale = n_out / n_in, as the
    importer gives TVM the output size)."""
    x = np.arange(n_out, dtype=np.float64)
    scale = n_out / n_in
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if n_out > 1 else np.zeros(n_out)
    if mode == "align_corners":
        return x * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    if mode == "asymmetric":
        return x / scale
    raise NotLowered(f"resize coordinate transformation '{mode}' has no integer form here")


def nearest_indices(mode: str, rounding: str, n_in: int, n_out: int) -> np.ndarray:
    x = _ROUND.get(rounding or "round_prefer_floor")
    if x is None:
        raise NotLowered(f"resize rounding '{rounding}' has no integer form here")
    return np.clip(x(source_coordinates(mode, n_in, n_out)), 0, n_in - 1).astype(np.int64)


def linear_taps(mode: str, n_in: int, n_out: int):
    """(i0, i1, w0, w1, k): edge-clamped neighbours and integer weights n / 2^k (None when a weight
    is not dyadic within MAX_SHIFT bits)."""
    xo = source_coordinates(mode, n_in, n_out)
    x0 = np.floor(xo)
    r = xo - x0
    i0, i1 = (np.clip(i, 0, n_in - 1).astype(np.int64) for i in (x0, x0 + 1))
    for k in range(MAX_SHIFT + 1):
        scaled = np.ldexp(r, k)
        if np.array_equal(scaled, np.rint(scaled)):
            w1 = scaled.astype(np.int64)
            return i0, i1, (1 << k) - w1, w1, k
    return None


def lower_resize(lw: Lowering, x, out: OutGrid):
    a = act(lw, x.args[0], "resize input")
    attrs = x.attrs
    if str(attrs.layout) != "NCHW":
        raise NotLowered(f"resize layout {attrs.layout}")
    (h_in, w_in), (h_out, w_out) = shape_of(x.args[0])[2:], shape_of(x)[2:]
    mode = str(attrs.coordinate_transformation_mode)
    if str(attrs.method) == "nearest_neighbor":
        return _nearest(lw, a, out, [nearest_indices(mode, str(attrs.rounding_method), n, m)
                                     for n, m in ((h_in, h_out), (w_in, w_out))])
    if str(attrs.method) != "linear":
        raise NotLowered(f"{attrs.method} resize has no integer form here")
    if h_out < h_in or w_out < w_in:
        raise NotLowered("linear downsampling (ONNX's antialias changes its weights) has no integer form here")
    taps = [linear_taps(mode, n, m) for n, m in ((h_in, h_out), (w_in, w_out))]
    if any(t is None for t in taps):
        raise NotLowered(f"linear resize weights ({mode}, {h_in}→{h_out}, {w_in}→{w_out}) are not "
                         f"dyadic within {MAX_SHIFT} bits: no exact integer form")
    return _linear(lw, a, out, taps)


def _nearest(lw: Lowering, a, out: OutGrid, indices):
    from tvm.relax import op

    moved = lw.data(a)
    for axis, idx in zip((2, 3), indices, strict=True):
        moved = lw.bb.emit(op.take(moved, const(idx.astype(np.int32)), axis=axis))
    return lower_move(lw, None, out, QParam(moved, a.scale, a.zp, a.axis, fresh=True))


def _linear(lw: Lowering, a, out: OutGrid, taps):
    """acc = Σ wh·ww·(a - za) in units of 2^-(kh+kw), then one requantize."""
    from tvm.relax import op

    acc = lw.bb.emit(centred(lw.data(a), a.tensor_zp))
    for axis, (i0, i1, w0, w1, _) in zip((2, 3), taps, strict=True):
        near, far = (_tap(acc, axis, i, w) for i, w in ((i0, w0), (i1, w1)))
        acc = lw.bb.emit(op.add(near, far) if np.any(w1) else near)
    k = taps[0][4] + taps[1][4]
    return requantize(lw, acc, np.asarray(a.tensor_scale / out.scale / (1 << k)), out)


def _tap(x, axis: int, index: np.ndarray, weight: np.ndarray):
    """x's rows (axis 2) or columns (axis 3) at `index`, times their integer weights."""
    from tvm.relax import op

    shape = [1, 1, -1, 1] if axis == 2 else [1, 1, 1, -1]
    rows = op.take(x, const(index.astype(np.int32)), axis=axis)
    return op.multiply(rows, const(weight.astype(np.int32).reshape(shape)))
