"""JUnit XML of one run, for CI test viewers: a testsuite per suite, a testcase per (device, check),
skipped and failed cases carrying their reason."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict

from farm.config.suites import Check
from farm.results.states import Status
from farm.results.store import CheckResult

_TAG = {Status.FAIL: "failure", Status.ERROR: "error", Status.SKIPPED: "skipped"}


def render_junit(run: dict, results: list[CheckResult]) -> str:
    suites: dict[str, list[CheckResult]] = defaultdict(list)
    for r in results:
        suites[r.suite].append(r)
    root = ET.Element("testsuites", name=f"farm run {run['id']}")
    for name, rs in suites.items():
        counts = {s: sum(r.status == s for r in rs) for s in _TAG}
        ts = ET.SubElement(root, "testsuite", name=name, tests=str(len(rs)),
                           failures=str(counts[Status.FAIL]), errors=str(counts[Status.ERROR]),
                           skipped=str(counts[Status.SKIPPED]))
        for r in rs:
            fresh = r.check == Check.COMPILE and not r.metrics.get("cached")
            seconds = r.metrics.get("compile_seconds", 0.0) if fresh else 0.0
            tc = ET.SubElement(ts, "testcase", classname=f"farm.{name}.{r.device}", name=r.check,
                               time=f"{seconds:.3f}")
            props = ET.SubElement(tc, "properties")
            for key, value in (("target", r.target), ("transport", r.transport),
                               ("emulated", str(r.emulated).lower()), ("kind", r.kind or "")):
                ET.SubElement(props, "property", name=key, value=value)
            for key in ("median", "p90", "cov", "max_lsb", "exact"):
                if r.metrics.get(key) is not None:
                    ET.SubElement(props, "property", name=key, value=f"{r.metrics[key]:.6g}")
            if r.status in _TAG:
                message = f"{r.kind}: {r.reason}" if r.kind else r.reason
                ET.SubElement(tc, _TAG[r.status], message=message or r.status,
                              type=r.kind or r.status).text = r.reason
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
