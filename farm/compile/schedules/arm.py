"""aarch64 int8 convs on the Armv8.2 dot-product instruction (FEAT_DotProd, mattr +dotprod).

`sdot Vd.4s, Vn.16b, Vm.16b` adds to each of 4 int32 lanes the dot product of 4 int8 pairs. The
micro-kernel C[4] += sum_k A[4] · B[4, 4] broadcasts the 4 input channels of one pixel (one
32-bit word) to all lanes and multiplies them with the weights of 4 output channels × 4 input
channels, packed at compile time as [O/vo, ⌈I/4⌉, KH, KW, vo, 4] (the "oc4i" layout of conv.py).
A matmul with a constant weight runs as a 1×1 conv (dense_shape).

sdot is signed × signed. int8 activations (TFLite) feed it directly. uint8 activations (ONNX
Runtime's static quantization) are shifted to int8 while the input is packed, a − 128 = a ^ 0x80,
and since the weights are constants the dropped term is folded back per output channel at
compile time: Σ a·w = Σ (a − 128)·w + 128·Σ w (conv.shift_correction). Spatial padding is shifted
with the data, so a padded zero point stays exact. The result is bit identical to u8 × s8.
Targets with FEAT_I8MM (+i8mm) have `usdot` (u8 × s8) and take uint8 activations unshifted.
"""

from __future__ import annotations

import functools

import numpy as np

from farm.compile.schedules.conv import ConvShape

SDOT_4x4 = "farm_dot_4x4_i8_sdot"
USDOT_4x4 = "farm_dot_4x4_u8i8_usdot"  # FEAT_I8MM (mattr +i8mm): uint8 × int8, no shift needed
SIGNED_DATA = frozenset({SDOT_4x4})  # micro-kernels reading int8 data: uint8 inputs are shifted
DOT_INTRINS = frozenset({SDOT_4x4, USDOT_4x4})
MAX_ACC = 24  # accumulator registers of a tile (of 32: + vo/4 weight vectors + 1 broadcast)


def dot_intrin(s: ConvShape, i8mm: bool) -> str:
    """usdot for uint8 activations where the target has it, else sdot."""
    return USDOT_4x4 if i8mm and s.dtype == "uint8" else SDOT_4x4


def sdot_fits(s: ConvShape) -> bool:
    """An integer conv the sdot template computes exactly (int8 weights, 8-bit data, int32 out);
    output channels that do not fill a tile are padded with zero weights."""
    return s.dtype in ("uint8", "int8") and s.wdtype == "int8" and s.out_dtype == "int32"


def sdot_tile(s: ConvShape) -> tuple[int, int]:
    """(output channels, pixels) per register tile: the most accumulators (pixels × vo/4 vectors,
    at most MAX_ACC so weights and the broadcast input still fit the 32 NEON registers), pixels
    dividing the row, more output channels on ties (fewer broadcasts per sdot). E.g. a 7-wide row
    gets 8 channels × 7 pixels (14 accumulators), not 16 × 1 (4)."""
    def acc(t: tuple[int, int]) -> tuple[int, int]:
        return t[0] // 4 * t[1], t[0]

    options = [(vo, px) for vo in (16, 8, 4) if s.oc % vo == 0 or vo == 4
               for px in range(1, s.ow + 1) if s.ow % px == 0 and vo // 4 * px <= MAX_ACC]
    return max(options, key=acc)


def dense_shape(call) -> ConvShape | None:
    """A relax matmul [..., M, K] × constant int8 [K, N] → int32 as the ConvShape of the 1×1 conv
    over the M·(leading dims) pixels that computes it (data [1, K, M, 1], weight [N, K, 1, 1]);
    None for other matmuls."""
    from tvm.ir import GenericConst

    data, weight = call.args[0], call.args[1]
    if not isinstance(weight, GenericConst) or str(weight.ty.dtype) != "int8":
        return None
    try:
        *lead, k = (int(d) for d in data.ty.shape)
        _, n = (int(d) for d in weight.ty.shape)
    except (TypeError, ValueError):  # weight not 2-D, or a dynamic shape
        return None
    m = int(np.prod(lead))
    return ConvShape(1, k, m, 1, n, 1, 1, m, 1, (1, 1), str(data.ty.dtype), "int8", str(call.ty.dtype))


def _impl(a_dtype: str, intrinsic: str):
    """C[4] += A[4] · B[4, 4]: A (one pixel's 4 input channels) broadcast to the 4 lanes; for
    usdot the unsigned operand comes first."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), a_dtype, offset_factor=1),
             B: T.Buffer((4, 4), "int8", offset_factor=1),
             C: T.Buffer((4,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            a = T.reinterpret(A.vload([0], f"{a_dtype}x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(intrinsic),
                C.vload([0], dtype="int32x4"),
                T.reinterpret(T.broadcast(a, 4), dtype=f"{a_dtype}x16"),
                B.vload([0, 0], dtype="int8x16"),
                dtype="int32x4")

    return impl


@functools.cache
def register() -> None:
    from tvm.s_tir import TensorIntrin

    from farm.compile.schedules.intrin import dot_desc

    TensorIntrin.register(SDOT_4x4, dot_desc(4, 4, "int8", "int8"),
                          _impl("int8", "llvm.aarch64.neon.sdot.v4i32.v16i8"), override=True)
    TensorIntrin.register(USDOT_4x4, dot_desc(4, 4, "uint8", "int8"),
                          _impl("uint8", "llvm.aarch64.neon.usdot.v4i32.v16i8"), override=True)
