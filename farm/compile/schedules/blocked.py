"""Channel-blocked activations between packed convs: [N, C/B, H, W, B] instead of NCHW.

B is one vector of int32 accumulators: 16 on AVX512-VNNI (zmm, 4-channel vpdpbusd), 8 on AVX2
(ymm, 2-channel vpmaddwd; each conv widens its blocked 8-bit input to int16 in one contiguous
pass, so a pair of channels is broadcast straight from memory); `channel_block` picks it.

With NCHW activations every dot-product conv transposes its input to groups of 4 channels, and
its epilogue (bias, requantize, residual add) gathers each output row out of the [pixels ×
channels] accumulator tile. Keeping activations in blocks of B channels removes both: a conv
reads the channels of a dot product in place and its epilogue runs along the channels of a
pixel, storing B contiguous bytes.

`block_channels` rewrites the main function before `pack_convs`: each conv the plan gives a
dot-product template becomes a packed conv with a blocked output (and a blocked input when its
producer is blocked); the layout then flows through elementwise ops (per-channel constants are
blocked at compile time), the quantized add kernels, spatial padding and max pooling. Any other consumer gets
the NCHW tensor back through one layout_transform, so the rest of the graph is unchanged.
"""

from __future__ import annotations

import numpy as np

from farm.compile.schedules.plan import Choice, Plan, TargetFeatures

_ELEMWISE = ("relax.add", "relax.subtract", "relax.multiply", "relax.right_shift",
             "relax.bitwise_and", "relax.maximum", "relax.minimum", "relax.astype")


def channel_block(features: TargetFeatures) -> int:
    """Channels per block on this target (0: activations stay NCHW)."""
    return 16 if features.vnni else 8 if features.avx2 else 0


def blocks(choice: Choice | None, block: int) -> bool:
    """Whether a conv with this choice gets blocked activations (a dot-product template whose
    output tile is whole blocks)."""
    return choice is not None and choice.layout in ("oc4i", "oc2i") and choice.vo % block == 0


def block_channels(mod, plan: Plan, report: list[str], contexts: dict[str, int] | None = None):
    """The module with blocked activations around every eligible conv (see module doc). With
    `contexts`, records each blocked conv's shape key → its input block (0: NCHW input)."""
    import tvm
    from tvm import relax

    from farm.compile.int8.fixedpoint import ADD_ATTR, emit_add_like
    from farm.compile.schedules import conv_geometry, packed_conv
    from farm.compile.schedules.conv import conv_shape

    block = channel_block(plan.features)
    Constant = tvm.ir.expr.Constant  # noqa: N806 - relax constants live in tvm.ir in 0.27
    op = relax.op

    def op_name(e) -> str:
        return e.op.name if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) else ""

    @relax.expr_functor.mutator
    class Blocker(relax.PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.src = mod
            self.blocked: dict = {}  # original var → its blocked twin
            self.plain: dict = {}  # original var → NCHW var re-made from the blocked twin

        def visit_var_binding_(self, binding) -> None:
            new = None
            if isinstance(binding.var, relax.DataflowVar):
                if binding.value in self.blocked:  # an alias (var-to-var binding) of a blocked var
                    self.blocked[binding.var] = self.blocked[binding.value]
                    return
                if isinstance(binding.value, relax.Call):
                    new = self.blocked_form(binding.value)
            if new is not None:
                self.blocked[binding.var] = self.builder_.emit(new, name_hint=binding.var.name)
                return
            for v in relax.analysis.free_vars(binding.value):
                self.nchw(v)
            super().visit_var_binding_(binding)

        def nchw(self, v):
            """v as an expression of the new function (NCHW), re-made once if only blocked."""
            if v not in self.blocked:
                return self.visit_expr(v)
            if v not in self.plain:
                self.plain[v] = self.builder_.emit(op.layout_transform(
                    self.blocked[v], lambda n, c, h, w, i: (n, c * block + i, h, w)),
                    name_hint=v.name)
                self.set_var_remap(v, self.plain[v])
            return self.plain[v]

        def as_blocked(self, e, channels: int):
            """e in the blocked layout, or None: blocked vars, per-channel / scalar constants,
            NCHW vars of the full shape (transformed)."""
            if e in self.blocked:
                return self.blocked[e]
            shape = [int(d) for d in e.ty.shape] if hasattr(e.ty, "shape") and e.ty.shape is not None \
                else None
            if isinstance(e, Constant):
                c = e.value.numpy()
                if c.size == 1:
                    return e
                if c.ndim == 4 and c.shape[1] == channels and c.size == channels:
                    blk = c.reshape(1, channels // block, block, 1, 1).transpose(0, 1, 3, 4, 2)
                    return relax.const(np.ascontiguousarray(blk), str(c.dtype))
                return None
            if isinstance(e, relax.Var) and shape is not None and len(shape) == 4 \
                    and shape[1] == channels:
                return self.builder_.emit(op.layout_transform(
                    self.nchw(e), lambda n, c, h, w: (n, c // block, h, w, c % block)))
            return None

        def blocked_form(self, value):
            name = op_name(value)
            if name == "relax.nn.conv2d":
                return self.conv(value)
            args = list(value.args)
            if name == "relax.call_tir" and isinstance(args[1], relax.Tuple):
                func = self.src[args[0]] if args[0] in self.src.functions else None
                if func is None or func.attrs is None or ADD_ATTR not in func.attrs:
                    return None
                args = list(args[1].fields)
            elif name not in _ELEMWISE and name not in ("relax.nn.pad", "relax.nn.max_pool2d"):
                return None
            if not any(a in self.blocked for a in args):
                return None
            channels = int(self.blocked_channels(args))
            if name == "relax.nn.pad":
                return self.pad(value, args)
            if name == "relax.nn.max_pool2d":
                return self.max_pool(value, args[0])
            new = [self.as_blocked(a, channels) for a in args]
            if any(a is None for a in new):
                return None
            if name == "relax.call_tir":
                return emit_add_like(self.builder_, func.attrs[ADD_ATTR], *new)
            return relax.Call(value.op, new, value.attrs)

        def blocked_channels(self, args) -> int:
            v = next(a for a in args if a in self.blocked)
            return int(v.ty.shape[1])

        def pad(self, value, args):
            width = [int(w) for w in value.attrs.pad_width]
            if len(width) != 8 or any(width[:4]):
                return None
            pad_value = args[1] if len(args) > 1 else value.attrs.pad_value
            return op.nn.pad(self.blocked[args[0]], [*width, 0, 0], value.attrs.pad_mode, pad_value)

        def max_pool(self, value, x):
            a = value.attrs
            if a.layout != "NCHW" or a.out_layout != "NCHW":
                return None
            return op.nn.max_pool2d(self.blocked[x], a.pool_size, a.strides, a.padding, a.dilation,
                                    bool(a.ceil_mode), bool(a.count_include_pad),
                                    layout=f"NCHW{block}c", out_layout=f"NCHW{block}c")

        def conv(self, call):
            shape = conv_shape(call)
            if isinstance(shape, str) or shape.oc % block or shape.dtype not in ("uint8", "int8"):
                return None
            choice = plan.choose(shape)
            if not blocks(choice, block):
                return None
            x = call.args[0]
            in_block = block if x in self.blocked and shape.ic % block == 0 \
                and not any(int(p) for p in call.attrs.padding) else 0
            data = self.blocked[x] if in_block else self.nchw(x)
            report.append(f"{shape.key()}: {choice.describe()} {blocked_label(block, in_block)}")
            if contexts is not None:
                contexts.setdefault(shape.key(), in_block)
            pad, dil = conv_geometry(call)
            return packed_conv(self.builder_, data, call.args[1].value.numpy(), shape, choice, pad, dil,
                               in_block=in_block, out_block=block)

    blocker = Blocker(mod)
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            blocker.builder_.update_func(gv, blocker.visit_expr(func))
    return relax.transform.DeadCodeElimination()(blocker.builder_.get())


def blocked_label(block: int, in_block: int) -> str:
    """How the lowering report names a blocked conv's layout."""
    return f"blocked c{block}" + (" in+out" if in_block else " out")
