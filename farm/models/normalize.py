"""A user's ONNX graph made importable: every input's shape fixed (an unknown batch becomes 1), then
ONNX Runtime's offline basic optimization — constant folding of the shape subgraphs exporters and
quantizers leave (Shape → Gather → Concat → Reshape), redundant node removal — saved as a model.

ORT is the well-kept tool for this: its constant folding leaves DequantizeLinear in place, so Q/DQ
pairs stay intact for the integer lowering, and the basic level emits only standard ONNX ops."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import onnx
import onnxruntime as ort

from farm.errors import FarmError, error_line
from farm.models.qoperator import has_qoperators, qoperator_to_qdq
from farm.models.reference import model_inputs

# ORT's basic level also quantizes a float Conv/Gemm bias to int32 at scale x_scale·w_scale (its
# 1.2x name, and the older one): that rounds the bias, which the model's semantics does not
SEMANTICS_CHANGING = ["WeightBiasQuantization", "BiasQuantization"]


def fix_input_shapes(model: onnx.ModelProto, sizes: Mapping[str, tuple[int, ...]] | None = None) -> onnx.ModelProto:
    """A copy whose graph inputs have the static shapes farm feeds (model_inputs: batch 1, or the
    sizes of the input files)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    shapes = {i.name: i.shape for i in model_inputs(model, sizes)}
    for vi in out.graph.input:
        if vi.name in shapes:
            for d, size in zip(vi.type.tensor_type.shape.dim, shapes[vi.name], strict=True):
                d.Clear()
                d.dim_value = size
    return out


def normalized(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """The model with static input shapes and its constant subgraphs folded by ONNX Runtime. A
    model ORT has no kernels for (an opset newer than it) goes on unfolded: TVM's frontend
    is the judge of what it can import, and says what it cannot."""
    fixed = fix_input_shapes(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        opts.optimized_model_filepath = str(Path(tmp) / "basic.onnx")
        try:
            ort.InferenceSession(fixed.SerializeToString(), opts, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=SEMANTICS_CHANGING)
        except Exception as e:  # ORT raises its own exception types for graphs it rejects
            if "NOT_IMPLEMENTED" in str(e):
                return fixed
            raise FarmError(f"ONNX Runtime cannot load {name} to fold its constant subgraphs: {error_line(e)}",
                            "check the model with onnx.checker and ONNX Runtime") from None
        return onnx.load(opts.optimized_model_filepath)


def compiled_form(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """The graph farm imports: normalized, and a QOperator model (QLinearConv & co) in its QDQ
    form, lowered like any QDQ model."""
    model = normalized(model, name)
    return qoperator_to_qdq(model) if has_qoperators(model) else model
