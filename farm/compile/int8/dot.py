"""Dot products: conv2d / matmul (+ bias) of a quantized activation and a constant int8 weight,
and matmul of two activations.

u8|i8 activations × i8 weights accumulate in int32 with the constant zero-point correction folded
into the int32 bias and the activation padded with its zero point; weight zero points ≠ 0 (or
non-int8 weights, or two activation operands) use int16 operands with the zero points subtracted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from farm.compile.int8.fixedpoint import const
from farm.compile.int8.qparams import NotLowered, OutGrid, QParam, act, dequantize, dq, weight
from farm.compile.int8.requant import requantize
from farm.compile.rewrite import const_np, is_const, is_op

if TYPE_CHECKING:
    from farm.compile.int8.lower import Lowering


def split_bias(lw: Lowering, x):
    """(conv2d|matmul call, bias expr or None) if x is a dot product (+ bias)."""
    if _is_dot(x):
        return x, None
    if is_op(x, "relax.add"):
        a, b = lw.val(x.args[0]), lw.val(x.args[1])
        if _is_dot(a) and _bias_values(lw, x.args[1]) is not None:
            return a, x.args[1]
        if _is_dot(b) and _bias_values(lw, x.args[0]) is not None:
            return b, x.args[0]
    return None, None


def lower_dot(lw: Lowering, dot, bias, out: OutGrid):
    is_conv = is_op(dot, "relax.nn.conv2d")
    a = act(lw, dot.args[0], "activation")
    w = weight(lw, dot.args[1])
    if w is None:
        if is_conv:
            raise NotLowered("conv2d weight is not a dequantized constant")
        return _lower_dynamic_matmul(lw, dot, a, out)
    wdata = const_np(w.data)
    ch_axis = 0 if is_conv else wdata.ndim - 1
    nout = wdata.shape[ch_axis]
    sw = _per_channel(w.scale, w.axis, ch_axis, nout, "weight scale")
    zw = _per_channel(w.zp, w.axis, ch_axis, nout, "weight zero point")
    if is_conv and (dot.attrs.data_layout != "NCHW" or dot.attrs.kernel_layout != "OIHW"
                    or dot.attrs.out_layout != "NCHW"):
        raise NotLowered(f"conv2d layout {dot.attrs.data_layout}/{dot.attrs.kernel_layout}")
    acc_scale = a.tensor_scale * sw
    bias_int, fraction = _bias_in_acc_units(lw, bias, acc_scale, nout)
    if wdata.dtype != np.int8 or np.any(zw != 0):
        lhs, rhs, padding = _wide_operands(lw, dot, a, wdata, ch_axis, zw)
    else:
        lhs, rhs, padding = _narrow_operands(lw, dot, a, w.data)
        bias_int = bias_int - a.tensor_zp * wdata.astype(np.int64).sum(axis=(1, 2, 3) if is_conv else (0,))
    if np.any(np.abs(bias_int) >= 2**31):
        raise NotLowered("int32 bias overflows")
    acc = lw.bb.emit(_int32_dot(dot, lhs, rhs, padding), name_hint=lw.dot_name(dot))
    shape = [1, nout, 1, 1] if is_conv else [nout]
    return requantize(lw, acc, (acc_scale / out.scale).reshape(shape), out, dense=not is_conv,
                      offset=bias_int.reshape(shape), fraction=None if fraction is None else fraction.reshape(shape))


def _bias_in_acc_units(lw: Lowering, bias, acc_scale: np.ndarray, nout: int):
    """(integer bias, fractional part or None) in accumulator units. A bias is rarely integral
    there: a float32 one (ORT's quantizer leaves it so where it took the weights for activations)
    never, an int32 one only when its scale equals x_scale·w_scale exactly, which float32 rounds.
    The fraction is kept (the requantize adds it at 2^-shift): rounding it onto the accumulator
    grid moves outputs that sit near a rounding boundary."""
    if bias is None:
        return np.zeros(nout, dtype=np.int64), None
    units = _bias_values(lw, bias) / acc_scale
    whole = np.rint(units)
    return whole.astype(np.int64), (units - whole) if np.any(units != whole) else None


def _wide_operands(lw: Lowering, dot, a: QParam, wdata: np.ndarray, ch_axis: int, zw: np.ndarray):
    """(lhs, rhs, conv padding): int16 operands with the zero points subtracted up front."""
    from tvm.relax import op

    shape = [1] * wdata.ndim
    shape[ch_axis] = -1
    wq = wdata.astype(np.int64) - zw.reshape(shape)
    lhs = lw.bb.emit(op.subtract(op.astype(lw.data(a), "int16"), const(np.int16(a.tensor_zp))))
    return lhs, const(wq.astype(np.int16)), dot.attrs.padding if _is_conv(dot) else None


def _narrow_operands(lw: Lowering, dot, a: QParam, w):
    """(lhs, rhs, conv padding): the 8-bit operands, a conv's input padded with its zero point (the
    zero-point correction is the bias's)."""
    from tvm.relax import op

    lhs = lw.data(a)
    if not _is_conv(dot):
        return lhs, w, None
    if any(int(p) for p in dot.attrs.padding):
        t, left, b, r = (int(p) for p in dot.attrs.padding)
        lhs = lw.bb.emit(op.nn.pad(lhs, [0, 0, 0, 0, t, b, left, r], pad_value=float(a.tensor_zp)))
    return lhs, w, [0, 0, 0, 0]


def _int32_dot(dot, lhs, rhs, padding):
    from tvm.relax import op

    if _is_conv(dot):
        return op.nn.conv2d(lhs, rhs, strides=dot.attrs.strides, padding=padding, dilation=dot.attrs.dilation,
                            groups=int(dot.attrs.groups), out_dtype="int32")
    return op.matmul(lhs, rhs, out_dtype="int32")


def _lower_dynamic_matmul(lw: Lowering, dot, a: QParam, out: OutGrid):
    from tvm.relax import op

    b = act(lw, dot.args[1], "second matmul operand")
    lhs, rhs = (lw.bb.emit(op.subtract(op.astype(lw.data(p), "int16"), const(np.int16(p.tensor_zp))))
                for p in (a, b))
    acc = lw.bb.emit(op.matmul(lhs, rhs, out_dtype="int32"), name_hint=lw.dot_name(dot))
    return requantize(lw, acc, np.asarray(a.tensor_scale * b.tensor_scale / out.scale), out)


def _is_conv(e) -> bool:
    return is_op(e, "relax.nn.conv2d")


def _is_dot(e) -> bool:
    return _is_conv(e) or is_op(e, "relax.matmul")


def _bias_values(lw: Lowering, e) -> np.ndarray | None:
    """Real (float64) values of a constant bias: a float constant or a dequantized one,
    possibly reshaped."""
    e = lw.val(e)
    if is_op(e, "relax.reshape"):
        inner = _bias_values(lw, e.args[0])
        return None if inner is None else inner.reshape(-1)
    c = const_np(e)
    if c is not None and c.dtype.kind == "f":
        return c.astype(np.float64).reshape(-1)
    p = dq(lw, e)
    if p is not None and is_const(p.data):
        return dequantize(const_np(p.data), p).reshape(-1)
    return None


def _per_channel(values: np.ndarray, axis: int, ch_axis: int, n: int, what: str) -> np.ndarray:
    """Per-output-channel values from a per-tensor or per-axis parameter."""
    if values.size == 1:
        return np.full(n, values.reshape(()).item(), dtype=values.dtype)
    if axis != ch_axis or values.size != n:
        raise NotLowered(f"{what} is per-axis along axis {axis}, not the output channels")
    return values.reshape(-1)
