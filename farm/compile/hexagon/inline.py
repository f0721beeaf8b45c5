"""Fused kernels with their elementwise stages inlined, for the Hexagon build.

Relax's FuseOps/FuseTIR leave a fused kernel as one loop nest per stage (a requantize alone is ~15
stages: cast, multiply, shift, compare, ...), each writing a whole intermediate tensor, and
StorageRewrite then shares those workspace buffers between stages of different types (bool, uint8,
int32, int64 views of one allocation). The x86 build computes such kernels exactly; compiled for
Hexagon, the requantize + residual add + global-average sum kernel at the end of ResNet-50 came
out 1 LSB high on a fifth to a third of its channels under qemu-hexagon (qresnet50 93.85% exact
against 100% on x86). The same kernel was exact when built with StorageRewrite disabled, with
LLVM at opt-level 1 instead of the default 3, or with its stages inlined; its code is scalar (no
HVX), and the LLVM transform or qemu instruction at fault is not pinned down. Inlining every stage
into its consumer leaves no intermediate tensors to share (and is far less work for the DSP:
qresnet50 compiles in ~1 min instead of ~14 and runs in about half the packets), so no kernel
depends on that code path."""

from __future__ import annotations

from farm.compile.schedules.cpu import inline_blocks


def inline_stages(mod):
    """`mod` with every elementwise stage of each TIR kernel inlined into its consumer; kernels
    written without blocks (the vrmpy kernels) are left as they are."""
    import tvm

    out = mod
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        sch = tvm.s_tir.Schedule(func)
        try:
            sch.get_sblock("root")
        except Exception:  # noqa: BLE001 - no block structure: a hand-written kernel
            continue
        inline_blocks(sch)
        out.update_func(gv, sch.mod["main"])
    return out
