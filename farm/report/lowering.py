"""Rendering of the int8 lowering report (farm/compile/lowering_report.py): the table cell and
the full text of `farm report --lowering`."""

from __future__ import annotations

from typing import Any


def summary_cell(summary: dict[str, Any] | None) -> str:
    """Short table cell, e.g. '54/54 ops int8, vpdpbusd in 7/37 kernels, 12 lookup-table ops' (empty
    without dot ops): how many of the dot-product kernels each instruction family appears in."""
    if not summary or not summary.get("ops"):
        return ""
    n, with_ = summary.get("dot_kernels", 0), summary.get("kernels_with", {})
    instr = ", ".join(f"{f} in {with_[f]}/{n} kernels" if f in with_ else f
                      for f in summary["instructions"]) or "no int dot-product instructions"
    tables = f", {summary['lookup_ops']} lookup-table ops" if summary.get("lookup_ops") else ""
    classes = ", ".join(f"{n} {c}" for c, n in summary.get("float_classes", {}).items())
    floats = f", {summary['float_ops']} other ops float" + (f" ({classes})" if classes else "") \
        if summary.get("float_ops") else ""
    return f"{summary['int8_ops']}/{summary['ops']} ops int8, {instr}{tables}{floats}"


def render(report: dict[str, Any]) -> str:
    """The full report as text, for `farm report --lowering`."""
    lines = [f"family {report['family']}: {summary_cell(report['summary'])}"]
    if report.get("disassembly_error"):
        lines.append(f"  disassembly unavailable: {report['disassembly_error']}")
    for name, why in report.get("float_ops", {}).items():
        lines.append(f"  FALLBACK {name}: stays float32 ({why})")
    for o in report["ops"]:
        tail = f"  FALLBACK: {o['fallback']}" if "fallback" in o else ""
        lines.append(f"  {o['op']:7} {o['name']:12} {' x '.join(o['inputs'])} -> {o['out']}"
                     f"  [{o['compute']}]{tail}")
    for sym, counts in sorted(report["kernels"].items()):
        desc = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "no dot-product instructions"
        lines.append(f"  kernel {_short(sym)}: {desc}")
    return "\n".join(lines)


def _short(symbol: str, width: int = 56) -> str:
    name = symbol.removesuffix("_compute_")
    return name if len(name) <= width else name[:width] + "…"
