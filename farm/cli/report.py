"""The nightly commands — `farm matrix`, `farm compare`, `farm history` — and the file formats of
`farm report` (html, junit); cli.py adds their parsers with `add_parsers`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from farm.config.suites import Check
from farm.errors import FarmError
from farm.results.store import Store, default_db


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    from farm.config.paths import default_path

    matrix = sub.add_parser("matrix", parents=[common],
                            help="run a matrix of suites × devices, one worker process per device")
    matrix.add_argument("file", nargs="?", type=Path, default=default_path("suites") / "nightly.yaml",
                        help="matrix file (default: suites/nightly.yaml)")
    matrix.add_argument("--format", choices=["table", "md", "json"], default="table")

    compare = sub.add_parser("compare", parents=[common], help="compare two runs; exit 1 on a regression")
    for name in ("base", "head"):
        compare.add_argument(name, help="run id or prefix, git commit, last, previous or last-night")
    compare.add_argument("--format", choices=["table", "md", "json"], default="table")
    compare.add_argument("--alpha", type=float, default=None, help="significance level (default 0.01)")
    compare.add_argument("--min-effect", type=float, default=None,
                         help="smallest median change that counts, e.g. 0.05 for 5%% (default)")

    history = sub.add_parser("history", parents=[common], help="one check's trend over the runs")
    history.add_argument("--suite", required=True)
    history.add_argument("--device", required=True)
    history.add_argument("--check", default=Check.LATENCY)
    history.add_argument("--limit", type=int, default=30, help="newest N runs (default 30)")


def _open(data_dir: Path) -> Store:
    path = default_db(data_dir)
    if not path.exists():
        raise FarmError(f"no results database at {path}", "run `farm run` or `farm matrix` first, "
                        "or point --data-dir / FARM_DB at one")
    return Store(path)


def cmd_matrix(args: argparse.Namespace, command: str) -> int:
    from farm.config.devices import load_devices
    from farm.config.paths import default_path
    from farm.report.table import render
    from farm.run.engine import run
    from farm.run.matrix import load_matrix
    from farm.run.runner import RunOptions

    plan = load_matrix(args.file, load_devices(args.devices), default_path("suites"))
    outcome = run(plan, RunOptions(data_dir=args.data_dir, command=command))
    with Store(default_db(args.data_dir)) as store:
        print(render(store.run(outcome.run_id), store.results(outcome.run_id), args.format))
    return 0 if outcome.ok else 1


def _comparison(store: Store, base_spec: str, head_spec: str, **kw):
    from farm.report.compare import compare_runs
    from farm.report.history import drifts, resolve_run

    base, head = resolve_run(store, base_spec), resolve_run(store, head_spec)
    if base["id"] == head["id"]:
        raise FarmError(f"'{base_spec}' and '{head_spec}' are the same run {base['id']}",
                        "compare two different runs")
    kw = {k: v for k, v in kw.items() if v is not None}
    head_results = store.results(head["id"])
    latency_keys = [(r.device, r.suite, r.check) for r in head_results if "samples" in r.metrics]
    return compare_runs(base, store.results(base["id"]), head, head_results,
                        drift=drifts(store, latency_keys, base["started"]), **kw)


def cmd_compare(args: argparse.Namespace, command: str) -> int:
    from farm.report.compare import render_comparison

    with _open(args.data_dir) as store:
        cmp = _comparison(store, args.base, args.head, alpha=args.alpha, min_effect=args.min_effect)
    print(render_comparison(cmp, args.format))
    return 1 if cmp.regressions else 0


def cmd_history(args: argparse.Namespace, command: str) -> int:
    from farm.report.history import HISTORY_HEADERS, history_rows, series

    with _open(args.data_dir) as store:
        points = series(store, args.suite, args.device, args.check, args.limit)
    if not points:
        raise FarmError(f"no '{args.check}' results of suite '{args.suite}' on '{args.device}'",
                        "check the names with `farm report`")
    print(f"{args.suite} {args.check} on {args.device}, oldest first")
    print(tabulate(history_rows(points), headers=HISTORY_HEADERS))
    return 0


def report_file(args: argparse.Namespace) -> str:
    """`farm report`: one run (id, prefix, commit or keyword) as a table, md, json, html or junit."""
    return report_text(args.data_dir, args.run, args.format, lowering=args.lowering, baseline=args.baseline)


def report_text(data_dir: Path, run_ref: str | None, fmt: str, *, lowering: bool = False,
                baseline: str | None = None) -> str:
    from farm.report.history import resolve_run
    from farm.report.html import render_html
    from farm.report.junit import render_junit
    from farm.report.table import render, render_lowering

    with _open(data_dir) as store:
        run = resolve_run(store, run_ref or "last")
        results = store.results(run["id"])
        if fmt == "junit":
            return render_junit(run, results)
        if fmt != "html":
            return render(run, results, fmt) + (render_lowering(results) if lowering else "")
        cmp = base = None
        if baseline:
            cmp = _comparison(store, baseline, run["id"])
            base = store.results(cmp.base["id"])
        return render_html(store, run, results, data_dir, cmp, base)


def write_output(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f"wrote {output}", file=sys.stderr)
