"""Integer lowering against ONNX Runtime (graph optimizations off): both ONNX quantization formats,
per-tensor and per-channel weights, every op pattern; and the lowering really is integer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from farm.compile.build import compile_model, import_onnx
from farm.compile.int8.lower import lower_int8
from farm.compile.lowering_report import relax_dot_ops
from farm.config.suites import InputSpec
from farm.models.reference import make_inputs, model_inputs, output_steps, run_reference
from farm.models.registry import build_builtin
from farm.run.metrics import compare
from tests.conftest import run_lib
from tests.qdq_graphs import patterns

BUILTIN_DOTS = {"tinyconv": 5, "tinyconv-qoperator": 5, "tinyconv-perchannel": 5,
                "tinymobilenet": 6, "tinymobilenet-qoperator": 6}


def _check(path: Path, registry, work: Path, count: int = 3):
    model = onnx.load(str(path))
    feeds = make_inputs(model_inputs(model), InputSpec(seed=7, count=count))
    art = compile_model(path, registry.get("host"), work / "cache")
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
    # the conv with weight zero point 3 and the activation × activation matmul are flagged
    assert sorted(o["op"] for o in int16) == ["conv2d", "dense"]
    assert all("int16 operands" in o["fallback"] for o in int16)
    assert any("int16" in f for f in lowering["summary"]["fallbacks"])


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
