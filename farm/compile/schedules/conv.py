"""Conv2d with packed constant weights: the Relax rewrite that replaces `relax.nn.conv2d` (NCHW data,
OIHW constant weight, groups 1) by a TE conv reading weights packed at compile time with numpy, so
the kernel's inner loop loads contiguous output-channel vectors (and, for dot-product
instructions, contiguous [oc × 4 ic] tiles). With NCHW activations a kernel that needs 4 input
channels together packs its input in a first block of the same kernel; on AVX512-VNNI the
activations between such convs are channel-blocked instead (blocked.py) and need no packing.

Layouts (`Packing`):
- "oc":   weight [O/vo, I, KH, KW, vo]                    (generic: vectorize over output channels)
- "oc4i": weight [O/vo, ⌈I/4⌉, KH, KW, vo, 4], data [N, ⌈I/4⌉, H, W, 4]  (u8×i8 dot products)
- "oc2i": the same with pairs of input channels, data and weights widened to int16 (exact
  int16 pair dot products, e.g. AVX2 vpmaddwd)
With `shift` (signed × signed dot products, e.g. aarch64 sdot, on uint8 activations) the packed
data is a − 128 in int8; the caller adds `shift_correction` of the weight to the result.
The rewrite leaves the epilogue (bias, requantize) to FuseOps, which fuses it after the conv.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONV_BLOCK = "farm_conv"  # name of the reduction block the schedules look for
DATA_BLOCK = "farm_conv_data"  # the padded / channel-packed input block


@dataclass(frozen=True)
class ConvShape:
    """What a conv computes: enough to pick and key a schedule."""

    n: int
    ic: int
    h: int
    w: int
    oc: int
    kh: int
    kw: int
    oh: int
    ow: int
    stride: tuple[int, int]
    dtype: str  # data dtype
    wdtype: str
    out_dtype: str

    def key(self) -> str:
        return (f"conv_{self.dtype}x{self.wdtype}_n{self.n}_i{self.ic}_h{self.h}w{self.w}_o{self.oc}"
                f"_k{self.kh}x{self.kw}_s{self.stride[0]}x{self.stride[1]}")

    @property
    def macs(self) -> int:
        return self.n * self.oc * self.oh * self.ow * self.ic * self.kh * self.kw


@dataclass(frozen=True)
class Packing:
    layout: str  # "oc" or "oc4i"
    vo: int  # output channels per vector
    shift: bool = False  # uint8 data packed as int8 a - 128 (a dot-product layout only)


def pack_weight(w: np.ndarray, p: Packing) -> np.ndarray:
    """OIHW → the packed layout (zero-padded where channels do not divide)."""
    o, i, kh, kw = w.shape
    if o % p.vo:
        raise ValueError(f"{o} output channels are not a multiple of {p.vo}")
    if p.layout == "oc":
        return np.ascontiguousarray(w.reshape(o // p.vo, p.vo, i, kh, kw).transpose(0, 2, 3, 4, 1))
    k = group_of(p.layout)
    ik = -(-i // k)
    wp = np.zeros((o, ik * k, kh, kw), dtype=np.int16 if k == 2 else w.dtype)
    wp[:, :i] = w
    return np.ascontiguousarray(wp.reshape(o // p.vo, p.vo, ik, k, kh, kw).transpose(0, 2, 4, 5, 1, 3))


def shift_correction(w: np.ndarray) -> np.ndarray:
    """128·Σw per output channel as an int32 [1, O, 1, 1]: what a conv on a − 128 lacks."""
    return (128 * w.astype(np.int64).sum(axis=(1, 2, 3))).astype(np.int32).reshape(1, -1, 1, 1)


def group_of(layout: str) -> int:
    """Input channels per dot product of a packed layout ("oc4i" → 4)."""
    return int(layout[2:-1])


def conv_te(data, weight, shape: ConvShape, p: Packing, padding: tuple[int, int, int, int],
            dilation: tuple[int, int], attrs: dict | None = None, in_block: int = 0,
            out_block: int = 0):
    """The TE conv on the packed weight (see module doc); output NCHW in shape.out_dtype.

    Channel-blocked activations (blocked.py): with `in_block` B the data is [N, C/B, H, W, B]
    (already padded; the dot product reads its 4 channels in place, no packing stage; int16 pair
    layouts widen it in one contiguous stage), with
    `out_block` the result is written [N, O/B, OH, OW, B] by a last injective stage."""
    from tvm import te, tirx

    if in_block or out_block:
        return _conv_blocked(data, weight, shape, p, dilation, attrs, in_block, out_block)

    n, ic, h, w = shape.n, shape.ic, shape.h, shape.w
    top, left, bottom, right = padding
    sh, sw = shape.stride
    dh, dw = dilation
    hp, wp = h + top + bottom, w + left + right

    def inside(y, x):
        return tirx.all(y >= top, y < top + h, x >= left, x < left + w)

    zero = tirx.const(0, shape.dtype)
    if p.layout == "oc":
        if any(padding):
            data = te.compute((n, ic, hp, wp), lambda b, c, y, x: tirx.if_then_else(
                inside(y, x), data[b, c, y - top, x - left], zero), name=DATA_BLOCK)
        rc = te.reduce_axis((0, ic), "rc")
        ry = te.reduce_axis((0, shape.kh), "ry")
        rx = te.reduce_axis((0, shape.kw), "rx")
        return te.compute(
            (n, shape.oc, shape.oh, shape.ow),
            lambda b, o, y, x: te.sum(
                data[b, rc, y * sh + ry * dh, x * sw + rx * dw].astype(shape.out_dtype)
                * weight[o // p.vo, rc, ry, rx, o % p.vo].astype(shape.out_dtype),
                axis=[rc, ry, rx]),
            name=CONV_BLOCK, attrs=attrs)
    k = group_of(p.layout)
    ik = -(-ic // k)
    dt = "int16" if k == 2 else "int8" if p.shift else shape.dtype

    def cast(v):  # padding is shifted too: a padded 0 becomes -128 and adds 0 after correction
        return (v.astype("int16") - 128).astype(dt) if p.shift else v.astype(dt)

    if ic % k or any(padding):
        packed = te.compute((n, ik, hp, wp, k), lambda b, c, y, x, ci: cast(tirx.if_then_else(
            tirx.all(inside(y, x), c * k + ci < ic),
            data[b, tirx.min(c * k + ci, ic - 1), y - top, x - left], zero)), name=DATA_BLOCK)
    else:  # the common case stays a plain transpose without per-element conditions
        packed = te.compute((n, ik, h, w, k), lambda b, c, y, x, ci: cast(data[b, c * k + ci, y, x]),
                            name=DATA_BLOCK)
    rc = te.reduce_axis((0, ik), "rc")
    ry = te.reduce_axis((0, shape.kh), "ry")
    rx = te.reduce_axis((0, shape.kw), "rx")
    ri = te.reduce_axis((0, k), "ri")
    return te.compute(
        (n, shape.oc, shape.oh, shape.ow),
        lambda b, o, y, x: te.sum(
            packed[b, rc, y * sh + ry * dh, x * sw + rx * dw, ri].astype(shape.out_dtype)
            * weight[o // p.vo, rc, ry, rx, o % p.vo, ri].astype(shape.out_dtype),
            axis=[rc, ry, rx, ri]),
        name=CONV_BLOCK, attrs=attrs)


def _conv_blocked(data, weight, shape: ConvShape, p: Packing, dilation: tuple[int, int],
                  attrs: dict | None, in_block: int, out_block: int):
    from tvm import te

    if not in_block:  # NCHW input: pack it like the plain conv, then block the output
        conv = conv_te(data, weight, shape, p, (0, 0, 0, 0), dilation, attrs)
    else:
        k = group_of(p.layout)
        sh, sw = shape.stride
        dh, dw = dilation
        per = in_block // k  # dot-product groups per channel block
        if k == 2:  # int16 pair dot products: widen once here, not at every broadcast of a pair
            data = te.compute(data.shape, lambda *i: data(*i).astype("int16"), name=DATA_BLOCK)
        rc = te.reduce_axis((0, shape.ic // k), "rc")
        ry = te.reduce_axis((0, shape.kh), "ry")
        rx = te.reduce_axis((0, shape.kw), "rx")
        ri = te.reduce_axis((0, k), "ri")
        conv = te.compute(
            (shape.n, shape.oc, shape.oh, shape.ow),
            lambda b, o, y, x: te.sum(
                data[b, rc // per, y * sh + ry * dh, x * sw + rx * dw, rc % per * k + ri]
                .astype(shape.out_dtype)
                * weight[o // p.vo, rc, ry, rx, o % p.vo, ri].astype(shape.out_dtype),
                axis=[rc, ry, rx, ri]),
            name=CONV_BLOCK, attrs=attrs)
    if not out_block:
        return conv
    return te.compute((shape.n, shape.oc // out_block, shape.oh, shape.ow, out_block),
                      lambda b, c, y, x, i: conv[b, c * out_block + i, y, x], name="farm_conv_blocked")


def conv_shape(call) -> ConvShape | str:
    """The ConvShape of a relax conv2d call, or why the packed conv does not apply."""
    from tvm.ir import GenericConst

    a = call.attrs
    if not isinstance(call.args[1], GenericConst):
        return "weight is not a constant"
    if a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or a.out_layout != "NCHW":
        return f"layout {a.data_layout}/{a.kernel_layout}"
    if int(a.groups) != 1:
        return "grouped conv"
    try:
        n, ic, h, w = (int(d) for d in call.args[0].ty.shape)
        oc, _, kh, kw = (int(d) for d in call.args[1].ty.shape)
        _, _, oh, ow = (int(d) for d in call.ty.shape)
    except (TypeError, ValueError):
        return "dynamic shape"
    out = str(call.ty.dtype)
    return ConvShape(n, ic, h, w, oc, kh, kw, oh, ow, tuple(int(s) for s in a.strides),
                     str(call.args[0].ty.dtype), str(call.args[1].ty.dtype), out)
