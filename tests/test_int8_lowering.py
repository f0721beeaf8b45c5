"""Integer lowering against ONNX Runtime (graph optimizations off): both ONNX quantization formats,
per-tensor and per-channel weights, every op pattern; and the lowering really is integer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from farm.compile.build import compile_model, import_onnx
from farm.compile.int8.lower import lower_int8
from farm.compile.lowering_report import relax_dot_ops, relax_float_classes
from farm.config.suites import InputSpec
from farm.models.exact_reference import exact_outputs
from farm.models.quantize import quantize_qdq
from farm.models.reference import make_inputs, model_inputs, output_steps, run_reference
from farm.models.registry import build_builtin
from farm.run.metrics import compare
from tests.conftest import run_lib
from tests.qdq_graphs import QDQ, constant_node_weights, patterns

BUILTIN_DOTS = {"tinyconv": 5, "tinyconv-qoperator": 5, "tinyconv-perchannel": 5,
                "tinymobilenet": 6, "tinymobilenet-qoperator": 6}


def _check(path: Path, registry, work: Path, count: int = 3, device: str = "host"):
    model = onnx.load(str(path))
    feeds = make_inputs(model_inputs(model), InputSpec(seed=7, count=count))
    art = compile_model(path, registry.get(device), work / "cache")
    outs = run_lib(art.lib, feeds)
    m = compare(outs, run_reference(path, feeds), output_steps(model))
    return m, art.meta["lowering"], outs


@pytest.mark.parametrize("name", list(BUILTIN_DOTS))
def test_builtin_models_match_ort_in_integers(name, registry, work):
    files = build_builtin(name, work / "models")
    m, lowering, _ = _check(files.path, registry, work)
    assert m["max_lsb"] <= 1, m
    assert m["exact"] >= 0.9, m
    s = lowering["summary"]
    assert s["ops"] == BUILTIN_DOTS[name] and s["int8_ops"] == s["ops"], lowering["ops"]
    assert all(o["inputs"][0] == "uint8" and o["inputs"][1] == "int8" and o["out"] == "int32"
               for o in lowering["ops"])


def test_qoperator_and_qdq_give_the_same_outputs(registry, work):
    outs = []
    for name in ("tinyconv", "tinyconv-qoperator"):
        path = build_builtin(name, work / "models").path
        feeds = make_inputs(model_inputs(onnx.load(str(path))), InputSpec(seed=3, count=3))
        outs.append(run_lib(compile_model(path, registry.get("host"), work / "cache").lib, feeds))
    for a, b in zip(*outs, strict=True):
        np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("per_channel", [False, True])
def test_hand_written_patterns(per_channel, registry, work):
    path = work / f"patterns-{per_channel}.onnx"
    onnx.save(patterns(per_channel), str(path))
    m, lowering, outs = _check(path, registry, work)
    assert m["max_lsb"] <= 1, m
    assert m["exact"] >= 0.97, m
    assert np.ptp(outs[0][0]) > 0  # not saturated into a constant
    kinds = sorted(o["op"] for o in lowering["ops"])
    assert kinds == ["avg_pool2d", "conv2d", "conv2d", "conv2d", "dense", "dense"]
    assert {o["compute"] for o in lowering["ops"]} == {"int8", "int16"}  # nothing left in float
    int16 = [o for o in lowering["ops"] if o["compute"] == "int16"]
    # the conv with weight zero point 3 runs on int8 weights plus the compensation term; the
    # activation × activation matmul is flagged
    assert [o["op"] for o in int16] == ["dense"]
    assert all("int16 operands" in o["fallback"] for o in int16)
    assert any("int16" in f for f in lowering["summary"]["fallbacks"])


@pytest.mark.parametrize("device", ["host", "x86-avx2"])
def test_weights_quantized_as_activations_run_in_int8_with_compensation(device, registry, work):
    """ORT's quantizer on a model without pre-processing (weights behind Constant nodes) makes
    uint8 weights with zero points ≠ 0 spanning all 256 levels: the ungrouped convs (padded,
    strided, 1×1) and the MatMul move their weights into int8 and add the compensation term, the
    grouped and depthwise convs take int16 operands (named with the reason); all bit-exact against
    the model's float64 semantics."""
    from farm.platform.host import host_info

    if device == "x86-avx2" and "avx2" not in host_info().features:
        pytest.skip("this host has no AVX2: an x86-avx2 build cannot run here")
    path = work / "constant-node-weights.onnx"
    quantize_qdq(constant_node_weights(), path)
    zps = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
           if i.name.endswith("zero_point") and i.name.startswith("w")]
    assert zps and all(z.dtype == np.uint8 and z != 128 for z in zps)  # what the test is about
    m, lowering, outs = _check(path, registry, work, device=device)
    assert m["max_lsb"] <= 1 and m["exact"] >= 0.95, m  # against ORT
    model = onnx.load(str(path))
    exact = exact_outputs(model, make_inputs(model_inputs(model), InputSpec(seed=7, count=3)))
    assert compare(outs, exact, output_steps(model))["exact"] == 1.0
    assert np.ptp(outs[0][0]) > 0
    ops = lowering["ops"]
    assert [o["op"] for o in ops] == ["conv2d"] * 5 + ["dense"], ops
    assert [o["compute"] for o in ops] == ["int8", "int8", "int16", "int16", "int8", "int8"], ops
    assert all("weight zero point" in o["fallback"] for o in ops if o["compute"] == "int16")


def test_no_float_compute_left_in_lowered_resnet_block(work):
    """After lowering a quantized model, no conv2d/matmul and no dequantize feeding them is float."""
    path = build_builtin("tinyconv-perchannel", work / "models").path
    mod, _ = lower_int8(import_onnx(path))
    text = mod.script(show_meta=False)
    assert "R.nn.conv2d" in text and 'out_dtype="int32"' in text
    assert all(o["compute"] == "int8" for o in relax_dot_ops(mod, {}))
    # only the input quantize and the output dequantize remain of the float graph
    assert text.count("R.quantize(") == 1 and text.count("R.dequantize(") == 1


def test_float_model_is_reported_as_fallback(work):
    files = build_builtin("tinyconv", work / "models")
    mod, reasons = lower_int8(import_onnx(files.fp32_path))
    ops = relax_dot_ops(mod, reasons)
    assert len(ops) == 5 and all(o["compute"] == "float32" for o in ops)
    assert all("not between dequantize and quantize" in o["fallback"] for o in ops)


def test_op_without_integer_form_is_flagged(tmp_path):
    from farm.compile.lowering_report import build_report
    from tests.qdq_graphs import QDQ

    g = QDQ()
    y = g.qdq(g.node("Softmax", [g.qdq("input", 2 / 255)], axis=-1), 1 / 255, 0)
    path = tmp_path / "softmax.onnx"
    onnx.save(g.model([1, 4], y, [1, 4]), str(path))
    mod, reasons = lower_int8(import_onnx(path))
    asm = tmp_path / "empty.s"
    asm.write_text("")
    rep = build_report(relax_dot_ops(mod, reasons), asm, "x86", reasons, relax_float_classes(mod, reasons))
    assert list(rep["float_ops"].values()) == ["no integer form for nn.softmax"]
    assert rep["summary"]["fallbacks"][0].endswith("(float): no integer form for nn.softmax")
    assert rep["summary"]["float_classes"] == {"softmax": 1}


@pytest.mark.parametrize("qoperator", [False, True])
def test_signed_activations(qoperator, registry, work):
    """int8 × int8 (symmetric activations): ReLU stays in the graph between dequantize and
    pooling, and pooling/flatten run on a computed value; all of it is lowered."""
    from farm.models import builders
    from farm.models.quantize import quantize_qdq

    path = work / f"s8-{qoperator}.onnx"
    quantize_qdq(builders.tinyconv(), path, per_channel=True, qoperator=qoperator,
                 signed_activations=True)
    m, lowering, _ = _check(path, registry, work)
    assert m["max_lsb"] <= 1 and m["exact"] >= 0.9, m
    assert all(o["inputs"] == ["int8", "int8"] for o in lowering["ops"])
    assert lowering["summary"]["int8_ops"] == 5 and lowering["summary"]["fallbacks"] == []


@pytest.mark.slow
def test_qresnet50_all_convs_and_dense_in_integers(registry, work):
    """53 convs + 1 dense in integer arithmetic, equal to the exact semantics on every logit."""
    path = build_builtin("qresnet50", work / "models").path
    model = onnx.load(str(path))
    feeds = make_inputs(model_inputs(model), InputSpec(seed=0, count=1))
    art = compile_model(path, registry.get("host"), work / "cache")
    s = art.meta["lowering"]["summary"]
    assert (s["ops"], s["int8_ops"], s["fallbacks"]) == (54, 54, [])
    outs = run_lib(art.lib, feeds)
    assert compare(outs, exact_outputs(model, feeds), output_steps(model))["exact"] == 1.0
    assert compare(outs, run_reference(path, feeds), output_steps(model))["max_lsb"] <= 1


def test_hardsigmoid_clip_with_number_bounds_lowers(tmp_path):
    """ONNX HardSigmoid imports as a clip whose bounds are plain numbers (as in real OCR heads):
    the conv before it still lowers, with no error of farm's in the report."""
    from tests.qdq_graphs import QDQ

    g = QDQ()
    conv = g.node("Conv", [g.qdq("input", 2 / 255), g.weight([4, 3, 3, 3], True)], pads=[1, 1, 1, 1])
    y = g.qdq(g.node("HardSigmoid", [g.qdq(conv, 0.05)], alpha=0.2, beta=0.5), 1 / 255, 0)
    path = tmp_path / "hsig.onnx"
    onnx.save(g.model([1, 3, 8, 8], y, [1, 4, 8, 8]), str(path))
    mod, reasons = lower_int8(import_onnx(path))
    assert not any("failed" in r for r in reasons.values()), reasons
    assert [o["compute"] for o in relax_dot_ops(mod, reasons)] == ["int8"]


def test_a_bug_in_one_op_lowering_leaves_that_op_in_float(work, monkeypatch):
    """An exception of farm's own inside one op's integer form costs that op (kept in float,
    with the cause in the report), not the compile of the model."""
    from farm.compile.int8 import dot

    def broken(*_a, **_k):
        raise IndexError("tuple index out of range")

    monkeypatch.setattr(dot, "lower_dot", broken)
    mod, reasons = lower_int8(import_onnx(build_builtin("tinyconv", work / "models").path))
    ops = relax_dot_ops(mod, reasons)
    assert len(ops) == 5 and all(o["compute"] == "float32" for o in ops)
    assert all("farm's integer lowering failed here (IndexError: tuple index out of range)" in o["fallback"]
               for o in ops), ops


def _exported_with_shape_subgraph() -> onnx.ModelProto:
    """As exporters write a flatten: Reshape to Concat(Gather(Shape(x), 0), [-1]), with a
    symbolic batch — TVM's ONNX frontend takes Reshape only with a constant shape."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, (256, 10)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Shape", ["r"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "zero"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["newshape"], axis=0),
             helper.make_node("Reshape", ["r", "newshape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "fc"], ["y"])]
    g = helper.make_graph(nodes, "exported", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("qoperator", [False, True])
def test_shape_subgraphs_are_folded_before_import(qoperator, registry, work):
    """A model quantized by ORT as exported, not pre-processed: it imports (ORT's offline constant
    folding ran first), both dot products run in integers and the outputs match ORT."""
    from farm.models.quantize import quantize_qdq

    path = work / f"exported-{qoperator}.onnx"
    quantize_qdq(_exported_with_shape_subgraph(), path, qoperator=qoperator)
    assert any(n.op_type == "Shape" for n in onnx.load(str(path)).graph.node)
    m, lowering, _ = _check(path, registry, work)
    assert m["max_lsb"] <= 1, m
    assert [o["compute"] for o in lowering["ops"]] == ["int8", "int8"], lowering["ops"]


@pytest.mark.parametrize("weight_zp", [0, 3])  # the int8 path and the int16 path
def test_a_float_bias_is_not_rounded_onto_the_accumulator_grid(weight_zp, registry, tmp_path):
    """A conv whose bias stays float32 (ORT's quantizer leaves it so when it took the weights for
    activations): (a + 0.4) / 2 must round like the model, not like (a + 0) / 2, whose odd a are
    ties. Neither farm's import (ORT's basic optimization quantizes such biases to int32) nor
    the lowering may round the bias."""
    g = QDQ()
    x = g.qdq("input", 1.0, 0)
    w = g.dq(g.init(np.full((1, 1, 1, 1), 1 + weight_zp, np.int8)), 1.0, weight_zp, np.int8)
    y = g.node("Conv", [x, w, g.init(np.array([0.4], np.float32))])
    path = tmp_path / "float_bias.onnx"
    model = g.model([1, 1, 16, 16], g.qdq(y, 2.0, 0), [1, 1, 16, 16])
    onnx.save(model, str(path))
    feeds = [{"input": np.arange(256, dtype=np.float32).reshape(1, 1, 16, 16)}]
    outs = run_lib(compile_model(path, registry.get("host"), tmp_path / "cache").lib, feeds)
    want = np.clip(np.rint((np.arange(256) + 0.4) / 2), 0, 255) * 2.0
    np.testing.assert_array_equal(outs[0][0].reshape(-1), want)
    assert compare(outs, exact_outputs(model, feeds), output_steps(model))["exact"] == 1.0


@pytest.mark.parametrize("device", ["host", "x86-avx2"])
def test_dense_with_an_odd_number_of_columns_runs_on_the_dot_product_template(device, registry, work):
    """A classifier over a vocabulary (here 37 classes) is a matmul whose N divides no vector: its
    columns are padded to whole vectors for the dot-product template and sliced off again."""
    from farm.platform.host import host_info

    features = host_info().features
    if device == "x86-avx2" and "avx2" not in features:
        pytest.skip("this host has no AVX2: an x86-avx2 build cannot run here")
    g = QDQ(5)
    w = g.rng.integers(-127, 128, (24, 37)).astype(np.int8)
    y = g.node("MatMul", [g.qdq("input", 2 / 255), g.dq(g.init(w), np.float32(1 / (127 * 5)), np.int8(0), np.int8)])
    path = work / f"vocabulary-{device}.onnx"
    onnx.save(g.model([1, 5, 24], g.qdq(y, 0.5 / 255, 120), [1, 5, 37]), str(path))
    m, lowering, outs = _check(path, registry, work, device=device)
    model = onnx.load(str(path))
    exact = exact_outputs(model, make_inputs(model_inputs(model), InputSpec(seed=7, count=3)))
    assert compare(outs, exact, output_steps(model))["exact"] == 1.0 and np.ptp(outs[0][0]) > 0
    want = "vpdpbusd" if device == "host" and "avx512_vnni" in features else "vpmaddwd"
    dense = {k: v for k, v in lowering["kernels"].items() if "dense_packed" in k}
    assert dense and all(want in v for v in dense.values()), lowering["kernels"]


def test_float_op_class_is_read_through_reshapes():
    """A quantize that reads a float softmax through a reshape counts as a softmax."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.reshape(bb.emit(relax.op.nn.softmax(x)), [2, 2]))
            q = bb.emit(relax.op.quantize(y, relax.const(1 / 255, "float32"), relax.const(0, "uint8"),
                                          axis=-1, out_dtype="uint8"), name_hint="q")
            out = bb.emit_output(q)
        bb.emit_func_output(out)
    assert relax_float_classes(bb.get(), {"q": "no integer form for nn.softmax"}) == {"softmax": 1}
