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
blocked at compile time), the quantized add kernels, spatial padding and max pooling; a sum over the
channels becomes a sum over both channel axes, and channel-free tensors (and elementwise ops of them with
per-channel constants) broadcast into blocks where a blocked op needs them. Any other consumer gets
the NCHW tensor back through one layout_transform, so the rest of the graph is unchanged.
"""

from __future__ import annotations

import numpy as np

from farm.compile.int8.fixedpoint import ADD_ATTR, emit_add_like
from farm.compile.rewrite import Rewrite, const_np, is_const, mutator, op_name
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
    from tvm import relax

    blocker = Blocker(mod, plan, report, contexts)
    m = mutator(mod, blocker)
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            blocker.bb.update_func(gv, m.visit_expr(func))
    return relax.transform.DeadCodeElimination()(blocker.bb.get())


class Blocker(Rewrite):
    """The rewrite of `block_channels`, over all functions of `mod`."""

    def __init__(self, mod, plan: Plan, report: list[str], contexts: dict[str, int] | None):
        super().__init__({})
        self.src = mod
        self.plan, self.report, self.contexts = plan, report, contexts
        self.block = channel_block(plan.features)
        self.blocked: dict = {}  # original var → its blocked twin
        self.plain: dict = {}  # original var → NCHW var re-made from the blocked twin
        self.recipes: dict = {}  # original var → its elementwise call left NCHW (re-made blocked on demand)

    def binding(self, binding) -> bool:
        from tvm import relax

        new = None
        if isinstance(binding.var, relax.DataflowVar):
            if binding.value in self.blocked:  # an alias (var-to-var binding) of a blocked var
                self.blocked[binding.var] = self.blocked[binding.value]
                return True
            if isinstance(binding.value, relax.Call):
                if self.channel_sum(binding):
                    return True
                new = self.blocked_form(binding.value)
        if new is not None:
            self.blocked[binding.var] = self.bb.emit(new, name_hint=binding.var.name)
            return True
        if op_name(binding.value) in _ELEMWISE:
            self.recipes[binding.var] = binding.value
        for v in relax.analysis.free_vars(binding.value):
            self.nchw(v)
        return False

    def channel_sum(self, binding) -> bool:
        """sum over the channels (keepdims) of a blocked tensor, as the sum over both channel axes:
        a plain [N, 1, H, W] result (a weight zero point's compensation term, dot.py)."""
        from tvm.relax import op

        v = binding.value
        if op_name(v) != "relax.sum" or v.args[0] not in self.blocked or not bool(v.attrs.keepdims) \
                or v.attrs.axis is None or [int(a) for a in v.attrs.axis] != [1]:
            return False
        total = self.bb.emit(op.sum(self.blocked[v.args[0]], axis=[1, 4]))
        self.emit_as(binding.var, op.reshape(total, [int(d) for d in binding.var.ty.shape]))
        return True

    def nchw(self, v):
        """v as an expression of the new function (NCHW), re-made once if only blocked."""
        from tvm.relax import op

        if v not in self.blocked:
            return self.visit(v)
        if v not in self.plain:
            block = self.block
            self.plain[v] = self.bb.emit(op.layout_transform(
                self.blocked[v], lambda n, c, h, w, i: (n, c * block + i, h, w)), name_hint=v.name)
            self.mutator.set_var_remap(v, self.plain[v])
        return self.plain[v]

    def as_blocked(self, e, channels: int, transform: bool = True):
        """e in the blocked layout, or None: blocked vars, per-channel / scalar constants, channel-free
        vars (broadcast), elementwise ops of these (re-made blocked), NCHW vars of the full shape
        (transformed, unless not `transform`)."""
        from tvm import relax
        from tvm.relax import op

        if e in self.blocked:
            return self.blocked[e]
        block = self.block
        if is_const(e):
            c = const_np(e)
            if c.size == 1:
                return e
            if c.ndim == 4 and c.shape[1] == channels and c.size == channels:
                blk = c.reshape(1, channels // block, block, 1, 1).transpose(0, 1, 3, 4, 2)
                return relax.const(np.ascontiguousarray(blk), str(c.dtype))
            return None
        shape = [int(d) for d in e.ty.shape] if hasattr(e.ty, "shape") and e.ty.shape is not None else None
        if not isinstance(e, relax.Var) or shape is None or len(shape) != 4:
            return None
        if shape[1] == 1:  # broadcast over the channels: over both channel axes when blocked
            return self.bb.emit(op.reshape(self.nchw(e), [*shape, 1]))
        if e in self.recipes:  # an elementwise op of such broadcasts and per-channel constants
            args = [self.as_blocked(a, channels, transform=False) for a in self.recipes[e].args]
            if all(a is not None for a in args):
                return self.bb.emit(relax.Call(self.recipes[e].op, args, self.recipes[e].attrs))
        if shape[1] == channels and transform:
            return self.bb.emit(op.layout_transform(
                self.nchw(e), lambda n, c, h, w: (n, c // block, h, w, c % block)))
        return None

    def blocked_form(self, value):
        """The blocked form of a call with a blocked operand (None: it needs NCHW operands)."""
        from tvm import relax

        name = op_name(value)
        if name == "relax.nn.conv2d":
            return self.conv(value)
        args, add_params = self.operands(value, name)
        if args is None or not any(a in self.blocked for a in args):
            return None
        channels = self.blocked_channels(args)
        if name == "relax.nn.pad":
            return self.pad(value, args)
        if name == "relax.nn.max_pool2d":
            return self.max_pool(value, args[0])
        new = [self.as_blocked(a, channels) for a in args]
        if any(a is None for a in new):
            return None
        if add_params is not None:
            return emit_add_like(self.bb, add_params, *new)
        return relax.Call(value.op, new, value.attrs)

    def operands(self, value, name: str):
        """(operands, the add kernel's parameters or None) of an op the blocked layout flows
        through; (None, None) for any other op."""
        from tvm import relax

        args = list(value.args)
        if name == "relax.call_tir" and isinstance(args[1], relax.Tuple):
            func = self.src[args[0]] if args[0] in self.src.functions else None
            if func is None or func.attrs is None or ADD_ATTR not in func.attrs:
                return None, None
            return list(args[1].fields), func.attrs[ADD_ATTR]
        if name in _ELEMWISE or name in ("relax.nn.pad", "relax.nn.max_pool2d"):
            return args, None
        return None, None

    def blocked_channels(self, args) -> int:
        v = next(a for a in args if a in self.blocked)
        return int(v.ty.shape[1])

    def pad(self, value, args):
        from tvm.relax import op

        width = [int(w) for w in value.attrs.pad_width]
        if len(width) != 8 or any(width[:4]):
            return None
        pad_value = args[1] if len(args) > 1 else value.attrs.pad_value
        return op.nn.pad(self.blocked[args[0]], [*width, 0, 0], value.attrs.pad_mode, pad_value)

    def max_pool(self, value, x):
        from tvm.relax import op

        a = value.attrs
        if a.layout != "NCHW" or a.out_layout != "NCHW":
            return None
        layout = f"NCHW{self.block}c"
        return op.nn.max_pool2d(self.blocked[x], a.pool_size, a.strides, a.padding, a.dilation,
                                bool(a.ceil_mode), bool(a.count_include_pad), layout=layout, out_layout=layout)

    def conv(self, call):
        from farm.compile.schedules import conv_geometry, packed_conv
        from farm.compile.schedules.conv import conv_shape

        block = self.block
        shape = conv_shape(call)
        if isinstance(shape, str) or shape.oc % block or shape.dtype not in ("uint8", "int8"):
            return None
        choice = self.plan.choose(shape)
        if not blocks(choice, block):
            return None
        x = call.args[0]
        in_block = block if x in self.blocked and shape.ic % block == 0 \
            and not any(int(p) for p in call.attrs.padding) else 0
        data = self.blocked[x] if in_block else self.nchw(x)
        self.report.append(f"{shape.key()}: {choice.describe()} {blocked_label(block, in_block)}")
        if self.contexts is not None:
            self.contexts.setdefault(shape.key(), in_block)
        pad, dil = conv_geometry(call)
        return packed_conv(self.bb, data, call.args[1].value.numpy(), shape, choice, pad, dil,
                           in_block=in_block, out_block=block)


def blocked_label(block: int, in_block: int) -> str:
    """How the lowering report names a blocked conv's layout."""
    return f"blocked c{block}" + (" in+out" if in_block else " out")
