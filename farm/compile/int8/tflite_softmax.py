"""TFLite's int8 softmax (reference kernel, gemmlowp fixed point), in numpy and in Relax.

LiteRT computes an int8 softmax (output grid 1/256, zero point -128) without floats: each
input's difference to its row maximum d ∈ [-255, 0] is rescaled by β·s_in into a fixed-point
number with 5 integer bits, exp(d) comes from gemmlowp's exp_on_negative_values, the row sum of
exps (12 integer bits) is inverted by Newton-Raphson (GetReciprocal), and each exp times the
reciprocal is rounded onto the output grid. exp depends on d alone, so the 256 possible exps are
computed here at compile time (numpy); the row sum, its reciprocal and the output scaling run
on the device as integer Relax ops. No float, no division: the same bits on every device.
"""

from __future__ import annotations

import math

import numpy as np

from farm.compile.int8.fixedpoint import i64
from farm.compile.int8.tflite_arith import OutOfRange, rounding_divide_by_pot

SCALED_DIFF_BITS = 5  # integer bits of the rescaled input difference
ACCUM_BITS = 12  # integer bits of the sum of exps
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def srdhm(a, b) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int32 values (int64 arrays)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    ab = a * b
    nudged = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = nudged >> 31
    q = q + ((nudged < 0) & ((nudged & ((1 << 31) - 1)) != 0))  # C division truncates
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, q)


def _mul_pot(x, exponent: int) -> np.ndarray:
    """SaturatingRoundingMultiplyByPOT."""
    x = np.asarray(x, dtype=np.int64)
    if exponent <= 0:
        return rounding_divide_by_pot(x, np.int64(-exponent))
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def _exp_quarter(a: np.ndarray) -> np.ndarray:
    """exp_on_interval_between_negative_one_quarter_and_0_excl (0 integer bits)."""
    constant_term, one_third = 1895147668, 715827883
    x = a + (1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    poly = _mul_pot(srdhm(_mul_pot(x4, -2) + x3, one_third) + x2, -1)
    return constant_term + srdhm(constant_term, x + poly)


_BARREL = [(-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
           (3, 720401), (4, 242)]


def exp_on_negative_values(a: np.ndarray) -> np.ndarray:
    """gemmlowp's exp of a ≤ 0 with SCALED_DIFF_BITS integer bits; result with 0 integer bits."""
    frac = 31 - SCALED_DIFF_BITS
    quarter = 1 << (frac - 2)
    a = np.asarray(a, dtype=np.int64)
    a_mod = (a & (quarter - 1)) - quarter
    result = _exp_quarter(_mul_pot(a_mod, SCALED_DIFF_BITS))
    remainder = a_mod - a
    for exponent, mult in _BARREL:
        if SCALED_DIFF_BITS > exponent:
            result = np.where(remainder & (1 << (frac + exponent)), srdhm(result, mult), result)
    return np.where(a == 0, INT32_MAX, result)


def softmax_params(input_scale: float, beta: float = 1.0) -> tuple[int, int, int]:
    """(input multiplier, left shift, diff_min) as TFLite's PreprocessSoftmaxScaling and
    CalculateInputRadius compute them."""
    real = min(beta * float(np.float32(input_scale)) * (1 << (31 - SCALED_DIFF_BITS)), (1 << 31) - 1.0)
    q, shift = math.frexp(real)
    fixed = int(math.floor(q * (1 << 31) + 0.5))
    if fixed == 1 << 31:
        fixed, shift = fixed // 2, shift + 1
    if shift < 0:
        raise OutOfRange("softmax input scale too small for TFLite's fixed point")
    radius = ((1 << SCALED_DIFF_BITS) - 1) * (1 << (31 - SCALED_DIFF_BITS)) / (1 << shift)
    return fixed, shift, -int(math.floor(radius))


def exp_tables(input_scale: float, beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """For d = 0 … 255 (max - x): exp(-d·β·s) in 0 integer bits, and the same in ACCUM_BITS
    integer bits (the summands); both 0 where -d < diff_min (TFLite leaves those out)."""
    fixed, shift, diff_min = softmax_params(input_scale, beta)
    diff = -np.arange(256, dtype=np.int64)
    e = exp_on_negative_values(srdhm(diff << shift, fixed))
    e = np.where(diff >= diff_min, e, 0)
    return e, _mul_pot(e, -ACCUM_BITS)


def _one_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    """one_over_one_plus_x_for_x_in_0_1 (0 integer bits in and out)."""
    total = a + INT32_MAX
    half = (total + np.where(total >= 0, 1, -1)) // 2  # C truncation: the operand is positive
    x = 1515870810 + srdhm(half, -1010580540)
    for _ in range(3):
        x = x + _mul_pot(srdhm(x, (1 << 29) - srdhm(half, x)), 2)
    return _mul_pot(x, 1)


def softmax_np(x: np.ndarray, input_scale: float, beta: float = 1.0) -> np.ndarray:
    """int8 softmax over the last axis as LiteRT's reference kernel computes it."""
    e, summand = exp_tables(input_scale, beta)
    d = x.max(axis=-1, keepdims=True).astype(np.int64) - x.astype(np.int64)
    total = summand[d].sum(axis=-1, keepdims=True)
    clz = (total < (np.int64(1) << np.arange(32))).sum(axis=-1, keepdims=True)  # leading zeros
    scale = _one_over_one_plus_x(((total << clz) & 0xFFFFFFFF) - (1 << 31))
    out = rounding_divide_by_pot(srdhm(scale, e[d]), (ACCUM_BITS - clz) + 31 - 8)
    return np.clip(out - 128, -128, 127).astype(np.int8)


# --- Relax (operands never both INT32_MIN: SaturatingRoundingDoublingHighMul is (a·b + 2^30) >> 31,
# the nudged truncating division in one floor) ---

def _srdhm(a, b):
    from tvm import relax

    op = relax.op
    return op.right_shift(op.add(op.multiply(a, b), i64(1 << 30)), i64(31))


def softmax(bb, x, input_scale: float, out_offset: int, out_dtype: str):
    """Emit the int8 softmax over the last axis of x (int8, or its uint8 form: only differences
    to the row maximum matter); the result + out_offset (-128 for int8, 0 for the uint8 form)."""
    from tvm import relax

    from farm.compile.int8.fixedpoint import const

    op = relax.op
    e, summand = exp_tables(input_scale)
    xi = bb.emit(op.astype(x, "int32"))
    d = bb.emit(op.subtract(op.max(xi, axis=-1, keepdims=True), xi))
    ev = bb.emit(op.astype(op.take(const(e.astype(np.int32)), d, axis=0, mode="clip"), "int64"))
    total = bb.emit(op.astype(op.sum(op.take(const(summand.astype(np.int32)), d, axis=0, mode="clip"), axis=-1,
                                     keepdims=True), "int64"))
    powers = i64(np.int64(1) << np.arange(32, dtype=np.int64))
    clz = bb.emit(op.sum(op.astype(op.less(total, powers), "int64"), axis=-1, keepdims=True))
    a = op.subtract(op.bitwise_and(op.left_shift(total, clz), i64(0xFFFFFFFF)), i64(1 << 31))
    half = bb.emit(op.right_shift(op.add(a, i64(INT32_MAX + 1)), i64(1)))
    r = bb.emit(op.add(i64(1515870810), _srdhm(half, i64(-1010580540))))
    # Newton steps: the correction x·(1 - h·x) stays far below 2^29 (the first guess 48/17 - 32/17·h
    # is within 1/17 of 1/h), so Rescale<2> never saturates: a plain shift. (Keeping the
    # saturating form makes each step use r thrice more; inlined for Hexagon, LLVM chokes.)
    for _ in range(3):
        r = bb.emit(op.add(r, op.left_shift(_srdhm(r, op.subtract(i64(1 << 29), _srdhm(half, r))), i64(2))))
    scale = bb.emit(op.minimum(op.left_shift(r, i64(1)), i64(INT32_MAX)))  # r > 0: Rescale<0>
    h = bb.emit(_srdhm(scale, ev))  # ≥ 0: RoundingDivideByPOT is (h + 2^(k-1)) >> k
    k = bb.emit(op.subtract(i64(ACCUM_BITS + 31 - 8), clz))
    q = op.right_shift(op.add(h, op.left_shift(i64(1), op.subtract(k, i64(1)))), k)
    lo, hi = int(np.iinfo(out_dtype).min), int(np.iinfo(out_dtype).max)
    return op.astype(op.minimum(op.maximum(op.add(q, i64(-128 + out_offset)), i64(lo)), i64(hi)), out_dtype)
