"""Real multipliers as integer multiplier + right shift, and the requantize step in Relax.

ONNX Runtime's QuantizeLinear (our reference) computes round_half_to_even(x / scale) + zero_point
and saturates. We compute the same from an exact integer accumulator: acc * M0 in int64, then an
arithmetic right shift by `shift` that rounds half to even, + zero point, clip, cast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

MULT_BITS = 31  # M0 in [2^30, 2^31): acc (int32) * M0 stays below 2^62
MAX_SHIFT = 62
# below it, |(acc + bias) · m| < 1/2 for any int32 accumulator and bias (|sum| < 2^32): rounds to 0
NEGLIGIBLE = 2.0 ** -33
ADD_ATTR = "farm.qadd"  # PrimFunc attribute: the parameters of a quantized add kernel (JSON)


@dataclass(frozen=True)
class FixedPoint:
    """M ≈ mult * 2^-shift elementwise (arrays broadcast like the accumulator)."""

    mult: np.ndarray  # int64
    shift: np.ndarray  # int64


def to_fixed_point(m: np.ndarray) -> FixedPoint | None:
    """Fixed-point form of positive multipliers; None when a multiplier is out of range
    (non-positive, not finite, too large for a right shift, or so small the shift overflows).
    A negligible one (a dead channel's: weights of scale ~0) is multiplier 0: the result is
    the zero point, exactly as rounding gives it."""
    m = np.asarray(m, dtype=np.float64)
    if not np.all(np.isfinite(m)) or np.any(m <= 0):
        return None
    negligible = m < NEGLIGIBLE
    fp = _fixed_point(np.where(negligible, 1.0, m))
    if fp is None or not np.any(negligible):
        return fp
    return FixedPoint(np.where(negligible, 0, fp.mult), fp.shift)


def _fixed_point(m: np.ndarray) -> FixedPoint | None:
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


def requantize_np(acc: np.ndarray, fp: FixedPoint, zero_point: int, lo: int, hi: int,
                  offset: np.ndarray | None = None) -> np.ndarray:
    """The numpy twin of `requantize` (for tests and constant folding)."""
    q = (acc.astype(np.int64) + (0 if offset is None else offset.astype(np.int64))) * fp.mult
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


def requantize(bb, acc, fp: FixedPoint, zero_point: int, lo: int, hi: int, out_dtype: str,
               offset: np.ndarray | None = None, fraction: np.ndarray | None = None):
    """Emit (acc + offset) * M → round half to even → + zero point → clip → out_dtype, for an
    integer tensor acc and an optional integer constant offset (a conv's bias) broadcast like M.

    Where rounding half up is proven equal (tie_free), offset * mult, the rounding half and
    zero point * 2^shift are one constant added before the shift: multiply, add, shift, clip.
    A `fraction` in [-1/2, 1/2] (of a bias not integral in accumulator units) joins that constant
    as rint(fraction * mult): the sum is then known to 2^-shift only, so which way an exact half
    of it rounds is below the precision either rule has, and half up is taken."""
    from tvm import relax

    op, c = relax.op, i64
    shift = np.asarray(fp.shift, np.int64)
    extra = None if fraction is None else np.rint(fraction * fp.mult).astype(np.int64)
    add = np.zeros((), np.int64) if offset is None else offset.astype(np.int64) * fp.mult
    add = add + (0 if extra is None else extra)
    add = add + (np.int64(1) << (shift - 1)) + (np.int64(zero_point) << shift) \
        if np.all((abs(zero_point) + 1) * 2.0**shift.astype(np.float64) <= 2.0**61) else None
    # |acc * mult| < 2^62 for any int32 acc; the folded constant must stay within 2^62 too so that
    # no partial sum of acc * mult + constant leaves int64 (an overflow would be UB, not a wrap)
    if add is not None and (extra is not None or tie_free(fp, zero_point, lo, hi)) and np.all(np.abs(add) <= 2**62):
        q = bb.emit(op.multiply(op.astype(acc, "int64"), c(fp.mult)))
        out = op.right_shift(op.add(q, c(add)), c(fp.shift))
        return op.astype(op.minimum(op.maximum(out, c(lo)), c(hi)), out_dtype)
    if offset is not None:  # the int32 add of the plain lowering
        acc = bb.emit(op.add(acc, const(offset.astype(np.int32))))
    q = bb.emit(op.multiply(op.astype(acc, "int64"), c(fp.mult)))
    if extra is not None:
        q = bb.emit(op.add(q, c(extra)))
    return round_shift(bb, q, fp.shift, zero_point, lo, hi, out_dtype)


def tie_free(fp: FixedPoint, zero_point: int, lo: int, hi: int) -> bool:
    """Whether rounding half up equals rounding half to even for every int32 accumulator, after
    the clip to [lo, hi]: then the requantize needs no parity test (4 fewer vector ops).

    The two differ only at an exact tie, acc * mult = (k + 1/2) * 2^shift, and only where the
    clip keeps them apart: k in [lo - zp, hi - zp), so |acc| < B = (R + 1) * 2^shift / mult with
    R = max(|lo - zp|, |hi - zp|). Writing mult = m' * 2^t (m' odd), a tie needs acc * m' ≡
    2^(shift-1-t) mod 2^(shift-t): acc is an odd multiple of 2^(shift-1-t), so |acc| ≥
    2^(shift-1-t). No tie is within reach when 2^(shift-1-t) ≥ B, i.e. mult ≥ (R + 1) * 2^(1+t)
    (independent of the shift). Multipliers with many trailing zeros (0.5, 0.75, ...) fail it."""
    mult = np.asarray(fp.mult, dtype=np.int64).reshape(-1)
    tz = np.array([max((int(m) & -int(m)).bit_length() - 1, 0) for m in mult], dtype=np.int64)
    r = max(abs(lo - zero_point), abs(hi - zero_point))
    return bool(np.all((mult == 0) | (mult >= (r + 1) * (np.int64(2) << tz))))  # 0: no ties at all


def round_shift(bb, q, shift: np.ndarray, zero_point: int, lo: int, hi: int, out_dtype: str):
    """Emit q (int64, already scaled by 2^shift) >> shift rounding half to even, + zero point,
    clip to [lo, hi], cast (returned unbound: the caller names the result).

    Half to even as one biased floor shift: (q + half - 1 + odd) >> shift, where odd is bit
    `shift` of q (the parity of floor(q / 2^shift)): above half it carries, at exactly half only
    when the floor is odd, below half never. q + half stays below 2^63 (|q| < 2^62)."""
    from tvm import relax

    op, c = relax.op, i64
    odd = op.bitwise_and(op.right_shift(q, c(shift)), c(1))
    biased = op.add(op.add(q, c((np.int64(1) << (shift - 1)) - 1)), odd)
    out = op.add(op.right_shift(biased, c(shift)), c(zero_point))
    out = op.minimum(op.maximum(out, c(lo)), c(hi))
    return op.astype(out, out_dtype)


@dataclass(frozen=True)
class AddFixedPoint:
    """round_half_even((a - za) * ka + (b - zb) * kb) >> shift) + zo, computed in `dtype`."""

    mults: tuple[int, int]
    shift: int
    dtype: str  # "int32" when proven equal to the int64 form for every input pair, else "int64"
    half_up: bool = False  # rounding half up gives the same on every input pair (no parity test)


def _add_np(da: np.ndarray, db: np.ndarray, fp: AddFixedPoint, zo: int, lo: int, hi: int) -> np.ndarray:
    q = da.astype(np.int64) * fp.mults[0] + db.astype(np.int64) * fp.mults[1]
    if fp.half_up:
        return np.clip(((q + (1 << (fp.shift - 1))) >> fp.shift) + zo, lo, hi)
    one = FixedPoint(np.ones(1, dtype=np.int64), np.asarray([fp.shift], dtype=np.int64))
    return requantize_np(q, one, zo, lo, hi)


def add_fixed_point(m: tuple[float, float], ranges: tuple[tuple[int, int], tuple[int, int]],
                    zo: int, lo: int, hi: int, zps: tuple[int, int]) -> AddFixedPoint | None:
    """The fixed-point form of a quantized add with real multipliers m = (sa/so, sb/so) on
    operand differences da in ranges[0], db in ranges[1] (value - zero point, zero points zps);
    None if out of range.

    The int64 form uses 31-bit multipliers on a common shift. The int32 form (half the vector
    lanes' width, no 64-bit multiplies) uses shorter multipliers; it is chosen only when it fits
    int32 and equals the int64 form, after clipping, on every one of the (at most 2^16) input
    pairs: exact by exhaustion, not by estimate; so is rounding half up instead of to even."""
    fp = to_fixed_point(np.asarray(max(m)))
    if fp is None:
        return None
    shift = int(fp.shift)
    wide = AddFixedPoint(tuple(int(np.rint(np.ldexp(v, shift))) for v in m), shift, "int64")
    da = np.arange(ranges[0][0], ranges[0][1] + 1, dtype=np.int64)[:, None]
    db = np.arange(ranges[1][0], ranges[1][1] + 1, dtype=np.int64)[None, :]
    want = _add_np(da, db, wide, zo, lo, hi)
    tried = 0
    for s in range(min(shift, 30), 0, -1):
        k = tuple(int(np.rint(np.ldexp(v, s))) for v in m)
        if min(k) <= 0 or _int32_reach(ranges, zps, k, s) >= 2**31:
            continue
        narrow = AddFixedPoint(k, s, "int32")
        if np.array_equal(_add_np(da, db, narrow, zo, lo, hi), want):
            up = AddFixedPoint(k, s, "int32", half_up=True)
            return up if np.array_equal(_add_np(da, db, up, zo, lo, hi), want) else narrow
        tried += 1
        if tried == 4:  # a near-tie that more precision than int32 holds would be needed for
            break
    return wide


def _int32_reach(ranges, zps: tuple[int, int], k: tuple[int, int], shift: int) -> int:
    """A bound on every partial sum of (a - za) * ka + (b - zb) * kb + rounding terms in any
    association: the compiler rewrites (a - za) * ka as a * ka - za * ka, and an int32 overflow
    in any of those is undefined behaviour that LLVM may exploit (nsw), not a harmless wrap."""
    raw = [max(abs(lo + z), abs(hi + z)) + abs(z) for (lo, hi), z in zip(ranges, zps, strict=True)]
    return raw[0] * k[0] + raw[1] * k[1] + (1 << shift) + 1


def requantize_add(bb, a, b, zps: tuple[int, int], fp: AddFixedPoint, zo: int, lo: int, hi: int,
                   out_dtype: str):
    """Emit the quantized add of integer tensors a, b (broadcasting like relax.add) as one
    elementwise kernel. One kernel, not a chain of Relax ops: the fusion then puts all of it
    after the producer of one operand and reads the other as it is (u8), instead of
    materializing an int64 term of it in its producer's kernel."""
    from tvm import te, tirx

    dt = fp.dtype

    def term(t, idx, z, k):
        return (t[tuple(idx)].astype(dt) - tirx.const(z, dt)) * tirx.const(k, dt)

    def compute(ta, tb):
        shape = [max(int(x), int(y)) for x, y in _aligned(ta.shape, tb.shape)]

        def f(*i):
            q = term(ta, _bcast(ta.shape, shape, i), zps[0], fp.mults[0]) + \
                term(tb, _bcast(tb.shape, shape, i), zps[1], fp.mults[1])
            s = tirx.const(fp.shift, dt)
            if fp.half_up:
                r = tirx.shift_right(q + tirx.const(1 << (fp.shift - 1), dt), s)
            else:
                odd = tirx.bitwise_and(tirx.shift_right(q, s), tirx.const(1, dt))
                r = tirx.shift_right(q + tirx.const((1 << (fp.shift - 1)) - 1, dt) + odd, s)
            r = tirx.max(tirx.min(r + tirx.const(zo, dt), tirx.const(hi, dt)), tirx.const(lo, dt))
            return r.astype(out_dtype)

        return te.compute(shape, f, name="qadd")

    call = bb.call_te(compute, a, b, primfunc_name_hint="qadd")
    gv = call.args[0]
    params = {"zps": list(zps), "mults": list(fp.mults), "shift": fp.shift, "dtype": fp.dtype,
              "half_up": fp.half_up, "zo": zo, "lo": lo, "hi": hi, "out_dtype": out_dtype}
    bb.update_func(gv, bb.get()[gv].with_attr(ADD_ATTR, json.dumps(params)))
    return call


def emit_add_like(bb, params: str, a, b):
    """The add kernel of the same parameters (ADD_ATTR of an existing one) on other tensors, e.g.
    the same values in another layout."""
    p = json.loads(str(params))
    fp = AddFixedPoint(tuple(p["mults"]), p["shift"], p["dtype"], p["half_up"])
    return requantize_add(bb, a, b, tuple(p["zps"]), fp, p["zo"], p["lo"], p["hi"], p["out_dtype"])


def _aligned(sa, sb):
    n = max(len(sa), len(sb))
    pa = [1] * (n - len(sa)) + [int(x) for x in sa]
    pb = [1] * (n - len(sb)) + [int(x) for x in sb]
    return list(zip(pa, pb, strict=True))


def _bcast(shape, out_shape, idx):
    """Index into a tensor of `shape` broadcast to `out_shape` (same-size axes keep the output
    index, so an add of equal shapes stays elementwise for the fusion)."""
    off = len(idx) - len(shape)
    return [0 if int(d) == 1 and out_shape[off + j] != 1 else idx[off + j]
            for j, d in enumerate(shape)]
