"""A QOperator model checked against ONNX Runtime on the user's own model, not only on farm's
rewrite of it.

Farm compiles a QOperator model (QLinearConv, QLinearSigmoid, QGemm, ...) through its QDQ form,
and judges devices against that form's semantics (dequantize → float op → quantize, what the
QLinear ops are defined as). A bug in the rewrite would then be invisible, so the rewrite is
checked by ONNX Runtime's own, independent code: with all optimizations on, ORT fuses Q/DQ
patterns into the same QLinear kernels it runs for the original model, so ORT on the form and ORT
on the original agree bit for bit when the rewrite is right."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from farm.models.normalize import compiled_form
from farm.models.qoperator import has_qoperators
from farm.models.reference import ort_session


@dataclass(frozen=True)
class OriginalModelRun:
    original: list[list[np.ndarray]]  # ORT, all optimizations on, on the model as the user gave it
    form: list[list[np.ndarray]]  # ORT the same way on the QDQ form farm compiles


def original_model_run(model: onnx.ModelProto, name: str,
                       feeds: list[dict[str, np.ndarray]]) -> OriginalModelRun | None:
    """Both runs for a QOperator model; None for any other model, or when ORT cannot run the
    original (an opset newer than its kernels: the reference note says so already)."""
    if not has_qoperators(model):
        return None
    form = compiled_form(model, name)
    try:
        return OriginalModelRun(_optimized_run(model, feeds), _optimized_run(form, feeds))
    except Exception:  # ORT's own exception types: no second opinion to give
        return None


def _optimized_run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    sess = ort_session(model.SerializeToString(), ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    return [sess.run(None, feed) for feed in feeds]
