"""Correctness metrics against the reference, and latency statistics: pure functions on arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from farm.config.suites import CorrectnessSpec


def compare(outputs: list[list[np.ndarray]], refs: list[list[np.ndarray]],
            steps: list[float | None], tolerance: float = 1.0) -> dict:
    """Compare device outputs with reference outputs over every input set and output tensor.

    `steps[i]` is output i's quantization step (its LSB): differences are counted in steps, and
    "exact" means the same quantized level. Without a step (a float output) "exact" means
    numerically close (rtol 1e-5) and LSB figures are absent; `beyond` counts the elements more
    than `tolerance` steps off (or not close). Top-1 is taken on output 0 (see
    `top1`); `constant_outputs` lists outputs whose reference is one value everywhere, on which
    agreement proves little.
    """
    max_abs, max_lsb, exact, beyond, total, cos_min, top_hits, top_total = 0.0, 0.0, 0, 0, 0, 1.0, 0, 0
    has_lsb = all(s for s in steps)
    varies = [False] * len(refs[0]) if refs else []
    for out_set, ref_set in zip(outputs, refs, strict=True):
        for i, (out, ref) in enumerate(zip(out_set, ref_set, strict=True)):
            if out.shape != ref.shape:
                raise ValueError(f"output {i} has shape {out.shape}, reference {ref.shape}")
            o, r = out.astype(np.float64), ref.astype(np.float64)
            varies[i] = varies[i] or bool(r.size and np.ptp(r) > 0) or not np.array_equal(r, refs[0][i])
            max_abs = max(max_abs, float(np.abs(o - r).max(initial=0.0)))
            step = steps[i] if i < len(steps) else None
            if step:
                levels = np.abs(np.rint(o / step) - np.rint(r / step))
                max_lsb = max(max_lsb, float(levels.max(initial=0.0)))
                exact += int((levels == 0).sum())
                beyond += int((levels > tolerance).sum())
            else:
                close = int(np.isclose(o, r, rtol=1e-5, atol=1e-6 * float(np.abs(r).max(initial=1))).sum())
                exact, beyond = exact + close, beyond + o.size - close
            total += o.size
            cos_min = min(cos_min, cosine(o, r))
            if i == 0:
                hits, positions = top1(o, r, step)
                top_hits, top_total = top_hits + hits, top_total + positions
    return {
        "max_abs": max_abs,
        "max_lsb": max_lsb if has_lsb else None,
        "exact": exact / total if total else 1.0,
        "cosine": cos_min,
        "top1": top_hits / top_total if top_total else None,
        "top1_positions": top_total,
        "top1_missed": top_total - top_hits,
        "constant_outputs": [i for i, v in enumerate(varies) if not v],
        "elements": total,
        "beyond": beyond,
    }


def top1(o: np.ndarray, r: np.ndarray, step: float | None) -> tuple[int, int]:
    """(agreeing positions, positions) of the arg-max along the last axis, the class axis of
    classifier ([N, C]) and sequence ([N, T, C]) outputs; other ranks have no top-1. A position
    agrees when the device's class scores, in the reference, within one output step of the
    reference's best (a tie on the grid is no disagreement)."""
    if o.ndim not in (2, 3) or o.shape[-1] < 2:
        return 0, 0
    ro, rr = o.reshape(-1, o.shape[-1]), r.reshape(-1, r.shape[-1])
    picked = np.take_along_axis(rr, ro.argmax(1)[:, None], 1)[:, 0]
    return int((picked >= rr.max(1) - (step or 0.0) * 1.0001).sum()), ro.shape[0]


def mismatch(outputs: list[list[np.ndarray]], expected: list[list[np.ndarray]]) -> str | None:
    """Where outputs differ from the expected ones (integer outputs bit for bit, float outputs
    within ONNX's backend-test tolerance rtol 1e-3, atol 1e-7), or None when they do not."""
    for k, (out_set, exp_set) in enumerate(zip(outputs, expected, strict=True)):
        if len(out_set) != len(exp_set):
            return f"set {k}: {len(out_set)} outputs, {len(exp_set)} expected"
        for i, (o, e) in enumerate(zip(out_set, exp_set, strict=True)):
            if o.shape != e.shape:
                return f"set {k} output {i}: shape {list(o.shape)}, expected {list(e.shape)}"
            o64, e64 = o.astype(np.float64), e.astype(np.float64)
            if np.issubdtype(e.dtype, np.integer) or e.dtype == np.bool_:
                off = o != e
            else:
                off = ~np.isclose(o64, e64, rtol=1e-3, atol=1e-7, equal_nan=True)
            if off.any():
                diff = float(np.abs(o64 - e64).max())
                return f"set {k} output {i}: {int(off.sum())} of {off.size} elements (max diff {diff:g})"
    return None


Sets = list[list[np.ndarray]]  # outputs of every input set


def vs_original(outputs: Sets, original: Sets, form: Sets, refs: Sets, steps: list[float | None],
                spec: CorrectnessSpec) -> tuple[dict, list[str]]:
    """Figures against ONNX Runtime on the user's QOperator model (farm.models.original), and the
    reasons to fail: the device's distance (shown), that of ORT's own QLinear kernels from the QDQ
    semantics `refs` (shown: it tells which side a difference comes from), and the rewrite's check,
    ORT on farm's QDQ form against ORT on the original (judged: they agree when the rewrite is right)."""
    def agreement(m: dict) -> dict:
        return {"max_lsb": m["max_lsb"], "exact": m["exact"]}

    rewrite = compare(form, original, steps)
    figures = {"device": agreement(compare(outputs, original, steps)),
               "ort_kernels_vs_semantics": agreement(compare(original, refs, steps)), "rewrite": agreement(rewrite)}
    off = judge(rewrite, spec)
    return figures, [f"farm's QDQ form of this QOperator model is off ONNX Runtime on the original model "
                     f"({'; '.join(off)}): a bug in farm's rewrite"] if off else []


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a.ravel(), b.ravel()) / (na * nb))


# how many more elements (positions, for top-1) than the independent engine a device may have off
# the exact semantics where the model itself is unstable: twice its count, plus one
NOISE_FACTOR = 2


def noise_floor(ort_vs_exact: dict, spec: CorrectnessSpec) -> dict | None:
    """ONNX Runtime's own distance from the exact semantics, when it misses the suite's thresholds.
    Then the model is unstable at these inputs: single-level flips at near-ties (float32 vs the
    float64 semantics) are amplified by the layers after them (sharp sigmoids, argmax over
    near-equal classes), and any correct implementation lands that far off. None: ORT is within
    the thresholds, and they are judged as written."""
    m = ort_vs_exact
    unstable = (m["max_lsb"] is not None and m["max_lsb"] > spec.max_lsb) or \
        (m["top1"] is not None and m["top1"] < spec.min_top1)
    if not unstable:
        return None
    return {"max_lsb": m["max_lsb"], "beyond": m["beyond"], "elements": m["elements"],
            "top1_missed": m["top1_missed"]}


def _within_floor(m: dict, floor: dict, spec: CorrectnessSpec) -> list[str]:
    """The max-LSB and top-1 thresholds, judged against the noise floor: the device may have up to
    NOISE_FACTOR times as many elements beyond the tolerance, and positions whose top-1 moved,
    as ONNX Runtime has (plus one)."""
    bad = []
    allowed = NOISE_FACTOR * floor["beyond"] + 1
    if m["beyond"] > allowed:
        how = "not close to" if m["max_lsb"] is None else f"more than {spec.max_lsb:g} LSB off"
        bad.append(f"{m['beyond']} elements {how} the exact semantics > {allowed} "
                   f"(ONNX Runtime has {floor['beyond']} there: the noise floor)")
    missed = m.get("top1_missed_exact")  # with the exact semantics only
    if missed is not None:
        allowed_top1 = max(NOISE_FACTOR * floor["top1_missed"] + 1,
                           math.floor((1 - spec.min_top1) * m["top1_positions"] + 1e-9))
        if missed > allowed_top1:
            bad.append(f"top-1 differs from the exact semantics at {missed} of {m['top1_positions']} positions "
                       f"> {allowed_top1} (ONNX Runtime: {floor['top1_missed']})")
    return bad


def judge(m: dict, spec: CorrectnessSpec, floor: dict | None = None) -> list[str]:
    """The thresholds `m` misses, as readable reasons (empty: pass); with a noise floor (see
    noise_floor) the max-LSB and top-1 thresholds are judged against it."""
    if floor is not None:
        bad = _within_floor(m, floor, spec)
    elif m["max_lsb"] is not None and m["max_lsb"] > spec.max_lsb:
        bad = [f"max diff {m['max_lsb']:g} LSB > {spec.max_lsb:g}"]
    else:
        bad = []
    if m["exact"] < spec.min_exact:
        bad.append(f"exact {m['exact']:.2%} < {spec.min_exact:.2%}")
    # on a quantized grid the LSB and exact figures measure agreement exactly; cosine is shown
    # but not judged there (on a sparse output a few one-level steps sink it)
    if m["max_lsb"] is None and (m["cosine"] < spec.min_cosine or math.isnan(m["cosine"])):
        bad.append(f"cosine {m['cosine']:.5f} < {spec.min_cosine}")
    if floor is None and m["top1"] is not None and m["top1"] < spec.min_top1:
        bad.append(f"top-1 agreement {m['top1']:.2%} < {spec.min_top1:.2%}")
    return bad


@dataclass(frozen=True)
class LatencyStats:
    n: int
    mean: float
    median: float
    p90: float
    min: float
    max: float
    cov: float  # coefficient of variation: std / mean

    @classmethod
    def of(cls, samples: list[float]) -> LatencyStats:
        if not samples:
            raise ValueError("no latency samples")
        a = np.asarray(samples, dtype=np.float64)
        mean = float(a.mean())
        return cls(n=len(a), mean=mean, median=float(np.median(a)),
                   p90=float(np.percentile(a, 90)), min=float(a.min()), max=float(a.max()),
                   cov=float(a.std(ddof=1) / mean) if len(a) > 1 and mean > 0 else 0.0)
