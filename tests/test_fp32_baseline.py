"""The fp32 baseline: QDQ/QOperator models folded back to float, suite switch, errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from farm.config.suites import load_suite
from farm.errors import ConfigError, FarmError
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
