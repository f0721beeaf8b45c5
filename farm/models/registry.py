"""Turn a suite's model spec into ONNX files on disk: builtin models are built once and cached."""

from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from farm.config.suites import InputSpec, ModelSpec, Suite, load_suite
from farm.errors import ConfigError, FarmError, error_line
from farm.models import architectures, builders, quantize, tflite_builders, tflite_writer
from farm.models.input_files import file_shapes
from farm.models.normalize import fix_input_shapes
from farm.models.reference import graph_inputs, has_dynamic_dims
from farm.models.tflite import is_tflite


@dataclass(frozen=True)
class Builtin:
    build: Callable[[], onnx.ModelProto] | Callable[[], bytes]
    per_channel: bool = False
    qoperator: bool = False  # QOperator format (QLinearConv, QGemm, ...) instead of QDQ
    tflite: bool = False  # build() writes the .tflite bytes itself (full-integer)


BUILTINS: dict[str, Builtin] = {
    "qresnet50": Builtin(builders.resnet50),
    "tinyconv": Builtin(builders.tinyconv),
    "tinyconv-perchannel": Builtin(builders.tinyconv, per_channel=True),
    "tinymobilenet": Builtin(builders.tinymobilenet, per_channel=True),
    "tinyconv-qoperator": Builtin(builders.tinyconv, qoperator=True),
    "tinymobilenet-qoperator": Builtin(builders.tinymobilenet, per_channel=True, qoperator=True),
    # the op classes of shipped detectors, OCR and transformer models (architectures.py)
    **{f"{name}{suffix}": Builtin(build, per_channel=True, qoperator=bool(suffix))
       for name, build in (("tinydetector", architectures.tinydetector), ("tinydbnet", architectures.tinydbnet),
                           ("tinyattention", architectures.tinyattention))
       for suffix in ("", "-qoperator")},
    "tflite-tiny": Builtin(tflite_builders.tflite_tiny, tflite=True),
    "tflite-mobilenet": Builtin(tflite_builders.mobilenet_v1, tflite=True),
}


@dataclass(frozen=True)
class ModelFiles:
    """The int8 model under test and, where known, the float32 network it was quantized from."""

    name: str
    path: Path
    fp32_path: Path | None = None


def _recipe_hash(name: str) -> str:
    """Hash of everything that decides a builtin's bytes, so a change to a builder rebuilds it."""
    import onnxruntime

    h = hashlib.sha256()
    for mod in (builders, architectures, quantize, tflite_builders, tflite_writer):
        h.update(inspect.getsource(mod).encode())
    h.update(f"{name}|{onnx.__version__}|{onnxruntime.__version__}".encode())
    return h.hexdigest()[:16]


def check_model(model: ModelSpec) -> None:
    """A suite's `builtin:` names one of BUILTINS (config reads the name; the builders own the list)."""
    if model.builtin and model.builtin not in BUILTINS:
        file, line = model.origin or (None, None)
        raise ConfigError(f"unknown builtin model '{model.builtin}'",
                          f"use one of {', '.join(BUILTINS)}, or `path:` for an ONNX file", file=file, line=line)


def reference_name(model: ModelSpec) -> str:
    tflite = BUILTINS[model.builtin].tflite if model.builtin else is_tflite(model.path)
    return "LiteRT (reference kernels)" if tflite else "ONNX Runtime"


def checked_suite(path: Path) -> Suite:
    """load_suite, with its model's builtin name checked too: what every face of farm loads."""
    suite = load_suite(path)
    check_model(suite.model)
    return suite


def build_builtin(name: str, cache_dir: Path) -> ModelFiles:
    spec = BUILTINS[name]
    digest = _recipe_hash(name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if spec.tflite:
        return _build_tflite(name, spec, digest, cache_dir)
    fp32_path = cache_dir / f"{name}-{digest}-fp32.onnx"
    int8_path = cache_dir / f"{name}-{digest}-int8.onnx"
    if not (_intact(int8_path) and _intact(fp32_path)):
        model = spec.build()
        write_atomic(fp32_path, model.SerializeToString())
        tmp = int8_path.with_suffix(f".{os.getpid()}.partial.onnx")  # parallel workers build too
        quantize.quantize_qdq(model, tmp, per_channel=spec.per_channel, qoperator=spec.qoperator)
        os.replace(tmp, int8_path)
        _seal(fp32_path)
        _seal(int8_path)
    return ModelFiles(name, int8_path, fp32_path)


def _build_tflite(name: str, spec: Builtin, digest: str, cache_dir: Path) -> ModelFiles:
    path = cache_dir / f"{name}-{digest}-int8.tflite"
    if not _intact(path):
        write_atomic(path, spec.build())
        _seal(path)
    return ModelFiles(name, path)  # its float32 model is derived (farm/models/fp32.py)


def _sums(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _seal(path: Path) -> None:
    write_atomic(_sums(path), hashlib.sha256(path.read_bytes()).hexdigest().encode())


def _intact(path: Path) -> bool:
    """A built model is reused only while its bytes still have the hash recorded when it was built
    (a truncated or overwritten file is built again, not handed to ONNX Runtime and TVM)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == _sums(path).read_text().strip()
    except OSError:
        return False


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file that readers (parallel workers building the same model) see whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file; unreadable or malformed files become a FarmError."""
    if not path.exists():
        raise FarmError(f"model file {path} does not exist", "check the suite's model path")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # onnx raises several unrelated types for corrupt files
        raise FarmError(f"{path} is not a valid ONNX model ({error_line(e)})",
                        "re-export the model or point the suite at another file") from None
    return model


def at_input_shapes(model: ModelFiles, proto: onnx.ModelProto, spec: InputSpec,
                    cache_dir: Path) -> tuple[ModelFiles, onnx.ModelProto]:
    """A model with dynamic input sizes, fixed at the sizes of its input files (or the suite's
    `shape:` for a one-input model) and written to the cache: the file every later step reads, so
    the reference, the compile and the exact semantics all see one shape. A static model, or one
    with nothing to take sizes from, is returned as it is (model_inputs then says what to do)."""
    if not has_dynamic_dims(proto):
        return model, proto
    names = [vi.name for vi in graph_inputs(proto)]
    if spec.files:
        sizes = file_shapes(list(spec.files), names)
    elif spec.shape and len(names) == 1:
        sizes = {names[0]: spec.shape}
    else:
        return model, proto
    fixed = fix_input_shapes(proto, sizes)
    data = fixed.SerializeToString()
    path = cache_dir / f"{model.name}-{hashlib.sha256(data).hexdigest()[:16]}-fixed.onnx"
    if not path.exists():
        write_atomic(path, data)
    return ModelFiles(model.name, path, model.fp32_path), fixed
