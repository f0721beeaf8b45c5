"""ONNX's own backend node tests for quantized ops, regenerated from the installed onnx
(`collect_testcases`), each through `farm run --model model.onnx --inputs test_data_set_0`: the
device's outputs must equal the expected ones the test case carries. The types and forms farm does
not take (float8, 4- and 2-bit, blocked quantization) must end in one recorded line, never a
traceback."""

from __future__ import annotations

import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import HOST_ONLY

QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear"}
DEFAULT = ["test_quantizelinear", "test_dequantizelinear_axis", "test_quantizelinear_int16",
           "test_qlinearconv", "test_qlinearmatmul_3D_int8_float16", "test_convinteger_with_padding",
           "test_matmulinteger", "test_dynamicquantizelinear",
           "test_quantizelinear_blocked_asymmetric", "test_dequantizelinear_e4m3fn"]  # two not taken
NOT_TAKEN = ("e4m3fn", "e5m2", "float4", "int4", "uint4", "int2", "uint2", "blocked")


def _cases() -> dict:
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():  # the cast test cases warn on overflow while they are built
        warnings.simplefilter("ignore")
        return {c.name: c for c in collect_testcases(None)
                if {n.op_type for n in c.model.graph.node} & QUANTIZED_OPS}


CASES = _cases()


def _write(case, folder):
    data = folder / "test_data_set_0"
    data.mkdir(parents=True)
    onnx.save(case.model, str(folder / "model.onnx"))
    inputs, outputs = case.data_sets[0]
    for prefix, arrays, names in (("input", inputs, [i.name for i in case.model.graph.input]),
                                  ("output", outputs, [o.name for o in case.model.graph.output])):
        for k, (a, name) in enumerate(zip(arrays, names, strict=True)):
            t = a if isinstance(a, onnx.TensorProto) else numpy_helper.from_array(a, name)
            (data / f"{prefix}_{k}.pb").write_bytes(t.SerializeToString())
    return folder / "model.onnx", data


def _marks(name: str):
    return () if name in DEFAULT else (pytest.mark.slow,)


def test_the_default_cases_exist():
    assert set(DEFAULT) <= set(CASES), sorted(set(DEFAULT) - set(CASES))


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in sorted(CASES)])
def test_node_test_case(name, tmp_path, write, capsys):
    from farm.cli import main
    from farm.results.store import Store

    model, data = _write(CASES[name], tmp_path / name)
    db = tmp_path / "data"
    code = main(["run", "--model", str(model), "--inputs", str(data), "--devices",
                 str(write("devices.yaml", HOST_ONLY)), "--data-dir", str(db)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    if any(t in name for t in NOT_TAKEN):  # refused up front (exit 2) or a recorded compile error
        assert code in (1, 2), err
        if code == 2:  # progress lines, then the error's one line
            last = err.strip().splitlines()[-1]
            assert last.startswith("farm: ") and " — " in last, err
        return
    assert code == 0, err
    with Store(db / "results.db") as store:
        checks = {r.check: r for r in store.results(store.run()["id"])}
    assert checks["correctness"].metrics["expected_outputs"] == "equal", checks["correctness"]


def test_onnx_reference_evaluator_stands_in_where_ort_has_no_kernel(tmp_path):
    """QuantizeLinear at opset 28 has no ONNX Runtime kernel here: ONNX's reference evaluator is the
    reference, labelled as such, and gives the test case's expected output."""
    import numpy as np

    from farm.errors import FarmError
    from farm.models.reference import reference_outputs, run_reference

    case = CASES["test_quantizelinear"]
    model, _ = _write(case, tmp_path / "q")
    inputs, outputs = case.data_sets[0]
    feeds = [dict(zip([i.name for i in case.model.graph.input], inputs, strict=True))]
    try:
        run_reference(model, feeds)
        pytest.skip("this ONNX Runtime has a kernel for the case's opset")
    except FarmError:
        pass
    refs, note = reference_outputs(model, feeds)
    assert note and note.startswith("ONNX reference evaluator (ONNX Runtime "), note
    np.testing.assert_array_equal(refs[0][0], outputs[0])
