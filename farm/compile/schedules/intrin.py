"""Dot-product tensor intrinsics of our own, registered once per process.

- x86 AVX512-VNNI: TVM's `dot_16x4_vnni` passes int32x16 operands to `llvm.x86.avx512.vpdpbusd.512`,
  which LLVM 22 declares with <64 x i8> operands ("Call parameter type does not match"); ours
  reinterprets them to uint8x64 / int8x64.
It computes C[16] (the local accumulator tile) int32 += sum_k A[4] u8 · B[16, 4] i8 (the TVM x86 description).
- x86 AVX2, exact: C[8] int32 += sum_k A[2] i16 · B[8, 2] i16 with one `vpmaddwd` (data and
  weights widened to int16 when packed). The faster `vpmaddubsw` (u8×i8 pairs) saturates its int16
  pair sums for full-range int8 weights, so it is not used: results stay bit exact for any weights.
"""

from __future__ import annotations

import functools

VNNI_16x4 = "farm_dot_16x4_vnni"
AVX2_8x2 = "farm_dot_8x2_i16_avx2"


def dot_desc(lanes: int, k: int = 4, a_dtype: str = "uint8", b_dtype: str = "int8"):
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((k,), a_dtype, offset_factor=1),
             B: T.Buffer((lanes, k), b_dtype, offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:k], B[0:lanes, 0:k])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for j in T.serial(0, k):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, j])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _vnni_impl():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1),
             B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(a, 16), dtype="uint8x64"),
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16")

    return impl


def _avx2_impl():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((2,), "int16", offset_factor=1),
             B: T.Buffer((8, 2), "int16", offset_factor=1),
             C: T.Buffer((8,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:8, 0:2])
            T.writes(C[0:8])
            a = T.reinterpret(A.vload([0], "int16x2"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                T.reinterpret(T.broadcast(a, 8), dtype="int16x16"),
                B.vload([0, 0], dtype="int16x16"),
                dtype="int32x8")

    return impl


@functools.cache
def register() -> None:
    from tvm.s_tir import TensorIntrin

    TensorIntrin.register(VNNI_16x4, dot_desc(16), _vnni_impl(), override=True)
    TensorIntrin.register(AVX2_8x2, dot_desc(8, 2, "int16", "int16"), _avx2_impl(), override=True)


@functools.cache
def vector_mac(lanes: int, a_dtype: str, b_dtype: str, c_dtype: str) -> str:
    """Register (once) and name the generic micro-kernel C[lanes] += A[0] · B[lanes]: a broadcast
    of one input value times a vector of output-channel weights (FMA for float; widen, multiply,
    add for integers). Tensorizing with it sidesteps `vectorize`, which refuses a loop nested
    under the reduction loops."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    same = a_dtype == b_dtype == c_dtype
    vec = f"{c_dtype}x{lanes}"

    def mac(a, b):
        return a * b if same else T.cast(a, c_dtype) * T.cast(b, c_dtype)

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((1,), a_dtype, offset_factor=1),
             B: T.Buffer((lanes,), b_dtype, offset_factor=1),
             C: T.Buffer((lanes,), c_dtype, offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:1], B[0:lanes])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                with T.sblock("update"):
                    vi = T.axis.spatial(lanes, i)
                    C[vi] = C[vi] + mac(A[0], B[vi])

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((1,), a_dtype, offset_factor=1),
             B: T.Buffer((lanes,), b_dtype, offset_factor=1),
             C: T.Buffer((lanes,), c_dtype, offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:1], B[0:lanes])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = C.vload([0], dtype=vec) + T.broadcast(
                T.cast(A[0], c_dtype), lanes) * T.cast(B.vload([0], dtype=f"{b_dtype}x{lanes}"), vec)

    name = f"farm_vector_mac_{a_dtype}_{b_dtype}_{c_dtype}_{lanes}"
    TensorIntrin.register(name, desc, impl, override=True)
    return name
