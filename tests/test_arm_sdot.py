"""aarch64 sdot kernels, compiled for the arm64-qemu target and run under real qemu through the
farm's tracker and RPC server: bit exact against numpy (uint8 activations shifted to int8 with the
correction folded in, int8 activations as they are, edge values, padding, odd channel counts), whole
int8 models equal to the host build, and sdot in the disassembly."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from farm.compile.build import compile_model
from farm.compile.schedules import Choice, Plan, target_features
from farm.compile.schedules.arm import SDOT_4x4, USDOT_4x4
from farm.compile.schedules.conv import ConvShape, shift_correction
from farm.compile.schedules.kernel import build, conv_module, reference_conv
from farm.config.suites import InputSpec
from farm.models.reference import make_inputs, model_inputs
from farm.platform.targets import export_fn, make_target
from farm.provision import arm64
from farm.transports.embedded import Farm
from tests.conftest import run_lib
from tests.qdq_graphs import QDQ, patterns

OBJDUMP = "aarch64-linux-gnu-objdump"
SHIFT = re.compile(r"\teor\t.*#0x80")
pytestmark = pytest.mark.skipif(shutil.which(arm64.QEMU) is None or shutil.which(OBJDUMP) is None,
                                reason=f"needs {arm64.QEMU_PACKAGE} and binutils-aarch64-linux-gnu")
# (in channels, out channels, size, kernel, stride, padding, data dtype)
CASES = [(3, 32, 17, 3, 2, 1, "uint8"), (16, 16, 14, 1, 1, 0, "uint8"), (20, 64, 9, 3, 1, 1, "uint8"),
         (20, 64, 9, 3, 1, 1, "int8"), (8, 12, 7, 3, 1, 0, "uint8"), (5, 8, 6, 3, 1, 2, "int8"),
         (4, 10, 5, 3, 1, 1, "uint8")]


@pytest.fixture(scope="module")
def arm(registry, tmp_path_factory):
    """(device, one qemu session) shared by the tests of this module."""
    arm64.provision()
    device = registry.get("arm64-qemu")
    data = tmp_path_factory.mktemp("arm-sdot")
    with Farm(data, data / "logs", [device]) as farm:
        farm.start(device)
        with farm.transport(device).open(120) as session:
            yield device, session


def _export(ex, device, path: Path) -> Path:
    ex.export_library(str(path), fcompile=export_fn(device))
    return path


def _disasm(lib: Path, symbol_part: str) -> str:
    """The disassembly of the functions whose name contains symbol_part (wrappers excluded)."""
    text = subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", str(lib)], capture_output=True,
                          text=True, check=True).stdout
    out, keep = [], False
    for line in text.splitlines():
        if line.endswith(">:"):
            keep = symbol_part in line and "__tvm_ffi_" not in line
        elif keep:
            out.append(line)
    return "\n".join(out)


def test_shift_identity_in_numpy():
    """Σ a·w = Σ (a − 128)·w + 128·Σ w over the full u8 × s8 range (the kernel's arithmetic)."""
    a = np.arange(256, dtype=np.int64).reshape(1, 256, 1, 1)
    w = np.stack([np.arange(-128, 128), np.full(256, -128), np.full(256, 127)]).astype(np.int8)
    w = w.reshape(3, 256, 1, 1)
    shifted = (a.astype(np.uint8) ^ 0x80).view(np.int8).astype(np.int64)
    want = reference_conv(a, w, 1, 0)
    np.testing.assert_array_equal(reference_conv(shifted, w, 1, 0) + shift_correction(w), want)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}-{c[6]}-s{c[4]}p{c[5]}" for c in CASES])
def test_sdot_conv_is_exact_on_qemu(arm, tmp_path, case):
    device, session = arm
    asm = _conv_on_qemu(session, device, make_target(device), case, tmp_path, SDOT_4x4)
    assert "\tsdot\t" in asm and "smull" not in asm and "smlal" not in asm
    assert bool(SHIFT.search(asm)) == (case[6] == "uint8")  # a ^ 0x80 while packing uint8 data


# (the qemu CPU model "max" has FEAT_I8MM)
@pytest.mark.parametrize("case,intrin", [(CASES[0], USDOT_4x4), (CASES[4], USDOT_4x4), (CASES[3], SDOT_4x4)],
                         ids=["u8-s2p1", "u8-oc12", "s8"])
def test_i8mm_target_takes_uint8_unshifted_with_usdot(arm, tmp_path, case, intrin):
    import tvm

    device, session = arm
    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76",
                                "mattr": ["+neon", "+dotprod", "+i8mm"], "num-cores": 1})
    asm = _conv_on_qemu(session, device, target, case, tmp_path, intrin)
    mnemonic = "usdot" if intrin == USDOT_4x4 else "sdot"
    assert f"\t{mnemonic}\t" in asm and not SHIFT.search(asm)  # no shift of the data


def _conv_on_qemu(session, device, target, case, tmp_path: Path, intrin: str) -> str:
    """Build the conv of `case` for `target`, check it uses `intrin` and is bit exact on qemu
    (edge values, the most negative weights); returns the conv kernel's disassembly."""
    ic, oc, size, k, stride, pad, dtype = case
    rng = np.random.default_rng(ic * 100 + oc)
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    x = rng.integers(lo, hi + 1, (1, ic, size, size)).astype(dtype)
    x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0] = lo, hi, 128 if dtype == "uint8" else 0  # edges
    w = rng.integers(-128, 128, (oc, ic, k, k)).astype(np.int8)
    w[0] = -128  # an output channel at the most negative weight: the largest correction
    ex, report = build(conv_module(list(x.shape), dtype, w, stride, pad, "int32"), target,
                       target_features(target), None)
    assert any(line.endswith(intrin) for line in report), report
    lib = _export(ex, device, tmp_path / "k.so")
    got = session.load(lib).run([x])[0]
    np.testing.assert_array_equal(got, reference_conv(x, w, stride, pad))
    return _disasm(lib, "conv2d_packed")


@pytest.mark.parametrize("choice", [Choice("oc4i", 16, 3, 4, SDOT_4x4), Choice("oc4i", 16, 6, 4, SDOT_4x4),
                                    Choice("oc", 8, 3, 4)], ids=["sdot-px3", "sdot-px6", "generic-px3"])
def test_conv_with_requantize_epilogue_on_qemu(arm, tmp_path, choice):
    """The uint8 epilogue over 3 (6) pixels: a 3-lane byte store that LLVM miscompiles on aarch64
    unless the schedule avoids it (cpu._vectorize_epilogue)."""
    device, session = arm
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (1, 20, 12, 12), dtype=np.uint8)
    w = rng.integers(-128, 128, (64, 20, 3, 3), dtype=np.int8)
    target = make_target(device)
    ex, report = build(conv_module(list(x.shape), "uint8", w, 1, 1, "int32", requantize=True), target,
                       target_features(target), choice)
    assert any(choice.describe() in line for line in report), report
    got = session.load(_export(ex, device, tmp_path / "k.so")).run([x])[0]
    want = np.clip((reference_conv(x, w, 1, 1) * (1 << 20)) >> 30, 0, 255).astype(np.uint8)
    assert np.ptp(want) > 100  # not saturated
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("m,k,n,dtype,i8mm", [((1,), 64, 40, "uint8", False), ((3,), 20, 16, "int8", False),
                                              ((2, 3), 8, 6, "uint8", False), ((2,), 16, 8, "uint8", True)])
def test_dense_as_conv_on_qemu(arm, tmp_path, m, k, n, dtype, i8mm):
    """[M, K] × constant [K, N] (+ bias) runs as a 1×1 sdot (usdot) conv, N padded to the tile."""
    import tvm
    from tvm import relax

    device, session = arm
    rng = np.random.default_rng(k * n)
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    x = rng.integers(lo, hi + 1, (*m, k)).astype(dtype)
    x[..., 0, :] = hi
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    bias = rng.integers(-1000, 1000, n).astype(np.int32)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType([*m, k], dtype))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(xv, relax.const(w), out_dtype="int32"))
            y = bb.emit_output(relax.op.add(y, relax.const(bias)))
        bb.emit_func_output(y)
    target = tvm.target.Target({**make_target(device).export(), "mattr": ["+neon", "+dotprod", "+i8mm"]}) \
        if i8mm else make_target(device)
    ex, report = build(bb.get(), target, target_features(target), None)
    lib = _export(ex, device, tmp_path / "d.so")
    np.testing.assert_array_equal(session.load(lib).run([x])[0],
                                  x.astype(np.int64) @ w.astype(np.int64) + bias)
    intrin, mnemonic = (USDOT_4x4, "usdot") if i8mm else (SDOT_4x4, "sdot")
    assert any(line.endswith(intrin) for line in report), report
    assert f"\t{mnemonic}\t" in _disasm(lib, "dense_packed")


def _padded_conv_model(zp: int) -> onnx.ModelProto:
    """Q(input) with zero point zp → conv 3×3 padded (the lowering pads with zp) → Q."""
    g = QDQ(seed=zp)
    y = g.node("Conv", [g.qdq("input", 0.05, zp), g.weight((8, 4, 3, 3), per_channel=True)],
               pads=[1, 1, 1, 1])
    y = g.qdq(y, 0.02, 128)
    return g.model([1, 4, 6, 6], y, [1, 8, 6, 6])


@pytest.mark.parametrize("zp", [0, 37, 255])
def test_padding_with_zero_point_matches_host(arm, registry, tmp_path, zp):
    """Inputs saturating to 0 and 255, activation zero point at both ends of the range: the
    padded border (zp, shifted with the data) is exact; the qemu result equals the host build."""
    device, session = arm
    path = tmp_path / f"pad{zp}.onnx"
    onnx.save(_padded_conv_model(zp), str(path))
    x = np.random.default_rng(zp).uniform(-20, 20, (1, 4, 6, 6)).astype(np.float32)  # saturates
    x[0, 0] = 0.0  # exactly the zero point
    feeds = [{"input": x}]
    _compare_with_host(session, registry, device, path, feeds, tmp_path)


@pytest.mark.parametrize("per_channel", [False, True])
def test_hand_written_patterns_match_host(arm, registry, tmp_path, per_channel):
    """relu / clip / per-channel weights / avg pool / weight zero point ≠ 0 (int8 weights plus the
    compensation term)."""
    device, session = arm
    path = tmp_path / "patterns.onnx"
    onnx.save(patterns(per_channel), str(path))
    feeds = make_inputs(model_inputs(onnx.load(str(path))), InputSpec(seed=7, count=2))
    lowering = _compare_with_host(session, registry, device, path, feeds, tmp_path)
    # the u8 × i8 convs with groups 1 (the weight zero point 3 one too) and the [1, 4, 4] × [4, 6]
    # matmul (6 columns padded to 8); the depthwise conv and the activation × activation matmul do not
    assert lowering["summary"]["kernels_with"]["sdot/udot"] == 3, lowering["kernels"]


def _compare_with_host(session, registry, device, path: Path, feeds, tmp_path: Path) -> dict:
    art = compile_model(path, device, tmp_path / "cache")
    host = run_lib(compile_model(path, registry.get("host"), tmp_path / "cache").lib, feeds)
    loaded = session.load(art.lib)
    for feed, want in zip(feeds, host, strict=True):
        for got, ref in zip(loaded.run(list(feed.values())), want, strict=True):
            np.testing.assert_array_equal(got, ref)
    lowering = art.meta["lowering"]
    assert "sdot/udot" in lowering["summary"]["instructions"], lowering["summary"]
    return lowering


def test_plan_uses_sdot_only_where_the_target_has_it():
    import tvm

    def feats(mcpu: str, mattr: list[str]):
        return target_features(tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                                  "mcpu": mcpu, "mattr": mattr}))

    def shape(dtype: str, wdtype: str, out: str, oc: int = 32, ow: int = 6) -> ConvShape:
        return ConvShape(1, 16, 8, 8, oc, 3, 3, 6, ow, (1, 1), dtype, wdtype, out)

    dot, plain = Plan(feats("cortex-a76", ["+neon", "+dotprod"])), Plan(feats("cortex-a53", ["+neon"]))
    assert dot.features.dotprod and not plain.features.dotprod and not dot.features.i8mm
    i8mm = Plan(feats("cortex-a76", ["+neon", "+dotprod", "+i8mm"]))
    assert i8mm.choose(shape("uint8", "int8", "int32")).intrin == USDOT_4x4
    assert i8mm.choose(shape("int8", "int8", "int32")).intrin == SDOT_4x4
    for dtype in ("uint8", "int8"):
        c = dot.choose(shape(dtype, "int8", "int32"))
        assert c.intrin == SDOT_4x4 and c.layout == "oc4i" and c.lanes == 4 and c.vo == 16
        assert plain.choose(shape(dtype, "int8", "int32")).intrin == ""  # generic template
    assert dot.choose(shape("uint8", "int8", "int32", oc=12)).vo == 4
    assert dot.choose(shape("uint8", "int8", "int32", oc=6)).vo == 4  # padded to 8 channels
    # register tiles: 16 channels × 6 pixels; a 7-wide row 8 × 7 rather than 16 × 1
    wide, narrow = (dot.choose(shape("uint8", "int8", "int32", oc=512, ow=ow)) for ow in (6, 7))
    assert (wide.vo, wide.px) == (16, 6) and (narrow.vo, narrow.px) == (8, 7)
    # int16 operands (weight zero point ≠ 0) and float keep the generic template
    for s in (shape("int16", "int16", "int32"), shape("float32", "float32", "float32")):
        c = dot.choose(s)
        assert c is None or c.intrin == "", s
