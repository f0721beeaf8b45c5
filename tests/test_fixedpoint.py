"""Fixed-point requantize: round half to even like ONNX Runtime's QuantizeLinear, saturation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.compile.int8.fixedpoint import (
    AddFixedPoint,
    FixedPoint,
    add_fixed_point,
    requantize,
    requantize_add,
    requantize_np,
    tie_free,
    to_fixed_point,
)


def test_ties_round_to_even_both_signs():
    fp = to_fixed_point(np.array(0.5))
    acc = np.array([-5, -3, -1, 1, 3, 5, 2, 7])
    got = requantize_np(acc, fp, 0, -1000, 1000)
    assert got.tolist() == np.rint(acc * 0.5).astype(int).tolist() == [-2, -2, 0, 0, 2, 2, 1, 4]


@settings(max_examples=200, deadline=None)
@given(st.integers(-2**31, 2**31 - 1), st.floats(1e-7, 100.0), st.integers(-128, 255))
def test_matches_float_rounding(acc, m, zp):
    fp = to_fixed_point(np.array(m))
    exact = acc * m
    got = int(requantize_np(np.array(acc), fp, zp, -2**40, 2**40))
    if abs(abs(exact - np.floor(exact)) - 0.5) > 1e-6 * max(1.0, abs(exact)):  # not at a tie
        assert got == int(np.rint(exact)) + zp
    else:
        assert abs(got - (exact + zp)) <= 0.5 + 1e-6 * max(1.0, abs(exact))


def test_saturates():
    fp = to_fixed_point(np.array(1.0))
    assert requantize_np(np.array([-500, 500]), fp, 128, 0, 255).tolist() == [0, 255]


@pytest.mark.parametrize("m", [0.0, -1.0, np.inf, np.nan, 2.0**40, 2.0**-32.5])
def test_unrepresentable_multipliers(m):
    assert to_fixed_point(np.array(m)) is None


@pytest.mark.parametrize("live, folded", [(0.0123, True), (0.75, False)])
def test_negligible_multipliers_give_the_zero_point(live, folded):
    """A dead channel (weights of scale ~0) next to a live one: its multiplier is 0 and its output
    the zero point, which is what rounding gives for every int32 accumulator plus bias — in the
    numpy twin and in the emitted Relax, in both of its forms (the folded constant where tie free,
    else the parity form)."""
    import tvm
    from tvm import relax

    m = np.array([[live, 1e-30, 2.0**-33.5]])
    fp = to_fixed_point(m)
    assert fp.mult[0, 1:].tolist() == [0, 0]
    assert tie_free(fp, 3, 0, 255) == folded
    acc = np.array([[-2**31, -2**31, -2**31], [2**31 - 1] * 3, [12345, -7, 99], [0, 1, -1]], dtype=np.int32)
    want = np.clip(np.rint(acc * m) + 3, 0, 255).astype(np.int64)
    want[:, 1:] = 3
    assert requantize_np(acc, fp, 3, 0, 255).tolist() == want.tolist()
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(acc.shape, "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(requantize(bb, x, fp, 3, 0, 255, "uint8"))
        bb.emit_func_output(out)
    got = relax.VirtualMachine(tvm.compile(bb.get(), "llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(acc)).numpy()
    assert got.tolist() == want.tolist()


def test_per_channel_shifts():
    m = np.array([1e-5, 0.3, 7.0])
    fp = to_fixed_point(m)
    assert fp.shift.shape == (3,) and len(set(fp.shift.tolist())) == 3
    acc = np.array([123456, 17, -9])
    assert requantize_np(acc, fp, 0, -999, 999).tolist() == np.rint(acc * m).astype(int).tolist()


def test_relax_requantize_matches_numpy():
    """The emitted Relax ops compute exactly what the numpy twin computes (ties included)."""
    import tvm
    from tvm import relax

    m = np.array([0.5, 0.25, 0.0123, 3.7])
    fp = to_fixed_point(m.reshape(1, 4))
    acc = np.array([[1, -3, 2**20 + 7, -41], [3, 6, -77777, 100], [-1, -6, 5, 35]], dtype=np.int32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(acc.shape, "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(requantize(bb, x, fp, 3, -128, 127, "int8"))
        bb.emit_func_output(out)
    ex = tvm.compile(bb.get(), "llvm")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(acc)).numpy()
    assert got.dtype == np.int8
    assert got.tolist() == requantize_np(acc, fp, 3, -128, 127).tolist()


# (sa/so, sb/so, zo, lo, hi): ResNet-like, exact ties (dyadic), saturating, narrow clip, i8 output
ADD_CASES = [(0.7312, 0.4417, 120, 0, 255), (0.5, 0.25, 0, 0, 255), (3.1, 2.9, 128, 0, 255),
             (1.0, 0.125, 7, 30, 200), (0.0137, 0.9, -3, -128, 127)]


def _add_int64_reference(m, zo, lo, hi, da, db):
    """The int64 form the lowering always had: 31-bit multipliers on the larger one's shift."""
    fp = to_fixed_point(np.asarray(max(m)))
    k = [int(np.rint(np.ldexp(v, int(fp.shift)))) for v in m]
    q = da.astype(np.int64) * k[0] + db.astype(np.int64) * k[1]
    one = FixedPoint(np.ones(1, np.int64), np.asarray([int(fp.shift)]))
    return requantize_np(q, one, zo, lo, hi)


@pytest.mark.parametrize("case", ADD_CASES)
def test_add_kernel_equals_int64_form_on_every_input_pair(case):
    """The quantized add kernel, built and run, on all 65536 (a, b) pairs of u8 operands equals the
    int64 fixed-point form bit for bit (ties, saturation and clipping included), in whichever
    width add_fixed_point chose; the int64 width is checked as well."""
    import tvm
    from tvm import relax

    *m, zo, lo, hi = case
    za, zb = 3, 250
    out_dtype = "uint8" if lo >= 0 else "int8"
    a = np.repeat(np.arange(256, dtype=np.uint8), 256).reshape(1, 256, 16, 16)
    b = np.tile(np.arange(256, dtype=np.uint8), 256).reshape(1, 256, 16, 16)
    want = _add_int64_reference(m, zo, lo, hi, a.astype(np.int64) - za, b.astype(np.int64) - zb)
    chosen = add_fixed_point(tuple(m), ((-za, 255 - za), (-zb, 255 - zb)), zo, lo, hi, (za, zb))
    fp = to_fixed_point(np.asarray(max(m)))
    wide = AddFixedPoint(tuple(int(np.rint(np.ldexp(v, int(fp.shift)))) for v in m), int(fp.shift),
                         "int64")
    for form in {chosen, wide}:
        bb = relax.BlockBuilder()
        va = relax.Var("a", relax.TensorType(a.shape, "uint8"))
        vb = relax.Var("b", relax.TensorType(b.shape, "uint8"))
        with bb.function("main", [va, vb]):
            with bb.dataflow():
                out = bb.emit_output(requantize_add(bb, va, vb, (za, zb), form, zo, lo, hi, out_dtype))
            bb.emit_func_output(out)
        vm = relax.VirtualMachine(tvm.compile(bb.get(), "llvm"), tvm.cpu())
        got = vm["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy()
        assert got.dtype == np.dtype(out_dtype)
        np.testing.assert_array_equal(got, want, err_msg=f"{form}")


@pytest.mark.parametrize("zps", [(120, 0), (0, 255), (255, 255)])
def test_add_picks_int32_without_any_overflow(zps):
    """ResNet-like scales get the int32 form, and no partial sum of the kernel's arithmetic in
    any association (a * ka - za * ka + ..., as the compiler rewrites it) leaves int32: an
    overflow there is undefined behaviour (LLVM nsw), which changed results between builds."""
    za, zb = zps
    fp = add_fixed_point((0.7312, 0.4417), ((-za, 255 - za), (-zb, 255 - zb)), 120, 0, 255, zps)
    assert fp.dtype == "int32" and fp.shift <= 30
    ka, kb = fp.mults
    worst = 255 * ka + 255 * kb + za * ka + zb * kb + (1 << fp.shift)
    assert worst < 2**31


def test_add_out_of_range_multiplier():
    assert add_fixed_point((2.0**40, 1.0), ((0, 255), (0, 255)), 0, 0, 255, (0, 0)) is None


def _half_up_np(acc, fp, zp, lo, hi):
    q = acc.astype(np.int64) * fp.mult + (np.int64(1) << (fp.shift - 1))
    return np.clip((q >> fp.shift) + zp, lo, hi)


@pytest.mark.parametrize("zp,lo,hi", [(128, 0, 255), (0, -128, 127), (7, 30, 200)])
def test_tie_free_criterion_by_brute_force(zp, lo, hi):
    """Multipliers with 0..29 trailing zero bits and shifts 31..35: wherever tie_free holds,
    rounding half up equals half to even after the clip on every accumulator that could differ
    (all of |acc| < B + 8, B the saturation bound); and it is not claimed where they differ."""
    claimed = 0
    for t in range(30):
        for e in range(5):
            mult = np.int64(((1 << 30) + 0x2AAAAAAB) >> t << t | (1 << t))  # exactly t zeros
            fp = FixedPoint(np.asarray([mult]), np.asarray([31 + e]))
            r = max(abs(lo - zp), abs(hi - zp))
            bound = int((r + 1) * 2.0 ** (31 + e) / float(mult)) + 8
            acc = np.arange(-bound, bound + 1, dtype=np.int64)
            same = np.array_equal(_half_up_np(acc, fp, zp, lo, hi), requantize_np(acc, fp, zp, lo, hi))
            if tie_free(fp, zp, lo, hi):
                claimed += 1
                assert same, (t, e)
    assert 0 < claimed < 150  # the criterion accepts the common case and rejects some


@pytest.mark.parametrize("m", [np.array([0.0123, 3.7e-4, 0.9999, 1.7, 5.3e-3]), np.array([0.75, 0.0123])])
@pytest.mark.parametrize("with_offset", [False, True])
def test_relax_requantize_exact_on_its_whole_unsaturated_range(m, with_offset):
    """The emitted requantize (half-up form with bias, rounding and zero point folded into one
    constant when tie free, else half to even) equals the numpy twin on every accumulator up to
    past saturation, and on the int32 extremes."""
    import tvm
    from tvm import relax

    fp = to_fixed_point(m.reshape(1, -1))
    zp, lo, hi = 3, 0, 255
    assert tie_free(fp, zp, lo, hi) == (m[0] != 0.75)
    bound = int(300 / m.min())
    acc = np.concatenate([np.arange(-bound, bound + 1), [-2**31, 2**31 - 1, -2**30, 2**30]])
    acc = np.repeat(acc.astype(np.int32)[:, None], m.size, axis=1)
    offset = None
    if with_offset:  # a conv's bias; acc + offset stays within int32 as the lowering assumes
        offset = (np.arange(m.size) * 7919 - 9000).reshape(1, -1)
        acc = np.clip(acc.astype(np.int64), -2**31 + 9000, 2**31 - 40000).astype(np.int32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(acc.shape, "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(requantize(bb, x, fp, zp, lo, hi, "uint8", offset))
        bb.emit_func_output(out)
    got = relax.VirtualMachine(tvm.compile(bb.get(), "llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(acc)).numpy()
    np.testing.assert_array_equal(got, requantize_np(acc, fp, zp, lo, hi, offset))


def test_requantize_with_shift_too_large_to_fold_the_zero_point():
    """A tiny multiplier (shift 61): zero point * 2^shift would overflow int64, so the offset is
    added on its own and the rounding stays the parity form; still exact."""
    import tvm
    from tvm import relax

    fp = to_fixed_point(np.array([2.0**-31 * 1.37, 2.0**-31 * 1.9]).reshape(1, 2))
    assert int(fp.shift.max()) >= 60
    acc = np.array([[2**31 - 1, -2**31], [123456789, -987654321], [0, 1]], dtype=np.int32)
    offset = np.array([[-5, 17]])
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(acc.shape, "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(requantize(bb, x, fp, 100, 0, 255, "uint8", offset))
        bb.emit_func_output(out)
    got = relax.VirtualMachine(tvm.compile(bb.get(), "llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(acc)).numpy()
    np.testing.assert_array_equal(got, requantize_np(acc, fp, 100, 0, 255, offset))
