"""The fp32 baseline: QDQ/QOperator models folded back to float, suite switch, errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from farm.config.suites import load_suite
from farm.errors import ConfigError, FarmError, NoBaseline
from farm.models.fp32 import fold_qdq, fp32_model
from farm.models.registry import ModelFiles, build_builtin
from tests.qdq_graphs import QDQ


def _run(model_or_path, x):
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) \
        else str(model_or_path)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.mark.parametrize("name", ["tinyconv", "tinymobilenet-qoperator"])
def test_folded_model_is_float_and_close_to_the_original(name, work):
    files = build_builtin(name, work / "models")
    folded = fold_qdq(onnx.load(str(files.path)))
    onnx.checker.check_model(folded)
    ops = {n.op_type for n in folded.graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QGemm"}
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    ref = _run(files.fp32_path, x)
    # close to the network it was quantized from (quantization error only)...
    assert np.abs(_run(folded, x) - ref).max() < 0.1 * np.abs(ref).max()
    # ...and the Q→DQ range (an implied ReLU) is kept: dropping the clamps would be far off
    assert np.abs(_run(folded, x) - _run(files.path, x)).max() < 0.1 * np.abs(ref).max()


def test_builtin_uses_its_own_fp32(work):
    files = build_builtin("tinyconv", work / "models")
    assert fp32_model(files, work / "derived") == files.fp32_path


def test_user_file_is_derived_once(work):
    files = build_builtin("tinyconv", work / "models")
    user = ModelFiles("mine", files.path)
    out = fp32_model(user, work / "derived")
    assert out.exists() and "fp32-derived" in out.name
    assert fp32_model(user, work / "derived") == out


def test_integer_output_cannot_be_folded():
    g = QDQ()
    y = g.q(g.node("Relu", ["input"]), 0.1, 0)
    m = g.model([1, 4], y, [1, 4])
    m.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.UINT8
    with pytest.raises(FarmError, match="cannot derive a float32 model"):
        fold_qdq(m)


def _suite(tmp_path, extra: str):
    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\nmodel: {{builtin: tinyconv}}\n{extra}")
    return p


def test_suite_switch(tmp_path):
    assert load_suite(_suite(tmp_path, "")).fp32_baseline is True
    assert load_suite(_suite(tmp_path, "fp32_baseline: false\n")).fp32_baseline is False


def test_suite_switch_must_be_boolean(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_suite(_suite(tmp_path, "fp32_baseline: sometimes\n"))
    assert "fp32_baseline" in e.value.format() and ":3" in e.value.format()


def test_a_model_with_no_float_counterpart_skips_its_baseline(write, tmp_path):
    """Integer outputs: no float32 model can be derived. `farm run --model` (where no suite could
    say `fp32_baseline: false`) skips the baseline with the reason and exits 0."""
    from farm.cli import main
    from farm.results.store import Store
    from tests.conftest import HOST_ONLY

    g = QDQ()
    conv = g.node("Conv", [g.qdq("input", 2 / 255), g.weight([4, 3, 3, 3], False)], pads=[1, 1, 1, 1])
    y = g.q(conv, 0.05, 128)
    m = g.model([1, 3, 8, 8], y, [1, 4, 8, 8])
    m.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.UINT8
    path = tmp_path / "u8out.onnx"
    onnx.save(m, str(path))
    with pytest.raises(NoBaseline):
        fp32_model(ModelFiles("u8out", path), tmp_path)
    data = tmp_path / "data"
    assert main(["run", "--model", str(path), "--devices", str(write("devices.yaml", HOST_ONLY)),
                 "--data-dir", str(data)]) == 0
    with Store(data / "results.db") as store:
        results = {r.check: r for r in store.results(store.run()["id"])}
    assert results["correctness"].status == "pass" and results["latency"].status == "pass"
    fp32 = results["latency-fp32"]
    assert fp32.status == "skipped" and "integer outputs" in fp32.reason, fp32


def test_float_model_is_its_own_baseline(write, tmp_path, capsys):
    """A model with no quantized operators: its fp32 build is the same artifact as the 'int8'
    one; loading it twice in one session crashed the rpc_server. The baseline is skipped, saying why."""
    from onnx import TensorProto, helper, numpy_helper

    from farm.cli import main
    from farm.results.store import Store
    from tests.conftest import HOST_ONLY

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "float", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "float.onnx"
    onnx.save(model, path)
    data = tmp_path / "data"
    assert main(["run", "--model", str(path), "--devices", str(write("devices.yaml", HOST_ONLY)),
                 "--data-dir", str(data)]) == 0
    store = Store(data / "results.db")
    results = {r.check: r for r in store.results(store.run()["id"])}
    assert results["latency"].status == "pass"
    fp32 = results["latency-fp32"]
    assert fp32.status == "skipped" and "no quantized operators" in fp32.reason
