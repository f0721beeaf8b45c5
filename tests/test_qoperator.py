"""QOperator → QDQ rewrite: every QLinear op becomes DQ → float op → Q with the same semantics
(checked by ONNX Runtime on both graphs); bad QOperator models give one-line errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from farm.errors import FarmError
from farm.models.qoperator import has_qoperators, qoperator_to_qdq
from farm.models.registry import build_builtin

MS = "com.microsoft"


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


@pytest.mark.parametrize("name", ["tinyconv-qoperator", "tinymobilenet-qoperator"])
def test_rewrite_keeps_semantics(name, work):
    model = onnx.load(str(build_builtin(name, work / "models").path))
    assert has_qoperators(model)
    qdq = qoperator_to_qdq(model)
    onnx.checker.check_model(qdq)
    assert not has_qoperators(qdq)
    xs = np.random.default_rng(1).uniform(-1, 1, (4, 1, 3, 32, 32)).astype(np.float32)
    got = np.stack([_ort(qdq, x) for x in xs])
    want = np.stack([_ort(model, x) for x in xs])
    step = float(numpy_helper.to_array(next(i for i in qdq.graph.initializer
                                            if i.name == qdq.graph.node[-1].input[1])))
    # ORT's own QLinear kernels may differ by a level (see the facts file); never more
    assert np.abs(np.rint((got - want) / step)).max() <= 1


def _qlinear_matmul(b_scale_name: str = "bs") -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.float32(v), n) for n, v in
             [("as", 0.02), ("bs", 0.01), ("ys", 0.05)]]
    inits += [numpy_helper.from_array(np.uint8(128), "az"), numpy_helper.from_array(np.int8(0), "bz"),
              numpy_helper.from_array(np.uint8(128), "yz"),
              numpy_helper.from_array(np.arange(-12, 12, dtype=np.int8).reshape(4, 6), "b")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "as", "az"], ["xq"]),
             helper.make_node("QLinearMatMul", ["xq", "as", "az", "b", b_scale_name, "bz", "ys", "yz"],
                              ["yq"], name="mm"),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 4])]
    if b_scale_name != "bs":
        inputs.append(helper.make_tensor_value_info(b_scale_name, TensorProto.FLOAT, []))
    g = helper.make_graph(nodes, "mm", inputs,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_qlinear_matmul():
    model = _qlinear_matmul()
    qdq = qoperator_to_qdq(model)
    assert [n.op_type for n in qdq.graph.node].count("MatMul") == 1
    x = np.random.default_rng(2).uniform(-2, 2, (2, 4)).astype(np.float32)
    np.testing.assert_array_equal(_ort(qdq, x), _ort(model, x))


def test_a_scale_given_as_input_is_rewritten_and_one_of_unknown_shape_is_a_clear_error():
    """ONNX's node tests feed scales as graph inputs: the QDQ form takes them as they are (the
    lowering then leaves that op in float); only a scale whose shape nobody declares is refused."""
    model = _qlinear_matmul("dyn")
    qdq = qoperator_to_qdq(model)
    x = np.random.default_rng(2).uniform(-2, 2, (2, 4)).astype(np.float32)
    sess = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x, "dyn": np.array(0.01, np.float32)})[0]
    np.testing.assert_array_equal(got, _ort(_qlinear_matmul(), x))
    del model.graph.input[1].type.tensor_type.shape.dim[:]
    model.graph.input[1].type.tensor_type.ClearField("shape")
    with pytest.raises(FarmError, match="the shape of its scale 'dyn' is unknown"):
        qoperator_to_qdq(model)


def test_channels_last_pool_is_rejected():
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "s", "z", "s", "z"], ["y"],
                            domain="com.microsoft", channels_last=1, name="gap")
    g = helper.make_graph([node], "g", [], [])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(FarmError, match="channels_last"):
        qoperator_to_qdq(model)


def _activations_net(opset: int) -> onnx.ModelProto:
    """conv → sigmoid and leaky relu → concat → global pool → softmax: ops ORT's quantizer turns
    into com.microsoft QLinear* nodes in the QOperator format."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("LeakyRelu", ["c"], ["l"], alpha=0.1),
             helper.make_node("Concat", ["s", "l"], ["cat"], axis=1),
             helper.make_node("GlobalAveragePool", ["cat"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Softmax", ["f"], ["out"], axis=1)]
    g = helper.make_graph(nodes, "acts", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8])], initializer=[w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    return m


@pytest.mark.parametrize("opset", [11, 17])
def test_qlinear_activation_family_keeps_semantics(opset, tmp_path):
    """QLinearSigmoid, QLinearLeakyRelu, QLinearConcat and QLinearSoftmax (with opset-11 Softmax
    semantics, in a model the version converter takes to 13 first) as ORT's quantizer writes them."""
    from farm.models.quantize import quantize_qdq

    path = tmp_path / "q.onnx"
    quantize_qdq(_activations_net(opset), path, qoperator=True)
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat", "QLinearSoftmax"} <= ops, ops
    qdq = qoperator_to_qdq(model)
    onnx.checker.check_model(qdq)
    assert not has_qoperators(qdq) and not any(n.domain == "com.microsoft" for n in qdq.graph.node)
    xs = np.random.default_rng(2).uniform(-1, 1, (4, 1, 3, 8, 8)).astype(np.float32)
    got, want = np.stack([_ort(qdq, x) for x in xs]), np.stack([_ort(model, x) for x in xs])
    assert np.abs(got - want).max() <= 1.01 / 256 and np.ptp(want) > 0  # within one level of the uint8 output


def test_qlinear_where():
    """A hand-written com.microsoft QLinearWhere (x and y on two grids, the output on a third)
    against ORT's own kernel."""
    c = [numpy_helper.from_array(np.array(v, dt), n) for n, v, dt in [
        ("s", 0.02, np.float32), ("z", 128, np.uint8), ("s2", 0.01, np.float32), ("z2", 100, np.uint8),
        ("cond", np.random.default_rng(0).random((1, 4, 6)) > 0.5, np.bool_)]]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
             helper.make_node("QuantizeLinear", ["input", "s2", "z2"], ["m"]),
             helper.make_node("QLinearWhere", ["cond", "q", "s", "z", "m", "s2", "z2", "s", "z"], ["w"],
                              domain=MS),
             helper.make_node("DequantizeLinear", ["w", "s", "z"], ["out"])]
    g = helper.make_graph(nodes, "wm", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 6])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 6])], initializer=c)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    qdq = qoperator_to_qdq(model)
    onnx.checker.check_model(qdq)
    assert not any(n.domain == MS for n in qdq.graph.node)
    x = np.random.default_rng(1).uniform(-2, 2, (1, 4, 6)).astype(np.float32)
    want = _ort(model, x)
    assert np.abs(_ort(qdq, x) - want).max() <= 0.0201 and np.ptp(want) > 0  # one level of the output


@pytest.mark.parametrize("name", ["tinyconv-qoperator", "tinymobilenet-qoperator", "activations"])
def test_ort_fuses_farms_qdq_form_back_into_the_original_kernels(name, work, tmp_path):
    """The check of farm's rewrite against ONNX Runtime on the user's own QOperator model rests on
    this: with all optimizations on, ORT on the QDQ form equals ORT on the original bit for bit,
    though both differ from the QDQ semantics (ORT's QLinear kernels round their own way)."""
    from farm.models.original import original_model_run
    from farm.models.quantize import quantize_qdq

    if name == "activations":
        path = tmp_path / "acts.onnx"
        quantize_qdq(_activations_net(17), path, qoperator=True)
    else:
        path = build_builtin(name, work / "models").path
    shape = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    feeds = [{"input": x} for x in np.random.default_rng(3).uniform(-1, 1, (3, *shape)).astype(np.float32)]
    run = original_model_run(onnx.load(str(path)), path.name, feeds)
    assert run is not None and len(run.original) == len(feeds)
    for form, original in zip(run.form, run.original, strict=True):
        np.testing.assert_array_equal(form[0], original[0])
        assert np.ptp(original[0]) > 0
    assert original_model_run(qoperator_to_qdq(onnx.load(str(path))), "qdq.onnx", feeds) is None  # its own original
