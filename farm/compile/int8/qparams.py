"""Quantized operands of the int8 lowering: grids (scale, zero point) read off dequantize ops with
constant parameters, activations also through relu / clip, and the output grid of a quantize."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from farm.compile.int8.fixedpoint import const
from farm.compile.rewrite import const_np, is_const, is_op

if TYPE_CHECKING:
    from farm.compile.int8.lower import Lowering


class NotLowered(Exception):
    """A pattern matched but cannot be lowered exactly; the message is the reason."""


@dataclass(frozen=True)
class QParam:
    data: object  # relax expr: the quantized tensor (a Var, or a Constant for weights)
    scale: np.ndarray  # float64
    zp: np.ndarray  # int64
    axis: int
    fresh: bool = False  # data is already an expression of the new function

    @property
    def tensor_scale(self) -> float:
        """The scale of a per-tensor grid."""
        return float(self.scale.reshape(()))

    @property
    def tensor_zp(self) -> int:
        """The zero point of a per-tensor grid."""
        return int(self.zp.reshape(()))


@dataclass(frozen=True)
class OutGrid:
    """The grid of a quantize's output: real value scale · (q - zero_point), q clipped to [lo, hi]
    (narrower than the dtype's range after relu / clip) and stored as dtype."""

    scale: float
    zero_point: int
    lo: int
    hi: int
    dtype: str

    def narrowed(self, lo: int, hi: int) -> OutGrid:
        return replace(self, lo=lo, hi=hi)


def int_range(dtype: str) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def dtype_of(expr) -> str:
    return str(expr.ty.dtype)


def shape_of(expr) -> list[int]:
    return [int(d) for d in expr.ty.shape]


def scalar_value(a: np.ndarray, what: str):
    if a.size != 1:
        raise NotLowered(f"{what} is per-axis")
    return a.reshape(()).item()


def centred(data, zp: int, dtype: str = "int32"):
    """data − zp in the wider integer type `dtype` (a Relax expression): the integers a dot product,
    a product or a requantize works on."""
    from tvm.relax import op

    return op.subtract(op.astype(data, dtype), const(np.dtype(dtype).type(zp)))


def dequantize(data: np.ndarray, p: QParam) -> np.ndarray:
    shape = [1] * data.ndim
    if p.scale.size > 1:
        shape[p.axis] = -1
    return (data.astype(np.float64) - p.zp.reshape(shape)) * p.scale.reshape(shape)


def dq(lw: Lowering, e) -> QParam | None:
    """The grid of a dequantize with constant scale and zero point (None: not one)."""
    c = lw.val(e)
    if not is_op(c, "relax.dequantize"):
        return None
    scale, zp = const_np(c.args[1]), const_np(c.args[2])
    if scale is None or zp is None:
        return None
    ndim = max(len(c.args[0].ty.shape), 1)
    return QParam(c.args[0], scale.astype(np.float64), zp.astype(np.int64), int(c.attrs.axis) % ndim)


def act(lw: Lowering, e, what: str) -> QParam:
    """A dequantized activation (not a constant) with a per-tensor grid; also through
    relu / clip whose bounds lie on its grid (relu(dq(a)) = dq(max(a, za)) exactly)."""
    clamped = clamp(lw, lw.val(e))
    if clamped is not None:
        return _clamped_act(lw, *clamped, what)
    p = dq(lw, e)
    if p is None:
        raise NotLowered(f"{what} is not a dequantized tensor")
    if is_const(p.data):
        raise NotLowered(f"{what} is a constant")
    scalar_value(p.scale, f"scale of {what}")
    scalar_value(p.zp, f"zero point of {what}")
    return p


def _clamped_act(lw: Lowering, bounds, inner, what: str) -> QParam:
    """act of a clamp of `inner`: the bounds applied to the integers."""
    from tvm.relax import op

    p = act(lw, inner, what)
    data = lw.data(p)
    dlo, dhi = int_range(dtype_of(p.data))
    for kind, value in bounds:
        level = value / p.tensor_scale + float(p.tensor_zp)
        if not np.isfinite(level):
            continue
        if abs(level - round(level)) > 1e-6:
            raise NotLowered(f"clip bound {value:g} of {what} is off its quantization grid")
        if (kind == "min" and level <= dlo) or (kind == "max" and level >= dhi):
            continue  # the bound is outside the representable range: a no-op
        bound = const(np.asarray(min(max(round(level), dlo), dhi)).astype(dtype_of(p.data)))
        data = lw.bb.emit((op.maximum if kind == "min" else op.minimum)(data, bound))
    return QParam(data, p.scale, p.zp, p.axis, fresh=True)


def clamp(lw: Lowering, x):
    """([("min"|"max", value)], input) for relu, clip, or max/min with a constant scalar
    (ONNX Clip imports as call_tir of maximum/minimum); None for anything else."""
    import tvm
    from tvm import relax

    if is_op(x, "relax.nn.relu"):
        return [("min", 0.0)], x.args[0]
    if is_op(x, "relax.clip"):
        return [("min", _number(x.args[1])), ("max", _number(x.args[2]))], x.args[0]
    if is_op(x, "relax.maximum") or is_op(x, "relax.minimum"):
        name, args = x.op.name.removeprefix("relax."), list(x.args)
    elif is_op(x, "relax.call_tir") and isinstance(x.args[0], tvm.ir.GlobalVar) \
            and isinstance(x.args[1], relax.Tuple):
        name, args = x.args[0].name_hint, list(x.args[1].fields)
    else:
        return None
    value = const_scalar(lw, args[1]) if name in ("maximum", "minimum") and len(args) == 2 else None
    return None if value is None else ([("min" if name == "maximum" else "max", value)], args[0])


def _number(v) -> float:
    """A relax.PrimValue's number: its value is an IntImm or FloatImm, or (as the ONNX frontend
    builds some, e.g. HardSigmoid's clip) already a Python number."""
    v = getattr(v, "value", v)
    return float(getattr(v, "value", v))


def const_scalar(lw: Lowering, e) -> float | None:
    """A constant scalar, also through ONNX Clip's where(isnan(c), ±inf, c)."""
    e = lw.val(e)
    c = const_np(e)
    if c is not None and c.size == 1:
        return float(c.reshape(()))
    if is_op(e, "relax.where") and is_op(lw.val(e.args[0]), "relax.isnan"):
        v = const_scalar(lw, lw.val(e.args[0]).args[0])
        return v if v is not None and not np.isnan(v) else None
    return None


def weight(lw: Lowering, e) -> QParam | None:
    """A constant quantized weight, through permute_dims: data as numpy, scale axis moved."""
    e = lw.val(e)
    if is_op(e, "relax.permute_dims"):
        inner = weight(lw, e.args[0])
        if inner is None:
            return None
        data = const_np(inner.data)
        axes = [int(a) for a in e.attrs.axes] if e.attrs.axes is not None else list(range(data.ndim))[::-1]
        return QParam(const(np.transpose(data, axes)), inner.scale, inner.zp, axes.index(inner.axis))
    p = dq(lw, e)
    return p if p is not None and is_const(p.data) else None
