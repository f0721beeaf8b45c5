"""Fixed-point requantize: round half to even like ONNX Runtime's QuantizeLinear, saturation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.compile.int8.fixedpoint import requantize, requantize_np, to_fixed_point


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


@pytest.mark.parametrize("m", [0.0, -1.0, np.inf, np.nan, 2.0**40, 1e-30])
def test_unrepresentable_multipliers(m):
    assert to_fixed_point(np.array(m)) is None


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
