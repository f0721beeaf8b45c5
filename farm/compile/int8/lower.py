"""Integer lowering of fake-quantized Relax: dequantize → op → quantize chains become integer compute.

TVM's ONNX frontend imports QDQ models as dequantize → float op → quantize. For every quantize
whose input is one of the patterns below, built from dequantized values with constant scales and
zero points, we emit the integer form and bind it to the quantize's variable; the float chain is
then dead and removed:

- conv2d / matmul (+ bias, + relu / clip): u8|i8 activations × i8 weights → int32, constant
  zero-point correction folded into the int32 bias, activation padded with its zero point;
  weight zero points ≠ 0 (or non-int8 weights, or two activation operands) use int16 operands.
- add of two quantized tensors, mean over spatial axes (global average pool), avg_pool2d.
- max_pool2d and data movement (reshape, flatten, permute_dims, squeeze, expand_dims): run on the
  integers, requantized only when input and output grids differ.
The requantize is fixed point with round-half-to-even (see fixedpoint.py); for TFLite models it is
TFLite's own fixed-point arithmetic (tflite_arith.py). Anything else stays as the importer made it,
and the reason is recorded for the lowering report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farm.compile.int8 import tflite_arith
from farm.compile.int8.fixedpoint import (
    FixedPoint,
    add_fixed_point,
    const,
    requantize,
    requantize_add,
    to_fixed_point,
)

_MOVE_OPS = ("relax.reshape", "relax.permute_dims", "relax.squeeze", "relax.expand_dims",
             "relax.nn.max_pool2d")


INPUT_QUANTIZE = "quantizes a float value from outside the quantized graph"
AVG_POOL_SUM = "avg_pool_sum"  # name of the ones-kernel conv that sums average-pool windows


class NotLowered(Exception):
    """A pattern matched but cannot be lowered exactly; the message is the reason."""


@dataclass(frozen=True)
class _QParam:
    data: object  # relax expr: the quantized tensor (a Var, or a Constant for weights)
    scale: np.ndarray  # float64
    zp: np.ndarray  # int64
    axis: int
    fresh: bool = False  # data is already an expression of the new function


def _int_range(dtype: str) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _shape(expr) -> list[int]:
    return [int(d) for d in expr.ty.shape]


def _scalar(a: np.ndarray, what: str):
    if a.size != 1:
        raise NotLowered(f"{what} is per-axis")
    return a.reshape(()).item()


def lower_int8(mod, tflite: bool = False):
    """Lower every function of `mod`; returns (module, reasons) where reasons maps a var name of a
    quantize left in float to why. `tflite`: requantize as TFLite does, not exactly."""
    from tvm import relax

    reasons: dict[str, str] = {}
    out = mod
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            lowerer = _make_lowerer()(mod, _bindings(func), tflite)
            new = lowerer.visit_expr(func)
            reasons.update(lowerer.reasons)
            for kgv, kernel in lowerer.builder_.get().functions.items():  # e.g. the add kernels
                if not isinstance(kernel, relax.Function):
                    out[kgv] = kernel
            out[gv] = new
    return relax.transform.DeadCodeElimination()(out), reasons


def _bindings(func) -> dict:
    from tvm import relax

    defs = {}
    body = func.body
    if isinstance(body, relax.SeqExpr):
        for block in body.blocks:
            for b in block.bindings:
                if isinstance(b, relax.VarBinding):
                    defs[b.var] = b.value
    return defs


def _make_lowerer():
    """The mutator class (built lazily so importing this module does not import TVM)."""
    import tvm
    from tvm import relax

    op = relax.op
    Constant = tvm.ir.expr.Constant  # noqa: N806 - relax constants live in tvm.ir in 0.27

    def is_op(e, name: str) -> bool:
        return isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == name

    def const_np(e) -> np.ndarray | None:
        return e.value.numpy() if isinstance(e, Constant) else None

    @relax.expr_functor.mutator
    class Lowerer(relax.PyExprMutator):
        def __init__(self, mod, defs: dict, tflite: bool):
            super().__init__(mod)
            self.defs = defs
            self.tflite = tflite
            self.reasons: dict[str, str] = {}

        # --- looking through bindings of the original function ---
        def val(self, e):
            while isinstance(e, relax.Var) and e in self.defs:
                e = self.defs[e]
            return e

        def dq(self, e) -> _QParam | None:
            c = self.val(e)
            if not is_op(c, "relax.dequantize"):
                return None
            scale, zp = const_np(c.args[1]), const_np(c.args[2])
            if scale is None or zp is None:
                return None
            ndim = max(len(c.args[0].ty.shape), 1)
            return _QParam(c.args[0], scale.astype(np.float64), zp.astype(np.int64),
                           int(c.attrs.axis) % ndim)

        def act(self, e, what: str) -> _QParam:
            """A dequantized activation (not a constant) with a per-tensor grid; also through
            relu / clip whose bounds lie on its grid (relu(dq(a)) = dq(max(a, za)) exactly)."""
            clamp = self.clamp(self.val(e))
            if clamp is not None:
                bounds, inner = clamp
                p = self.act(inner, what)
                data = self.data(p)
                for kind, value in bounds:
                    level = value / float(p.scale.reshape(())) + float(p.zp.reshape(()))
                    if not np.isfinite(level):
                        continue
                    if abs(level - round(level)) > 1e-6:
                        raise NotLowered(f"clip bound {value:g} of {what} is off its quantization grid")
                    dlo, dhi = _int_range(_dtype(p.data))
                    if (kind == "min" and level <= dlo) or (kind == "max" and level >= dhi):
                        continue  # the bound is outside the representable range: a no-op
                    bound = const(np.asarray(min(max(round(level), dlo), dhi)).astype(_dtype(p.data)))
                    data = self.builder_.emit((op.maximum if kind == "min" else op.minimum)(data, bound))
                return _QParam(data, p.scale, p.zp, p.axis, fresh=True)
            p = self.dq(e)
            if p is None:
                raise NotLowered(f"{what} is not a dequantized tensor")
            if isinstance(p.data, Constant):
                raise NotLowered(f"{what} is a constant")
            _scalar(p.scale, f"scale of {what}")
            _scalar(p.zp, f"zero point of {what}")
            return p

        def data(self, p: _QParam):
            """The integer tensor of p in the new function."""
            return p.data if p.fresh else self.visit_expr(p.data)

        def dot_name(self, dot) -> str:
            """The original variable name of a conv2d/matmul, kept for the lowering report."""
            return next((v.name for v, value in self.defs.items() if value.same_as(dot)), "dot")

        # --- the rewrite ---
        def visit_var_binding_(self, binding) -> None:
            value = binding.value
            if is_op(value, "relax.quantize"):
                try:
                    expr = self.lower_quantize(value)
                except (NotLowered, tflite_arith.OutOfRange) as e:
                    self.reasons[binding.var.name] = str(e)
                    expr = None
                if expr is not None:
                    emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) \
                        else self.builder_.emit_output
                    self.set_var_remap(binding.var, emit(expr, name_hint=binding.var.name))
                    return
            super().visit_var_binding_(binding)

        def lower_quantize(self, q):
            so, zo = const_np(q.args[1]), const_np(q.args[2])
            if so is None or zo is None:
                raise NotLowered("quantize with non-constant scale or zero point")
            so = float(_scalar(so.astype(np.float64), "output scale"))
            zo = int(_scalar(zo, "output zero point"))
            out_dtype = str(q.attrs.out_dtype)
            lo, hi = _int_range(out_dtype)
            return self.quantized(self.val(q.args[0]), (so, zo, lo, hi, out_dtype))

        def quantized(self, x, out):
            """The integer form of quantize(x) on the output grid `out`."""
            so, zo, lo, hi, out_dtype = out
            # relu / clip before quantize = clip of the quantized value (quantize is monotonic)
            x, lo, hi = self.peel(x, so, zo, lo, hi)
            out = (so, zo, lo, hi, out_dtype)
            dot, bias = self.split_bias(x)
            if dot is not None:
                return self.lower_dot(dot, bias, out)
            if is_op(x, "relax.add"):
                return self.lower_add(x, out)
            if is_op(x, "relax.mean"):
                return self.lower_mean(x, out)
            if is_op(x, "relax.nn.avg_pool2d"):
                return self.lower_avg_pool(x, out)
            if isinstance(x, relax.Call) and isinstance(x.op, tvm.ir.Op) and x.op.name in _MOVE_OPS:
                # data movement and max commute with relu / clip: peel those off its input too
                src, lo, hi = self.peel(self.val(x.args[0]), so, zo, lo, hi)
                out = (so, zo, lo, hi, out_dtype)
                if self.dq(src) is not None:
                    return self.lower_move(x, out, self.act(src, f"{x.op.name} input"))
                # ...and with quantize itself: quantize(move(y)) = move(quantize(y))
                inner = self.builder_.emit(self.quantized(src, out))
                return relax.Call(x.op, [inner, *x.args[1:]], x.attrs, x.ty_args)
            if self.dq(x) is not None:  # quantize(dequantize(a)): a change of grid
                return self.lower_move(None, out, self.act(x, "input"))
            if not isinstance(x, relax.Call) or not isinstance(x.op, tvm.ir.Op):
                raise NotLowered(INPUT_QUANTIZE)
            raise NotLowered(f"no integer form for {x.op.name.removeprefix('relax.')}")

        def peel(self, x, so: float, zo: int, lo: int, hi: int):
            """Strip relu / clip ops off x; their bounds narrow [lo, hi] on the output grid."""
            while (clamp := self.clamp(x)) is not None:
                bounds, inner = clamp
                for kind, value in bounds:
                    if not np.isfinite(value):
                        continue
                    level = int(np.rint(np.float32(value) / np.float32(so))) + zo
                    lo, hi = (max(lo, level), hi) if kind == "min" else (lo, min(hi, level))
                x = self.val(inner)
            return x, lo, hi

        def clamp(self, x):
            """([("min"|"max", value)], input) for relu, clip, or max/min with a constant scalar
            (ONNX Clip imports as call_tir of maximum/minimum); None for anything else."""
            if is_op(x, "relax.nn.relu"):
                return [("min", 0.0)], x.args[0]
            if is_op(x, "relax.clip"):
                return [("min", float(x.args[1].value.value)),
                        ("max", float(x.args[2].value.value))], x.args[0]
            if is_op(x, "relax.maximum") or is_op(x, "relax.minimum"):
                name, args = x.op.name.removeprefix("relax."), list(x.args)
            elif is_op(x, "relax.call_tir") and isinstance(x.args[0], tvm.ir.GlobalVar) \
                    and isinstance(x.args[1], relax.Tuple):
                name, args = x.args[0].name_hint, list(x.args[1].fields)
            else:
                return None
            value = self.scalar(args[1]) if name in ("maximum", "minimum") and len(args) == 2 \
                else None
            return None if value is None else ([("min" if name == "maximum" else "max", value)],
                                               args[0])

        def scalar(self, e) -> float | None:
            """A constant scalar, also through ONNX Clip's where(isnan(c), ±inf, c)."""
            e = self.val(e)
            c = const_np(e)
            if c is not None and c.size == 1:
                return float(c.reshape(()))
            if is_op(e, "relax.where") and is_op(self.val(e.args[0]), "relax.isnan"):
                v = self.scalar(self.val(e.args[0]).args[0])
                return v if v is not None and not np.isnan(v) else None
            return None

        def split_bias(self, x):
            """(conv2d|matmul call, bias expr or None) if x is a dot product (+ bias)."""
            def is_dot(e):
                return is_op(e, "relax.nn.conv2d") or is_op(e, "relax.matmul")
            if is_dot(x):
                return x, None
            if is_op(x, "relax.add"):
                a, b = self.val(x.args[0]), self.val(x.args[1])
                if is_dot(a) and self.bias_values(x.args[1]) is not None:
                    return a, x.args[1]
                if is_dot(b) and self.bias_values(x.args[0]) is not None:
                    return b, x.args[0]
            return None, None

        def bias_values(self, e) -> np.ndarray | None:
            """Real (float64) values of a constant bias: a float constant or a dequantized one,
            possibly reshaped."""
            e = self.val(e)
            if is_op(e, "relax.reshape"):
                inner = self.bias_values(e.args[0])
                return None if inner is None else inner.reshape(-1)
            c = const_np(e)
            if c is not None and c.dtype.kind == "f":
                return c.astype(np.float64).reshape(-1)
            p = self.dq(e)
            if p is not None and isinstance(p.data, Constant):
                return _dequantize(const_np(p.data), p).reshape(-1)
            return None

        def weight(self, e) -> _QParam | None:
            """A constant quantized weight, through permute_dims: data as numpy, scale axis moved."""
            e = self.val(e)
            if is_op(e, "relax.permute_dims"):
                inner = self.weight(e.args[0])
                if inner is None:
                    return None
                data = const_np(inner.data)
                axes = [int(a) for a in e.attrs.axes] if e.attrs.axes is not None \
                    else list(range(data.ndim))[::-1]
                return _QParam(const(np.transpose(data, axes)), inner.scale, inner.zp,
                               axes.index(inner.axis))
            p = self.dq(e)
            return p if p is not None and isinstance(p.data, Constant) else None

        def lower_dot(self, dot, bias, out):
            so, zo, lo, hi, out_dtype = out
            is_conv = is_op(dot, "relax.nn.conv2d")
            a = self.act(dot.args[0], "activation")
            sa, za = float(a.scale.reshape(())), int(a.zp.reshape(()))
            w = self.weight(dot.args[1])
            if w is None:
                if is_conv:
                    raise NotLowered("conv2d weight is not a dequantized constant")
                return self.lower_dynamic_matmul(dot, a, out)
            wdata = const_np(w.data)
            ch_axis = 0 if is_conv else wdata.ndim - 1
            nout = wdata.shape[ch_axis]
            sw = _per_channel(w.scale, w.axis, ch_axis, nout, "weight scale")
            zw = _per_channel(w.zp, w.axis, ch_axis, nout, "weight zero point")
            if is_conv and (dot.attrs.data_layout != "NCHW" or dot.attrs.kernel_layout != "OIHW"
                            or dot.attrs.out_layout != "NCHW"):
                raise NotLowered(f"conv2d layout {dot.attrs.data_layout}/{dot.attrs.kernel_layout}")
            acc_scale = sa * sw
            bias_int = np.zeros(nout, dtype=np.int64)
            if bias is not None:
                bias_int = np.rint(self.bias_values(bias) / acc_scale).astype(np.int64)
            wide = wdata.dtype != np.int8 or np.any(zw != 0)
            red_axes = (1, 2, 3) if is_conv else (0,)
            if wide:  # zero points subtracted up front, operands in int16
                wq = _move_axis(wdata.astype(np.int64), ch_axis, zw)
                lhs = self.builder_.emit(op.subtract(op.astype(self.data(a), "int16"),
                                                     const(np.int16(za))))
                rhs = const(wq.astype(np.int16))
                padding = dot.attrs.padding if is_conv else None
            else:
                lhs = self.data(a)
                rhs = w.data
                bias_int = bias_int - za * wdata.astype(np.int64).sum(axis=red_axes)
                padding = None
                if is_conv and any(int(p) for p in dot.attrs.padding):
                    t, left, b, r = (int(p) for p in dot.attrs.padding)
                    lhs = self.builder_.emit(op.nn.pad(lhs, [0, 0, 0, 0, t, b, left, r],
                                                       pad_value=float(za)))
                padding = [0, 0, 0, 0] if is_conv else None
            if np.any(np.abs(bias_int) >= 2**31):
                raise NotLowered("int32 bias overflows")
            if is_conv:
                acc = op.nn.conv2d(lhs, rhs, strides=dot.attrs.strides, padding=padding,
                                   dilation=dot.attrs.dilation, groups=int(dot.attrs.groups),
                                   out_dtype="int32")
                shape = [1, nout, 1, 1]
            else:
                acc = op.matmul(lhs, rhs, out_dtype="int32")
                shape = [nout]
            acc = self.builder_.emit(acc, name_hint=self.dot_name(dot))
            return self.requantize(acc, (acc_scale / so).reshape(shape), out, dense=not is_conv,
                                   offset=bias_int.reshape(shape))

        def lower_dynamic_matmul(self, dot, a, out):
            so, zo, lo, hi, out_dtype = out
            b = self.act(dot.args[1], "second matmul operand")
            lhs = self.builder_.emit(op.subtract(op.astype(self.data(a), "int16"),
                                                 const(np.int16(a.zp.reshape(())))))
            rhs = self.builder_.emit(op.subtract(op.astype(self.data(b), "int16"),
                                                 const(np.int16(b.zp.reshape(())))))
            acc = self.builder_.emit(op.matmul(lhs, rhs, out_dtype="int32"),
                                     name_hint=self.dot_name(dot))
            m = float(a.scale.reshape(())) * float(b.scale.reshape(())) / so
            return self.requantize(acc, np.asarray(m), out)

        def lower_add(self, x, out):
            so, zo, lo, hi, out_dtype = out
            a, b = self.act(x.args[0], "add operand"), self.act(x.args[1], "add operand")
            if self.tflite:
                return tflite_arith.add(self.builder_, self.data(a), int(a.zp.reshape(())), float(a.scale.reshape(())),
                                        self.data(b), int(b.zp.reshape(())), float(b.scale.reshape(())), out)
            zps = (int(a.zp.reshape(())), int(b.zp.reshape(())))
            ranges = tuple((dlo - z, dhi - z) for (dlo, dhi), z in
                           zip((_int_range(_dtype(a.data)), _int_range(_dtype(b.data))), zps,
                               strict=True))
            fp = add_fixed_point((float(a.scale.reshape(())) / so, float(b.scale.reshape(())) / so),
                                 ranges, zo, lo, hi, zps)
            if fp is None:
                raise NotLowered("add multiplier out of fixed-point range")
            return requantize_add(self.builder_, self.data(a), self.data(b), zps, fp, zo, lo, hi,
                                  out_dtype)

        def lower_mean(self, x, out):
            so, zo, lo, hi, out_dtype = out
            a = self.act(x.args[0], "mean input")
            shape = _shape(x.args[0])
            axes = [int(i) % len(shape) for i in x.attrs.axis] if x.attrs.axis is not None \
                else list(range(len(shape)))
            n = int(np.prod([shape[i] for i in axes]))
            if self.tflite:
                return tflite_arith.mean(self.builder_, self.data(a), int(a.zp.reshape(())), float(a.scale.reshape(())),
                                         axes, bool(x.attrs.keepdims), n, out)
            total = op.sum(op.astype(self.data(a), "int32"), axis=axes,
                           keepdims=bool(x.attrs.keepdims))
            acc = self.builder_.emit(op.subtract(total, const(np.int32(n * int(a.zp.reshape(()))))))
            m = float(a.scale.reshape(())) / (so * n)
            return requantize(self.builder_, acc, _fp(np.asarray(m)), zo, lo, hi, out_dtype)

        def lower_avg_pool(self, x, out):
            so, zo, lo, hi, out_dtype = out
            at = x.attrs
            if at.layout != "NCHW" or at.out_layout != "NCHW" or bool(at.ceil_mode):
                raise NotLowered("avg_pool2d with ceil_mode or a layout other than NCHW")
            a = self.act(x.args[0], "avg_pool2d input")
            za = int(a.zp.reshape(()))
            n, c, h, w = _shape(x.args[0])
            kh, kw = (int(k) for k in at.pool_size)
            t, left, b, r = (int(p) for p in at.padding)
            # window sums of (a - za) as a depthwise conv with ones, padding with za (adds 0)
            lhs = self.builder_.emit(op.nn.pad(self.data(a), [0, 0, 0, 0, t, b, left, r],
                                               pad_value=float(za)))
            ones = const(np.ones((c, 1, kh, kw), dtype=np.int8))
            conv = op.nn.conv2d(lhs, ones, strides=at.strides, padding=[0, 0, 0, 0],
                                dilation=at.dilation, groups=c, out_dtype="int32")
            conv = self.builder_.emit(conv, name_hint=AVG_POOL_SUM)
            acc = self.builder_.emit(op.subtract(conv, const(np.int32(kh * kw * za))))
            oh, ow = _shape(x)[2:]
            if bool(at.count_include_pad):
                counts = np.full((oh, ow), kh * kw, dtype=np.float64)
            else:
                counts = _window_counts(h, w, (kh, kw), [int(s) for s in at.strides],
                                        [int(d) for d in at.dilation], (t, left, b, r), (oh, ow))
            m = float(a.scale.reshape(())) / (so * counts)
            return self.requantize(acc, m.reshape(1, 1, oh, ow), out)

        def lower_move(self, x, out, a: _QParam):
            """Quantize of a data-movement op (or of nothing: x None) on the dequantized `a`."""
            so, zo, lo, hi, out_dtype = out
            moved = self.data(a) if x is None else \
                relax.Call(x.op, [self.data(a), *x.args[1:]], x.attrs, x.ty_args)
            sa, za = float(a.scale.reshape(())), int(a.zp.reshape(()))
            src = _dtype(a.data)
            if np.float32(sa) == np.float32(so) and za == zo and src == out_dtype \
                    and (lo, hi) == _int_range(out_dtype):
                return moved
            acc = self.builder_.emit(op.subtract(op.astype(moved, "int32"), const(np.int32(za))))
            return self.requantize(acc, np.asarray(sa / so), out)

        def requantize(self, acc, m: np.ndarray, out, dense: bool = False, offset: np.ndarray | None = None):
            """(acc + offset) (an integer tensor plus an optional integer constant such as a conv's
            bias) times the real multipliers m on the output grid."""
            _, zo, lo, hi, out_dtype = out
            if self.tflite:  # LiteRT's FULLY_CONNECTED rounds once, its other ops twice
                if offset is not None:  # TFLite adds the bias in int32 before rescaling
                    acc = self.builder_.emit(relax.op.add(acc, const(offset.astype(np.int32))))
                return tflite_arith.requantize(self.builder_, acc, m, zo, lo, hi, out_dtype, single_rounding=dense)
            return requantize(self.builder_, acc, _fp(m), zo, lo, hi, out_dtype, offset=offset)

    return Lowerer


def _fp(m: np.ndarray) -> FixedPoint:
    fp = to_fixed_point(m)
    if fp is None:
        raise NotLowered(f"requantize multiplier out of fixed-point range ({float(np.max(m)):.3g})")
    return fp


def _dequantize(data: np.ndarray, p: _QParam) -> np.ndarray:
    shape = [1] * data.ndim
    if p.scale.size > 1:
        shape[p.axis] = -1
    return (data.astype(np.float64) - p.zp.reshape(shape)) * p.scale.reshape(shape)


def _per_channel(values: np.ndarray, axis: int, ch_axis: int, n: int, what: str) -> np.ndarray:
    """Per-output-channel values from a per-tensor or per-axis parameter."""
    if values.size == 1:
        return np.full(n, values.reshape(()).item(), dtype=values.dtype)
    if axis != ch_axis or values.size != n:
        raise NotLowered(f"{what} is per-axis along axis {axis}, not the output channels")
    return values.reshape(-1)


def _move_axis(w: np.ndarray, ch_axis: int, zw: np.ndarray) -> np.ndarray:
    shape = [1] * w.ndim
    shape[ch_axis] = -1
    return w - zw.reshape(shape)


def _window_counts(h: int, w: int, k: tuple[int, int], s: list[int], d: list[int],
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
