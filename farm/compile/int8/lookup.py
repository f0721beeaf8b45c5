"""Lookup tables: quantize(f(dequantize(a))) for any element-wise float function f of one 8-bit
tensor a becomes table[a], a 256-entry table computed here in float64 — the exact QDQ semantics,
so the lowered op is bit-exact by construction.

f is the float chain TVM's importer left between the dequantize and the quantize: sigmoid, tanh,
exp, erf, GELU, LeakyRelu, HardSigmoid / HardSwish (clip, add, multiply, divide), SiLU
(x · sigmoid(x)), batch norm and the like, with scalar or per-channel constants (one table per
channel then). Quantize → dequantize steps inside the chain (ORT's quantizer puts one after the
Sigmoid of a SiLU) are evaluated too, so a chain whose operands all derive from one tensor through
element-wise steps still has one input. Reductions, two independent inputs, a non-8-bit input, a
NaN on some level or tables beyond MAX_TABLE entries are no table; the caller's other lowerings
(or the float fallback, with its reason) take those."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from farm.compile.int8.fixedpoint import const
from farm.compile.int8.qparams import OutGrid, clamp, const_scalar, dequantize, dq, dtype_of, int_range, shape_of
from farm.compile.rewrite import const_np, is_const, is_op, op_name

if TYPE_CHECKING:
    from farm.compile.int8.lower import Lowering

LOOKUP = "lookup"  # name prefix of the table lookups, read by the lowering report

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x):
    # the form of ONNX's reference: no overflow of exp on either side
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


_UNARY = {
    "relax.sigmoid": _sigmoid, "relax.tanh": np.tanh, "relax.exp": np.exp, "relax.erf": _erf,
    "relax.log": np.log, "relax.sqrt": np.sqrt, "relax.rsqrt": lambda x: 1.0 / np.sqrt(x),
    "relax.negative": np.negative, "relax.abs": np.abs, "relax.sign": np.sign,
    "relax.square": np.square, "relax.floor": np.floor, "relax.ceil": np.ceil, "relax.round": np.rint,
    "relax.nn.silu": lambda x: x * _sigmoid(x),
    "relax.nn.gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "relax.nn.gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
}
_BINARY = {
    "relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
    "relax.divide": np.divide, "relax.power": np.power,
}


MAX_TABLE = 1 << 18  # entries: per-channel tables for up to 1024 channels, still cache-resident


class _NoTable(Exception):
    """The chain is not an element-wise function of one tensor."""


class _Chain:
    """Evaluates a float chain on every level of its 8-bit inputs. Values are float64 arrays of
    shape S + (levels,): S (rank `rank`) broadcasts against the output, and is not all ones where
    constants vary along an axis (a bias per channel, a batch norm). Each input (a quantized tensor
    reached through a dequantize) gets its own levels, so the values are right only when exactly
    one input is found. `deep`: see through quantize → dequantize steps whose input is itself such
    a chain."""

    def __init__(self, lw: Lowering, rank: int, deep: bool):
        self.lw, self.rank, self.deep = lw, rank, deep
        self.inputs: dict = {}  # the quantized tensor → its dtype
        self.computes = False  # an op other than clamps and grid changes was seen
        self.memo: dict = {}

    def value(self, e) -> np.ndarray:
        e = self.lw.val(e)
        if e not in self.memo:
            self.memo[e] = self._value(e)
        return self.memo[e]

    def constant(self, c: np.ndarray) -> np.ndarray:
        """A constant, right-aligned on the output's axes as broadcasting aligns it, plus a level axis."""
        if c.ndim > self.rank:
            raise _NoTable
        return c.astype(np.float64).reshape((1,) * (self.rank - c.ndim) + c.shape + (1,))

    def _value(self, e) -> np.ndarray:
        from tvm import relax

        if (c := const_np(e)) is not None:
            return self.constant(c)
        if (c := const_scalar(self.lw, e)) is not None:  # e.g. ONNX Clip's where(isnan(c), ±inf, c)
            return np.float64(c)
        if (p := dq(self.lw, e)) is not None:
            if is_const(p.data):
                return self.constant(dequantize(const_np(p.data), p))
            if p.scale.size != 1 or p.zp.size != 1:
                raise _NoTable
            return (self._levels(p.data) - float(p.zp.reshape(()))) * float(p.scale.reshape(()))
        if is_op(e, "relax.quantize"):
            return _quantize(self.value(e.args[0]), e)
        if (clamped := clamp(self.lw, e)) is not None:
            y = self.value(clamped[1])
            for kind, bound in clamped[0]:
                y = np.maximum(y, bound) if kind == "min" else np.minimum(y, bound)
            return y
        if isinstance(e, relax.TupleGetItem) and e.index == 0 \
                and is_op(bn := self.lw.val(e.tuple_value), "relax.nn.batch_norm"):
            return self._batch_norm(bn)
        return self._op(e)

    def _op(self, e) -> np.ndarray:
        name = op_name(e)
        if name in _UNARY:
            fn, args = _UNARY[name], e.args[:1]
        elif name in _BINARY:
            fn, args = _BINARY[name], e.args[:2]
        elif name == "relax.nn.leakyrelu":
            alpha = float(e.attrs.alpha)
            fn, args = (lambda x: np.where(x >= 0, x, alpha * x)), e.args[:1]
        else:
            raise _NoTable
        self.computes = True
        values = [self.value(a) for a in args]
        with np.errstate(all="ignore"):
            return fn(*values)

    def _batch_norm(self, bn) -> np.ndarray:
        """Inference batch norm, as the exact reference computes it (its constants along attrs.axis)."""
        x, *params = bn.args
        consts = [const_np(self.lw.val(a)) for a in params]
        if any(c is None for c in consts) or bn.attrs.training:
            raise _NoTable
        axis = int(bn.attrs.axis) % self.rank
        gamma, beta, mean, var = (self.constant(c.reshape([-1] + [1] * (self.rank - 1 - axis))) for c in consts)
        self.computes = True
        return (self.value(x) - mean) / np.sqrt(var + float(bn.attrs.epsilon)) * gamma + beta

    def _levels(self, data) -> np.ndarray:
        """Every level of an 8-bit input, as float64; through a quantize step when deep."""
        source = self.lw.val(data)
        if self.deep and is_op(source, "relax.quantize"):
            try:
                return self.value(source)
            except _NoTable:
                pass  # e.g. a conv's output: an input of this chain
        dtype = dtype_of(data)
        if dtype not in ("int8", "uint8"):
            raise _NoTable
        self.inputs[data] = dtype
        lo, hi = int_range(dtype)
        return np.arange(lo, hi + 1, dtype=np.float64).reshape((1,) * self.rank + (-1,))


def _quantize(x: np.ndarray, q) -> np.ndarray:
    s, z = const_np(q.args[1]), const_np(q.args[2])
    if s is None or z is None or s.size != 1 or z.size != 1:
        raise _NoTable
    lo, hi = int_range(str(q.attrs.out_dtype))
    return np.clip(np.rint(x / float(s.reshape(()))) + float(z.reshape(())), lo, hi)


def _evaluate(lw: Lowering, x) -> tuple[np.ndarray, object, str] | None:
    """(values of x on every level, its one 8-bit input, that input's dtype), or None."""
    rank = len(shape_of(x))
    for deep in (False, True):
        chain = _Chain(lw, rank, deep)
        try:
            values = chain.value(x)
        except _NoTable:
            return None
        if len(chain.inputs) == 1:
            break
    if len(chain.inputs) != 1 or not chain.computes:
        return None
    (data, dtype), = chain.inputs.items()
    return values, data, dtype


def lower_lookup(lw: Lowering, x, out: OutGrid):
    """table[a] for quantize(x) on the grid `out`, or None when x is no element-wise function of one
    8-bit tensor (or only clamps and grid changes, which the other lowerings do without a table).
    Constants that vary along axes give one 256-entry table per position of theirs, indexed by
    a + 256 · position."""
    from tvm.relax import op

    if lw.tflite:  # LiteRT's own tables round in float32, not like the QDQ semantics
        return None
    found = _evaluate(lw, x)
    if found is None:
        return None
    values, data, dtype = found
    per = values.shape[:-1]  # the positions with tables of their own
    if shape_of(data) != shape_of(x) or values.size > MAX_TABLE or np.isnan(values).any():
        return None
    table = np.clip(np.rint(values / out.scale) + out.zero_point, out.lo, out.hi).astype(out.dtype)
    offsets = np.arange(int(np.prod(per)), dtype=np.int32).reshape(per) * 256 + (128 if dtype == "int8" else 0)
    offsets = offsets if offsets.size > 1 else offsets.reshape(())
    index = lw.bb.emit(op.add(op.astype(lw.visit(data), "int32"), const(offsets)))
    lookup = op.take(const(table.reshape(-1)), index, axis=0)
    return lw.bb.emit(lookup, name_hint=f"{LOOKUP}_{lw.dot_name(x)}")
