"""Real inputs from files, instead of seeded noise, and the outputs they are expected to give.

Each path is one input set: a .npy (a model with one input), a .npz (arrays named by the model's
inputs, or arr_0, arr_1, … in their order), or an ONNX `test_data_set_N` folder (input_K.pb, and
output_K.pb as expected outputs). A folder holding test_data_set_* folders gives all of them. Every
array is checked against the model's inputs (name, shape, dtype) before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from farm.config.suites import InputSpec
from farm.errors import FarmError
from farm.models.reference import MAX_INPUT_BYTES, TensorInfo, make_inputs


@dataclass(frozen=True)
class InputFiles:
    feeds: list[dict[str, np.ndarray]]
    expected: list[list[np.ndarray]] | None  # per set, when every set came with its outputs
    sources: list[str]  # the file or folder of each set


def input_sets(infos: list[TensorInfo], spec: InputSpec) -> InputFiles:
    """The suite's input sets: its files when it names some, else seeded noise."""
    if spec.files:
        return load_input_files(list(spec.files), infos)
    return InputFiles(make_inputs(infos, spec), None, [])


def load_input_files(paths: list[Path], infos: list[TensorInfo]) -> InputFiles:
    found = _bounded_sets(paths)
    sets = [(str(one), *_read(one, infos)) for one in found]
    feeds = [{info.name: _checked(a, info, src) for a, info in zip(arrays, infos, strict=True)}
             for src, arrays, _ in sets]
    expected = [outs for _, _, outs in sets] if all(outs is not None for _, _, outs in sets) else None
    return InputFiles(feeds, expected, [src for src, _, _ in sets])


def file_shapes(paths: list[Path], names: list[str]) -> dict[str, tuple[int, ...]]:
    """The shape of each input in the first input set: what a model with dynamic sizes is compiled
    for (load_input_files then holds every set to it)."""
    arrays, _ = _read(_bounded_sets(paths)[0], [TensorInfo(n, (), "") for n in names])
    return {n: tuple(a.shape) for n, a in zip(names, arrays, strict=True)}


def _bounded_sets(paths: list[Path]) -> list[Path]:
    """Every input set the paths name, once their files' total size is known to be within
    MAX_INPUT_BYTES (checked before anything is read)."""
    found = [one for path in paths for one in _expand(path)]
    files = [f for one in found for f in ([*one.glob("*.pb")] if one.is_dir() else [one])]
    if sum(f.stat().st_size for f in files) > MAX_INPUT_BYTES:
        raise FarmError(f"the input files take more than {MAX_INPUT_BYTES / 2**30:g} GiB",
                        "give fewer or smaller inputs")
    return found


def _expand(path: Path) -> list[Path]:
    if not path.exists():
        raise FarmError(f"input file {path} does not exist", "check the path")
    if path.is_dir() and not list(path.glob("input_*.pb")):
        found = sorted(path.glob("test_data_set_*"), key=lambda p: p.name)
        if not found:
            raise FarmError(f"{path} holds neither input_*.pb files nor test_data_set_* folders",
                            "give .npy/.npz files or ONNX test_data_set folders")
        return found
    return [path]


def _read(path: Path, infos: list[TensorInfo]) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """The arrays of one input set, in the model's input order, and its expected outputs."""
    try:
        if path.is_dir():
            return _pbs(path, "input", infos), _pbs(path, "output", None) or None
        if path.suffix == ".npy":
            if len(infos) != 1:
                raise FarmError(f"{path}: a .npy holds one array, the model takes {len(infos)} inputs",
                                "give an .npz with one array per input")
            return [np.load(path, allow_pickle=False)], None
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = [i.name for i in infos] if all(i.name in z for i in infos) else \
                    [f"arr_{k}" for k in range(len(infos))]
                missing = [n for n in names if n not in z]
                if missing:
                    raise FarmError(f"{path} has no array {missing[0]!r} (it has {', '.join(z.files) or 'none'})",
                                    f"name the arrays {', '.join(i.name for i in infos)}")
                return [z[n] for n in names], None
    except (OSError, ValueError, DecodeError) as e:  # numpy and protobuf on unreadable or corrupt files
        raise FarmError(f"{path} cannot be read ({e})", "give .npy/.npz files or test_data_set folders") from None
    raise FarmError(f"{path} is not a .npy, .npz or test_data_set folder", "give one of those")


def _pbs(folder: Path, kind: str, infos: list[TensorInfo] | None) -> list[np.ndarray]:
    from onnx import TensorProto, numpy_helper

    files = sorted(folder.glob(f"{kind}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    arrays = []
    for f in files:
        t = TensorProto()
        t.ParseFromString(f.read_bytes())
        arrays.append(numpy_helper.to_array(t))
    if infos is not None and len(arrays) != len(infos):
        raise FarmError(f"{folder} has {len(arrays)} input_*.pb files, the model takes {len(infos)} inputs",
                        "give a test_data_set made for this model")
    return arrays


def _checked(a: np.ndarray, info: TensorInfo, source: str) -> np.ndarray:
    if tuple(a.shape) != tuple(info.shape) or a.dtype.name != info.dtype:
        raise FarmError(f"{source}: input '{info.name}' is {a.dtype.name}{list(a.shape)}, the model takes "
                        f"{info.dtype}{list(info.shape)}", "give arrays of the model's input shapes and types")
    return a
