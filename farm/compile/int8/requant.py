"""The requantize that ends every lowered op: an integer accumulator times real multipliers, onto the
output grid — fixed point with round-half-to-even (fixedpoint.py), or TFLite's arithmetic for TFLite
models (tflite_arith.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from farm.compile.int8 import fixedpoint, tflite_arith
from farm.compile.int8.fixedpoint import FixedPoint, const, to_fixed_point
from farm.compile.int8.qparams import NotLowered, OutGrid

if TYPE_CHECKING:
    from farm.compile.int8.lower import Lowering


def requantize(lw: Lowering, acc, m: np.ndarray, out: OutGrid, dense: bool = False,
               offset: np.ndarray | None = None, fraction: np.ndarray | None = None):
    """(acc + offset + fraction) (an integer tensor plus an optional integer constant such as a
    conv's bias, and the bias's fractional part in accumulator units) times the real multipliers
    m on the output grid."""
    from tvm import relax

    if lw.tflite:  # LiteRT's FULLY_CONNECTED rounds once, its other ops twice
        if offset is not None:  # TFLite adds the bias in int32 before rescaling (no fraction)
            acc = lw.bb.emit(relax.op.add(acc, const(offset.astype(np.int32))))
        return tflite_arith.requantize(lw.bb, acc, m, out.zero_point, out.lo, out.hi, out.dtype,
                                       single_rounding=dense)
    return fixedpoint.requantize(lw.bb, acc, _fixed_point(m), out.zero_point, out.lo, out.hi, out.dtype,
                                 offset=offset, fraction=fraction)


def _fixed_point(m: np.ndarray) -> FixedPoint:
    fp = to_fixed_point(m)
    if fp is None:
        raise NotLowered(f"requantize multiplier out of fixed-point range ({float(np.max(m)):.3g})")
    return fp
