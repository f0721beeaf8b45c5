"""The float64 exact-semantics interpreter agrees with ONNX Runtime to within its float32
rounding (≤ 1 level), covers QOperator models through the rewrite, and declines what it lacks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from farm.config.suites import InputSpec
from farm.errors import FarmError
from farm.models.exact_reference import exact_outputs, run_exact, with_exact_semantics
from farm.models.reference import make_inputs, model_inputs, output_steps, run_reference
from farm.models.registry import build_builtin
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
    g = QDQ()
    y = g.qdq(g.node("Sigmoid", [g.qdq("input", 2 / 255)]), 1 / 255, 0)
    model = g.model([1, 4], y, [1, 4])
    with pytest.raises(FarmError, match="no float64 form for Sigmoid"):
        run_exact(model, {"input": np.zeros((1, 4), np.float32)})
    assert exact_outputs(model, [{"input": np.zeros((1, 4), np.float32)}]) is None


def test_metrics_keep_both_shares():
    m = with_exact_semantics({"exact": 0.8, "max_lsb": 1.0, "cosine": 0.99},
                             {"exact": 1.0, "max_lsb": 0.0, "cosine": 1.0})
    assert m["exact"] == 1.0 and m["exact_ort"] == 0.8 and m["max_lsb"] == 1.0
    assert m["max_lsb_exact"] == 0.0
