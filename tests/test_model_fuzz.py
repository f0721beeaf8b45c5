"""Property: a damaged model file (flipped, cut or spliced bytes of a real ONNX / TFLite model) is
a one-line FarmError or a model farm reads — never another exception, never a crash of farm."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.errors import FarmError
from farm.models.reference import model_inputs
from farm.models.registry import build_builtin, load_onnx
from farm.models.tflite import read_tflite

DIR = Path(tempfile.mkdtemp(prefix="farm-model-fuzz-"))
_MODELS: dict[str, bytes] = {}


def _model(name: str) -> bytes:
    if name not in _MODELS:
        _MODELS[name] = build_builtin(name, DIR / "models").path.read_bytes()
    return _MODELS[name]


edits = st.lists(st.tuples(st.sampled_from(["flip", "cut", "splice"]), st.floats(0, 1),
                           st.integers(0, 255)), min_size=1, max_size=4)


def _damage(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op, where, byte in ops:
        i = int(where * (len(buf) - 1)) if buf else 0
        if op == "flip" and buf:
            buf[i] ^= byte or 1
        elif op == "cut":
            del buf[i:]
        else:
            buf[i:i] = bytes([byte]) * 8
    return bytes(buf)


def _read(path: Path, suffix: str) -> None:
    if suffix == ".onnx":
        model_inputs(load_onnx(path))
    else:
        read_tflite(path)


@pytest.mark.parametrize("name, suffix", [("tinyconv", ".onnx"), ("tflite-tiny", ".tflite")])
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=edits)
def test_damaged_model_files_are_one_line_errors(name, suffix, ops):
    path = DIR / f"damaged{suffix}"
    path.write_bytes(_damage(_model(name), ops))
    try:
        _read(path, suffix)
    except FarmError as e:
        assert "\n" not in e.format() and e.format().strip()


def test_an_input_type_number_onnx_does_not_know_is_one_line():
    """What the fuzzer found: a flipped byte made an input's elem_type 29, which has no name."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    x.type.tensor_type.elem_type = 29
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    with pytest.raises(FarmError, match="ONNX type number 29 \\(no such type\\)"):
        model_inputs(model)
