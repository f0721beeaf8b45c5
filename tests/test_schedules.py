"""Every conv kernel template (generic fp32, generic int8, AVX512-VNNI tensorized) against numpy:
bit exact for integers; the schedule report; tuned records."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from farm.compile.schedules import Choice, Plan, target_features
from farm.compile.schedules.kernel import build, conv_module, reference_conv
from farm.compile.schedules.records import load_choices, record_path, save_choices
from farm.errors import FarmError
from farm.platform.host import host_info

HAS_VNNI = "avx512_vnni" in host_info().features
# (in channels, out channels, size, kernel, stride, padding): odd channel counts, strides, padding
CASES = [(3, 32, 17, 3, 2, 1), (16, 16, 14, 1, 1, 0), (20, 64, 9, 3, 1, 1)]


def _target(mcpu: str, cores: int = 1):
    import tvm

    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": cores})


def _run(ex, x: np.ndarray) -> np.ndarray:
    import tvm
    from tvm import relax

    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _check(mcpu: str, dtype: str, case, cores: int = 1, expect: str = "") -> list[str]:
    ic, oc, size, k, stride, pad = case
    rng = np.random.default_rng(ic * 1000 + oc)
    if dtype == "int8":  # full-range weights: a saturating kernel would fail here
        x = rng.integers(0, 256, (1, ic, size, size), dtype=np.uint8)
        w = rng.integers(-128, 128, (oc, ic, k, k), dtype=np.int8)
        out = "int32"
    else:
        x = rng.standard_normal((1, ic, size, size)).astype(np.float32)
        w = rng.standard_normal((oc, ic, k, k)).astype(np.float32)
        out = "float32"
    target = _target(mcpu, cores)
    mod = conv_module(list(x.shape), str(x.dtype), w, stride, pad, out)
    ex, report = build(mod, target, target_features(target), None)
    got, want = _run(ex, x), reference_conv(x, w, stride, pad)
    if dtype == "int8":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    assert any(expect in line for line in report), report
    return report


@pytest.mark.parametrize("case", CASES)
def test_generic_fp32_conv(case):
    _check("haswell", "float32", case, expect="oc vo=")


@pytest.mark.parametrize("case", CASES)
def test_generic_int8_conv_is_exact(case):
    _check("x86-64", "int8", case, expect="oc vo=")  # SSE2 only: no dot-product template


@pytest.mark.parametrize("case", CASES)
def test_avx2_int8_conv_is_exact(case):
    _check("haswell", "int8", case, expect="farm_dot_8x2_i16_avx2")


@pytest.mark.skipif(not HAS_VNNI, reason="host has no AVX512-VNNI")
@pytest.mark.parametrize("case", CASES)
def test_vnni_conv_is_exact(case):
    _check("znver4" if "AMD" in host_info().cpu_model else "cascadelake", "int8", case,
           expect="farm_dot_16x4_vnni")


@pytest.mark.skipif(not HAS_VNNI, reason="host has no AVX512-VNNI")
@pytest.mark.skipif(not HAS_VNNI, reason="host has no AVX512-VNNI")
def test_vnni_on_two_cores_is_exact():
    _check("znver4", "int8", (16, 64, 19, 3, 1, 1), cores=2, expect="farm_dot_16x4_vnni")


@pytest.mark.parametrize("mcpu,instruction", [("znver4", "vpdpbusd"), ("haswell", "vpmaddwd")])
def test_dot_product_instructions_in_disassembly(tmp_path, mcpu, instruction):
    if shutil.which("objdump") is None:
        pytest.skip("objdump not installed")
    ic, oc, size, k, stride, pad = CASES[2]
    w = np.ones((oc, ic, k, k), np.int8)
    target = _target(mcpu)
    ex, _ = build(conv_module([1, ic, size, size], "uint8", w, stride, pad, "int32"), target,
                  target_features(target), None)
    ex.export_library(str(tmp_path / "k.so"))
    asm = subprocess.run(["objdump", "-d", str(tmp_path / "k.so")], capture_output=True, text=True).stdout
    assert instruction in asm


def test_chosen_tiles_are_used_and_unknown_kernels_reported():
    """A tuned choice reaches the kernel; a grouped conv is left alone and says so."""
    import tvm
    from tvm import relax

    target = _target("haswell")
    feats = target_features(target)
    ic, oc, size = 8, 16, 10
    choice = Choice("oc", 16, 5, 8)
    x = np.random.default_rng(1).standard_normal((1, ic, size, size)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((oc, ic, 3, 3)).astype(np.float32)
    ex, report = build(conv_module([1, ic, size, size], "float32", w, 1, 1, "float32"), target, feats, choice)
    assert any("oc vo=16 px=5 lanes=8" in r for r in report), report
    np.testing.assert_allclose(_run(ex, x), reference_conv(x, w, 1, 1), rtol=1e-4, atol=1e-3)

    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType([1, ic, size, size], "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(xv, relax.const(w[:, :4]), groups=2))
        bb.emit_func_output(y)
    _, report = build(bb.get(), target, feats, None)
    assert any("skipped: grouped conv" in r for r in report), report
    assert tvm


def test_hexagon_gets_no_cpu_template():
    import tvm

    feats = target_features(tvm.target.Target({"tag": "qcom/hexagon-v68"}))
    from farm.compile.schedules.conv import ConvShape

    shape = ConvShape(1, 16, 8, 8, 16, 3, 3, 6, 6, (1, 1), "uint8", "int8", "int32")
    assert Plan(feats).choose(shape) is None


def test_tuned_records_roundtrip_and_corrupt_file(tmp_path):
    target = {"kind": "llvm", "mcpu": "znver4", "num-cores": 1}
    path = record_path(target, "m", root=tmp_path)
    assert load_choices(path) == {}
    c = Choice("oc4i", 32, 7, 16, "farm_dot_16x4_vnni")
    save_choices(path, {"k1": {"choice": c.to_json(), "ms": 1.5}})
    assert load_choices(path) == {"k1": c}
    assert json.loads(path.read_text())["kernels"]["k1"]["ms"] == 1.5
    path.write_text("{not json")
    with pytest.raises(FarmError, match="unreadable"):
        load_choices(path)


def test_candidates_start_with_the_default_and_fit_the_shape():
    from farm.compile.schedules.conv import ConvShape
    from farm.run.tune import candidates

    feats = target_features(_target("haswell"))
    shape = ConvShape(1, 64, 14, 14, 48, 3, 3, 14, 14, (1, 1), "float32", "float32", "float32")
    cands = candidates(Plan(feats), shape)
    assert cands[0] == Plan(feats).default(shape)
    assert len(set(cands)) == len(cands) > 3
    assert all(shape.oc % c.vo == 0 and shape.ow % c.px == 0 and c.vo % c.lanes == 0 for c in cands)


def test_tune_measures_the_built_kernels_on_the_device_and_resumes(tmp_path, registry):
    """Through the farm's tracker and RPC server: tune measures each conv in the layout the
    model's build gives it (channel-blocked in and out on VNNI / AVX2), a second tune continues
    with new candidates, the build then compiles exactly the measured kernels with the chosen
    tiles, and a record of another version of the model is named, not used."""
    import tvm
    from tvm import relax

    from farm.compile.build import import_onnx
    from farm.compile.int8.lower import lower_int8
    from farm.compile.schedules import apply_schedules
    from farm.models.registry import build_builtin
    from farm.platform.targets import make_target, target_dict
    from farm.run.tune import tune

    model = build_builtin("tinyconv", tmp_path / "models").path
    device = registry.get("host")
    root = tmp_path / "tuned"
    stale = record_path(target_dict(device), "tinyconv-0123456789abcdef-int8", root)
    save_choices(stale, {})
    lines: list[str] = []
    path = tune(model, device, 3, tmp_path, lines.append, root=root)
    first = json.loads(path.read_text())["kernels"]
    assert sum(len(k["tried"]) for k in first.values()) == 3
    tune(model, device, 3, tmp_path, lines.append, root=root)
    second = json.loads(path.read_text())["kernels"]
    assert sum(len(k["tried"]) for k in second.values()) == 6
    assert any(str(stale) in line and "not used" in line for line in lines)
    assert any("ms" in line for line in lines)
    best = load_choices(path)
    assert best and all(isinstance(c, Choice) for c in best.values())
    target = make_target(device)
    mod, _ = lower_int8(import_onnx(model))
    scheduled, schedule, report = apply_schedules(mod, target, best)
    tvm.compile(scheduled, target, relax_pipeline=tvm.transform.Sequential(
        [relax.get_pipeline("zero"), schedule, relax.get_pipeline("default_build")]))
    kernels = [line + " " for line in report if line.startswith("fused_conv2d_packed")]
    for key, entry in second.items():  # the tuned choice, in the measured layout
        c = best[key]
        want = f"{key}: {c.describe()}" + ("" if entry["layout"] == "nchw" else f" {entry['layout']}")
        assert want in report, (want, report)
        assert any(f"vo={c.vo} px={c.px} " in line for line in kernels), (c, kernels)
    if target_features(target).avx2:  # blocked activations: the residual convs read blocked data
        assert any(e["layout"].endswith("in+out") for e in second.values()), second


def test_records_of_other_model_versions_are_found_and_shipped_records_are_current(tmp_path):
    from farm.compile.schedules.records import TUNED_DIR, other_versions
    from farm.models.registry import BUILTINS, _recipe_hash

    target = {"kind": "llvm", "mcpu": "znver4"}
    path = record_path(target, "m-0123456789abcdef-int8", root=tmp_path)
    old = record_path(target, "m-fedcba9876543210-int8", root=tmp_path)
    other_model = record_path(target, "mm-fedcba9876543210-int8", root=tmp_path)
    for p in (old, other_model):
        save_choices(p, {})
    assert other_versions(path) == [old]
    assert other_versions(record_path(target, "custom", root=tmp_path)) == []
    current = {f"{n}-{_recipe_hash(n)}-int8" for n in BUILTINS}
    shipped = sorted(TUNED_DIR.glob("*/*.json"))
    stale = [p for p in shipped if p.stem not in current]
    assert not stale, f"tuned records for models that changed (run `farm tune` again): {stale}"


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_matmul_schedule(dtype):
    """[1, K] × constant [K, N] + epilogue: scheduled (int8: as a 1×1 conv on the dot-product
    template, row_dense), exact for integers."""
    from tvm import relax

    rng = np.random.default_rng(3)
    k, n = 1024, 1024  # enough work to run in parallel
    if dtype == "int8":
        x = rng.integers(0, 256, (1, k), dtype=np.uint8)
        w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    else:
        x = rng.standard_normal((1, k)).astype(np.float32)
        w = rng.standard_normal((k, n)).astype(np.float32)
    out = "int32" if dtype == "int8" else "float32"
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType([1, k], str(x.dtype)))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(xv, relax.const(w), out_dtype=out))
            y = bb.emit_output(relax.op.add(y, relax.const(np.ones(n, out))))
        bb.emit_func_output(y)
    target = _target("haswell", 2)
    ex, report = build(bb.get(), target, target_features(target), None)
    if dtype == "int8":
        assert any(r.endswith(f"farm_dot_8x2_i16_avx2 (dense 1x{k}x{n})") for r in report), report
    else:
        assert any("matmul lanes=8" in r for r in report), report
    want = x.astype(np.float64) @ w.astype(np.float64) + 1
    if dtype == "int8":
        np.testing.assert_array_equal(_run(ex, x), want.astype(np.int64))
    else:
        np.testing.assert_allclose(_run(ex, x), want, rtol=1e-4, atol=1e-3)


def test_conv_with_requantize_epilogue_is_exact():
    """The epilogue fused into the tile (int64 multiply, shift, clip, cast) stays exact."""
    ic, oc, size, k, stride, pad = CASES[2]
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (1, ic, size, size), dtype=np.uint8)
    w = rng.integers(-128, 128, (oc, ic, k, k), dtype=np.int8)
    target = _target("haswell")
    ex, report = build(conv_module(list(x.shape), "uint8", w, stride, pad, "int32", requantize=True),
                       target, target_features(target), None)
    want = np.clip((reference_conv(x, w, stride, pad) * (1 << 20)) >> 30, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(_run(ex, x), want)
    assert any("farm_dot_8x2_i16_avx2" in r for r in report), report


@pytest.mark.skipif("avx2" not in host_info().features, reason="host has no AVX2")
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_avx2_blocked_conv_is_exact(dtype):
    """The AVX2 conv on 8-channel-blocked data (widened to int16 pairs in the kernel, vpmaddwd)
    with full-range weights, strided, blocked in and out: bit exact, tuned tiles included."""
    from farm.compile.schedules.conv import ConvShape
    from farm.compile.schedules.kernel import packed_conv_module

    ic, oc, size, k, stride = 24, 48, 11, 3, 2
    o = (size - k) // stride + 1
    rng = np.random.default_rng(7)
    lo, hi = (0, 256) if dtype == "uint8" else (-128, 128)
    x = rng.integers(lo, hi, (1, ic, size, size)).astype(dtype)
    w = rng.integers(-128, 128, (oc, ic, k, k), dtype=np.int8)
    target = _target("haswell")
    shape = ConvShape(1, ic, size, size, oc, k, k, o, o, (stride, stride), dtype, "int8", "int32")
    want = np.clip((reference_conv(x, w, stride, 0) * (1 << 20)) >> 30, 0, 255).astype(np.uint8)
    plan = Plan(target_features(target))
    for choice in (plan.default(shape), Choice("oc2i", 8, 1, 8, "farm_dot_8x2_i16_avx2")):
        ex, report = build(packed_conv_module(shape, w, choice, 0, 8, 8), target,
                           target_features(target), choice)
        got = _run(ex, np.ascontiguousarray(x.reshape(1, ic // 8, 8, size, size).transpose(0, 1, 3, 4, 2)))
        np.testing.assert_array_equal(got.transpose(0, 1, 4, 2, 3).reshape(1, oc, o, o), want)
        assert any(r.endswith(f"vo={choice.vo} px={choice.px} farm_dot_8x2_i16_avx2") for r in report), report


@pytest.mark.parametrize("mcpu", [
    pytest.param("znver4", marks=pytest.mark.skipif(not HAS_VNNI, reason="host has no AVX512-VNNI")),
    pytest.param("haswell", marks=pytest.mark.skipif("avx2" not in host_info().features,
                                                     reason="host has no AVX2"))])
@pytest.mark.parametrize("name", ["tinyconv", "tinymobilenet"])
def test_channel_blocked_model_equals_unscheduled_build(name, mcpu, tmp_path):
    """A lowered int8 model with channel-blocked activations between its dot-product convs
    (16-channel blocks with VNNI, 8-channel blocks with AVX2 vpmaddwd; blocked
    in and out, blocked out only, NCHW regained before max pool / average pool / grouped convs,
    the residual add on blocked operands) computes bit for bit what TVM's own unscheduled
    lowering of the same module computes; so do the scheduled kernels of injective ops."""
    import tvm
    from tvm import relax

    from farm.compile.build import import_onnx
    from farm.compile.int8.lower import lower_int8
    from farm.compile.schedules import apply_schedules
    from farm.models.registry import build_builtin

    mod, _ = lower_int8(import_onnx(build_builtin(name, tmp_path).path))
    target = _target(mcpu)
    scheduled, schedule, report = apply_schedules(mod, target, {})
    ex = tvm.compile(scheduled, target, relax_pipeline=tvm.transform.Sequential(
        [relax.get_pipeline("zero"), schedule, relax.get_pipeline("default_build")]))
    plain = tvm.compile(mod, "llvm", relax_pipeline=tvm.transform.Sequential(
        [relax.get_pipeline("zero"), relax.get_pipeline("default_build")]))
    vms = [relax.VirtualMachine(e, tvm.cpu()) for e in (ex, plain)]
    for scale in (1, 2, 6):  # large inputs saturate: where integer overflow would show
        x = np.random.default_rng(scale).standard_normal((1, 3, 32, 32)).astype(np.float32) * scale
        got, want = (vm["main"](tvm.runtime.tensor(x)).numpy() for vm in vms)
        np.testing.assert_array_equal(got, want)
    block, intrin = (16, "farm_dot_16x4_vnni") if mcpu == "znver4" else (8, "farm_dot_8x2_i16_avx2")
    # the kernels of injective ops (requantize chains, quantized adds) have their intermediates inlined
    assert any(": elementwise: " in r for r in report), report
    blocked = [r for r in report if f"blocked c{block}" in r]
    assert blocked and any(r.endswith(intrin) for r in report), report
    if name == "tinyconv":  # stem (NCHW in), the residual branch (blocked in) and the last conv
        assert sum("in+out" in r for r in blocked) >= 2 and any(r.endswith(" out") for r in blocked)
