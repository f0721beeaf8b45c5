"""The artifact cache: a rerun compiles nothing; a corrupt entry is detected and rebuilt."""

from __future__ import annotations

from pathlib import Path

from farm.compile.build import compile_model
from farm.compile.cache import cache_key
from farm.config.devices import load_devices
from farm.models.registry import build_builtin
from tests.conftest import HOST_ONLY


def test_rerun_hits_cache_and_corruption_rebuilds(write, tmp_path, shared_data):
    device = load_devices(write("devices.yaml", HOST_ONLY)).devices[0]
    model = build_builtin("tinyconv", shared_data / "models")
    cache = tmp_path / "cache"
    first = compile_model(model.path, device, cache)
    assert not first.cached and first.lib.exists()
    second = compile_model(model.path, device, cache)
    assert second.cached and second.key == first.key and second.lib == first.lib
    first.lib.write_bytes(b"not a library")  # corrupt the entry
    third = compile_model(model.path, device, cache)
    assert not third.cached and third.lib.read_bytes() != b"not a library"


def test_key_depends_on_model_target_and_options(shared_data):
    model = build_builtin("tinyconv", shared_data / "models")
    other = build_builtin("tinyconv-perchannel", shared_data / "models")
    base = cache_key(model.path, {"kind": "llvm"}, {})
    assert base == cache_key(model.path, {"kind": "llvm"}, {})
    assert base != cache_key(other.path, {"kind": "llvm"}, {})
    assert base != cache_key(model.path, {"kind": "llvm", "mcpu": "znver3"}, {})
    assert base != cache_key(model.path, {"kind": "llvm"}, {"x": 1})


def test_builtin_models_are_deterministic(tmp_path):
    a = build_builtin("tinyconv", tmp_path / "a")
    b = build_builtin("tinyconv", tmp_path / "b")
    assert a.path.read_bytes() == b.path.read_bytes()


def test_artifact_paths_are_absolute_for_a_relative_cache(write, tmp_path, shared_data, monkeypatch):
    """`--data-dir .farm` is relative; the artifact is run from other directories (the Hexagon
    simulator runs in a scratch directory), so its path must not be."""
    device = load_devices(write("devices.yaml", HOST_ONLY)).devices[0]
    model = build_builtin("tinyconv", shared_data / "models")
    monkeypatch.chdir(tmp_path)
    art = compile_model(model.path, device, Path("cache"))
    assert art.lib.is_absolute() and art.lib.exists()


def test_a_damaged_builtin_model_is_built_again(tmp_path):
    """A cached builtin model whose bytes changed since it was built (truncated, overwritten) is
    rebuilt rather than handed to ONNX Runtime and TVM; an intact one is reused as it is."""
    from farm.models.registry import build_builtin, load_onnx

    files = build_builtin("tinyconv", tmp_path)
    good = files.path.read_bytes()
    mtime = files.path.stat().st_mtime_ns
    assert build_builtin("tinyconv", tmp_path).path.stat().st_mtime_ns == mtime  # reused
    files.path.write_bytes(good[: len(good) // 2])
    again = build_builtin("tinyconv", tmp_path)
    assert len(again.path.read_bytes()) == len(good)  # whole again
    load_onnx(again.path)
    files.fp32_path.write_bytes(b"not onnx")
    load_onnx(build_builtin("tinyconv", tmp_path).fp32_path)
