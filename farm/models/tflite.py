"""TFLite model files: validation, inputs, and LiteRT as the independent reference.

The reference is LiteRT's interpreter with its *reference* kernels (OpResolverType.BUILTIN_REF):
those implement TFLite's integer semantics the same on every CPU. LiteRT's optimized kernels
(ruy, and the XNNPACK delegate it applies by default) use other requantization roundings on x86
(up to one level off on convs and means in our probes), so their share of exact agreement is
shown beside the reference's, like ONNX Runtime's beside the float64 exact semantics of a QDQ
model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from farm.config.suites import InputSpec
from farm.errors import FarmError, error_line
from farm.models.input_files import input_sets
from farm.models.reference import TensorInfo
from farm.platform.isolate import Crashed, run_isolated

TFLITE_SUFFIX = ".tflite"
_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}  # TensorType


def is_tflite(path: Path) -> bool:
    return Path(path).suffix.lower() == TFLITE_SUFFIX


def read_tflite(path: Path) -> bytes:
    """The bytes of a .tflite file whose flatbuffer parses and has a subgraph with inputs and
    outputs; anything else is a one-line FarmError."""
    import tflite

    if not path.exists():
        raise FarmError(f"model file {path} does not exist", "check the suite's model path")
    buf = path.read_bytes()
    todo = "re-export the model with the TFLite converter or point the suite at another file"
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise FarmError(f"{path} is not a TFLite model (no TFL3 flatbuffer identifier)", todo)
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        sg = model.Subgraphs(0) if model.SubgraphsLength() else None
        if sg is None or not sg.InputsLength() or not sg.OutputsLength():
            raise ValueError("no subgraph with inputs and outputs")
        for i in range(sg.TensorsLength()):  # touches every tensor table: truncation shows here
            t = sg.Tensors(i)
            t.ShapeAsNumpy(), t.Type(), t.Name()
        for i in range(sg.OperatorsLength()):
            o = sg.Operators(i)
            if o.OpcodeIndex() >= model.OperatorCodesLength():
                raise ValueError(f"operator {i} has no operator code")
    except Exception as e:  # flatbuffers raises IndexError, struct.error, ... on corrupt bytes
        raise FarmError(f"{path} is a corrupt TFLite flatbuffer ({type(e).__name__}: {e})", todo) from None
    return buf


def _interpreter(path: Path, resolver: str = "BUILTIN_REF"):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType[resolver])
        it.allocate_tensors()
    except Exception as e:  # LiteRT raises ValueError / RuntimeError for models it rejects
        raise FarmError(f"LiteRT cannot load {path}: {error_line(e)}",
                        "check the model with LiteRT's own tools") from None
    return it


def _tensors(path: Path, which: str) -> list[TensorInfo]:
    """The first subgraph's "inputs" or "outputs", read from the flatbuffer: no interpreter, as
    preparing one runs LiteRT's kernels, which can crash on real models (they run isolated)."""
    import tflite

    sg = tflite.Model.GetRootAsModel(read_tflite(path), 0).Subgraphs(0)
    count, index = (sg.InputsLength, sg.Inputs) if which == "inputs" else (sg.OutputsLength, sg.Outputs)
    out = []
    for k in range(count()):
        t = sg.Tensors(index(k))
        name = t.Name().decode(errors="replace")
        if t.Type() not in _DTYPES:
            raise FarmError(f"{path}: {which[:-1]} {name!r} has TFLite tensor type {t.Type()}, "
                            f"which farm cannot feed or compare", "give the model numeric inputs and outputs")
        shape = tuple(t.Shape(j) for j in range(t.ShapeLength()))
        if min(shape, default=0) < 0:
            raise FarmError(f"{path}: {which[:-1]} {name!r} has a dynamic shape {list(shape)}",
                            "convert the model with fixed input shapes")
        out.append(TensorInfo(name, shape, _DTYPES[t.Type()]))
    return out


def tflite_inputs(path: Path) -> list[TensorInfo]:
    return _tensors(path, "inputs")


def run_litert(path: Path, feeds: list[dict[str, np.ndarray]], resolver: str = "BUILTIN_REF"
               ) -> list[list[np.ndarray]]:
    """Outputs of LiteRT for every input set (inputs in the model's order)."""
    it = _interpreter(path, resolver)
    outs = []
    try:
        for feed in feeds:
            for d, x in zip(it.get_input_details(), feed.values(), strict=True):
                it.set_tensor(d["index"], x)
            it.invoke()
            outs.append([it.get_tensor(d["index"]).copy() for d in it.get_output_details()])
    except Exception as e:  # shape / dtype mismatches of a suite's input spec
        raise FarmError(f"LiteRT cannot run {path}: {error_line(e)}",
                        "check the suite's input shape/dtype") from None
    return outs


def tflite_output_steps(path: Path) -> list[float | None]:
    """Integer outputs are compared in levels (step 1); float outputs have no known grid."""
    return [1.0 if np.issubdtype(np.dtype(t.dtype), np.integer) else None for t in _tensors(path, "outputs")]


@dataclass(frozen=True)
class LiteRTReference:
    feeds: list[dict[str, np.ndarray]]
    refs: list[list[np.ndarray]]  # LiteRT's reference kernels
    optimized: list[list[np.ndarray]] | None  # LiteRT's optimized builtin kernels (no delegate)
    steps: list[float | None]
    note: str | None = None  # set when refs are not the reference kernels' outputs, and why
    expected: list[list[np.ndarray]] | None = None  # outputs the input files came with


def litert_reference(path: Path, spec: InputSpec, log: Path, run: Callable = run_litert) -> LiteRTReference:
    """The input sets of a .tflite model (files or seeded noise) and LiteRT's outputs on them (`run`: run_litert or a
    stand-in with its signature), each set of kernels in its own process: the reference kernels
    abort (SIGABRT) on some real models, and then the optimized kernels are the reference, so labelled."""
    sets = input_sets(tflite_inputs(path), spec)
    feeds = sets.feeds
    optimized = run_isolated(run, path, feeds, "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
                             what=f"LiteRT's optimized kernels on {path.name}", log=log)
    try:
        refs = run_isolated(run, path, feeds, what=f"LiteRT's reference kernels on {path.name}", log=log)
    except Crashed as e:
        note = f"LiteRT optimized kernels (its reference kernels crash on this model: {e.cause})"
        return LiteRTReference(feeds, optimized, None, tflite_output_steps(path), note, sets.expected)
    return LiteRTReference(feeds, refs, optimized, tflite_output_steps(path), expected=sets.expected)


def with_litert_optimized(vs_ref: dict, vs_optimized: dict) -> dict:
    """Correctness metrics against LiteRT's reference kernels, with the exact share against its
    optimized kernels beside them."""
    return {**vs_ref, "reference": f"LiteRT (optimized kernels {vs_optimized['exact']:.2%})",
            "exact_litert_optimized": vs_optimized["exact"]}
