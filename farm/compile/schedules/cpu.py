"""CPU schedules for the packed conv kernels (after FuseOps/FuseTIR, one PrimFunc per conv with its
epilogue): a generic template for every CPU and a dot-product template per instruction set.

Both: output tile of `px` pixels along a row × `vo` output channels accumulated in a local buffer
laid out [.., px, vo] (registers after unrolling), reduction loops (ic, kh, kw) outside the tile,
the epilogue (bias, requantize / relu) computed per tile from that buffer, the outer
(n, oc-tile, row) loops fused and run in parallel on the target's cores.
- generic: the innermost loop over output channels is a vector multiply-add micro-kernel (fp32
  FMA, or int32 multiply after widening for integers), `vo / lanes` of them per input value.
- dot product (u8×i8→i32, weights [O/vo, I/4, KH, KW, vo, 4]): the (vo, 4) inner loops are
  tensorized with a dot-product micro-kernel (vpdpbusd on AVX512-VNNI, sdot on aarch64: arm.py).
"""

from __future__ import annotations

from farm.compile.schedules.conv import CONV_BLOCK, DATA_BLOCK

ATTR_LAYOUT = "farm.layout"
ATTR_VO = "farm.vo"
ATTR_PX = "farm.px"
ATTR_INTRIN = "farm.intrin"
# Multiply-accumulates below which a kernel runs on one thread: waking the thread pool costs more
# than it saves, a lot more when the cores are shared and a worker is descheduled.
MIN_PARALLEL_WORK = 1 << 20
ATTR_LANES = "farm.lanes"  # output channels per micro-kernel call (one vector register)


def inline_blocks(sch, keep: set[str] = frozenset()) -> None:
    """Inline every block of the PrimFunc in `sch` that can be (injective, not writing the
    function's output), except those named in `keep`, into its consumers."""
    changed = True
    while changed:
        changed = False
        for blk in sch.get_child_blocks(sch.get_sblock("root")):
            if sch.get(blk).name_hint in keep:
                continue
            try:
                sch.compute_inline(blk)
            except Exception:  # noqa: BLE001 - writes the function output, or not inlinable
                continue
            changed = True
            break


def _inline_epilogue(sch, conv, keep: set[str]):
    """Inline every injective block except the conv, the input block and the last writer of the
    output; returns the block that consumes the conv result (None if the conv writes the output)."""
    inline_blocks(sch, keep)
    consumers = sch.get_consumers(conv)
    return consumers[0] if len(consumers) == 1 else None


def schedule_conv(sch, target_cores: int) -> str:
    """Schedule the packed conv of the PrimFunc in `sch`; returns a one-line description."""
    conv = sch.get_sblock(CONV_BLOCK)
    ann = sch.get(conv).annotations
    layout, vo, px = str(ann[ATTR_LAYOUT]), int(ann[ATTR_VO]), int(ann[ATTR_PX])
    intrin = str(ann[ATTR_INTRIN]) if ATTR_INTRIN in ann else ""
    epi = _inline_epilogue(sch, conv, {CONV_BLOCK, DATA_BLOCK})
    if epi is None:  # the conv writes the function's output: accumulate locally, then copy out
        epi = sch.cache_write(conv, 0, "local")
    else:
        sch.set_scope(conv, 0, "local")
    sch.transform_layout(conv, ("write", 0), lambda b, o, y, x: (b, o // vo, y, x, o % vo))
    loops = sch.get_loops(conv)
    b, o, y, x = loops[:4]
    red = loops[4:]
    oo, oi = sch.split(o, [None, vo])
    xo, xi = sch.split(x, [None, px])
    inner = red[3:]  # the 4 (or 2) input channels of a dot product
    sch.reorder(b, oo, y, xo, *red[:3], xi, oi, *inner)
    sch.reverse_compute_at(epi, xo)
    outer = sch.fuse(b, oo, y)
    parallel = target_cores > 1 and _work(sch, conv) >= MIN_PARALLEL_WORK
    if parallel:  # before decompose_reduction: parallel wants a complete reduction block
        sch.parallel(outer)
    init = sch.decompose_reduction(conv, red[0])
    sch.vectorize(sch.get_loops(init)[-1])
    lanes = int(ann[ATTR_LANES])
    intrin = intrin or _generic_intrin(sch, conv, lanes)
    if vo > lanes:  # several vectors of output channels per input value: fewer broadcasts
        oio, oi = sch.split(oi, [None, lanes])
        sch.unroll(oio)
    sch.tensorize(oi, intrin)
    sch.unroll(xi)
    _vectorize_epilogue(sch, sch.get_loops(epi)[-1], px)  # a row of px output pixels per channel
    _schedule_data(sch, target_cores if parallel else 1)
    return f"{layout} vo={vo} px={px}" + (f" {intrin}" if intrin else "")


def schedule_matmul(sch, cores: int, vector_bits: int) -> str:
    """Matmul [M, K] × constant [K, N] (+ epilogue): columns in vectors of `lanes`, k outside the
    vector, the epilogue per column block. Returns "" when the PrimFunc holds no such matmul."""
    blocks = [b for b in sch.get_child_blocks(sch.get_sblock("root"))
              if [int(v.iter_type) for v in sch.get(b).iter_vars] == [0, 0, 2]]
    if len(blocks) != 1 or len(sch.get(blocks[0]).reads) != 2:
        return ""
    mm = blocks[0]
    n = int(sch.get(mm).iter_vars[1].dom.extent)
    lanes = max(vector_bits // 32, 4)
    while lanes > 1 and n % lanes:
        lanes //= 2
    if lanes < 4:
        return ""
    epi = _inline_epilogue(sch, mm, {sch.get(mm).name_hint})
    if epi is None:
        epi = sch.cache_write(mm, 0, "local")
    else:
        sch.set_scope(mm, 0, "local")
    i, j, k = sch.get_loops(mm)
    jo, ji = sch.split(j, [None, lanes])
    # k outside the column blocks: each weight row is read once, contiguously, while a row of
    # accumulators (4 N bytes) stays in L1; with k inside, every column block strode through
    # all K rows of the weight (a 2048 × 1000 dense read its 2 MB weight 125 times)
    sch.reorder(i, k, jo, ji)
    sch.reverse_compute_at(epi, i)
    if cores > 1 and int(sch.get(i).extent) > 1 and _work(sch, mm) >= MIN_PARALLEL_WORK:
        sch.parallel(i)
    init = sch.decompose_reduction(mm, k)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(ji, _generic_intrin(sch, mm, lanes))
    return f"matmul lanes={lanes}"


def schedule_elementwise(sch, cores: int) -> str:
    """A kernel of injective ops (requantize chains, quantized adds, table lookups, data movement):
    every intermediate inlined into its consumers (unscheduled, each op is a full pass over a
    materialized buffer); where only injective blocks remain, their innermost loop vectorized in a
    power of two and the leading loops parallel. Returns "" when nothing was done."""
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    reductions = [b for b in blocks if any(int(v.iter_type) == 2 for v in sch.get(b).iter_vars)]
    # a reduction of one tensor (a channel sum) reads each input once: computing its inputs in
    # place is free; a conv's reads its input once per tap, so that input stays materialized
    if len(blocks) < 2 or any(len(sch.get(b).reads) != 1 for b in reductions):
        return ""
    inline_blocks(sch)
    outputs = sch.get_child_blocks(root)
    if reductions:  # the reduction itself is left to LLVM
        return f"reduction: {len(blocks) - len(outputs)} of {len(blocks)} ops inlined" \
            if len(outputs) < len(blocks) else ""
    for blk in outputs:
        loops = sch.get_loops(blk)
        if not loops:
            continue
        inner = int(sch.get(loops[-1]).extent)
        width = min(inner & -inner, 16)  # the largest power of two dividing it (see _vectorize_epilogue)
        if width >= 4:
            sch.vectorize(loops[-1] if width == inner else sch.split(loops[-1], [None, width])[1])
        if cores > 1 and len(loops) > 1 and _work(sch, blk) >= MIN_PARALLEL_WORK:
            sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0])
    return f"elementwise: {len(blocks) - len(outputs)} of {len(blocks)} ops inlined"


def has_reduction(sch) -> bool:
    return any(int(v.iter_type) == 2 for b in sch.get_child_blocks(sch.get_sblock("root"))
               for v in sch.get(b).iter_vars)


def _work(sch, block) -> int:
    """Iterations of the block (its multiply-accumulates), from its loop extents."""
    n = 1
    for loop in sch.get_loops(block):
        n *= int(sch.get(loop).extent)
    return n


def _vectorize_epilogue(sch, loop, width: int) -> None:
    """LLVM 22 miscompiles aarch64 stores of 3-lane byte vectors (truncated from <3 x i64>, one lane
    lost, the next stored at its offset): on aarch64 only a power-of-two part is vectorized."""
    import tvm

    target = tvm.target.Target.current(allow_none=True)
    if target is None or not str(target.attrs.get("mtriple", "")).startswith("aarch64") \
            or width & (width - 1) == 0:
        sch.vectorize(loop)
        return
    outer, inner = sch.split(loop, [None, width & -width])  # the largest power of two dividing it
    sch.unroll(outer)
    sch.vectorize(inner)


def _generic_intrin(sch, conv, vo: int) -> str:
    from farm.compile.schedules.intrin import vector_mac

    reads = sch.get(conv).reads
    return vector_mac(vo, str(reads[1].source.dtype), str(reads[2].source.dtype),
                      str(reads[0].source.dtype))


def _schedule_data(sch, cores: int) -> None:
    try:
        data = sch.get_sblock(DATA_BLOCK)
    except Exception:  # noqa: BLE001 - no padding / packing block in this conv
        return
    loops = sch.get_loops(data)
    if len(loops) == 5:  # channel-packed input: the 4 (2) channels of a pixel written together
        sch.unroll(loops[4])
    if cores > 1:
        sch.parallel(sch.fuse(*loops[:2]))
