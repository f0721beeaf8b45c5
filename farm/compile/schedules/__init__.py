"""Per-target schedules for conv kernels, applied around TVM's Relax pipeline:

0. on AVX512-VNNI and AVX2, `block_channels` (blocked.py): the dot-product convs and the activations
   between them go channel-blocked, each such conv becoming its packed TE conv right there.
1. `pack_convs` (Relax, before legalization): each (other) NCHW/OIHW conv2d with a constant weight
   becomes a TE conv on a weight packed at compile time (conv.py), carrying its schedule choice
   (template, tile sizes) as block annotations. Where the sdot/usdot template applies (arm.py), a
   matmul with a constant int8 weight becomes such a conv too (1×1, one pixel per row); on x86
   where the VNNI / AVX2 templates apply, one row of M pixels (`row_dense`).
2. `schedule_kernels` (after FuseOps/FuseTIR): every PrimFunc holding such a conv, a matmul, or
   only injective ops is scheduled by cpu.py; anything else (reductions) is left to LLVM and listed
   as skipped in the report.

Choices come from `plan.Plan`: defaults per target family, overridden by tuned records.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from farm.compile.schedules.plan import Choice, Plan, target_features
from farm.errors import error_line

__all__ = ["Choice", "Plan", "apply_schedules", "pack_convs", "schedule_kernels", "target_features"]


def apply_schedules(mod, target, tuned: dict[str, Choice]):
    """(module with packed convs, the pass to run between "zero" and "default_build", report)."""
    from farm.compile.schedules.blocked import block_channels, channel_block

    plan = Plan(target_features(target), tuned)
    report: list[str] = []
    if channel_block(plan.features):  # the dot-product template's epilogue runs along channel blocks
        mod = block_channels(mod, plan, report)
    mod, more = pack_convs(mod, plan)
    report += more
    return mod, schedule_kernels(plan.features.cores, report, plan.features.vector_bits), report


def pack_convs(mod, plan: Plan):
    """Rewrite the convs of `mod` (see module doc); returns (module, report lines)."""
    from tvm import relax

    from farm.compile.schedules.arm import DOT_INTRINS, dense_shape
    from farm.compile.schedules.conv import conv_shape

    conv_op = relax.op.nn.conv2d(relax.Var("x", relax.TensorType([1, 1, 1, 1], "float32")),
                                 relax.Var("w", relax.TensorType([1, 1, 1, 1], "float32"))).op
    matmul_op = relax.op.matmul(relax.Var("a", relax.TensorType([1, 1], "float32")),
                                relax.Var("b", relax.TensorType([1, 1], "float32"))).op
    report: list[str] = []

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op == conv_op:
                return self.conv(call)
            if call.op == matmul_op:
                return self.dense(call)
            return call

        def conv(self, call):
            shape = conv_shape(call)
            if isinstance(shape, str):
                report.append(f"conv2d skipped: {shape}")
                return call
            choice = plan.choose(shape)
            if choice is None:
                report.append(f"{shape.key()}: no template for this target or shape, left to LLVM")
                return call
            report.append(f"{shape.key()}: {choice.describe()}")
            pad, dil = conv_geometry(call)
            return packed_conv(self.builder_, call.args[0], call.args[1].value.numpy(), shape, choice,
                               pad, dil)

        def dense(self, call):
            """[M, K] × constant [K, N] as a 1×1 conv over M pixels, where the aarch64 dot-product
            template (sdot / usdot) beats the vector-MAC matmul schedule; on x86 see row_dense."""
            shape = dense_shape(call)
            if shape is not None and plan.features.family == "x86":
                return row_dense(self.builder_, call, shape, plan, report)
            choice = None if shape is None else plan.choose(shape)
            if choice is None or choice.intrin not in DOT_INTRINS:
                return call
            m, k = shape.h, shape.ic
            rows = relax.op.reshape(call.args[0], (m, k))
            data = self.builder_.emit(relax.op.reshape(relax.op.permute_dims(rows), (1, k, m, 1)))
            weight = call.args[1].value.numpy().T.reshape(shape.oc, k, 1, 1)
            report.append(f"{shape.key()}: {choice.describe()}")
            out = packed_conv(self.builder_, data, weight, shape, choice, (0, 0, 0, 0), (1, 1), "dense_packed")
            out = relax.op.permute_dims(relax.op.reshape(out, (shape.oc, m)))
            return relax.op.reshape(out, call.ty.shape)

    rw = Rewriter(mod)
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            rw.builder_.update_func(gv, rw.visit_expr(func))
    return rw.builder_.get(), report


def row_dense(builder, call, shape, plan: Plan, report: list[str]):
    """x86: [M, K] × constant [K, N] as a 1×1 conv over one row of M pixels (the dot-product
    templates tile along rows), its N output channels padded with zero weights to whole vectors of
    16 (a vocabulary of 6625 classes is no multiple of anything) and sliced off again; left to the
    vector-MAC matmul schedule where no dot-product template applies."""
    from tvm import relax

    m, k, n = shape.h, shape.ic, shape.oc
    padded = -(-n // 16) * 16
    row = dataclasses.replace(shape, h=1, w=m, oh=1, ow=m, oc=padded)
    choice = plan.choose(row)
    if choice is None or choice.layout not in ("oc4i", "oc2i"):
        return call
    weight = call.args[1].value.numpy().T  # [N, K]
    weight = np.concatenate([weight, np.zeros((padded - n, k), weight.dtype)]).reshape(padded, k, 1, 1)
    data = builder.emit(relax.op.reshape(relax.op.permute_dims(relax.op.reshape(call.args[0], (m, k))), (1, k, 1, m)))
    report.append(f"{row.key()}: {choice.describe()} (dense {m}x{k}x{n})")
    out = packed_conv(builder, data, weight, row, choice, (0, 0, 0, 0), (1, 1), "dense_packed")
    out = relax.op.permute_dims(relax.op.reshape(out, (padded, m)))
    if padded != n:
        out = relax.op.strided_slice(out, [1], [0], [n])
    return relax.op.reshape(out, call.ty.shape)


def conv_geometry(call) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(padding, dilation) of a Relax conv2d call."""
    a = call.attrs
    return tuple(int(v) for v in a.padding), tuple(int(v) for v in a.dilation)


def packed_conv(builder, data, weight: np.ndarray, shape, choice: Choice, pad, dil,
                name: str = "conv2d_packed", in_block: int = 0, out_block: int = 0):
    """The call_te of the packed conv of OIHW `weight` on `data` (channel-blocked by `in_block` if
    nonzero; output blocked by `out_block` if nonzero). Output channels are padded with zero
    weights up to a multiple of the tile (sliced off again) where the template allows that (sdot)."""
    from tvm import relax

    from farm.compile.schedules.arm import SIGNED_DATA
    from farm.compile.schedules.conv import Packing, conv_te, pack_weight, shift_correction
    from farm.compile.schedules.cpu import ATTR_INTRIN, ATTR_LANES, ATTR_LAYOUT, ATTR_PX, ATTR_VO

    oc = shape.oc
    if oc % choice.vo:
        weight = np.concatenate([weight, np.zeros((-oc % choice.vo, *weight.shape[1:]), weight.dtype)])
        shape = dataclasses.replace(shape, oc=weight.shape[0])
    p = Packing(choice.layout, choice.vo, shape.dtype == "uint8" and choice.intrin in SIGNED_DATA)
    w = pack_weight(weight, p)
    attrs = {ATTR_LAYOUT: p.layout, ATTR_VO: p.vo, ATTR_PX: choice.px, ATTR_LANES: choice.lanes}
    if choice.intrin:
        attrs[ATTR_INTRIN] = choice.intrin

    def te_fn(x, wp):
        return conv_te(x, wp, shape, p, pad, dil, attrs, in_block, out_block)

    out = builder.call_te(te_fn, data, relax.const(w, str(w.dtype)), primfunc_name_hint=name)
    if p.shift:  # an expression, not a bound var: a var-to-var binding stops FuseOps
        out = relax.op.add(out, relax.const(shift_correction(weight)))
    return out if shape.oc == oc else relax.op.strided_slice(out, [1], [0], [oc])


def schedule_kernels(cores: int, report: list[str], vector_bits: int):
    """The module pass that schedules every packed conv and every matmul PrimFunc (see module
    doc); a kernel whose schedule fails keeps TVM's default lowering and the report says why."""
    import tvm
    from tvm import s_tir, tirx

    from farm.compile.schedules import arm, intrin
    from farm.compile.schedules.conv import CONV_BLOCK
    from farm.compile.schedules.cpu import has_reduction, schedule_conv, schedule_elementwise, schedule_matmul

    intrin.register()
    arm.register()

    def one(func):
        sch = s_tir.Schedule(func)
        try:
            sch.get_sblock(CONV_BLOCK)
        except Exception:  # noqa: BLE001 - not one of our convs
            return sch, schedule_matmul(sch, cores, vector_bits) or schedule_elementwise(sch, cores)
        return sch, schedule_conv(sch, cores)

    @tvm.transform.module_pass(opt_level=0, name="FarmScheduleKernels")
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions.items()):
            if not isinstance(func, tirx.PrimFunc):
                continue
            try:
                sch, what = one(func)
            except Exception as e:  # noqa: BLE001 - a template that does not fit this kernel
                report.append(f"{gv.name_hint}: schedule failed ({error_line(e, 160)}), left unscheduled")
                continue
            if what:
                report.append(f"{gv.name_hint}: {what}")
                mod[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
            elif has_reduction(sch):
                report.append(f"{gv.name_hint}: reduction kernel not recognised, left unscheduled")
        return mod

    return _pass
