"""Lookup-table lowering: element-wise functions of one 8-bit tensor are a 256-entry table, bit-exact
against the float64 QDQ semantics on every input level, with no float op left."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from farm.compile.build import compile_model, import_onnx
from farm.compile.int8.lower import lower_int8
from farm.compile.lowering_report import relax_dot_ops, relax_lookup_ops
from farm.models.exact_reference import exact_outputs
from farm.models.reference import output_steps
from farm.run.metrics import compare
from tests.conftest import run_lib
from tests.qdq_graphs import QDQ


def _functions(g: QDQ, x: str) -> dict[str, str]:
    """Float chains on the dequantized x, as ONNX exporters and ORT's quantizer write them."""
    def c(v: float) -> str:
        return g.init(np.float32(v))

    sig = g.qdq(g.node("Sigmoid", [x]), 1 / 256, 0)
    erf = g.node("Erf", [g.node("Div", [x, c(1.4142135)])])
    return {
        "sigmoid": g.node("Sigmoid", [x]),
        "silu (ORT: a quantized sigmoid, then Mul)": g.node("Mul", [x, sig]),
        "silu (float chain)": g.node("Mul", [x, g.node("Sigmoid", [x])]),
        "tanh": g.node("Tanh", [x]),
        "hardsigmoid": g.node("HardSigmoid", [x], alpha=0.2, beta=0.5),
        "hardswish": g.node("HardSwish", [x]),
        "leakyrelu": g.node("LeakyRelu", [x], alpha=0.1),
        "gelu (erf, as exported)": g.node("Mul", [g.node("Mul", [x, c(0.5)]), g.node("Add", [erf, c(1.0)])]),
        "exp": g.node("Exp", [x]),
        "softplus": g.node("Softplus", [x]),
        "elu": g.node("Elu", [x], alpha=0.7),
        "scale and shift": g.node("Add", [g.node("Mul", [x, c(0.37)]), c(-0.2)]),
    }


def _model(signed: bool) -> tuple[onnx.ModelProto, list[str]]:
    """One output per function of `_functions`, all on the same quantized input."""
    dtype, zp = (np.int8, 3) if signed else (np.uint8, 131)
    g = QDQ()
    x = g.dq(g.q("input", 8 / 255, zp, dtype), 8 / 255, zp, dtype)  # levels span about ±4
    functions = _functions(g, x)
    outs = [g.dq(g.q(y, 6 / 255, 40, dtype), 6 / 255, 40, dtype) for y in functions.values()]
    graph = helper.make_graph(g.nodes, "lookup", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 512])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 512]) for o in outs],
                              initializer=g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m, list(functions)


@pytest.mark.parametrize("signed", [False, True], ids=["uint8", "int8"])
def test_element_wise_functions_are_exact_tables(signed, registry, work):
    model, names = _model(signed)
    path = work / f"lookup-{signed}.onnx"
    onnx.save(model, str(path))
    mod, reasons = lower_int8(import_onnx(path))
    lookups = relax_lookup_ops(mod)
    assert len(lookups) == len(names) and all(o["compute"] == "int8" for o in lookups), lookups
    assert [r for r in reasons.values() if "outside the quantized graph" not in r] == []
    # every input level, twice, and values beyond the grid at both ends
    sweep = np.concatenate([np.linspace(-6.0, 6.0, 384), np.arange(128) * 8 / 255 - 2.0])
    feeds = [{"input": sweep.astype(np.float32)[None]}]
    art = compile_model(path, registry.get("host"), work / "cache")
    outs = run_lib(art.lib, feeds)
    exact = exact_outputs(model, feeds)
    for k, name in enumerate(names):
        m = compare([[outs[0][k]]], [[exact[0][k]]], [output_steps(model)[k]])
        assert m["exact"] == 1.0, (name, m)
    summary = art.meta["lowering"]["summary"]
    assert (summary["float_ops"], summary["lookup_ops"]) == (0, len(names)), summary


def test_two_inputs_and_reductions_are_no_table(tmp_path):
    """Mul of two independent activations is no table (it is an integer product, below) and a
    softmax stays in float, with its reason."""
    g = QDQ()
    a, b = g.qdq("input", 2 / 255), g.qdq("input", 3 / 255, 100)  # two grids: two 8-bit tensors
    y = g.qdq(g.node("Softmax", [g.qdq(g.node("Mul", [a, b]), 4 / 255)], axis=-1), 1 / 255, 0)
    path = tmp_path / "two.onnx"
    onnx.save(g.model([1, 8], y, [1, 8]), str(path))
    mod, reasons = lower_int8(import_onnx(path))
    assert relax_lookup_ops(mod) == [] and relax_dot_ops(mod, reasons) == []
    assert sorted(r for r in reasons.values() if "outside" not in r) == ["no integer form for nn.softmax"]


def test_nan_levels_and_oversized_tables_are_no_table(tmp_path):
    """A function that is NaN on some input level (log of a negative value) and a per-channel add
    whose tables would exceed MAX_TABLE (2048 channels × 256) stay in float with their reasons."""
    g = QDQ()
    x = g.qdq("input", 2 / 255)
    logged = g.qdq(g.node("Log", [x]), 4 / 255)
    bias = g.dq(g.init(np.arange(2048, dtype=np.uint8)[None] % 251), np.float32(0.01), np.uint8(7))
    y = g.qdq(g.node("Add", [logged, bias]), 4 / 255)
    path = tmp_path / "nan.onnx"
    onnx.save(g.model([1, 2048], y, [1, 2048]), str(path))
    mod, reasons = lower_int8(import_onnx(path))
    assert relax_lookup_ops(mod) == []
    assert sorted(r for r in reasons.values() if "outside" not in r) == \
        ["add operand is a constant", "no integer form for log"]


@pytest.mark.parametrize("signed", [False, True], ids=["uint8", "int8"])
def test_mul_of_two_activations_is_exact_in_integers(signed, registry, work):
    """A product of two quantized activations (a gate) is an int32 product requantized: bit-exact
    against the float64 QDQ semantics, with a broadcast operand and no float op left. The scales
    are calibration-like: with "round" ones (2/255 × 3/255 / 4/255) products land exactly on
    rounding ties, where the float64 reference's own rounding decides and 1 LSB is the honest
    bound."""
    dtype, zp = (np.int8, -5) if signed else (np.uint8, 100)
    g = QDQ()

    def qdq(x: str, scale: float, z: int) -> str:
        return g.dq(g.q(x, scale, z, dtype), scale, z, dtype)

    a, b = qdq("input", 0.00791, 0), qdq("input", 0.01137, zp)  # two grids: two 8-bit tensors
    ab = qdq(g.node("Mul", [a, b]), 0.01593, zp)
    first = g.node("Slice", [a, g.init(np.array([0])), g.init(np.array([1])), g.init(np.array([1]))])
    gate = qdq(first, 0.00437, 0)  # [1, 1]: broadcast over the 512 elements
    y = qdq(g.node("Mul", [ab, gate]), 0.01811, 7)
    path = work / f"mul-{signed}.onnx"
    model = g.model([1, 512], y, [1, 512])
    onnx.save(model, str(path))
    _, reasons = lower_int8(import_onnx(path))
    assert [r for r in reasons.values() if "outside the quantized graph" not in r] == []
    # the first element (the gate) 0.9, then sweeps across both grids
    sweep = np.concatenate([[0.9], np.linspace(-1.2, 1.2, 383), np.arange(128) * 0.0113 - 0.3])
    feeds = [{"input": sweep.astype(np.float32)[None]}]
    art = compile_model(path, registry.get("host"), work / "cache")
    outs, exact = run_lib(art.lib, feeds), exact_outputs(model, feeds)
    assert len(np.unique(exact[0][0])) > 20  # the output spans its grid: not a constant
    m = compare(outs, exact, output_steps(model))
    assert m["exact"] == 1.0, m
    assert art.meta["lowering"]["summary"]["float_ops"] == 0, art.meta["lowering"]


@pytest.mark.parametrize("signed", [False, True], ids=["uint8", "int8"])
def test_concat_moves_each_input_onto_the_output_grid(signed, registry, work):
    """Concat of inputs on other grids (one of them through a relu) and on the output grid
    already: integers throughout, bit-exact against the float64 QDQ semantics."""
    dtype, zp = (np.int8, -5) if signed else (np.uint8, 100)
    g = QDQ()

    def qdq(x: str, scale: float, z: int) -> str:
        return g.dq(g.q(x, scale, z, dtype), scale, z, dtype)

    a, b = qdq("input", 0.00791, 0), qdq("input", 0.01137, zp)
    same = qdq("input", 0.01253, 80 if not signed else 12)  # the output's grid: moved as it is
    y = qdq(g.node("Concat", [g.node("Relu", [a]), b, same], axis=1), 0.01253, 80 if not signed else 12)
    model = g.model([1, 128], y, [1, 384])
    path = work / f"concat-{signed}.onnx"
    onnx.save(model, str(path))
    _, reasons = lower_int8(import_onnx(path))
    assert [r for r in reasons.values() if "outside the quantized graph" not in r] == []
    feeds = [{"input": np.linspace(-1.5, 1.5, 128, dtype=np.float32)[None]}]
    art = compile_model(path, registry.get("host"), work / "cache")
    m = compare(run_lib(art.lib, feeds), exact_outputs(model, feeds), output_steps(model))
    assert m["exact"] == 1.0, m
    assert art.meta["lowering"]["summary"]["float_ops"] == 0, art.meta["lowering"]
