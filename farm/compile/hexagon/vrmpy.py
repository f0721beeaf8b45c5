"""HVX vrmpy kernels for the integer conv2d / dense of a lowered int8 model.

TVM's untuned Hexagon code for `conv2d(u8|i8, i8) -> i32` is scalar. This rewrites each such
Relax call (weights constant, groups 1, NCHW/OIHW; 2-D matmul) into a call_tir of a hand-written
TIR kernel built on `vrmpy(Vu.ub, Vv.b)` (or `.b × .b` for int8 activations): 32 output channels
per vector, 4 input channels per lane. Weights are packed at compile time into
[O/32, C/4, KH, KW, 32] int32 words (4 int8 each; channels past O or C are zero, so the
activation loads for them can be clamped instead of guarded). Requantization stays a separate,
fused elementwise kernel."""

from __future__ import annotations

import numpy as np

LANES = 32  # int32 lanes of a 128-byte HVX vector
_INTRIN = {"uint8": "llvm.hexagon.V6.vrmpybusv.acc.128B", "int8": "llvm.hexagon.V6.vrmpybv.acc.128B"}


def _blocks(n: int, b: int) -> int:
    return (n + b - 1) // b


def pack_weight(w: np.ndarray) -> np.ndarray:
    """[O, C, KH, KW] int8 → [ceil(O/32), ceil(C/4), KH, KW, 32] int32 (4 channels per word,
    lowest channel in the lowest byte, as vrmpy reads them)."""
    o, c, kh, kw = w.shape
    ob, c4 = _blocks(o, LANES), _blocks(c, 4)
    padded = np.zeros((ob * LANES, c4 * 4, kh, kw), dtype=np.int8)
    padded[:o, :c] = w
    t = padded.reshape(ob, LANES, c4, 4, kh, kw).transpose(0, 2, 4, 5, 1, 3)  # ob c4 kh kw 32 4
    return np.ascontiguousarray(t).view(np.int32).reshape(ob, c4, kh, kw, LANES)


def conv2d_kernel(data_shape, act_dtype: str, out_channels: int, kernel: tuple[int, int],
                  strides: tuple[int, int], dilation: tuple[int, int], out_hw: tuple[int, int]):
    """PrimFunc(data [N,C,H,W] act_dtype, packed weight, out [N,O,OH,OW] int32)."""
    from tvm.script import tirx as T

    n_, c_, h_, w_ = (int(d) for d in data_shape)
    o_, (kh_, kw_), (sh, sw), (dh, dw), (oh_, ow_) = out_channels, kernel, strides, dilation, out_hw
    ob_, c4_ = _blocks(o_, LANES), _blocks(c_, 4)
    intrin = _INTRIN[act_dtype]

    @T.prim_func
    def kernel_fn(data: T.Buffer((n_, c_, h_, w_), act_dtype),
                  weight: T.Buffer((ob_, c4_, kh_, kw_, LANES), "int32"),
                  out: T.Buffer((n_, o_, oh_, ow_), "int32")):
        acc = T.alloc_buffer((LANES,), "int32", scope="local")
        for n, ob, oh, ow in T.grid(n_, ob_, oh_, ow_):
            acc[T.ramp(0, 1, LANES)] = T.broadcast(T.int32(0), LANES)
            for c4, kh, kw in T.grid(c4_, kh_, kw_):
                ih = oh * sh + kh * dh
                iw = ow * sw + kw * dw
                b0 = T.Cast("int32", T.reinterpret("uint8", data[n, T.min(c4 * 4, c_ - 1), ih, iw]))
                b1 = T.Cast("int32", T.reinterpret("uint8", data[n, T.min(c4 * 4 + 1, c_ - 1), ih, iw]))
                b2 = T.Cast("int32", T.reinterpret("uint8", data[n, T.min(c4 * 4 + 2, c_ - 1), ih, iw]))
                b3 = T.Cast("int32", T.reinterpret("uint8", data[n, T.min(c4 * 4 + 3, c_ - 1), ih, iw]))
                word = b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)
                acc[T.ramp(0, 1, LANES)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(intrin), acc[T.ramp(0, 1, LANES)],
                    T.broadcast(word, LANES), weight[ob, c4, kh, kw, T.ramp(0, 1, LANES)],
                    dtype="int32x32")
            for lane in range(LANES):
                if ob * LANES + lane < o_:
                    out[n, ob * LANES + lane, oh, ow] = acc[lane]

    return kernel_fn


def _const(e):
    import tvm

    return e.value.numpy() if isinstance(e, tvm.ir.Constant) else None


def _ints(arr) -> tuple[int, ...]:
    return tuple(int(v) for v in arr)


def vrmpy_call(call, builder):
    """The call_tir replacing an integer conv2d/matmul call, or None when it does not qualify."""
    import tvm
    from tvm import relax

    if not isinstance(call.op, tvm.ir.Op) or call.op.name not in ("relax.nn.conv2d", "relax.matmul"):
        return None
    data, weight = call.args[0], call.args[1]
    w = _const(weight)
    dty, out_ty = data.ty, call.ty
    if (w is None or w.dtype != np.int8 or str(dty.dtype) not in _INTRIN
            or str(out_ty.dtype) != "int32"):
        return None
    try:
        dshape = _ints(dty.shape.values)
        oshape = _ints(out_ty.shape.values)
    except (TypeError, AttributeError):
        return None  # symbolic shapes
    if call.op.name == "relax.nn.conv2d":
        a = call.attrs
        if (a.data_layout, a.kernel_layout, a.out_layout) != ("NCHW", "OIHW", "NCHW") \
                or int(a.groups) != 1 or any(int(p) for p in a.padding):
            return None
        func = conv2d_kernel(dshape, str(dty.dtype), w.shape[0], w.shape[2:], _ints(a.strides),
                             _ints(a.dilation), oshape[2:])
        packed = pack_weight(w)
        args = [data]
    else:
        if len(dshape) != 2 or w.ndim != 2:
            return None
        # [M, K] x [K, N] is a 1x1 conv over M "pixels": data viewed as [1, K, M, 1]
        m, k = dshape
        func = conv2d_kernel((1, k, m, 1), str(dty.dtype), w.shape[1], (1, 1), (1, 1), (1, 1),
                             (m, 1))
        packed = pack_weight(w.T.reshape(w.shape[1], k, 1, 1))
        args = [builder.emit(relax.op.reshape(relax.op.permute_dims(data), (1, k, m, 1)))]
    kind = "conv2d" if call.op.name == "relax.nn.conv2d" else "dense"
    gv = builder.add_func(func.with_attr("global_symbol", f"{kind}_vrmpy"), f"{kind}_vrmpy")
    out_shape = oshape if kind == "conv2d" else (1, w.shape[1], dshape[0], 1)
    res = builder.emit(relax.op.call_tir(gv, relax.Tuple([*args, relax.const(packed)]),
                                         relax.TensorType(out_shape, "int32")))
    if kind == "dense":
        res = relax.op.permute_dims(relax.op.reshape(res, (w.shape[1], dshape[0])))
    return res


def use_vrmpy(mod):
    """Rewrite every qualifying integer conv2d / matmul of `mod` into a vrmpy kernel."""
    from tvm import relax

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            new = vrmpy_call(call, self.builder_)
            return call if new is None else new

    rw = Rewriter(mod)
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            rw.builder_.update_func(gv, rw.visit_expr(func))
    return rw.builder_.get()
