"""Suite files (suites/*.yaml): which model, which inputs, which checks, on which devices."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from farm.config.schema import Node
from farm.config.yamlsrc import load_yaml
from farm.errors import ConfigError

DTYPES = ["float32", "float16", "uint8", "int8", "int32", "int64"]


@dataclass(frozen=True)
class ModelSpec:
    """Either a model built in code (`builtin`) or an ONNX file (`path`)."""

    builtin: str | None = None
    path: Path | None = None

    def describe(self) -> str:
        return self.builtin or str(self.path)


@dataclass(frozen=True)
class InputSpec:
    seed: int = 0
    count: int = 1
    shape: tuple[int, ...] | None = None  # None: taken from the model
    dtype: str | None = None
    low: float = -1.0
    high: float = 1.0


@dataclass(frozen=True)
class CorrectnessSpec:
    max_lsb: float = 1.0  # largest allowed difference, in output quantization steps
    min_exact: float = 0.95  # share of output elements that must match exactly
    min_cosine: float = 0.999
    min_top1: float = 1.0  # share of inputs whose arg-max agrees with the reference


@dataclass(frozen=True)
class LatencySpec:
    enabled: bool = True
    warmup: int = 1
    number: int = 1
    repeat: int = 20
    min_repeat_ms: int = 0


@dataclass(frozen=True)
class Timeouts:
    """Seconds each step may take before the device is declared hung (kind 'timeout')."""

    compile: float = 3600.0
    open: float = 300.0  # bring-up and waiting in the tracker's queue for a free device
    upload: float = 300.0
    run: float = 600.0  # one inference
    measure: float = 1800.0  # the whole latency measurement

    def merged(self, override: dict[str, float]) -> Timeouts:
        return replace(self, **override)


TIMEOUT_KEYS = [f.name for f in fields(Timeouts)]


@dataclass(frozen=True)
class Suite:
    name: str
    file: str
    model: ModelSpec
    inputs: InputSpec = field(default_factory=InputSpec)
    correctness: CorrectnessSpec = field(default_factory=CorrectnessSpec)
    latency: LatencySpec = field(default_factory=LatencySpec)
    devices: tuple[str, ...] = ("all",)
    timeouts: Timeouts = field(default_factory=Timeouts)
    fp32_baseline: bool = True  # also time the float32 network on the same device


def _model(node: Node, base: Path) -> ModelSpec:
    from farm.models.registry import BUILTINS  # the builders own the list of names

    builtin = node.get("builtin", str)
    path = node.get("path", str)
    node.done()
    if bool(builtin) == bool(path):
        raise node.error(None, "a model needs exactly one of 'builtin' or 'path'",
                         f"write `builtin: <{'|'.join(BUILTINS)}>` or `path: FILE.onnx`")
    if builtin and builtin not in BUILTINS:
        raise node.error("builtin", f"unknown builtin model '{builtin}'",
                         f"use one of {', '.join(BUILTINS)}, or `path:` for an ONNX file")
    return ModelSpec(builtin=builtin, path=(base / path) if path else None)


def _inputs(node: Node | None) -> InputSpec:
    if node is None:
        return InputSpec()
    shape = node.int_list("shape")
    spec = InputSpec(
        seed=node.number("seed", int, 0, lo=0),
        count=node.number("count", int, 1, lo=1),
        shape=tuple(shape) if shape else None,
        dtype=node.choice("dtype", DTYPES),
        low=node.get("low", float, -1.0),
        high=node.get("high", float, 1.0),
    )
    if spec.low >= spec.high:
        raise node.error("high", f"'high' ({spec.high}) must be above 'low' ({spec.low})",
                         "fix the input range")
    node.done()
    return spec


def _correctness(node: Node | None) -> CorrectnessSpec:
    if node is None:
        return CorrectnessSpec()
    spec = CorrectnessSpec(
        max_lsb=node.number("max_lsb", float, 1.0, lo=0),
        min_exact=node.number("min_exact", float, 0.95, lo=0, hi=1),
        min_cosine=node.number("min_cosine", float, 0.999, lo=-1, hi=1),
        min_top1=node.number("min_top1", float, 1.0, lo=0, hi=1),
    )
    node.done()
    return spec


def _latency(node: Node | None) -> LatencySpec:
    if node is None:
        return LatencySpec()
    spec = LatencySpec(
        enabled=node.get("enabled", bool, True),
        warmup=node.number("warmup", int, 1, lo=0),
        number=node.number("number", int, 1, lo=1),
        repeat=node.number("repeat", int, 20, lo=1),
        min_repeat_ms=node.number("min_repeat_ms", int, 0, lo=0),
    )
    node.done()
    return spec


def read_timeouts(node: Node | None) -> dict[str, float]:
    """The `timeouts:` mapping of a suite or a device: only the keys given."""
    if node is None:
        return {}
    out = {k: node.number(k, float, lo=0.1) for k in TIMEOUT_KEYS if node.has(k)}
    for k in TIMEOUT_KEYS:
        node.get(k, float)  # mark as known for done()
    node.done()
    return out


def load_suite(path: str | Path) -> Suite:
    """Read and validate one suite file."""
    src = load_yaml(path)
    root = Node(src, (), src.data, "suite")
    name = root.get("name", str, Path(path).stem)
    suite = Suite(
        name=name,
        file=src.file,
        model=_model(root.child("model", "model", required=True), Path(path).resolve().parent),
        inputs=_inputs(root.child("inputs", "inputs")),
        correctness=_correctness(root.child("correctness", "correctness")),
        latency=_latency(root.child("latency", "latency")),
        devices=tuple(root.str_list("devices", ["all"])) or ("all",),
        timeouts=Timeouts(**read_timeouts(root.child("timeouts", "timeouts"))),
        fp32_baseline=root.get("fp32_baseline", bool, True),
    )
    root.done()
    return suite


def find_suite(name_or_path: str, suites_dir: Path) -> Path:
    """`qresnet50` → suites/qresnet50.yaml; an existing file path is taken as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"suite file {p} does not exist", "check the path")
        return p
    candidate = suites_dir / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(f.stem for f in suites_dir.glob("*.yaml")) if suites_dir.is_dir() else []
    raise ConfigError(f"no suite named '{name_or_path}' in {suites_dir}",
                      f"use one of: {', '.join(known) or '(none)'}, or give a .yaml path")
