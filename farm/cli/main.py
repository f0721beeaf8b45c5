"""The `farm` command: parse, call the library, print, exit code (0 pass, 1 a check or a device failed,
2 bad configuration or usage, 130 interrupted)."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from farm.cli.report import add_parsers
from farm.config.paths import default_path
from farm.errors import FarmError, error_line


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--devices", type=Path, default=None, metavar="FILE",
                        help="device registry (default: ./devices.yaml or the shipped one)")
    common.add_argument("--data-dir", type=Path, default=Path(os.environ.get("FARM_HOME", ".farm")),
                        help="cache, logs and results database (default: .farm)")
    p = argparse.ArgumentParser(prog="farm", description="Test farm for int8 models compiled "
                                "with Apache TVM: correctness and latency per device.")
    sub = p.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", parents=[common], help="run suites on devices")
    run.add_argument("--suite", action="append", default=[], help="suite name or file (repeatable)")
    run.add_argument("--model", type=Path, help="run the default checks on this ONNX file")
    run.add_argument("--inputs", type=Path, action="append", default=[], metavar="PATH",
                     help="with --model: real inputs instead of seeded noise (.npy, .npz, or an ONNX "
                     "test_data_set folder, whose output_*.pb are checked too; repeatable)")
    run.add_argument("--device", action="append", default=[], help="device name or tag (repeatable)")
    run.add_argument("--format", choices=["table", "md", "json"], default="table")
    run.add_argument("--resume", metavar="RUN", help="continue an interrupted run without repeating "
                     "finished work (same suites and devices as the original run)")

    tune = sub.add_parser("tune", parents=[common], help="search conv schedules on a device and "
                          "keep the fastest in tuned/<target>/<model>.json (resumable)")
    tune.add_argument("--suite", required=True, help="suite name or file (its model is tuned)")
    tune.add_argument("--device", required=True, help="device name")
    tune.add_argument("--budget", type=int, default=40, help="new measurements at most (default 40)")

    devices = sub.add_parser("devices", help="list or probe the registered devices")
    dsub = devices.add_subparsers(dest="devices_cmd", required=True)
    dsub.add_parser("list", parents=[common], help="table of devices and their status")
    check = dsub.add_parser("check", parents=[common], help="probe each device, say why one is unavailable")
    check.add_argument("name", nargs="*", help="only these devices")
    emulate = dsub.add_parser("emulate", parents=[common],
                              help="provision what an emulated device needs (arm64: its sysroot)")
    emulate.add_argument("arch", choices=["arm64"])
    emulate.add_argument("--sysroot", type=Path, help="where (default: the shared cache, $FARM_CACHE)")

    sub.add_parser("up", parents=[common], help="start the local farm and keep it running")
    sub.add_parser("down", parents=[common], help="stop the farm started by `farm up`")
    sub.add_parser("status", parents=[common], help="the tracker's queue: free/pending per key")

    report = sub.add_parser("report", parents=[common], help="print the tables of a run")
    report.add_argument("run", nargs="?", help="run id or unique prefix, git commit, last, previous or "
                        "last-night (default: the latest finished run)")
    report.add_argument("--format", choices=["table", "md", "json", "html", "junit"], default="table")
    report.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")
    report.add_argument("--baseline", help="html: compare with this run (id, commit, last-night, ...)")
    report.add_argument("--lowering", action="store_true",
                        help="also print each device's int8 lowering report (dtypes, instructions)")
    add_parsers(sub, common)  # matrix, compare, history
    return p


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C must stop a run cleanly even when farm was started as a background job, where the
    # shell leaves SIGINT ignored and Python would then never raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("root").setLevel(logging.ERROR)  # ORT quantizer's pre-processing advice
    args = _parser().parse_args(argv)
    if args.devices is None:
        args.devices = default_path("devices.yaml")
    from farm.cli import commands, report

    table = {"run": commands.cmd_run, "tune": commands.cmd_tune, "devices": commands.cmd_devices,
             "up": commands.cmd_up, "down": commands.cmd_down, "status": commands.cmd_status,
             "report": commands.cmd_report, "matrix": report.cmd_matrix, "compare": report.cmd_compare,
             "history": report.cmd_history}
    try:
        return table[args.cmd](args, " ".join(map(shlex.quote, sys.argv)))
    except FarmError as e:
        print(f"farm: {e.format()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("farm: interrupted; results recorded so far are kept", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in farm: one line here, the whole traceback in a file
        print(f"farm: internal error: {error_line(e)} — a bug in farm; the traceback is in "
              f"{_save_traceback(getattr(args, 'data_dir', Path('.farm')))}", file=sys.stderr)
        return 1


def _save_traceback(data_dir: Path) -> Path:
    text = traceback.format_exc()
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (data_dir / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    return Path("(nowhere writable)")

