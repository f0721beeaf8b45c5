"""Which template and tile sizes each conv gets on a target: defaults from the target's
instruction set, overridden by tuned records (tuned/<target-name>/<model>.json, see tune.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from farm.compile.schedules.arm import dot_intrin, sdot_fits, sdot_tile
from farm.compile.schedules.conv import ConvShape
from farm.compile.schedules.intrin import AVX2_8x2, VNNI_16x4


@dataclass(frozen=True)
class Choice:
    layout: str  # "oc" (generic), "oc4i" / "oc2i" (dot products of 4 / 2 input channels)
    vo: int  # output channels per tile (a multiple of lanes)
    px: int  # pixels per tile (along a row)
    lanes: int  # output channels per micro-kernel call
    intrin: str = ""

    def describe(self) -> str:
        return f"{self.layout} vo={self.vo} px={self.px} lanes={self.lanes}" + \
            (f" {self.intrin}" if self.intrin else "")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TargetFeatures:
    family: str  # x86, arm, other
    vector_bits: int
    vnni: bool  # AVX512-VNNI (vpdpbusd on zmm)
    cores: int
    avx2: bool = False
    dotprod: bool = False  # aarch64 FEAT_DotProd (sdot / udot)
    i8mm: bool = False  # aarch64 FEAT_I8MM (usdot, smmla)


def target_features(target) -> TargetFeatures:
    """What the TVM target (not the host) offers, as LLVM sees it for its mcpu/mattr."""
    from tvm.target import codegen

    triple = str(target.attrs.get("mtriple", "") or codegen.llvm_get_system_triple())
    family = "x86" if triple.startswith(("x86_64", "i686")) else \
        "arm" if triple.startswith("aarch64") else "other"
    bits = 128  # NEON, SSE
    if family == "x86":  # (llvm_get_vector_width answers for the host, not the target)
        bits = 512 if codegen.target_has_features("avx512f", target) else \
            256 if codegen.target_has_features("avx2", target) else 128
    vnni = family == "x86" and bool(codegen.target_has_features("avx512vnni", target))
    cores = int(target.attrs.get("num-cores", 1) or 1)
    avx2 = family == "x86" and bool(codegen.target_has_features("avx2", target))
    dotprod = family == "arm" and bool(codegen.target_has_features("dotprod", target))
    i8mm = dotprod and bool(codegen.target_has_features("i8mm", target))
    return TargetFeatures(family, bits, vnni, cores, avx2, dotprod, i8mm)


def _divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


@dataclass
class Plan:
    features: TargetFeatures
    tuned: dict[str, Choice] = field(default_factory=dict)  # ConvShape.key() → choice

    def default(self, s: ConvShape) -> Choice | None:
        if self.features.family == "other":  # e.g. Hexagon: no CPU template; LLVM's own lowering
            return None
        if self.features.vnni and s.dtype == "uint8" and s.wdtype == "int8" and s.out_dtype == "int32" \
                and s.oc % 16 == 0:
            vo = 32 if s.oc % 32 == 0 else 16
            return Choice("oc4i", vo, _divisor_at_most(s.ow, self.max_px()), 16, VNNI_16x4)
        if self.features.avx2 and s.out_dtype == "int32" and s.oc % 8 == 0 \
                and s.dtype in ("uint8", "int8", "int16") and s.wdtype in ("int8", "int16"):
            vo = 16 if s.oc % 16 == 0 else 8
            px = _divisor_at_most(s.ow, self.max_px())
            if px < 4:  # rows of 7 or 14 (ResNet's last stages): one spilled register costs less
                px = _divisor_at_most(s.ow, 7)  # than tiles of 1 or 2 pixels
            return Choice("oc2i", vo, px, 8, AVX2_8x2)
        if self.features.dotprod and sdot_fits(s):
            vo, px = sdot_tile(s)
            return Choice("oc4i", vo, px, 4, dot_intrin(s, self.features.i8mm))
        lanes = max(self.features.vector_bits // 32, 4)  # fp32 or int32 accumulators
        while lanes >= 4 and s.oc % lanes:
            lanes //= 2
        if lanes < 4:
            return None
        vo = lanes * 2 if s.oc % (lanes * 2) == 0 else lanes
        return Choice("oc", vo, _divisor_at_most(s.ow, self.max_px()), lanes)

    def max_px(self) -> int:
        """Pixels per tile so that 2 vectors × px accumulators, the weights and a broadcast fit
        the register file (32 zmm, 16 ymm / xmm)."""
        return 8 if self.features.vector_bits == 512 else 6

    def choose(self, s: ConvShape) -> Choice | None:
        return self.tuned.get(s.key()) or self.default(s)
