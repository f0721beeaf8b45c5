"""Compare two runs per (device, suite): latency with a noise-aware verdict, correctness and
check-status changes, and the int8 lowering report (ops that now fall back).

Latency verdict: a two-sided Mann-Whitney U test on the recorded samples of both runs (it uses the
spread of both, assumes no distribution) AND a minimum effect size on the ratio of medians. Both
must hold: a tiny but "significant" shift between two quiet runs is not a regression, and a big
but noisy difference is reported as noisy, not as slower. The samples of one run only show the
noise within that run; a busy machine also moves whole runs. So when the history has enough runs,
the effect must also exceed DRIFT_K times the run-to-run spread of the median seen there (else the
verdict is "drift").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from farm.results.states import Status
from farm.results.store import CheckResult

ALPHA = 0.01  # significance level of the U test
MIN_EFFECT = 0.05  # smallest change of the median that counts (5%)
MIN_SAMPLES = 5
DRIFT_K = 3.0  # a change must exceed this many run-to-run standard deviations of the history
CORRECTNESS_KEYS = ("exact", "max_lsb", "top1", "cosine")


@dataclass(frozen=True)
class LatencyDelta:
    base_median: float
    head_median: float
    ratio: float  # head / base median
    p_value: float | None
    verdict: str  # slower | faster | unchanged | noisy | drift | too-few-samples
    threshold: float = MIN_EFFECT  # the relative change that counted

    @property
    def regression(self) -> bool:
        return self.verdict == "slower"


def latency_verdict(base: list[float], head: list[float], alpha: float = ALPHA,
                    min_effect: float = MIN_EFFECT, drift: float | None = None) -> LatencyDelta:
    """Judge head's latency samples against base's (seconds, one per repeat); `drift` is the
    history's relative run-to-run spread of the median, when known."""
    from scipy.stats import mannwhitneyu

    b, h = np.asarray(base, dtype=float), np.asarray(head, dtype=float)
    bm, hm = float(np.median(b)), float(np.median(h))
    ratio = hm / bm if bm > 0 else float("inf")
    if len(b) < MIN_SAMPLES or len(h) < MIN_SAMPLES:
        return LatencyDelta(bm, hm, ratio, None, "too-few-samples")
    p = float(mannwhitneyu(h, b, alternative="two-sided").pvalue)
    threshold = max(min_effect, DRIFT_K * drift) if drift else min_effect

    def beyond(t: float) -> bool:
        return ratio >= 1 + t or ratio <= 1 / (1 + t)

    if beyond(threshold) and p < alpha:
        verdict = "slower" if ratio > 1 else "faster"
    elif beyond(min_effect) and p < alpha:
        verdict = "drift"  # real between these runs, but runs move this much anyway
    elif beyond(min_effect):
        verdict = "noisy"
    else:
        verdict = "unchanged"
    return LatencyDelta(bm, hm, ratio, p, verdict, threshold)


@dataclass
class Change:
    """One noteworthy difference; `regression` ones make `farm compare` exit 1."""

    device: str
    suite: str
    check: str
    what: str  # latency | status | correctness | lowering | missing
    message: str
    regression: bool


@dataclass
class Comparison:
    base: dict[str, Any]
    head: dict[str, Any]
    latency: dict[tuple[str, str, str], LatencyDelta] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regression]


def _is_latency(r: CheckResult) -> bool:
    return "samples" in r.metrics and "median" in r.metrics


def compare_runs(base_run: dict, base: list[CheckResult], head_run: dict, head: list[CheckResult],
                 alpha: float = ALPHA, min_effect: float = MIN_EFFECT,
                 drift: dict[tuple[str, str, str], float] | None = None) -> Comparison:
    """Every change from base to head, keyed by (device, suite, check); `drift` holds the history's
    run-to-run spread per key (see history.drift)."""
    out = Comparison(base_run, head_run)
    old = {(r.device, r.suite, r.check): r for r in base}
    for r in head:
        key = (r.device, r.suite, r.check)
        b = old.pop(key, None)
        if b is None:
            continue  # new in head: nothing to compare with
        add = _adder(out, r)
        _status(b, r, add)
        if b.status == r.status == Status.PASS:
            if _is_latency(b) and _is_latency(r):
                d = latency_verdict(b.metrics["samples"], r.metrics["samples"], alpha, min_effect,
                                    (drift or {}).get(key))
                out.latency[key] = d
                if d.verdict in ("slower", "faster"):
                    add("latency", f"median {d.base_median * 1e3:.3f} → {d.head_median * 1e3:.3f} ms "
                        f"({d.ratio - 1:+.1%}, p={d.p_value:.2g}): {d.verdict}", d.regression)
            _correctness(b.metrics, r.metrics, add)
        _lowering(b.metrics.get("lowering"), r.metrics.get("lowering"), add)
    for (device, suite, check), b in old.items():
        if b.status != Status.SKIPPED:
            out.changes.append(Change(device, suite, check, "missing",
                                      f"was {b.status} in {base_run['id']}, absent from {head_run['id']}",
                                      False))
    return out


def _adder(out: Comparison, r: CheckResult):
    def add(what: str, message: str, regression: bool) -> None:
        out.changes.append(Change(r.device, r.suite, r.check, what, message, regression))
    return add


def _status(b: CheckResult, r: CheckResult, add) -> None:
    if b.status == r.status:
        return
    why = f": {r.reason}" if r.reason else ""
    if b.status == Status.PASS and r.status in (Status.FAIL, Status.ERROR):
        add("status", f"broke: pass → {r.status}{why}", True)
    elif r.status == Status.PASS:
        add("status", f"fixed: {b.status} → pass", False)
    else:  # to or from skipped: worth saying, not a regression of the code
        add("status", f"{b.status} → {r.status}{why}", False)


def _correctness(b: dict, h: dict, add) -> None:
    """Correctness metrics that got worse even though the check still passes its thresholds."""
    for key in CORRECTNESS_KEYS:
        bv, hv = b.get(key), h.get(key)
        if bv is None or hv is None or bv == hv:
            continue
        worse = hv > bv if key == "max_lsb" else hv < bv
        if key == "cosine" and abs(hv - bv) < 1e-6:
            continue  # float noise of the cosine itself
        fmt = (lambda v: f"{v:.2%}") if key in ("exact", "top1") else (lambda v: f"{v:g}")
        label = {"exact": "exact share", "max_lsb": "max LSB", "top1": "top-1", "cosine": "cosine"}[key]
        add("correctness", f"{label} {fmt(bv)} → {fmt(hv)}" + (" (worse)" if worse else " (better)"), worse)


def _op_key(op: dict, i: int) -> str:
    return str(op.get("name") or op.get("op") or f"op#{i}")


def fallbacks(lowering: dict | None) -> dict[str, dict]:
    """The ops of a lowering report that fall back (not int8), by name."""
    ops = (lowering or {}).get("ops") or []
    return {_op_key(op, i): op for i, op in enumerate(ops) if isinstance(op, dict) and op.get("fallback")}


def _lowering(b: dict | None, h: dict | None, add) -> None:
    if not isinstance(b, dict) or not isinstance(h, dict):
        return  # no lowering report on one side: nothing to compare
    old, new = fallbacks(b), fallbacks(h)
    for name, op in new.items():
        if name not in old:
            why = f" ({op['fallback']})" if isinstance(op["fallback"], str) else ""
            add("lowering", f"{name} ({op.get('op', '?')}) fell back from int8{why}", True)
    head_ops = {_op_key(op, i) for i, op in enumerate(h.get("ops") or []) if isinstance(op, dict)}
    for name in old:
        if name not in new and name in head_ops:
            add("lowering", f"{name} is int8 now (fell back before)", False)


LATENCY_HEADERS = ["device", "suite", "check", "base ms", "head ms", "change", "p", "threshold", "verdict"]


def latency_rows(cmp: Comparison) -> list[list[str]]:
    return [[dev, suite, check, f"{d.base_median * 1e3:.3f}", f"{d.head_median * 1e3:.3f}",
             f"{d.ratio - 1:+.1%}", "" if d.p_value is None else f"{d.p_value:.2g}",
             f"±{d.threshold:.1%}", d.verdict]
            for (dev, suite, check), d in cmp.latency.items()]


def render_comparison(cmp: Comparison, fmt: str = "table") -> str:
    """The comparison as text, markdown (CI summary) or JSON."""
    import json

    from tabulate import tabulate

    if fmt == "json":
        return json.dumps({"base": cmp.base["id"], "head": cmp.head["id"],
                           "latency": [dict(zip(LATENCY_HEADERS, row, strict=True))
                                       for row in latency_rows(cmp)],
                           "changes": [c.__dict__ for c in cmp.changes],
                           "regressions": len(cmp.regressions)}, indent=1)
    md = fmt == "md"
    head = " → ".join(f"{r['id']} ({r['git_commit'] or '-'})" for r in (cmp.base, cmp.head))
    parts = [f"## compare {head}" if md else f"compare {head}",
             tabulate(latency_rows(cmp), headers=LATENCY_HEADERS, tablefmt="github" if md else "simple")
             if cmp.latency else "(no latency measured in both runs)"]
    for title, changes in (("regressions", cmp.regressions),
                           ("other changes", [c for c in cmp.changes if not c.regression])):
        parts.append(f"\n{'### ' if md else ''}{title}: {len(changes) or 'none'}")
        parts += [f"- [{c.device}] {c.suite} {c.check} ({c.what}): {c.message}" for c in changes]
    return "\n".join(parts)
