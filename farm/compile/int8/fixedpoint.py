"""Real multipliers as integer multiplier + right shift, and the requantize step in Relax.

ONNX Runtime's QuantizeLinear (our reference) computes round_half_to_even(x / scale) + zero_point
and saturates. We compute the same from an exact integer accumulator: acc * M0 in int64, then an
arithmetic right shift by `shift` that rounds half to even, + zero point, clip, cast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MULT_BITS = 31  # M0 in [2^30, 2^31): acc (int32) * M0 stays below 2^62
MAX_SHIFT = 62


@dataclass(frozen=True)
class FixedPoint:
    """M ≈ mult * 2^-shift elementwise (arrays broadcast like the accumulator)."""

    mult: np.ndarray  # int64
    shift: np.ndarray  # int64


def to_fixed_point(m: np.ndarray) -> FixedPoint | None:
    """Fixed-point form of positive multipliers; None when a multiplier is out of range
    (non-positive, not finite, too large for a right shift, or so small the shift overflows)."""
    m = np.asarray(m, dtype=np.float64)
    if not np.all(np.isfinite(m)) or np.any(m <= 0):
        return None
    exp = np.floor(np.log2(m)).astype(np.int64)
    shift = (MULT_BITS - 1) - exp
    if np.any(shift < 1) or np.any(shift > MAX_SHIFT):
        return None
    mult = np.rint(np.ldexp(m, shift)).astype(np.int64)
    carry = mult >= (1 << MULT_BITS)  # rounding reached 2^31: halve it
    mult = np.where(carry, mult >> 1, mult)
    shift = np.where(carry, shift - 1, shift)
    if np.any(shift < 1):
        return None
    return FixedPoint(mult, shift)


def requantize_np(acc: np.ndarray, fp: FixedPoint, zero_point: int, lo: int, hi: int) -> np.ndarray:
    """The numpy twin of `requantize` (for tests and constant folding)."""
    q = acc.astype(np.int64) * fp.mult
    floor = q >> fp.shift
    rem = q & ((np.int64(1) << fp.shift) - 1)
    half = np.int64(1) << (fp.shift - 1)
    up = (rem > half) | ((rem == half) & ((floor & 1) == 1))
    return np.clip(floor + up.astype(np.int64) + zero_point, lo, hi)


def const(v, dtype: str | None = None):
    """A Relax constant of exactly the numpy dtype (relax.const narrows int64 to int32 otherwise)."""
    from tvm import relax

    a = np.asarray(v, dtype=dtype)
    return relax.const(a, str(a.dtype))


def i64(v):
    return const(v, "int64")


def requantize(bb, acc, fp: FixedPoint, zero_point: int, lo: int, hi: int, out_dtype: str):
    """Emit acc (integer tensor) * M → round half to even → + zero point → clip → out_dtype."""
    from tvm import relax

    q = bb.emit(relax.op.multiply(relax.op.astype(acc, "int64"), i64(fp.mult)))
    return round_shift(bb, q, fp.shift, zero_point, lo, hi, out_dtype)


def round_shift(bb, q, shift: np.ndarray, zero_point: int, lo: int, hi: int, out_dtype: str):
    """Emit q (int64, already scaled by 2^shift) >> shift rounding half to even, + zero point,
    clip to [lo, hi], cast (returned unbound: the caller names the result)."""
    from tvm import relax

    op, c = relax.op, i64
    floor = bb.emit(op.right_shift(q, c(shift)))
    rem = op.bitwise_and(q, c((np.int64(1) << shift) - 1))
    half = c(np.int64(1) << (shift - 1))
    odd = op.equal(op.bitwise_and(floor, c(1)), c(1))
    up = op.logical_or(op.greater(rem, half), op.logical_and(op.equal(rem, half), odd))
    out = op.add(op.add(floor, op.astype(up, "int64")), c(zero_point))
    out = op.minimum(op.maximum(out, c(lo)), c(hi))
    return op.astype(out, out_dtype)
