"""The float64 exact-semantics interpreter agrees with ONNX Runtime to within its float32
rounding (≤ 1 level), covers QOperator models through the rewrite, and declines what it lacks."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from farm.config.suites import InputSpec
from farm.errors import FarmError
from farm.models.exact_reference import exact_outputs, run_exact, with_exact_semantics
from farm.models.reference import make_inputs, model_inputs, ort_session, output_steps, run_reference
from farm.models.registry import build_builtin
from farm.report.table import HEADERS, device_rows
from farm.run.metrics import compare
from tests.qdq_graphs import QDQ, patterns


def _vs_ort(model: onnx.ModelProto, path) -> dict:
    feeds = make_inputs(model_inputs(model), InputSpec(seed=5, count=3))
    exact = exact_outputs(model, feeds)
    assert exact is not None
    return compare(exact, run_reference(path, feeds), output_steps(model))


@pytest.mark.parametrize("name", ["tinyconv", "tinymobilenet-qoperator"])
def test_builtins_agree_with_ort(name, work):
    path = build_builtin(name, work / "models").path
    m = _vs_ort(onnx.load(str(path)), path)
    assert m["max_lsb"] <= 1 and m["exact"] >= 0.9, m


@pytest.mark.parametrize("per_channel", [False, True])
def test_hand_written_patterns_agree_with_ort(per_channel, tmp_path):
    model = patterns(per_channel)
    path = tmp_path / "p.onnx"
    onnx.save(model, str(path))
    m = _vs_ort(model, path)
    assert m["max_lsb"] <= 1 and m["exact"] >= 0.95, m


def test_float_model_and_unknown_ops_are_declined(work):
    files = build_builtin("tinyconv", work / "models")
    feeds = make_inputs(model_inputs(onnx.load(str(files.fp32_path))), InputSpec())
    assert exact_outputs(onnx.load(str(files.fp32_path)), feeds) is None
    # an op whose values on integers are the kernel's choice (Resize on uint8, as QOperator models have)
    g = QDQ()
    y = g.node("Resize", [g.q("input", 2 / 255, 128), "", g.init(np.array([1, 1, 2, 2], np.float32))],
               mode="linear")
    model = g.model([1, 1, 2, 2], g.dq(y, 2 / 255, 128), [1, 1, 4, 4])
    with pytest.raises(FarmError, match="Resize on uint8 has no exact semantics"):
        run_exact(model, {"input": np.zeros((1, 1, 2, 2), np.float32)})
    assert exact_outputs(model, [{"input": np.zeros((1, 1, 2, 2), np.float32)}]) is None


def test_ops_farm_lacks_run_in_float64_by_onnx_reference():
    """Sigmoid and a float32 constant (Div) between Q/DQ: computed in float64, so the result is the
    float64 formula's, rounded half to even."""
    g = QDQ()
    x = g.qdq("input", 2 / 255)
    y = g.qdq(g.node("Div", [g.node("Sigmoid", [x]), g.init(np.float32(3.0))]), 1 / 255, 0)
    model = g.model([1, 64], y, [1, 64])
    feed = {"input": np.random.default_rng(0).uniform(-1, 1, (1, 64)).astype(np.float32)}
    (got,) = run_exact(model, feed)
    s = np.float64(np.float32(2 / 255))
    xq = np.clip(np.rint(feed["input"] / s) + 128, 0, 255) - 128
    sy = np.float64(np.float32(1 / 255))
    want = np.clip(np.rint(1 / (1 + np.exp(-xq * s)) / 3 / sy), 0, 255) * sy
    assert got.dtype == np.float64 and np.ptp(got) > 0
    np.testing.assert_array_equal(got, want)


def test_metrics_keep_both_shares():
    m = with_exact_semantics({"exact": 0.8, "max_lsb": 1.0, "cosine": 0.99, "beyond": 3, "top1": 0.5, "top1_missed": 2},
                             {"exact": 1.0, "max_lsb": 0.0, "cosine": 1.0, "beyond": 0, "top1": 1.0, "top1_missed": 0})
    assert m["exact"] == 1.0 and m["exact_ort"] == 0.8 and m["max_lsb"] == 0.0 and m["beyond"] == 0
    assert m["max_lsb_ort"] == 1.0 and m["cosine"] == 0.99 and m["top1"] == 0.5 and m["top1_missed_exact"] == 0


def test_ops_run_at_the_models_opset():
    """An opset-11 graph (as Paddle exports): Squeeze with an axes attribute squeezes only axis 0,
    and batch norm is the inference formula."""
    g = QDQ()
    bn = [g.init(np.array(v, np.float32)) for v in ([2.0, 3.0], [1.0, -1.0], [0.5, 0.25], [1.0, 4.0])]
    y = g.node("Squeeze", [g.node("BatchNormalization", ["input", *bn], epsilon=1e-5)], axes=[0])
    graph = onnx.helper.make_graph(g.nodes, "t", [onnx.helper.make_tensor_value_info("input", 1, [1, 2, 1, 3])],
                                   [onnx.helper.make_tensor_value_info(y, 1, [2, 1, 3])], initializer=g.inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 11)])
    x = np.random.default_rng(0).normal(size=(1, 2, 1, 3)).astype(np.float32)
    (got,) = run_exact(model, {"input": x})
    s, b, mean, var = (np.array(v).reshape(1, 2, 1, 1) for v in ([2.0, 3.0], [1.0, -1.0], [0.5, 0.25], [1.0, 4.0]))
    want = ((x - mean) / np.sqrt(var + 1e-5) * s + b)[0]
    assert got.shape == (2, 1, 3)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_what_the_interpreter_cannot_run_is_declined_not_raised():
    """An op outside ONNX's domain and one the reference implementation lacks raise a FarmError;
    any failure inside the interpreter (a Reshape to an impossible shape) leaves ORT the judge."""
    def one_node(node: onnx.NodeProto, inits=()) -> onnx.ModelProto:
        graph = onnx.helper.make_graph([node], "t", [onnx.helper.make_tensor_value_info("input", 1, [1, 4])],
                                       [onnx.helper.make_tensor_value_info("y", 1, None)], initializer=list(inits))
        return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])

    feed = {"input": np.ones((1, 4), np.float32)}
    with pytest.raises(FarmError, match="no float64 form for com.microsoft.Gelu"):
        run_exact(one_node(onnx.helper.make_node("Gelu", ["input"], ["y"], domain="com.microsoft")), feed)
    with pytest.raises(FarmError, match="ONNX's reference implementation cannot run NoSuchOp"):
        run_exact(one_node(onnx.helper.make_node("NoSuchOp", ["input"], ["y"])), feed)
    shape = onnx.numpy_helper.from_array(np.array([3, 5], np.int64), "shape")
    bad = one_node(onnx.helper.make_node("Reshape", ["input", "shape"], ["y"]), [shape])
    with pytest.raises(ValueError):
        run_exact(bad, feed)
    bad.graph.node.insert(0, onnx.helper.make_node("QuantizeLinear", ["input", "s"], ["q"]))
    bad.graph.node[1].input[0] = "q"
    bad.graph.initializer.append(onnx.numpy_helper.from_array(np.float32(0.1), "s"))
    assert exact_outputs(bad, [feed]) is None


def test_a_model_ort_is_unstable_on_is_judged_against_its_noise_floor(tmp_path, write):
    """0.1·a·5 lands on a rounding tie that float32 (ORT) rounds to even and float64 does not; the
    ×16 after it spreads each flip to 16 LSB. ORT is then off the exact semantics beyond max_lsb:
    the run records that noise floor, the table names it, and the exact device still passes."""
    from farm.cli import main
    from farm.results.store import Store
    from tests.conftest import HOST_ONLY

    g = QDQ()
    a = g.qdq("input", 0.1, 0)
    b = g.qdq(g.node("Mul", [a, g.init(np.float32(5.0))]), 1.0, 0)
    out = g.qdq(g.node("Mul", [b, g.init(np.float32(16.0))]), 1.0, 0)
    path = tmp_path / "ties.onnx"
    onnx.save(g.model([1, 32], out, [1, 32]), str(path))
    np.save(tmp_path / "levels.npy", (np.arange(32, dtype=np.float32) * np.float32(0.1))[None])
    data = tmp_path / "data"
    code = main(["run", "--model", str(path), "--inputs", str(tmp_path / "levels.npy"), "--data-dir", str(data),
                 "--devices", str(write("devices.yaml", HOST_ONLY))])
    with Store(data / "results.db") as store:
        results = store.results(store.run()["id"])
    corr = {r.check: r for r in results}["correctness"]
    assert code == 0 and corr.status == "pass", corr
    floor = corr.metrics["noise_floor"]
    assert floor["max_lsb"] == 16 and floor["beyond"] > 0 and corr.metrics["beyond"] == 0, corr.metrics
    (row,) = device_rows(results)["ties"]
    assert "UNSTABLE MODEL" in row[HEADERS.index("notes")] and "0 elements off" in row[HEADERS.index("notes")]


def test_a_given_float32_tensor_is_quantized_in_float32():
    """0.35 / 0.1 is 3.5 in float32 (rounded to even: 4) but 3.4999999 in float64 (3): a tensor
    the model is given (its input, a Constant-node weight) is divided as ONNX's reference and every
    runtime divide it; computed values stay float64."""
    g = QDQ()
    out = g.qdq("input", 0.1, 0)
    model = g.model([1, 4], out, [1, 4])
    x = np.array([[0.35, 0.75, 0.85, 0.95]], np.float32)
    levels = np.rint(run_exact(model, {"input": x})[0] / np.float64(np.float32(0.1)))
    np.testing.assert_array_equal(levels, [[4, 8, 8, 10]])
    ort_out = ort_session(model.SerializeToString(), ort.GraphOptimizationLevel.ORT_DISABLE_ALL).run(None, {"input": x})
    np.testing.assert_array_equal(np.rint(ort_out[0] / np.float32(0.1)), levels)
