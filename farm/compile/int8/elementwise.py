"""Elementwise ops and data movement: add and multiply of two quantized tensors, concat, relu / clip
(bounds on the output grid), and ops that move integers (reshape, permute_dims, squeeze, expand_dims, strided_slice,
max_pool2d), which run on the integers and are requantized only when input and output grids differ."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from farm.compile.int8 import tflite_arith
from farm.compile.int8.fixedpoint import add_fixed_point, requantize_add
from farm.compile.int8.qparams import NotLowered, OutGrid, QParam, act, centred, clamp, dq, dtype_of, int_range
from farm.compile.int8.requant import requantize

if TYPE_CHECKING:
    from farm.compile.int8.lower import Lowering

MOVE_OPS = ("relax.reshape", "relax.permute_dims", "relax.squeeze", "relax.expand_dims", "relax.strided_slice",
            "relax.nn.max_pool2d")


def peel(lw: Lowering, x, out: OutGrid):
    """(x without its relu / clip ops, out with their bounds): quantize is monotonic, so relu / clip
    before it is a clip of the quantized value."""
    lo, hi = out.lo, out.hi
    while (clamped := clamp(lw, x)) is not None:
        bounds, inner = clamped
        for kind, value in bounds:
            if not np.isfinite(value):
                continue
            level = int(np.rint(np.float32(value) / np.float32(out.scale))) + out.zero_point
            lo, hi = (max(lo, level), hi) if kind == "min" else (lo, min(hi, level))
        x = lw.val(inner)
    return x, out.narrowed(lo, hi)


def lower_add(lw: Lowering, x, out: OutGrid):
    a, b = act(lw, x.args[0], "add operand"), act(lw, x.args[1], "add operand")
    if lw.tflite:
        return tflite_arith.add(lw.bb, lw.data(a), a.tensor_zp, a.tensor_scale, lw.data(b), b.tensor_zp,
                                b.tensor_scale, out)
    zps = (a.tensor_zp, b.tensor_zp)
    ranges = tuple((dlo - z, dhi - z) for (dlo, dhi), z in
                   zip((int_range(dtype_of(a.data)), int_range(dtype_of(b.data))), zps, strict=True))
    fp = add_fixed_point((a.tensor_scale / out.scale, b.tensor_scale / out.scale), ranges, out.zero_point,
                         out.lo, out.hi, zps)
    if fp is None:
        raise NotLowered("add multiplier out of fixed-point range")
    return requantize_add(lw.bb, lw.data(a), lw.data(b), zps, fp, out.zero_point, out.lo, out.hi, out.dtype)


def lower_multiply(lw: Lowering, x, out: OutGrid):
    """quantize(dq(a) · dq(b)) of two activations (a gate, an attention weighting, a sigmoid-gated
    swish as ORT's quantizer writes it): the int32 product of the zero-point-free integers — at most
    2^16 for 8-bit operands — requantized by sa · sb / so. A constant operand is a lookup table."""
    from tvm.relax import op

    a, b = act(lw, x.args[0], "multiply operand"), act(lw, x.args[1], "multiply operand")
    if lw.tflite:
        raise NotLowered("TFLite's MUL rounding is not modelled")
    if {dtype_of(a.data), dtype_of(b.data)} - {"int8", "uint8"}:
        raise NotLowered("multiply of 16-bit operands: their product overflows int32")

    acc = lw.bb.emit(op.multiply(centred(lw.data(a), a.tensor_zp), centred(lw.data(b), b.tensor_zp)))
    return requantize(lw, acc, np.asarray(a.tensor_scale * b.tensor_scale / out.scale), out)


def lower_concat(lw: Lowering, x, out: OutGrid):
    """quantize(concat(dq(a), dq(b), ...)) (a detector neck's or an FPN's merge): each input moved
    onto the output grid — nothing to do where it is on it already, as ORT's quantizer usually
    arranges, a requantize where not — then the integers concatenated."""
    from tvm import relax

    parts = lw.val(x.args[0])
    if not isinstance(parts, relax.Tuple):
        raise NotLowered("concat of a tuple that is not written out")
    inputs = [act(lw, e, "concat input") for e in parts.fields]  # all, before anything is emitted
    return relax.op.concat([lw.bb.emit(lower_move(lw, None, out, a)) for a in inputs], axis=x.attrs.axis)


def lower_moved(lw: Lowering, x, out: OutGrid):
    """quantize(move(y)) for a data-movement op: on the integers of a dequantized y, else
    move(quantize(y)) (they commute)."""
    from tvm import relax

    # data movement and max commute with relu / clip: peel those off its input too
    src, out = peel(lw, lw.val(x.args[0]), out)
    if dq(lw, src) is not None:
        return lower_move(lw, x, out, act(lw, src, f"{x.op.name} input"))
    inner = lw.bb.emit(lw.quantized(src, out))
    return relax.Call(x.op, [inner, *x.args[1:]], x.attrs, x.ty_args)


def lower_move(lw: Lowering, x, out: OutGrid, a: QParam):
    """Quantize of a data-movement op (or of nothing: x None) on the dequantized `a`."""
    from tvm import relax

    moved = lw.data(a) if x is None else relax.Call(x.op, [lw.data(a), *x.args[1:]], x.attrs, x.ty_args)
    if np.float32(a.tensor_scale) == np.float32(out.scale) and a.tensor_zp == out.zero_point \
            and dtype_of(a.data) == out.dtype and (out.lo, out.hi) == int_range(out.dtype):
        return moved
    acc = lw.bb.emit(centred(moved, a.tensor_zp))
    return requantize(lw, acc, np.asarray(a.tensor_scale / out.scale), out)
