"""Static int8 quantization with ONNX Runtime's own tool (QDQ format) on seeded calibration data."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static


class _Reader(CalibrationDataReader):
    def __init__(self, name: str, batches: list[np.ndarray]):
        self._it = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self._it, None)


def quantize_qdq(model: onnx.ModelProto, out_path: Path, *, seed: int = 1234, samples: int = 8,
                 per_channel: bool = False, qoperator: bool = False) -> None:
    """uint8 activations, int8 weights (the x86 u8×s8 convention), MinMax calibration; QDQ format,
    or QOperator (QLinearConv & co) with `qoperator`."""
    inp = model.graph.input[0]
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    batches = [rng.normal(0, 1, shape).astype(np.float32) for _ in range(samples)]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        onnx.save(model, fp32)
        quantize_static(str(fp32), str(out_path), _Reader(inp.name, batches),
                        quant_format=QuantFormat.QOperator if qoperator else QuantFormat.QDQ,
                        per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
