"""TFLite's integer requantization, in numpy (the twin, for tests) and emitted in Relax.

TFLite (and LiteRT 2.3's builtin kernels, checked bit for bit in tests/test_tflite_arith.py)
rescales an int32 accumulator by a real multiplier M with QuantizeMultiplier: M = q · 2^e,
q ∈ [0.5, 1) from frexp, q_fixed = round(q · 2^31) (half away from zero), then
MultiplyByQuantizedMultiplier: x · 2^max(e, 0), SaturatingRoundingDoublingHighMul (the high 32
bits of 2·x·q_fixed, rounded half away from zero), then RoundingDivideByPOT by max(-e, 0)
(rounded half away from zero again). Two roundings: not the same as rounding x·M once — which
is what LiteRT's FULLY_CONNECTED does ((x·q_fixed + 2^(30-e)) >> (31-e), measured: double
rounding missed 62 of 30,000 of its outputs, single rounding none; convs are the other way).
ADD rescales both inputs by 2^20 first; AVERAGE_POOL_2D divides its window sum rounding half
away from zero; MEAN folds the division by the element count into its multiplier. All
intermediate values fit int64, so each step is exact Relax integer arithmetic.
"""

from __future__ import annotations

import numpy as np

from farm.compile.int8.fixedpoint import const, i64
from farm.compile.int8.qparams import OutGrid

ADD_LEFT_SHIFT = 20  # int8 ADD: inputs are scaled by 2^20 before their multipliers


class OutOfRange(Exception):
    """A multiplier TFLite's fixed point cannot represent."""


def quantize_multiplier(m) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's QuantizeMultiplier: (q_fixed int64 in [2^30, 2^31), exponent int64), elementwise."""
    m = np.asarray(m, dtype=np.float64)
    if not np.all(np.isfinite(m)) or np.any(m <= 0):
        raise OutOfRange(f"requantize multiplier {float(np.min(m)):.3g} is not positive")
    q, e = np.frexp(m)
    fixed = np.floor(q * (1 << 31) + 0.5).astype(np.int64)  # std::round of a positive value
    carry = fixed == (1 << 31)
    fixed, e = np.where(carry, fixed // 2, fixed), np.where(carry, e + 1, e).astype(np.int64)
    if np.any(e < -31) or np.any(e > 30):
        raise OutOfRange(f"requantize multiplier {float(np.max(m)):.3g} is out of fixed-point range")
    return fixed, e


def _trunc_div_pow2(v: np.ndarray, bits: int) -> np.ndarray:
    q = v >> bits
    return q + ((v < 0) & ((v & ((1 << bits) - 1)) != 0))


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def multiply_by_quantized_multiplier(acc, fixed, exponent) -> np.ndarray:
    """The numpy twin of `mbqm` (int64 in, int64 out)."""
    x = np.asarray(acc, dtype=np.int64) << np.maximum(exponent, 0)
    ab = x * fixed
    high = _trunc_div_pow2(ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30)), 31)
    return rounding_divide_by_pot(high, np.maximum(-exponent, 0))


def multiply_single_rounding(acc, fixed, exponent) -> np.ndarray:
    """TFLITE_SINGLE_ROUNDING's MultiplyByQuantizedMultiplier (int64 in, int64 out)."""
    total = 31 - np.asarray(exponent, dtype=np.int64)
    return (np.asarray(acc, dtype=np.int64) * fixed + (np.int64(1) << (total - 1))) >> total


def requantize_np(acc, m, zero_point: int, lo: int, hi: int, single_rounding: bool = False) -> np.ndarray:
    fixed, e = quantize_multiplier(m)
    scaled = (multiply_single_rounding if single_rounding else multiply_by_quantized_multiplier)(acc, fixed, e)
    return np.clip(scaled + zero_point, lo, hi)


def rounded_div_np(total, count) -> np.ndarray:
    """C's (total ± count/2) / count: division rounding half away from zero (count > 0)."""
    total, count = np.asarray(total, dtype=np.int64), np.asarray(count, dtype=np.int64)
    return np.sign(total) * ((np.abs(total) + count // 2) // count)


# --- Relax ---

def mbqm(bb, x, fixed: np.ndarray, exponent: np.ndarray):
    """Emit MultiplyByQuantizedMultiplier on an integer tensor x; returns an int64 tensor.

    In the form of fewest int64 ops (equal to the twin for every int32 x, tests check it): the
    nudged truncating division of SaturatingRoundingDoublingHighMul is floor((x·q + 2^30) / 2^31)
    for both signs (no saturation: q > 0), and RoundingDivideByPOT by e is
    floor((h + 2^(e-1) - [h < 0]) / 2^e)."""
    from tvm import relax

    op = relax.op
    x = op.astype(x, "int64")
    left = np.maximum(exponent, 0)
    if np.any(left):
        x = op.left_shift(x, i64(left))
    high = bb.emit(op.right_shift(op.add(op.multiply(x, i64(fixed)), i64(1 << 30)), i64(31)))
    right = np.maximum(-exponent, 0)
    if not np.any(right):
        return high
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    neg = op.astype(op.less(high, i64(0)), "int64")
    if not np.all(right):  # channels with exponent ≥ 0 have nothing to round
        neg = op.multiply(neg, i64((right > 0).astype(np.int64)))
    return bb.emit(op.right_shift(op.subtract(op.add(high, i64(half)), neg), i64(right)))


def saturate(bb, q, zero_point: int, lo: int, hi: int, out_dtype: str):
    """+ zero point, clip, cast (returned unbound: the caller names the result)."""
    from tvm import relax

    op = relax.op
    out = op.add(q, i64(zero_point)) if zero_point else q
    return op.astype(op.minimum(op.maximum(out, i64(lo)), i64(hi)), out_dtype)


def requantize(bb, acc, m: np.ndarray, zero_point: int, lo: int, hi: int, out_dtype: str,
               single_rounding: bool = False):
    """acc (integer tensor) · M the TFLite way (rounding twice, or once where the op does), + zero
    point, clip, cast; M broadcasts like acc."""
    from tvm import relax

    op = relax.op
    fixed, e = quantize_multiplier(m)
    if single_rounding:
        total = 31 - e
        q = bb.emit(op.right_shift(op.add(op.multiply(op.astype(acc, "int64"), i64(fixed)),
                                          i64(np.int64(1) << (total - 1))), i64(total)))
    else:
        q = mbqm(bb, acc, fixed, e)
    return saturate(bb, q, zero_point, lo, hi, out_dtype)


def rounded_div(bb, total, count: np.ndarray, bound: int):
    """Emit `rounded_div_np` on an integer tensor with |total| ≤ bound (int64 result), without a
    division (Hexagon has no divide instruction): floor(x / n) = (x · ceil(2^k / n)) >> k exactly
    for 0 ≤ x < 2^k / n, with x = |total| + n // 2."""
    from tvm import relax

    op = relax.op
    count = np.asarray(count, dtype=np.int64)
    x_max = bound + int(count.max()) // 2
    k = (x_max * int(count.max())).bit_length() + 1
    if k + x_max.bit_length() > 62:
        raise OutOfRange(f"rounded division of values up to {bound} by {int(count.max())}")
    magic = -((-(np.int64(1) << k)) // count)  # ceil(2^k / n)
    total = bb.emit(op.astype(total, "int64"))
    x = op.add(op.abs(total), i64(count // 2))
    mag = op.right_shift(op.multiply(x, i64(magic)), i64(k))
    return bb.emit(op.multiply(op.sign(total), mag))


def add(bb, a, za: int, sa: float, b, zb: int, sb: float, out: OutGrid):
    """int8 ADD as TFLite computes it: each input (minus its zero point) · 2^20 rescaled by
    s_in / (2·max(s_a, s_b)), summed, then rescaled by 2·max / (2^20 · s_out)."""
    from tvm import relax

    op = relax.op
    twice_max = 2 * max(float(np.float32(sa)), float(np.float32(sb)))
    terms = []
    for x, z, s in ((a, za, sa), (b, zb, sb)):
        fixed, e = quantize_multiplier(np.asarray(float(np.float32(s)) / twice_max))
        shifted = op.left_shift(op.subtract(op.astype(x, "int64"), i64(z)), i64(ADD_LEFT_SHIFT))
        terms.append(mbqm(bb, bb.emit(shifted), fixed, e))
    total = bb.emit(op.add(*terms))
    return requantize(bb, total, np.asarray(twice_max / ((1 << ADD_LEFT_SHIFT) * float(np.float32(out.scale)))),
                      out.zero_point, out.lo, out.hi, out.dtype)


def add_np(a, za: int, sa: float, b, zb: int, sb: float, so: float, zo: int, lo=-128, hi=127):
    twice_max = 2 * max(float(np.float32(sa)), float(np.float32(sb)))
    total = 0
    for x, z, s in ((a, za, sa), (b, zb, sb)):
        fixed, e = quantize_multiplier(np.asarray(float(np.float32(s)) / twice_max))
        total = total + multiply_by_quantized_multiplier((x.astype(np.int64) - z) << ADD_LEFT_SHIFT, fixed, e)
    return requantize_np(total, twice_max / ((1 << ADD_LEFT_SHIFT) * float(np.float32(so))), zo, lo, hi)


def mean_multiplier(sx: float, so: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """MEAN folds 1/n into the fixed-point multiplier of s_x / s_out: q_fixed · 2^shift / n
    (integer division), exponent - shift, with shift = min(floor(log2 n), 32, 31 + exponent)."""
    fixed, e = quantize_multiplier(np.asarray(float(np.float32(sx)) / float(np.float32(so))))
    shift = min(n.bit_length() - 1, 32, 31 + int(e))
    return np.asarray((int(fixed) << shift) // n, dtype=np.int64), np.asarray(int(e) - shift, dtype=np.int64)


def mean(bb, x, zx: int, sx: float, axes: list[int], keepdims: bool, n: int, out: OutGrid):
    """int8 MEAN: Σ(x - zx), then one MultiplyByQuantizedMultiplier by `mean_multiplier`."""
    from tvm import relax

    op = relax.op
    total = bb.emit(op.subtract(op.sum(op.astype(x, "int32"), axis=axes, keepdims=keepdims),
                                const(np.int32(n * zx))))
    return saturate(bb, mbqm(bb, total, *mean_multiplier(sx, out.scale, n)), out.zero_point, out.lo, out.hi,
                    out.dtype)


def mean_np(x, zx: int, sx: float, axes, so: float, zo: int, lo=-128, hi=127) -> np.ndarray:
    n = int(np.prod([x.shape[a] for a in axes]))
    total = (x.astype(np.int64) - zx).sum(axis=tuple(axes))
    return np.clip(multiply_by_quantized_multiplier(total, *mean_multiplier(sx, so, n)) + zo, lo, hi)
