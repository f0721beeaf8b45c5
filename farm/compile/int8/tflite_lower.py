"""TFLite → Relax in the form the integer lowering and the NCHW conv schedules expect.

`from_tflite` imports a full-integer model as fake quantization in NHWC: dequantize → conv2d
(HWIO, or HWOI for depthwise, weights reshaped / transposed) + bias → quantize, with fused
activations as integer clips and average pooling as an integer avg_pool2d on the raw values.
`normalize` rewrites that into what the ONNX path produces, so the same lowering, schedules and
Hexagon kernels apply on every device:

- conv2d becomes NCHW / OIHW on the dequantized integer input transposed to NCHW, with the bias
  reshaped to [1, C, 1, 1], followed by a transpose back to NHWC (the lowering moves quantize
  across it, so the transposes act on int8 data); weights become constants in OIHW with their
  per-channel axis tracked;
- permute_dims / reshape of constant weights are folded into the constant (fully-connected
  weights, depthwise kernels);
- TFLite's integer average pool (window sum of the raw values, divided rounding half away from
  zero by the count of real inputs) becomes a ones-kernel depthwise sum in NCHW and an exact
  rounded division, as LiteRT computes it;
- the int8 softmax (output grid 1/256, zero point -128) becomes TFLite's integer softmax
  (tflite_softmax.py);
- int8 activations become uint8 with zero point + 128 (the same real values, exactly): the x86
  VNNI kernels multiply u8 × s8, as for ONNX models. Model inputs and outputs keep int8; the
  conversions sit at the edges.
`cancel_transposes` then removes the NCHW → NHWC → NCHW round trips between lowered layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from farm.compile.int8 import tflite_arith, tflite_softmax
from farm.compile.int8.elementwise import MOVE_OPS
from farm.compile.int8.fixedpoint import const, i64
from farm.compile.int8.pools import AVG_POOL_SUM, window_counts
from farm.compile.rewrite import Rewrite, const_np, is_const, is_op, op_name, rewrite_functions
from farm.errors import FarmError

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]
_KERNEL_TO_OIHW = {"HWIO": [3, 2, 0, 1], "HWOI": [2, 3, 0, 1], "OIHW": [0, 1, 2, 3]}
# ops through which a transpose commutes (elementwise on one tensor, or scalar constants)
_ELEMENTWISE = ("relax.clip", "relax.astype")
SHIFT = 128  # int8 value + 128 = uint8 value


def import_tflite(path: Path):
    """The Relax module of a .tflite file, normalized (see module doc)."""
    import tflite
    from tvm import relax
    from tvm.relax.frontend.tflite import from_tflite

    from farm.models.tflite import read_tflite

    buf = read_tflite(path)
    try:
        mod = from_tflite(tflite.Model.GetRootAsModel(buf, 0))
    except Exception as e:  # OpNotImplemented, assertion errors of the frontend
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise FarmError(f"TVM cannot import {path.name}: {lines[-1] if lines else type(e).__name__}",
                        "the model uses an operator or option TVM's TFLite frontend does not support") \
            from None
    return normalize(relax.transform.DecomposeOpsForInference()(mod))


def normalize(mod):
    return _transform(mod, Normalizer)


def cancel_transposes(mod):
    """permute_dims(f(permute_dims(x, p)), p⁻¹) → f(x) for elementwise f (or none)."""
    return _transform(mod, Canceller)


def _transform(mod, rewrite):
    from tvm import relax

    out = mod
    for gv, new, _ in rewrite_functions(mod, rewrite):
        out[gv] = new
    return relax.transform.DeadCodeElimination()(out)


class Normalizer(Rewrite):
    """The rewrite of `normalize` (see module doc)."""

    def __init__(self, defs: dict):
        super().__init__(defs)
        self.nchw: dict = {}  # NHWC conv var of the original → its NCHW conv in the new function
        self.shifted: set = set()  # vars of the original whose new value is the uint8 form
        self.params: dict = {}  # int8 function parameter → its uint8 form, emitted at first use

    def binding(self, binding) -> bool:
        from tvm import relax

        new = self.new_value(binding.var, binding.value)
        if new is None:
            if isinstance(binding.value, relax.Var) and binding.value in self.shifted:
                self.shifted.add(binding.var)
            return False
        self.emit_as(binding.var, new)
        return True

    def new_value(self, var, value):
        """The value var is bound to in the new function (None: the binding as it is)."""
        from tvm import relax

        output = not isinstance(var, relax.DataflowVar)
        if (shifted := self.shift(value)) is not None:
            if output:  # model outputs stay int8
                return _shift(self.bb.emit(shifted), -SHIFT, "int8")
            self.shifted.add(var)
            return shifted
        if is_op(value, "relax.dequantize"):
            return self.dequantize(value, output)
        if is_op(value, "relax.nn.conv2d") and value.attrs.data_layout == "NHWC":
            return self.conv(var, value)
        if is_op(value, "relax.add"):
            return self.bias_add(value)
        return self.unshift_args(value, output)

    def is_shifted(self, e) -> bool:
        from tvm import relax

        return isinstance(e, relax.Var) and (e in self.shifted or (
            e not in self.defs and str(e.ty.dtype) == "int8"))  # a parameter

    def u8(self, e):
        """The uint8 form of an int8 activation of the original."""
        if e in self.shifted:
            return self.visit(e)
        if e not in self.params:
            self.params[e] = self.bb.emit(_shift(self.visit(e), SHIFT, "uint8"))
        return self.params[e]

    def i8(self, e):
        """The new expression of e, in int8 if the original is int8."""
        from tvm import relax

        return self.bb.emit(_shift(self.visit(e), -SHIFT, "int8")) \
            if isinstance(e, relax.Var) and e in self.shifted else self.visit(e)

    def const_value(self, e) -> np.ndarray | None:
        """numpy value of a constant, through permute_dims / reshape."""
        e = self.val(e)
        if is_const(e):
            return const_np(e)
        if is_op(e, "relax.permute_dims") or is_op(e, "relax.reshape"):
            inner = self.const_value(e.args[0])
            if inner is None:
                return None
            if is_op(e, "relax.reshape"):
                return inner.reshape([int(d) for d in e.ty.shape])
            axes = [int(a) for a in e.attrs.axes] if e.attrs.axes is not None else None
            return np.transpose(inner, axes)
        return None

    def weight(self, e):
        """(values, dequantize parameters or None) of a constant weight, through
        reshape / permute_dims, its per-channel axis followed."""
        e = self.val(e)
        if is_op(e, "relax.dequantize"):
            data = self.const_value(e.args[0])
            if data is None:
                return None
            ndim = data.ndim
            return data, (e.args[1], e.args[2], int(e.attrs.axis) % ndim)
        if is_op(e, "relax.reshape") or is_op(e, "relax.permute_dims"):
            inner = self.weight(e.args[0])
            if inner is None:
                return None
            data, q = inner
            if q is None:  # a float weight
                return self.const_value(e), None
            moved = _move(data, q[2], e, is_op(e, "relax.reshape"))
            return None if moved is None else (moved[0], (q[0], q[1], moved[1]))
        value = self.const_value(e)
        return None if value is None else (value, None)

    def shift(self, value):
        """The uint8 form of a binding that yields an int8 activation (None: not one)."""
        from tvm import relax
        from tvm.relax import op

        if (sm := self.int_softmax(value)) is not None:
            return sm
        if is_op(value, "relax.quantize") and str(value.attrs.out_dtype) == "int8":
            return op.quantize(self.visit(value.args[0]), value.args[1], _plus(value.args[2], SHIFT),
                               axis=int(value.attrs.axis), out_dtype="uint8")
        if is_op(value, "relax.clip") and self.is_shifted(value.args[0]):
            lo, hi = (float(getattr(a.value, "value", a.value)) + SHIFT for a in value.args[1:3])
            return op.clip(self.u8(value.args[0]), lo, hi)
        # ops that move integers without looking at their values' sign run on the uint8 form
        if op_name(value) in MOVE_OPS and self.is_shifted(value.args[0]):
            return relax.Call(value.op, [self.u8(value.args[0]), *value.args[1:]], value.attrs, value.ty_args)
        if is_op(value, "relax.astype"):
            return self.int_avg_pool(value)
        return None

    def dequantize(self, value, output: bool):
        """A dequantize of a shifted activation or of a moved constant weight, else with its
        operands unshifted."""
        from tvm.relax import op

        if self.is_shifted(value.args[0]):
            return op.dequantize(self.u8(value.args[0]), value.args[1], _plus(value.args[2], SHIFT),
                                 axis=int(value.attrs.axis))
        if not is_const(self.val(value.args[0])) and (moved := self.const_value(value.args[0])) is not None:
            return op.dequantize(const(moved), value.args[1], value.args[2], axis=int(value.attrs.axis))
        return self.unshift_args(value, output)

    def int_softmax(self, q):
        """quantize(softmax(dequantize(x)), 1/256, -128, int8) on the last axis: TFLite's
        integer softmax, in uint8 form (None: not that pattern)."""
        if not is_op(q, "relax.quantize") or str(q.attrs.out_dtype) != "int8":
            return None
        sm = self.val(q.args[0])
        if not is_op(sm, "relax.nn.softmax") or int(sm.attrs.axis) not in (-1, len(sm.ty.shape) - 1):
            return None
        dq = self.val(sm.args[0])
        if not is_op(dq, "relax.dequantize") or not self.is_shifted(dq.args[0]):
            return None
        scale = [const_np(v) for v in (q.args[1], q.args[2], dq.args[1]) if is_const(v)]
        if len(scale) != 3 or scale[0].size != 1 or scale[2].size != 1 \
                or float(scale[0]) != 1 / 256 or int(scale[1]) != -128:
            return None
        return tflite_softmax.softmax(self.bb, self.u8(dq.args[0]), float(scale[2]), SHIFT, "uint8")

    def unshift_args(self, value, output: bool):
        """A call or tuple with its int8 operands given back in int8 (None: none shifted)."""
        from tvm import relax

        if isinstance(value, relax.Var) and value in self.shifted:  # an alias: only outputs need int8
            return self.i8(value) if output else None
        if isinstance(value, relax.Tuple) and any(self.is_shifted(f) for f in value.fields):
            return relax.Tuple([self.i8(f) for f in value.fields])
        if isinstance(value, relax.Call) and any(isinstance(a, relax.Var) and a in self.shifted
                                                 for a in value.args):
            return relax.Call(value.op, [self.i8(a) for a in value.args], value.attrs, value.ty_args)
        return None

    def conv(self, var, c):
        """NCHW / OIHW conv of an NHWC conv (None: left as imported); remembered for the bias
        add, returned transposed back to NHWC."""
        from tvm.relax import op

        a = c.attrs
        w = self.weight(c.args[1])
        if a.kernel_layout not in _KERNEL_TO_OIHW or a.out_layout != "NHWC" or w is None:
            return None
        perm = _KERNEL_TO_OIHW[str(a.kernel_layout)]
        data, q = w
        wt = const(np.ascontiguousarray(np.transpose(data, perm)))
        weight = wt if q is None else op.dequantize(wt, q[0], q[1], axis=perm.index(q[2]))
        x = self.nchw_input(c.args[0])
        t, left, b, r = (int(p) for p in a.padding)
        conv = self.bb.emit(op.nn.conv2d(
            self.bb.emit(x), self.bb.emit(weight), strides=a.strides,
            padding=[t, left, b, r], dilation=a.dilation, groups=int(a.groups),
            data_layout="NCHW", kernel_layout="OIHW", out_layout="NCHW",
            out_dtype=a.out_dtype), name_hint=var.name + "_nchw")
        self.nchw[var] = conv
        return op.permute_dims(conv, TO_NHWC)

    def nchw_input(self, e):
        """The NHWC conv input e transposed to NCHW; a dequantized one on its integers."""
        from tvm.relax import op

        x = self.val(e)
        if not is_op(x, "relax.dequantize"):
            return op.permute_dims(self.visit(e), TO_NCHW)
        shifted = self.is_shifted(x.args[0])
        data = self.u8(x.args[0]) if shifted else self.visit(x.args[0])
        return op.dequantize(self.bb.emit(op.permute_dims(data, TO_NCHW)), x.args[1],
                             _plus(x.args[2], SHIFT) if shifted else x.args[2], axis=int(x.attrs.axis))

    def bias_add(self, add):
        """add(NHWC conv, bias[C]) → transpose(add(NCHW conv, bias[1, C, 1, 1]))."""
        from tvm import relax
        from tvm.relax import op

        for conv_arg, bias in ((add.args[0], add.args[1]), (add.args[1], add.args[0])):
            if not isinstance(conv_arg, relax.Var) or conv_arg not in self.defs:
                continue
            conv_value = self.defs[conv_arg]
            if not (is_op(conv_value, "relax.nn.conv2d") and conv_arg in self.nchw):
                continue
            if len(bias.ty.shape) != 1:
                return None
            n = int(bias.ty.shape[0])
            nchw = self.nchw[conv_arg]
            summed = self.bb.emit(op.add(nchw, op.reshape(self.visit(bias), [1, n, 1, 1])))
            return op.permute_dims(summed, TO_NHWC)
        return None

    def int_avg_pool(self, cast):
        """astype(avg_pool2d(astype(x, int32)), int8|uint8) in NHWC: TFLite's average pool."""
        pool = self.val(cast.args[0])
        if not is_op(pool, "relax.nn.avg_pool2d") or pool.attrs.layout != "NHWC" \
                or bool(pool.attrs.ceil_mode) or bool(pool.attrs.count_include_pad):
            return None
        inner = self.val(pool.args[0])
        if not is_op(inner, "relax.astype") or not self.is_shifted(inner.args[0]) \
                or str(cast.attrs.dtype) != "int8":
            return None
        return _tflite_avg_pool(self.bb, self.u8(inner.args[0]), pool.attrs, [int(d) for d in pool.ty.shape])


def _move(data: np.ndarray, axis: int, e, reshape: bool):
    """Apply a reshape / permute_dims to a per-axis quantized constant: (values, new axis), or
    None when the quantized axis does not survive as one axis."""
    if not reshape:
        axes = [int(a) for a in e.attrs.axes] if e.attrs.axes is not None else list(range(data.ndim))[::-1]
        return np.transpose(data, axes), axes.index(axis)
    new_shape = [int(d) for d in e.ty.shape]
    before = int(np.prod(data.shape[:axis]))
    for i, d in enumerate(new_shape):
        if d == data.shape[axis] and int(np.prod(new_shape[:i])) == before:
            return data.reshape(new_shape), i
    return None


def _tflite_avg_pool(bb, x, attrs, out_shape: list[int]):
    """Window sums of the raw int8 values (here their uint8 forms, padded with the form of 0)
    as a depthwise ones-kernel conv in NCHW, divided by each window's count of real inputs
    rounding half away from zero; the result in its uint8 form."""
    from tvm import relax

    op = relax.op
    n, h, w, c = (int(d) for d in x.ty.shape)
    kh, kw = (int(k) for k in attrs.pool_size)
    t, left, b, r = (int(p) for p in attrs.padding)
    strides, dil = [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation]
    lhs = bb.emit(op.nn.pad(op.permute_dims(x, TO_NCHW), [0, 0, 0, 0, t, b, left, r], pad_value=float(SHIFT)))
    ones = const(np.ones((c, 1, kh, kw), dtype=np.int8))
    total = bb.emit(op.nn.conv2d(lhs, ones, strides=strides, padding=[0, 0, 0, 0], dilation=dil,
                                 groups=c, out_dtype="int32"), name_hint=AVG_POOL_SUM)
    total = bb.emit(op.subtract(total, const(np.int32(SHIFT * kh * kw))))
    oh, ow = out_shape[1], out_shape[2]
    counts = window_counts(h, w, (kh, kw), strides, dil, (t, left, b, r), (oh, ow)).astype(np.int64)
    q = tflite_arith.rounded_div(bb, total, counts.reshape(1, 1, oh, ow), SHIFT * kh * kw)
    res = bb.emit(op.astype(op.minimum(op.maximum(op.add(q, i64(SHIFT)), i64(0)), i64(255)), "uint8"))
    return op.permute_dims(res, TO_NHWC)


def _shift(x, by: int, dtype: str):
    """x ± 128 as the other 8-bit type (the same real value on a zero point moved by `by`)."""
    from tvm import relax

    op = relax.op
    return op.astype(op.add(op.astype(x, "int16"), const(np.int16(by))), dtype)


def _plus(zero_point, by: int):
    """A zero-point constant moved by `by`."""
    return const((zero_point.value.numpy().astype(np.int64) + by).astype(np.int32))


class Canceller(Rewrite):
    """The rewrite of `cancel_transposes`."""

    def binding(self, binding) -> bool:
        new = self.cancel(binding.value) if is_op(binding.value, "relax.permute_dims") else None
        if new is None:
            return False
        self.emit_as(binding.var, new)
        return True

    def cancel(self, outer):
        from tvm import relax

        p2 = _perm(outer)
        chain, e = [], outer.args[0]
        while isinstance(e, relax.Var) and e in self.defs:
            v = self.defs[e]
            if is_op(v, "relax.permute_dims"):
                p1 = _perm(v)
                if p1 is None or p2 is None or [p1[i] for i in p2] != list(range(len(p1))):
                    return None
                x = self.visit(v.args[0])
                for f in reversed(chain):  # re-apply the elementwise ops on the untransposed x
                    x = self.bb.emit(relax.Call(f.op, [x, *f.args[1:]], f.attrs, f.ty_args))
                return x
            if op_name(v) not in _ELEMENTWISE:
                return None
            chain.append(v)
            e = v.args[0]
        return None


def _perm(e) -> list[int] | None:
    return [int(a) for a in e.attrs.axes] if e.attrs.axes is not None else None
