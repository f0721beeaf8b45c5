"""Integer Resize and ConvTranspose (resize.py, dot.py) against the model's float64 semantics: ONNX's
coordinate transformations and nearest roundings on integer and fractional size ratios, linear
upsampling whose weights are dyadic (bit-exact, rounding ties included), non-overlapping
ConvTranspose per tensor and per channel; what has no exact integer form stays float and says why."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from farm.compile.build import compile_model
from farm.config.suites import InputSpec
from farm.models.exact_reference import exact_outputs
from farm.models.reference import make_inputs, model_inputs, output_steps
from farm.run.metrics import compare
from tests.conftest import run_lib
from tests.qdq_graphs import QDQ

RESIZES = [  # mode, coordinate transformation, nearest rounding, input H×W, output H×W
    ("nearest", "asymmetric", "floor", (5, 7), (10, 14)),
    ("nearest", "half_pixel", "round_prefer_floor", (5, 7), (15, 21)),
    ("nearest", "align_corners", "round_prefer_ceil", (6, 6), (11, 13)),
    ("nearest", "half_pixel", "ceil", (4, 5), (8, 10)),
    ("nearest", "pytorch_half_pixel", "floor", (6, 6), (3, 4)),
    ("linear", "half_pixel", None, (5, 7), (10, 14)),  # weights 1/4, 3/4: half of them ties
    ("linear", "pytorch_half_pixel", None, (4, 4), (16, 16)),  # eighths
    ("linear", "asymmetric", None, (5, 7), (10, 14)),
    ("linear", "align_corners", None, (5, 5), (9, 17)),  # (in - 1) / (out - 1) = 1/2, 1/4
]


def _resize_model(mode: str, ctm: str, rounding: str | None, hw_in, hw_out, requantized: bool) -> onnx.ModelProto:
    g = QDQ(0)
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    if rounding:
        attrs["nearest_mode"] = rounding
    sizes = g.init(np.array([1, 3, *hw_out], np.int64))
    y = g.node("Resize", [g.qdq("input", 2 / 255, 120), "", "", sizes], **attrs)
    # the input's grid (nearest: data movement only; linear: a multiplier 2^-k, exact ties) or another
    y = g.qdq(y, 1.7 / 255, 110) if requantized else g.qdq(y, 2 / 255, 120)
    return g.model([1, 3, *hw_in], y, [1, 3, *hw_out])


def _deconv_model(kernel: int, stride: int, pads: int, per_channel: bool) -> onnx.ModelProto:
    g = QDQ(3)
    w = g.rng.integers(-127, 128, (6, 5, kernel, kernel)).astype(np.int8)  # IOHW: 6 in, 5 out
    scale = g.rng.uniform(0.5, 1.5, 5 if per_channel else ()) / (127 * 6)
    wq = g.dq(g.init(w), scale.astype(np.float32), np.zeros(scale.shape, np.int8), np.int8,
              axis=1 if per_channel else None)
    bias = g.init(g.rng.normal(0, 0.02, 5).astype(np.float32))
    y = g.node("ConvTranspose", [g.qdq("input", 2 / 255), wq, bias], kernel_shape=[kernel, kernel],
               strides=[stride, stride], pads=[pads] * 4)
    out = (6 - 1) * stride - 2 * pads + kernel
    return g.model([1, 6, 6, 6], g.qdq(y, 0.6 / 255, 100), [1, 5, out, out])


def _run(model: onnx.ModelProto, device: str, registry, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    feeds = make_inputs(model_inputs(model), InputSpec(seed=4, count=2))
    art = compile_model(path, registry.get(device), tmp_path / "cache")
    outs = run_lib(art.lib, feeds)
    assert np.ptp(outs[0][0]) > 0  # not a constant agreeing with a constant
    return compare(outs, exact_outputs(model, feeds), output_steps(model)), art.meta["lowering"]


@pytest.mark.parametrize(("mode", "ctm", "rounding", "hw_in", "hw_out"), RESIZES,
                         ids=[f"{m}-{c}-{i[0]}x{i[1]}-{o[0]}x{o[1]}" for m, c, _, i, o in RESIZES])
@pytest.mark.parametrize("requantized", [False, True], ids=["same-grid", "requantized"])
def test_resize_is_integer_and_exact(mode, ctm, rounding, hw_in, hw_out, requantized, registry, tmp_path):
    m, lowering = _run(_resize_model(mode, ctm, rounding, hw_in, hw_out, requantized), "host", registry, tmp_path)
    assert lowering["float_ops"] == {}, lowering["float_ops"]
    assert m["exact"] == 1.0, m


@pytest.mark.parametrize(("mode", "ctm", "hw_out", "why"), [
    ("linear", "align_corners", (8, 8), "not dyadic"),  # 4/7
    ("cubic", "half_pixel", (10, 14), "cubic resize has no integer form"),
    ("linear", "half_pixel", (3, 4), "downsampling"),
])
def test_resize_without_exact_integer_form_stays_float_and_says_why(mode, ctm, hw_out, why, registry, tmp_path):
    _, lowering = _run(_resize_model(mode, ctm, None, (5, 7), hw_out, True), "host", registry, tmp_path)
    reasons = list(lowering["float_ops"].values())
    assert len(reasons) == 1 and why in reasons[0], reasons


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("device", ["host", "x86-avx2"])
def test_non_overlapping_conv_transpose_is_an_int8_conv(per_channel, device, registry, tmp_path):
    from farm.platform.host import host_info

    if device == "x86-avx2" and "avx2" not in host_info().features:
        pytest.skip("this host has no AVX2: an x86-avx2 build cannot run here")
    m, lowering = _run(_deconv_model(2, 2, 0, per_channel), device, registry, tmp_path)
    assert lowering["float_ops"] == {}, lowering["float_ops"]
    assert [(o["op"], o["compute"]) for o in lowering["ops"]] == [("conv2d", "int8")], lowering["ops"]
    assert m["exact"] == 1.0, m


def test_overlapping_conv_transpose_stays_float_and_says_why(registry, tmp_path):
    _, lowering = _run(_deconv_model(3, 2, 1, False), "host", registry, tmp_path)
    assert list(lowering["float_ops"].values()) == [
        "conv2d_transpose whose kernels overlap, pad or are grouped has no integer form here"]
