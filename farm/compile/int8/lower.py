"""Integer lowering of fake-quantized Relax: dequantize → op → quantize chains become integer compute.

TVM's ONNX frontend imports QDQ models as dequantize → float op → quantize. For every quantize
whose input is one of the patterns below, built from dequantized values with constant scales and
zero points, we emit the integer form and bind it to the quantize's variable; the float chain is
then dead and removed:

- conv2d / matmul (+ bias, + relu / clip): dot.py;
- add, relu / clip, max_pool2d and data movement (reshape, flatten, permute_dims, squeeze,
  expand_dims): elementwise.py;
- mean over spatial axes (global average pool), avg_pool2d: pools.py;
- nearest and (dyadic-weight) linear resize: resize.py;
- any element-wise function of one 8-bit tensor (sigmoid, SiLU, GELU, HardSwish, …): a lookup
  table, lookup.py (tried first: it also covers chains the others would take piecewise).
An op family of its own gets a module of the same shape and an entry in `_LOWERINGS`.
The requantize is fixed point with round-half-to-even (see fixedpoint.py); for TFLite models it is
TFLite's own fixed-point arithmetic (tflite_arith.py); see requant.py. Anything else stays as the
importer made it, and the reason is recorded for the lowering report.
"""

from __future__ import annotations

import numpy as np

from farm.compile.int8 import dot, elementwise, lookup, pools, resize, tflite_arith
from farm.compile.int8.qparams import NotLowered, OutGrid, QParam, act, dq, int_range, scalar_value
from farm.compile.rewrite import Rewrite, const_np, is_op, op_name, rewrite_functions
from farm.errors import error_line

INPUT_QUANTIZE = "quantizes a float value from outside the quantized graph"

# quantize(op(...)) → its integer form, by op name; dot products (+ bias) are matched before these
_LOWERINGS = {
    "relax.add": elementwise.lower_add,
    "relax.multiply": elementwise.lower_multiply,
    "relax.concat": elementwise.lower_concat,
    "relax.mean": pools.lower_mean,
    "relax.nn.avg_pool2d": pools.lower_avg_pool,
    "relax.image.resize2d": resize.lower_resize,
}


def lower_int8(mod, tflite: bool = False):
    """Lower every function of `mod`; returns (module, reasons) where reasons maps a var name of a
    quantize left in float to why. `tflite`: requantize as TFLite does, not exactly."""
    from tvm import relax

    reasons: dict[str, str] = {}
    out = mod
    for gv, new, lowering in rewrite_functions(mod, lambda defs: Lowering(defs, tflite)):
        reasons.update(lowering.reasons)
        for kgv, kernel in lowering.bb.get().functions.items():  # e.g. the add kernels
            if not isinstance(kernel, relax.Function):
                out[kgv] = kernel
        out[gv] = new
    return relax.transform.DeadCodeElimination()(out), reasons


class Lowering(Rewrite):
    """Binds each quantize that has an integer form to it; records why for the others."""

    def __init__(self, defs: dict, tflite: bool):
        super().__init__(defs)
        self.tflite = tflite
        self.reasons: dict[str, str] = {}

    def binding(self, binding) -> bool:
        if not is_op(binding.value, "relax.quantize"):
            return False
        try:
            expr = self.lower_quantize(binding.value)
        except (NotLowered, tflite_arith.OutOfRange) as e:
            self.reasons[binding.var.name] = str(e)
            return False
        except Exception as e:  # noqa: BLE001 - a bug of farm's on one op costs that op, not the model
            why = f"{type(e).__name__}: {error_line(e)}"
            self.reasons[binding.var.name] = f"farm's integer lowering failed here ({why}); left in float"
            return False
        self.emit_as(binding.var, expr)
        return True

    def lower_quantize(self, q):
        so, zo = const_np(q.args[1]), const_np(q.args[2])
        if so is None or zo is None:
            raise NotLowered("quantize with non-constant scale or zero point")
        out_dtype = str(q.attrs.out_dtype)
        out = OutGrid(float(scalar_value(so.astype(np.float64), "output scale")),
                      int(scalar_value(zo, "output zero point")), *int_range(out_dtype), out_dtype)
        return self.quantized(self.val(q.args[0]), out)

    def quantized(self, x, out: OutGrid):
        """The integer form of quantize(x) on the output grid `out`."""
        table = lookup.lower_lookup(self, x, out)
        if table is not None:
            return table
        x, out = elementwise.peel(self, x, out)
        dot_call, bias = dot.split_bias(self, x)
        if dot_call is not None:
            return dot.lower_dot(self, dot_call, bias, out)
        name = op_name(x)
        if name in _LOWERINGS:
            return _LOWERINGS[name](self, x, out)
        if name in elementwise.MOVE_OPS:
            return elementwise.lower_moved(self, x, out)
        if dq(self, x) is not None:  # quantize(dequantize(a)): a change of grid
            return elementwise.lower_move(self, None, out, act(self, x, "input"))
        if not name:
            raise NotLowered(INPUT_QUANTIZE)
        raise NotLowered(f"no integer form for {name.removeprefix('relax.')}")

    def data(self, p: QParam):
        """The integer tensor of p in the new function."""
        return p.data if p.fresh else self.visit(p.data)

    def dot_name(self, call) -> str:
        """The original variable name of a conv2d/matmul, kept for the lowering report."""
        return next((v.name for v, value in self.defs.items() if value.same_as(call)), "dot")
