"""Dot products: conv2d / matmul (+ bias) of a quantized activation and a constant int8 weight,
non-overlapping ConvTranspose (as a 1×1 conv and a depth-to-space), and matmul of two activations.

u8|i8 activations × i8 weights accumulate in int32 with the constant zero-point correction folded
into the int32 bias and the activation padded with its zero point. Weights with a zero point ≠ 0
(ORT's quantizer writes uint8 weights so where it took them for activations) are moved into int8
as w - zw = w8 + c per output channel; where c ≠ 0 the exact accumulator gains c · S, S the sum of
the centred activation over each output's receptive field (one channel-sum and kh·kw shifted adds,
1/Cout of the conv's work) — oneDNN's compensation term. Grouped convs whose c ≠ 0, weights that
do not fit 8 bits and two activation operands use int16 operands with the zero points subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from farm.compile.int8.fixedpoint import const
from farm.compile.int8.qparams import NotLowered, OutGrid, QParam, act, centred, dequantize, dq, weight
from farm.compile.int8.requant import requantize
from farm.compile.rewrite import const_np, is_const, is_op

if TYPE_CHECKING:
    from farm.compile.int8.lower import Lowering


def split_bias(lw: Lowering, x):
    """(conv2d|conv2d_transpose|matmul call, bias expr or None) if x is a dot product (+ bias)."""
    if _is_dot(x):
        return x, None
    if is_op(x, "relax.add"):
        a, b = lw.val(x.args[0]), lw.val(x.args[1])
        if _is_dot(a) and _bias_values(lw, x.args[1]) is not None:
            return a, x.args[1]
        if _is_dot(b) and _bias_values(lw, x.args[0]) is not None:
            return b, x.args[0]
    return None, None


@dataclass(frozen=True)
class Conv:
    """A conv2d's geometry (NCHW / OIHW); a dense dot product has none."""

    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]
    groups: int

    @staticmethod
    def of(call) -> Conv:
        a = call.attrs
        return Conv(tuple(int(v) for v in a.strides), tuple(int(v) for v in a.padding),
                    tuple(int(v) for v in a.dilation), int(a.groups))


def lower_dot(lw: Lowering, dot, bias, out: OutGrid):
    if is_op(dot, "relax.nn.conv2d_transpose"):
        return _lower_deconv(lw, dot, bias, out)
    is_conv = _is_conv(dot)
    a = act(lw, dot.args[0], "activation")
    w = weight(lw, dot.args[1])
    if w is None:
        if is_conv:
            raise NotLowered("conv2d weight is not a dequantized constant")
        return _lower_dynamic_matmul(lw, dot, a, out)
    if is_conv and (dot.attrs.data_layout != "NCHW" or dot.attrs.kernel_layout != "OIHW"
                    or dot.attrs.out_layout != "NCHW"):
        raise NotLowered(f"conv2d layout {dot.attrs.data_layout}/{dot.attrs.kernel_layout}")
    wdata = const_np(w.data)
    ch_axis = 0 if is_conv else wdata.ndim - 1
    nout = wdata.shape[ch_axis]
    sw = _per_channel(w.scale, w.axis, ch_axis, nout, "weight scale")
    zw = _per_channel(w.zp, w.axis, ch_axis, nout, "weight zero point")
    return _integer_dot(lw, Conv.of(dot) if is_conv else None, a, (wdata, sw, zw),
                        None if bias is None else _bias_values(lw, bias), out, lw.dot_name(dot))


def _integer_dot(lw: Lowering, conv: Conv | None, a: QParam, w: tuple, bias: np.ndarray | None, out: OutGrid,
                 name: str):
    """The int32 dot product of `a` and the constant weight w = (data, per-channel scale, per-channel
    zero point; OIHW for a conv, [..., K, N] for a dense), bias (real values) added, requantized."""
    wdata, sw, zw = w
    ch_axis = 0 if conv else wdata.ndim - 1
    nout = wdata.shape[ch_axis]
    acc_scale = a.tensor_scale * sw
    bias_int, fraction = _bias_in_acc_units(bias, acc_scale, nout)
    w8, c = _int8_weights(wdata, zw, ch_axis)
    if w8 is None or (conv is None and wdata.ndim != 2) or (np.any(c) and conv and conv.groups != 1):
        lhs, rhs, padding = _wide_operands(lw, conv, a, wdata, ch_axis, zw)
        c = None
    else:
        lhs, rhs, padding = _narrow_operands(lw, conv, a, const(w8))
        bias_int = bias_int - a.tensor_zp * w8.astype(np.int64).sum(axis=(1, 2, 3) if conv else (0,))
    if np.any(np.abs(bias_int) >= 2**31):
        raise NotLowered("int32 bias overflows")
    acc = lw.bb.emit(_int32_dot(conv, lhs, rhs, padding), name_hint=name)
    if c is not None and np.any(c):
        acc = lw.bb.emit(_compensated(lw, conv, [int(k) for k in w8.shape[2:]] if conv else None, a, acc, c))
    shape = [1, nout, 1, 1] if conv else [nout]
    return requantize(lw, acc, (acc_scale / out.scale).reshape(shape), out, dense=conv is None,
                      offset=bias_int.reshape(shape), fraction=None if fraction is None else fraction.reshape(shape))


def _lower_deconv(lw: Lowering, dot, bias, out: OutGrid):
    """ConvTranspose whose kernel equals its stride (no overlap, no padding: a DBNet head's or a
    U-Net decoder's 2×2 / stride-2 upsampling) is a 1×1 conv onto Cout·kh·kw channels followed by
    a depth-to-space of the 8-bit result; overlapping ones have no integer form here."""
    from tvm.relax import op

    at = dot.attrs
    w = weight(lw, dot.args[1])
    if w is None:
        raise NotLowered("conv2d_transpose weight is not a dequantized constant")
    wdata = const_np(w.data)  # [Cin, Cout, kh, kw] (IOHW)
    cin, cout, kh, kw = wdata.shape
    if (at.data_layout, at.kernel_layout, at.out_layout) != ("NCHW", "IOHW", "NCHW") or int(at.groups) != 1 \
            or [int(v) for v in at.strides] != [kh, kw] or any(int(v) for v in at.padding) \
            or any(int(v) for v in at.output_padding) or any(int(v) != 1 for v in at.dilation):
        raise NotLowered("conv2d_transpose whose kernels overlap, pad or are grouped has no integer form here")
    a = act(lw, dot.args[0], "activation")
    taps = kh * kw
    sw, zw = (np.repeat(_per_channel(v, w.axis, 1, cout, what), taps)
              for v, what in ((w.scale, "weight scale"), (w.zp, "weight zero point")))
    w1 = wdata.transpose(1, 2, 3, 0).reshape(cout * taps, cin, 1, 1)  # channel (o, i, j) ← w[:, o, i, j]
    b = None if bias is None else np.repeat(_bias_values(lw, bias), taps)
    y = lw.bb.emit(_integer_dot(lw, Conv((1, 1), (0, 0, 0, 0), (1, 1), 1), a, (w1, sw, zw), b, out, lw.dot_name(dot)))
    n, _, h, wd = (int(d) for d in y.ty.shape)
    y = lw.bb.emit(op.permute_dims(op.reshape(y, [n, cout, kh, kw, h, wd]), [0, 1, 4, 2, 5, 3]))
    return op.reshape(y, [n, cout, h * kh, wd * kw])


def _bias_in_acc_units(bias: np.ndarray | None, acc_scale: np.ndarray, nout: int):
    """(integer bias, fractional part or None) in accumulator units. A bias is rarely integral
    there: a float32 one (ORT's quantizer leaves it so where it took the weights for activations)
    never, an int32 one only when its scale equals x_scale·w_scale exactly, which float32 rounds.
    The fraction is kept (the requantize adds it at 2^-shift): rounding it onto the accumulator
    grid moves outputs that sit near a rounding boundary."""
    if bias is None:
        return np.zeros(nout, dtype=np.int64), None
    units = bias / acc_scale
    whole = np.rint(units)
    return whole.astype(np.int64), (units - whole) if np.any(units != whole) else None


def _int8_weights(wdata: np.ndarray, zw: np.ndarray, ch_axis: int):
    """(w8, c): int8 weights and per-channel integers with w - zw = w8 + c, c = 0 wherever the
    centred weights fit int8 already; (None, None) where a channel spans more than 8 bits."""
    axes = tuple(i for i in range(wdata.ndim) if i != ch_axis)
    shape = [1] * wdata.ndim
    shape[ch_axis] = -1
    centred = wdata.astype(np.int64) - zw.reshape(shape)
    lo, hi = centred.min(axis=axes), centred.max(axis=axes)
    if np.any(hi - lo > 255):
        return None, None
    c = np.clip(0, hi - 127, lo + 128)  # the shift closest to none that lands every weight in int8
    return (centred - c.reshape(shape)).astype(np.int8), c


def _compensated(lw: Lowering, conv: Conv | None, kernel: list[int] | None, a: QParam, acc, c: np.ndarray):
    """acc + c · S: S the sum of (activation - its zero point) over each output's receptive field,
    zero on the padding (a conv pads with the zero point)."""
    from tvm.relax import op

    centred_a = centred(lw.data(a), a.tensor_zp)
    if conv is None:  # [..., K] x [K, N]: a row sum
        s = lw.bb.emit(op.sum(centred_a, axis=[-1], keepdims=True))
        return op.add(acc, op.multiply(s, const(c.astype(np.int32))))
    t = lw.bb.emit(op.sum(centred_a, axis=[1], keepdims=True))
    top, left, bottom, right = conv.padding
    if top or left or bottom or right:
        t = lw.bb.emit(op.nn.pad(t, [0, 0, 0, 0, top, bottom, left, right], pad_value=0.0))
    kh, kw = kernel
    (sh, sw), (dh, dw) = conv.strides, conv.dilation
    ho, wo = (int(d) for d in list(acc.ty.shape)[2:])
    s = None
    for i in range(kh):
        for j in range(kw):
            tap = lw.bb.emit(op.strided_slice(t, axes=[2, 3], begin=[i * dh, j * dw],
                                              end=[i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1],
                                              strides=[sh, sw]))
            s = tap if s is None else lw.bb.emit(op.add(s, tap))
    return op.add(acc, op.multiply(s, const(c.astype(np.int32).reshape(1, -1, 1, 1))))


def _wide_operands(lw: Lowering, conv: Conv | None, a: QParam, wdata: np.ndarray, ch_axis: int, zw: np.ndarray):
    """(lhs, rhs, conv padding): int16 operands with the zero points subtracted up front."""

    shape = [1] * wdata.ndim
    shape[ch_axis] = -1
    wq = wdata.astype(np.int64) - zw.reshape(shape)
    lhs = lw.bb.emit(centred(lw.data(a), a.tensor_zp, "int16"))
    return lhs, const(wq.astype(np.int16)), conv.padding if conv else None


def _narrow_operands(lw: Lowering, conv: Conv | None, a: QParam, w):
    """(lhs, rhs, conv padding): the 8-bit operands, a conv's input padded with its zero point (the
    zero-point correction is the bias's)."""
    from tvm.relax import op

    lhs = lw.data(a)
    if conv is None:
        return lhs, w, None
    if any(conv.padding):
        t, left, b, r = conv.padding
        lhs = lw.bb.emit(op.nn.pad(lhs, [0, 0, 0, 0, t, b, left, r], pad_value=float(a.tensor_zp)))
    return lhs, w, [0, 0, 0, 0]


def _int32_dot(conv: Conv | None, lhs, rhs, padding):
    from tvm.relax import op

    if conv:
        return op.nn.conv2d(lhs, rhs, strides=conv.strides, padding=padding, dilation=conv.dilation,
                            groups=conv.groups, out_dtype="int32")
    return op.matmul(lhs, rhs, out_dtype="int32")


def _lower_dynamic_matmul(lw: Lowering, dot, a: QParam, out: OutGrid):
    from tvm.relax import op

    b = act(lw, dot.args[1], "second matmul operand")
    lhs, rhs = (lw.bb.emit(centred(lw.data(p), p.tensor_zp, "int16"))
                for p in (a, b))
    acc = lw.bb.emit(op.matmul(lhs, rhs, out_dtype="int32"), name_hint=lw.dot_name(dot))
    return requantize(lw, acc, np.asarray(a.tensor_scale * b.tensor_scale / out.scale), out)


def _is_conv(e) -> bool:
    return is_op(e, "relax.nn.conv2d")


def _is_dot(e) -> bool:
    return _is_conv(e) or is_op(e, "relax.matmul") or is_op(e, "relax.nn.conv2d_transpose")


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
