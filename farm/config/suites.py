"""Suite files (suites/*.yaml): which model, which inputs, which checks, on which devices."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path

from farm.config.schema import Node, given
from farm.config.yamlsrc import load_yaml
from farm.errors import ConfigError

DTYPE_BYTES = {"float32": 4, "float16": 2, "uint8": 1, "int8": 1, "int32": 4, "int64": 8}
MAX_INPUT_SETS = 10_000
MAX_INPUT_BYTES = 1 << 30  # all input sets of a suite together, checked before any is made
MAX_TIMEOUT = 7 * 24 * 3600.0  # a week: more is a typo, and overflows the clocks waiting on it


class Check(StrEnum):
    """The checks a suite plans on each device, in the order they run; the values are the
    check names in the results store."""

    COMPILE = "compile"
    CORRECTNESS = "correctness"
    LATENCY = "latency"
    LATENCY_FP32 = "latency-fp32"  # the float32 baseline's latency


@dataclass(frozen=True)
class ModelSpec:
    """Either a model built in code (`builtin`) or an ONNX file (`path`)."""

    builtin: str | None = None
    path: Path | None = None
    # file and line of `builtin:`, for the models stage, which alone knows the builders' names
    origin: tuple[str, int] | None = field(default=None, compare=False)

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
    files: tuple[Path, ...] = ()  # real input sets (.npy, .npz, test_data_set folders) instead of noise


@dataclass(frozen=True)
class CorrectnessSpec:
    max_lsb: float = 1.0  # largest allowed difference, in output quantization steps
    min_exact: float = 0.95  # share of output elements that must match exactly
    min_cosine: float = 0.999  # judged on outputs without a quantization grid (float outputs)
    min_top1: float = 1.0  # share of positions whose arg-max (last axis) agrees with the reference


@dataclass(frozen=True)
class LatencySpec:
    enabled: bool = True
    warmup: int = 1
    number: int = 1
    repeat: int = 20
    min_repeat_ms: int = 0
    emulated_repeat: int = 3  # an emulator's timing says little about hardware: fewer samples

    @property
    def calls(self) -> int:
        """Inferences one measurement runs: warm-up, then repeat × number timed ones."""
        return self.warmup + self.repeat * self.number


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

    def session(self, inferences: int, fp32: bool) -> float:
        """The most one device session can legitimately last: its steps' bounds, plus a minute for
        the farm's own work between them (judging, recording)."""
        steps = self.upload + (inferences + 1) * self.run + self.measure
        return 60.0 + steps * (2 if fp32 else 1)


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
    fp32_baseline_emulated: bool = False  # ... on emulated devices too (slow, emulator timing)

    def checks(self) -> list[Check]:
        """The checks a run of this suite records on each device, in order."""
        latency = self.latency.enabled
        return [Check.COMPILE, Check.CORRECTNESS] + ([Check.LATENCY] if latency else []) + \
            ([Check.LATENCY_FP32] if latency and self.fp32_baseline else [])


def _model(node: Node, base: Path) -> ModelSpec:
    builtin = node.get("builtin", str)
    path = node.get("path", str)
    node.done()
    if bool(builtin) == bool(path):
        raise node.error(None, "a model needs exactly one of 'builtin' or 'path'",
                         "write `builtin: NAME` (a model farm builds) or `path: FILE.onnx`")
    origin = (node.src.file, node.src.line(node.path + ("builtin",))) if builtin else None
    return ModelSpec(builtin=builtin, path=(base / path) if path else None, origin=origin)


def _inputs(node: Node | None, base: Path) -> InputSpec:
    if node is None:
        return InputSpec()
    shape = node.int_list("shape")
    files = tuple(base / f for f in node.str_list("files"))
    for k, f in enumerate(files):
        if not f.exists():
            raise node.src.error(node.path + ("files", k), f"input file {f} does not exist",
                                 "check the path (relative to the suite file)")
    spec = given(
        InputSpec,
        seed=node.number("seed", int, lo=0),
        count=node.number("count", int, lo=1, hi=MAX_INPUT_SETS),
        shape=tuple(shape) if shape else None,
        dtype=node.choice("dtype", list(DTYPE_BYTES)),
        low=node.get("low", float),
        high=node.get("high", float),
        files=files,
    )
    if spec.low >= spec.high:
        raise node.error("high", f"'high' ({spec.high}) must be above 'low' ({spec.low})",
                         "fix the input range")
    _check_input_bytes(node, spec)
    node.done()
    return spec


def _check_input_bytes(node: Node, spec: InputSpec) -> None:
    """The input sets of a given shape must fit in MAX_INPUT_BYTES; without `dtype:` the model's
    dtype is not known yet, so the widest is assumed."""
    if spec.shape is None:
        return
    item = DTYPE_BYTES[spec.dtype] if spec.dtype else max(DTYPE_BYTES.values())
    if spec.count * math.prod(spec.shape) * item > MAX_INPUT_BYTES:
        limit = f"{MAX_INPUT_BYTES / 2**30:g} GiB"
        widest = "" if spec.dtype else ", the widest dtype's, as none is given"
        raise node.error("shape", f"{spec.count} input set(s) of shape {list(spec.shape)} take more than "
                                  f"{limit} ({item} bytes an element{widest})",
                         f"use a smaller 'shape' or 'count': all inputs together must fit in {limit}")


def _correctness(node: Node | None) -> CorrectnessSpec:
    if node is None:
        return CorrectnessSpec()
    spec = given(
        CorrectnessSpec,
        max_lsb=node.number("max_lsb", float, lo=0),
        min_exact=node.number("min_exact", float, lo=0, hi=1),
        min_cosine=node.number("min_cosine", float, lo=-1, hi=1),
        min_top1=node.number("min_top1", float, lo=0, hi=1),
    )
    node.done()
    return spec


def _latency(node: Node | None) -> LatencySpec:
    if node is None:
        return LatencySpec()
    spec = given(
        LatencySpec,
        enabled=node.get("enabled", bool),
        warmup=node.number("warmup", int, lo=0),
        number=node.number("number", int, lo=1),
        repeat=node.number("repeat", int, lo=1),
        min_repeat_ms=node.number("min_repeat_ms", int, lo=0),
        emulated_repeat=node.number("emulated_repeat", int, lo=1),
    )
    node.done()
    return spec


def read_timeouts(node: Node | None) -> dict[str, float]:
    """The `timeouts:` mapping of a suite or a device: only the keys given."""
    if node is None:
        return {}
    out = {k: node.number(k, float, lo=0.1, hi=MAX_TIMEOUT) for k in TIMEOUT_KEYS if node.has(k)}
    for k in TIMEOUT_KEYS:
        node.get(k, float)  # mark as known for done()
    node.done()
    return out


def load_suite(path: str | Path) -> Suite:
    """Read and validate one suite file."""
    src = load_yaml(path)
    root = Node(src, (), src.data, "suite")
    name = root.get("name", str, Path(path).stem)
    suite = given(
        Suite,
        name=name,
        file=src.file,
        model=_model(root.child("model", "model", required=True), Path(path).resolve().parent),
        inputs=_inputs(root.child("inputs", "inputs"), Path(path).resolve().parent),
        correctness=_correctness(root.child("correctness", "correctness")),
        latency=_latency(root.child("latency", "latency")),
        devices=tuple(root.str_list("devices")) or None,
        timeouts=Timeouts(**read_timeouts(root.child("timeouts", "timeouts"))),
        fp32_baseline=root.get("fp32_baseline", bool),
        fp32_baseline_emulated=root.get("fp32_baseline_emulated", bool),
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
