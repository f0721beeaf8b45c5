"""The lowering report: instruction families per kernel from real disassembly (x86 host build and
an aarch64 cross build), assembly text (Hexagon), and honest errors."""

from __future__ import annotations

import pytest

from farm.compile import lowering_report as lr
from farm.compile.build import compile_model
from farm.models.registry import build_builtin
from farm.report.lowering import render, summary_cell

X86_TEXT = """
0000000000001000 <fused_conv2d_add_compute_>:
    1000:\tvpdpbusd %xmm1,%xmm2,%xmm3
    1004:\tvpmaddwd %ymm1,%ymm2,%ymm3
    1008:\tvpdpbusd %zmm1,%zmm2,%zmm3

0000000000002000 <fused_matmul_compute_>:
    2000:\tvfmadd231ps %ymm1,%ymm2,%ymm3
"""

ARM_TEXT = """
0000000000001000 <fused_conv2d_packed_add_compute_>:
    1000:\tsdot\tv24.4s, v13.16b, v1.16b
    1004:\tudot\tv2.4s, v3.16b, v4.4b[1]
    1008:\tusdot\tv2.4s, v3.16b, v4.16b
    100c:\tsmull\tv1.2d, v2.2s, v3.2s

0000000000002000 <fused_dense_packed_compute_>:
    2000:\tsmmla\tv0.4s, v1.16b, v2.16b
    2004:\tummla\tv0.4s, v1.16b, v2.16b
"""

HEXAGON_ASM = """
\t.globl fused_conv2d_cast_compute_
fused_conv2d_cast_compute_:
\t{ v1:0.w += vrmpy(v2:3.ub,r4.b,#0) }
\t{ r0 = add(r0,#1) }
other_fn:
\t{ v5.w = vmpyie(v1.w,v2.uh) }
"""


def test_counts_per_symbol_from_objdump_text():
    counts = lr._count(X86_TEXT, "x86", r"^[0-9a-f]+ <([^>]+)>:")
    assert counts["fused_conv2d_add_compute_"] == {"vpdpbusd": 2, "vpmaddwd": 1}
    assert counts["fused_matmul_compute_"] == {"float-fma": 1}


def test_arm_dot_product_families():
    counts = lr._count(ARM_TEXT, "arm", r"^[0-9a-f]+ <([^>]+)>:")
    assert counts["fused_conv2d_packed_add_compute_"] == {"sdot/udot": 3, "smull/smlal": 1}
    assert counts["fused_dense_packed_compute_"] == {"smmla/ummla": 2}


def test_hexagon_assembly_text(tmp_path):
    asm = tmp_path / "model.s"
    asm.write_text(HEXAGON_ASM)
    counts = lr.disassemble(asm, "hexagon")
    assert counts["fused_conv2d_cast_compute_"] == {"vrmpy": 1}
    report = lr.build_report([{"name": "c", "op": "conv2d", "inputs": ["uint8", "int8"],
                               "out": "int32", "compute": "int8"}], asm, "hexagon")
    assert list(report["kernels"]) == ["fused_conv2d_cast_compute_"]
    assert summary_cell(report["summary"]) == "1/1 ops int8, vrmpy in 1/1 kernels"


@pytest.fixture(scope="module")
def tinyconv(work):
    return build_builtin("tinyconv", work / "models").path


def test_aarch64_cross_compiled_library(tinyconv, registry, work):
    art = compile_model(tinyconv, registry.get("arm64-qemu"), work / "cache")
    rep = art.meta["lowering"]
    assert rep["family"] == "arm" and "disassembly_error" not in rep
    assert len(rep["kernels"]) == 5  # 4 conv kernels + 1 dense, wrappers excluded
    assert rep["summary"]["int8_ops"] == rep["summary"]["ops"] == 5
    # whatever LLVM emitted is named from the arm table, never from the x86 one
    assert set(rep["summary"]["instructions"]) <= {n for n, _ in lr.FAMILIES["arm"]}
    assert "arm" in render(rep) and "kernel fused_conv2d" in render(rep)
    # cortex-a76 +dotprod: every conv and the dense run on sdot (schedules/arm.py)
    assert all("sdot/udot" in counts for counts in rep["kernels"].values()), rep["kernels"]
    assert summary_cell(rep["summary"]).startswith("5/5 ops int8, sdot/udot in 5/5 kernels")


def test_avx512_vnni_target_shows_vpdpbusd(tinyconv, registry, work):
    art = compile_model(tinyconv, registry.get("x86-avx512-vnni"), work / "cache")
    summary = art.meta["lowering"]["summary"]
    assert "vpdpbusd" in summary["instructions"]
    assert summary_cell(summary).startswith("5/5 ops int8, vpdpbusd in ")


def test_missing_disassembler_is_recorded_not_raised(tinyconv, registry, work, monkeypatch):
    art = compile_model(tinyconv, registry.get("host"), work / "cache")
    monkeypatch.setitem(lr.DISASSEMBLERS, "x86", ["no-such-objdump-xyz", "-d"])
    rep = lr.build_report([], art.lib, "x86")
    assert "no-such-objdump-xyz is not installed" in rep["disassembly_error"]
    assert rep["kernels"] == {} and summary_cell(rep["summary"]) == ""


def test_unknown_family_is_recorded(tmp_path):
    lib = tmp_path / "x.so"
    lib.write_bytes(b"")
    rep = lr.build_report([], lib, "riscv")
    assert "no disassembler for target family 'riscv'" in rep["disassembly_error"]


def test_fallback_shows_in_summary():
    ops = [{"name": "a", "op": "conv2d", "inputs": ["float32", "float32"], "out": "float32",
            "compute": "float32", "fallback": "left in float (x)"},
           {"name": "b", "op": "dense", "inputs": ["uint8", "int8"], "out": "int32", "compute": "int8"}]
    s = lr.summarize({"family": "x86", "ops": ops, "kernels": {"k": {"vpmaddwd": 3}}})
    assert s["int8_ops"] == 1 and s["ops"] == 2
    assert s["fallbacks"] == ["a (conv2d, float32): left in float (x)"]
    assert summary_cell(s) == "1/2 ops int8, vpmaddwd in 1/1 kernels"


def test_hexagon_object_with_hvx(tmp_path):
    """A real Hexagon object (Debian clang 14) disassembled with HVX decoding on."""
    import shutil
    import subprocess

    if shutil.which("clang-14") is None:
        pytest.skip("clang-14 not installed")
    src = tmp_path / "k.c"
    src.write_text("typedef int v32 __attribute__((vector_size(128)));\n"
                   "v32 fused_conv2d_cast_compute_(v32 acc, v32 a, int b)"
                   " { return __builtin_HEXAGON_V6_vrmpybus_acc_128B(acc, a, b); }\n")
    obj = tmp_path / "k.o"
    subprocess.run(["clang-14", "--target=hexagon-unknown-linux-musl", "-mcpu=hexagonv68", "-mhvx",
                    "-mhvx-length=128b", "-O2", "-c", str(src), "-o", str(obj)], check=True)
    assert lr.disassemble(obj, "hexagon")["fused_conv2d_cast_compute_"] == {"vrmpy": 1}


def test_float_ops_are_counted_per_op_class_in_the_cell():
    report = {"family": "x86", "ops": [{"name": "b", "op": "dense", "inputs": ["uint8", "int8"], "out": "int32",
                                        "compute": "int8"}], "kernels": {},
              "float_ops": {"q1": "no integer form for nn.softmax", "q2": "mean input is not a dequantized tensor",
                            "q3": "mean input is not a dequantized tensor"},
              "float_classes": {"mean": 2, "softmax": 1}}
    cell = summary_cell(lr.summarize(report))
    assert cell.endswith("3 other ops float (2 mean, 1 softmax)"), cell
