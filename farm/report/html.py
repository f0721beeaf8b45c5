"""One self-contained HTML page per run: what got slower, what broke, what fell back from int8
(against a baseline run when given), per-device tables, latency distributions and history trends
(matplotlib, embedded as base64 PNG), lowering reports, and failures with their log tails."""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections import defaultdict
from html import escape
from pathlib import Path

import numpy as np

from farm.report.compare import LATENCY_HEADERS, Change, Comparison, fallbacks, latency_rows
from farm.report.history import series
from farm.report.logs import log_tail
from farm.report.lowering import summary_cell
from farm.report.table import HEADERS, device_rows
from farm.results.states import Status
from farm.results.store import CheckResult, Store

HISTORY_RUNS = 30

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
h3{font-size:15px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}
.pass{color:#176f2c}.fail,.error,.bad{color:#b00020;font-weight:600}.skipped{color:#8a6d00}
.box{border:1px solid #ddd;border-radius:6px;padding:8px 14px;margin:10px 0}
.box.regressed{border-color:#b00020;background:#fff4f4}.box.clean{border-color:#176f2c;background:#f4fff6}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px;max-height:320px}
.meta{color:#555}img{max-width:100%}
"""


def _png(fig, title: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode()
    t = escape(title)
    return f'<div><img alt="{t}" title="{t}" src="data:image/png;base64,{data}"></div>'


def _cls(status: str) -> str:
    return f'<span class="{escape(status)}">{escape(status)}</span>'


def _table(headers: list[str], rows: list[list[str]], raw_cols: tuple[int, ...] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if i in raw_cols else escape(str(c))}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def distribution_plot(suite: str, head: list[CheckResult], base: list[CheckResult] | None) -> str:
    """Box plots (with the samples over them) of each device's latency; baseline beside it."""
    from matplotlib.figure import Figure

    base_by = {r.device: r for r in base or [] if r.suite == suite and "samples" in r.metrics}
    rows = [r for r in head if r.suite == suite and "samples" in r.metrics and r.status == Status.PASS]
    if not rows:
        return ""
    data, labels, colors = [], [], []
    for r in rows:
        if r.device in base_by:
            data.append(np.asarray(base_by[r.device].metrics["samples"]) * 1e3)
            labels.append(f"{r.device} {r.check} (base)")
            colors.append("#bbbbbb")
        data.append(np.asarray(r.metrics["samples"]) * 1e3)
        labels.append(f"{r.device} {r.check}")
        colors.append("#4a7fd0")
    fig = Figure(figsize=(9, 0.55 * len(data) + 1.0))
    ax = fig.add_subplot()
    parts = ax.boxplot(data, orientation="horizontal", patch_artist=True, showfliers=False)
    for patch, color in zip(parts["boxes"], colors, strict=True):
        patch.set_facecolor(color)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data):
        ax.scatter(d, i + 1 + rng.uniform(-0.15, 0.15, len(d)), s=6, color="#222", alpha=0.5, zorder=3)
    ax.set_yticks(range(1, len(data) + 1), labels)
    ax.invert_yaxis()  # first device on top, its baseline just above it
    ax.set_xlabel("latency per call (ms)")
    title = f"{suite}: latency distribution"
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig, title)


def trend_plot(store: Store, suite: str, devices: list[str], check: str, until: float) -> str:
    """Median latency per run over the history, one line per device, min–p90 band shaded."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2))
    ax = fig.add_subplot()
    drawn = False
    for device in devices:
        pts = [p for p in series(store, suite, device, check, HISTORY_RUNS, until)
               if p.status == Status.PASS and "median" in p.metrics]
        if not pts:
            continue
        when = [dt.datetime.fromtimestamp(p.run["started"]) for p in pts]
        med = np.array([p.metrics["median"] for p in pts]) * 1e3
        line, = ax.plot(when, med, marker="o", ms=4, label=device)
        lo = np.array([p.metrics.get("min", p.metrics["median"]) for p in pts]) * 1e3
        hi = np.array([p.metrics.get("p90", p.metrics["median"]) for p in pts]) * 1e3
        ax.fill_between(when, lo, hi, alpha=0.15, color=line.get_color())
        drawn = True
    if not drawn:
        return ""
    ax.set_ylabel("median ms (band: min–p90)")
    title = f"{suite} {check}: last {HISTORY_RUNS} runs"
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig, title)


def _li(c: Change) -> str:
    return f"<li>[{escape(c.device)}] {escape(c.suite)} {escape(c.check)}: {escape(c.message)}</li>"


def _summary(cmp: Comparison | None, results: list[CheckResult]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in Status}
    line = ", ".join(f"{_cls(s)} {n}" for s, n in counts.items())
    out = [f'<div class="box"><b>checks</b>: {line}</div>']
    if cmp is None:
        return "".join(out)
    regs = cmp.regressions
    title = (f"{len(regs)} regression{'s' * (len(regs) != 1)} since {escape(cmp.base['id'])}"
             if regs else f"no regressions since {escape(cmp.base['id'])}")
    labels = {"latency": "slower", "status": "broke", "correctness": "less accurate",
              "lowering": "fell back from int8"}
    groups: dict[str, list[str]] = {label: [] for label in labels.values()}
    for c in regs:
        groups.setdefault(labels.get(c.what, c.what), []).append(_li(c))
    body = "".join(f"<h3>{escape(k)}</h3><ul>{''.join(v)}</ul>" for k, v in groups.items() if v)
    others = [c for c in cmp.changes if not c.regression]
    if others:
        body += "<h3>other changes</h3><ul>" + "".join(_li(c) for c in others) + "</ul>"
    if cmp.latency:
        body += "<h3>latency against the baseline</h3>" + _table(
            LATENCY_HEADERS, latency_rows(cmp))
    out.append(f'<div class="box {"regressed" if regs else "clean"}"><b>{title}</b>{body}</div>')
    return "".join(out)


def _lowering(results: list[CheckResult]) -> str:
    parts = []
    for r in results:
        low = r.metrics.get("lowering")
        if not isinstance(low, dict):
            continue
        ops = [op for op in low.get("ops") or [] if isinstance(op, dict)]
        keys = sorted({k for op in ops for k in op}, key=lambda k: (k not in ("name", "op"), k))
        rows = [[f"<b class='bad'>{escape(str(op[k]))}</b>" if k == "fallback" and op.get(k)
                 else escape(str(op.get(k, ""))) for k in keys] for op in ops]
        n_fb = len(fallbacks(low))
        parts.append(f"<h3>lowering on {escape(r.device)} ({n_fb} fallback{'s' * (n_fb != 1)})</h3>"
                     f"<p>{escape(summary_cell(low.get('summary')))}</p>"
                     + _table(keys, rows, raw_cols=tuple(range(len(keys)))))
    return "".join(parts)


def _failures(results: list[CheckResult], data_dir: Path, run_id: str) -> str:
    bad = [r for r in results if r.status != Status.PASS]
    if not bad:
        return ""
    parts, tails = ["<h3>failures and skips</h3>"], {}
    rows = [[r.device, r.check, _cls(r.status), escape(r.kind or ""), escape(r.reason)] for r in bad]
    parts.append(_table(["device", "check", "status", "kind", "reason"], rows, raw_cols=(0, 1, 2, 3, 4)))
    for r in bad:
        if r.status in (Status.FAIL, Status.ERROR) and r.device not in tails:
            tails[r.device] = log_tail(data_dir, run_id, r.device)
            if tails[r.device]:
                parts.append(f"<p>log tail of {escape(r.device)}</p><pre>{escape(tails[r.device])}</pre>")
    return "".join(parts)


def render_html(store: Store, run: dict, results: list[CheckResult], data_dir: Path,
                cmp: Comparison | None = None, base: list[CheckResult] | None = None) -> str:
    started = dt.datetime.fromtimestamp(run["started"]).strftime("%Y-%m-%d %H:%M:%S")
    took = f", {run['finished'] - run['started']:.0f} s" if run.get("finished") else ""
    parts = [f"<h1>farm run {escape(run['id'])} — {_cls(run['status'])}</h1>",
             f"<p class='meta'>started {started}{took}; commit {escape(run['git_commit'] or '-')}; "
             f"tvm {escape(run['tvm_version'] or '-')}; host {escape(run['host_cpu'] or '-')} "
             f"[{escape(run['host_features'] or '')}]<br>command: <code>{escape(run['command'] or '')}"
             f"</code></p>", _summary(cmp, results)]
    by_suite: dict[str, list[CheckResult]] = defaultdict(list)
    for r in results:
        by_suite[r.suite].append(r)
    tables = device_rows(results)
    for suite, rs in by_suite.items():
        devices = list(dict.fromkeys(r.device for r in rs))
        parts.append(f"<h2>suite {escape(suite)}</h2>" + _table(HEADERS, tables[suite]))
        parts.append(distribution_plot(suite, rs, base))
        for check in dict.fromkeys(r.check for r in rs if "samples" in r.metrics):
            parts.append(trend_plot(store, suite, devices, check, run["started"]))
        parts.append(_lowering(rs))
        parts.append(_failures(rs, data_dir, run["id"]))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>farm run {escape(run['id'])}"
            f"</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
