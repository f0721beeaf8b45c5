"""Per-device tables of one run: text (tabulate), markdown or JSON."""

from __future__ import annotations

import json
from collections import defaultdict

from tabulate import tabulate

from farm.config.suites import Check
from farm.report.lowering import render as render_report
from farm.report.lowering import summary_cell
from farm.results.states import Status
from farm.results.store import CheckResult, result_dict

HEADERS = ["device", "target", "transport", "compile", "int8", "correctness", "max LSB", "exact",
           "top-1", "median ms", "p90 ms", "CoV", "n", "fp32 ms", "int8/fp32", "notes"]


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def device_rows(results: list[CheckResult]) -> dict[str, list[list[str]]]:
    """suite → one row per device, in the order devices were run."""
    grouped: dict[str, dict[str, dict[str, CheckResult]]] = defaultdict(dict)
    for r in results:
        grouped[r.suite].setdefault(r.device, {})[r.check] = r
    tables: dict[str, list[list[str]]] = {}
    for suite, devices in grouped.items():
        rows = []
        for device, checks in devices.items():
            rows.append(_row(device, checks))
        tables[suite] = rows
    return tables


def _row(device: str, checks: dict[str, CheckResult]) -> list[str]:
    any_r = next(iter(checks.values()))
    comp, corr, lat = checks.get(Check.COMPILE), checks.get(Check.CORRECTNESS), checks.get(Check.LATENCY)
    fp32 = checks.get(Check.LATENCY_FP32)
    notes: list[str] = []
    if any_r.emulated:
        notes.append("emulated")
    compile_cell = ""
    if comp:
        if comp.status == Status.PASS:
            secs = comp.metrics.get("compile_seconds", 0)
            compile_cell = "cached" if comp.metrics.get("cached") else f"{secs:.1f} s"
        else:
            compile_cell = comp.status
    reasons = []
    for r in (comp, corr, lat, fp32):
        if r and r.reason and r.reason not in reasons and r.reason != "not compiled":
            reasons.append(r.reason)
    notes.extend(reasons)
    cm = corr.metrics if corr else {}
    lm = lat.metrics if lat and lat.status == Status.PASS else {}
    if lm.get("unit", "s") != "s":  # a simulator's count of work, not a time: no ms columns
        notes.append(f"{lm['median']:,.0f} {lm['unit']} per inference (simulated)")
        lm = {}
    fm = fp32.metrics if fp32 and fp32.status == Status.PASS else {}
    if fm.get("unit", "s") != "s":
        notes.append(f"fp32 {fm['median']:,.0f} {fm['unit']}")
    fp32_ms = fm["median"] * 1e3 if fm and fm.get("unit", "s") == "s" else None
    lowering = (comp.metrics.get("lowering") or {}) if comp else {}
    notes.extend(_not_int8(lowering.get("summary") or {}))
    if "ort_original" in cm:
        notes.append(_original_note(cm["ort_original"]))
    if cm.get("expected_outputs") == "equal":
        notes.append("outputs equal the input files' expected outputs")
    if "noise_floor" in cm:
        notes.append(_floor_note(cm))
    if cm.get("constant_outputs"):
        outs = ", ".join(str(i) for i in cm["constant_outputs"])
        notes.append(f"CONSTANT REFERENCE: output {outs} is one value on every input, so agreeing "
                     "with it proves little (give real inputs)")
    ms = 1e3
    return [
        device, any_r.target, any_r.transport, compile_cell, summary_cell(lowering.get("summary")),
        corr.status if corr else "",
        _fmt(cm.get("max_lsb"), "g") + (f" (ORT {cm['max_lsb_ort']:g})" if cm.get("max_lsb_ort") is not None
                                         and cm["max_lsb_ort"] != cm.get("max_lsb") else ""),
        _fmt(cm.get("exact"), ".2%") + (f" (ORT {cm['exact_ort']:.2%})" if "exact_ort" in cm else "")
        + (f" vs {cm['reference']}" if "reference" in cm else ""),
        _fmt(cm.get("top1"), ".0%") + (f" of {cm['top1_positions']}" if cm.get("top1_positions", 0) > 1 else ""),
        _fmt(lm["median"] * ms if lm else None, ".2f"),
        _fmt(lm["p90"] * ms if lm else None, ".2f"),
        _fmt(lm.get("cov"), ".1%"),
        _fmt(lm.get("n"), "d"),
        _fmt(fp32_ms, ".2f"),
        _fmt(fm.get("int8_over_fp32"), ".2f"),
        "; ".join(notes),
    ]


def _floor_note(cm: dict) -> str:
    f = cm["noise_floor"]
    lsb = f" up to {f['max_lsb']:g} LSB" if f["max_lsb"] is not None else ""
    top1 = f", top-1 moved at {f['top1_missed']} positions" if f["top1_missed"] else ""
    return (f"UNSTABLE MODEL at these inputs: ONNX Runtime itself is off the exact semantics{lsb} at "
            f"{f['beyond']} of {f['elements']} elements{top1} (near-tie flips the layers amplify), so the "
            f"device is judged against that noise floor: {cm.get('beyond', 0)} elements off")


def _original_note(o: dict) -> str:
    """The device and ORT's own QLinear kernels, each against ORT on the user's QOperator model."""
    def agree(a: dict) -> str:
        return "equal" if a["exact"] == 1.0 else (
            f"max {a['max_lsb']:g} LSB" if a["max_lsb"] is not None else f"{a['exact']:.2%} exact")
    return (f"vs ORT on the original QOperator model: {agree(o['device'])} (ORT's QLinear kernels vs the QDQ "
            f"semantics: {agree(o['ort_kernels_vs_semantics'])}; farm's rewrite vs ORT: {agree(o['rewrite'])})")


def _not_int8(summary: dict) -> list[str]:
    """Say it when a model's dot products do not run in int8: a pass is then not an int8 result."""
    ops, integer = summary.get("ops", 0), summary.get("int8_ops", 0)
    wider = {k: n for k, n in (summary.get("computes") or {}).items() if k.startswith("int") and k != "int8"}
    if ops and not integer and wider:
        return [f"NOT INT8: no dot-product op runs in int8 ({', '.join(f'{n} in {k}' for k, n in wider.items())}: "
                "farm report --lowering says why)"]
    if ops and not integer:
        return ["NOT INT8: no dot-product op runs in integers (a float model, or none lowered)"]
    if integer < ops:
        return [f"{ops - integer} of {ops} dot-product ops not int8 (farm report --lowering says why)"]
    return []


def render(run: dict, results: list[CheckResult], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps({"run": run, "results": [result_dict(r) for r in results]}, indent=1)
    tablefmt = "github" if fmt == "md" else "simple"
    parts = [f"run {run['id']}  ({run['status']})  host: {run['host_cpu']}  "
             f"[{run['host_features']}]  tvm {run['tvm_version']}  commit {run['git_commit'] or '-'}"]
    for suite, rows in device_rows(results).items():
        title = f"## suite {suite}" if fmt == "md" else f"suite {suite}"
        parts.append(f"\n{title}\n" + tabulate(rows, headers=HEADERS, tablefmt=tablefmt))
    return "\n".join(parts)


def render_lowering(results: list[CheckResult]) -> str:
    """The full int8 lowering report of every compiled (suite, device) of a run."""
    parts = []
    for r in results:
        report = r.metrics.get("lowering") if r.check == Check.COMPILE else None
        if report:
            parts.append(f"\nlowering {r.suite} on {r.device}:\n" + render_report(report))
    return "".join(parts) or "\n(no lowering reports in this run)"
