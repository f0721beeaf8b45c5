"""One conv as a stand-alone Relax module, compiled with a given schedule choice: what the tuner
measures and the tests check against numpy."""

from __future__ import annotations

import numpy as np

from farm.compile.schedules.conv import ConvShape
from farm.compile.schedules.plan import Choice, Plan, TargetFeatures


def conv_module(data_shape: list[int], data_dtype: str, weight: np.ndarray, stride: int,
                padding: int, out_dtype: str, requantize: bool = False):
    """main(x) = conv2d(x, weight) (NCHW / OIHW), the kernel the packed-conv rewrite replaces;
    with `requantize`, followed by a fixed-point requantize to uint8 like the int8 lowering's
    (int64 multiply, shift, clip, cast), so tuning sees the epilogue's cost too."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(data_shape, data_dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), strides=[stride] * 2,
                                           padding=[padding] * 4, out_dtype=out_dtype))
            if requantize:
                oc = weight.shape[0]
                m = relax.const(np.full((1, oc, 1, 1), 1 << 20, np.int64), "int64")
                y = bb.emit(relax.op.astype(y, "int64"))
                y = bb.emit(relax.op.right_shift(relax.op.multiply(y, m),
                                                 relax.const(np.int64(30), "int64")))
                y = bb.emit(relax.op.astype(relax.op.clip(y, 0, 255), "uint8"))
            y = bb.emit_output(y)
        bb.emit_func_output(y)
    return bb.get()


def packed_conv_module(shape: ConvShape, weight: np.ndarray, choice: Choice, padding: int,
                       in_block: int = 0, out_block: int = 0):
    """main(x) = the packed conv of `weight` with `choice` and a requantize to uint8, exactly as
    the model's rewrite emits it: the input channel-blocked by `in_block` ([N, C/B, H, W, B]) and
    the output by `out_block` where the model's build blocks them (blocked.py)."""
    from tvm import relax

    from farm.compile.schedules import packed_conv

    data = [shape.n, shape.ic // in_block, shape.h, shape.w, in_block] if in_block else \
        [shape.n, shape.ic, shape.h, shape.w]
    scale = np.full(shape.oc, 1 << 20, np.int64)
    if out_block:  # per-channel constants blocked like the model's
        scale = scale.reshape(1, shape.oc // out_block, 1, 1, out_block)
    else:
        scale = scale.reshape(1, shape.oc, 1, 1)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(data, shape.dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = packed_conv(bb, x, weight, shape, choice, (padding,) * 4, (1, 1),
                            in_block=in_block, out_block=out_block)
            y = relax.op.multiply(relax.op.astype(y, "int64"), relax.const(scale, "int64"))
            y = relax.op.right_shift(y, relax.const(np.int64(30), "int64"))
            y = bb.emit_output(bb.emit(relax.op.astype(relax.op.clip(y, 0, 255), "uint8")))
        bb.emit_func_output(y)
    return bb.get()


def build(mod, target, features: TargetFeatures, choice: Choice | None, shape_key: str = ""):
    """Compile `mod` with the packed-conv schedules; `choice` (if given) overrides the default for
    the conv whose ConvShape key is `shape_key` (or every conv when empty). Returns (executable,
    schedule report)."""
    import tvm
    from tvm import relax

    from farm.compile.schedules import pack_convs, schedule_kernels

    class _Fixed(Plan):
        def choose(self, s: ConvShape) -> Choice | None:
            return choice if choice is not None and (not shape_key or s.key() == shape_key) \
                else super().choose(s)

    plan = _Fixed(features)
    mod, report = pack_convs(mod, plan)
    pipeline = tvm.transform.Sequential([relax.get_pipeline("zero"),
                                         schedule_kernels(features.cores, report, features.vector_bits),
                                         relax.get_pipeline("default_build")])
    return tvm.compile(mod, target, relax_pipeline=pipeline), report


def reference_conv(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """numpy NCHW conv in int64 (integers) or float64."""
    acc = np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64
    xp = np.pad(x.astype(acc), [(0, 0), (0, 0), (padding, padding), (padding, padding)])
    win = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=(2, 3))
    win = win[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", win, w.astype(acc))
