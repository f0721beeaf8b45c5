"""What each CLI command does, in terms of the library; printing happens here, not below."""

from __future__ import annotations

import argparse

from tabulate import tabulate

from farm.cli.report import report_file, report_text, write_output
from farm.config.devices import load_devices
from farm.config.paths import default_path
from farm.config.suites import find_suite
from farm.config.transports import TransportKind
from farm.errors import DeviceFailure, FarmError
from farm.models.registry import checked_suite
from farm.report.history import KEYWORDS, resolve_run
from farm.results.store import Store, default_db
from farm.run.engine import pick, resume_plan, run
from farm.run.runner import RunOptions, stderr_progress
from farm.transports import make_transport
from farm.transports.base import FarmContext
from farm.transports.checks import check_devices
from farm.transports.embedded import Farm, running_farm, state_file, stop_detached, write_state
from farm.transports.rpc import tracker_summary


def _resumed(args: argparse.Namespace) -> dict:
    """The row of the run `--resume` names."""
    with Store(default_db(args.data_dir)) as store:  # last / previous / last-night as elsewhere
        row = resolve_run(store, args.resume) if args.resume in KEYWORDS else store.run(args.resume)
    if row is None:
        raise FarmError(f"no run '{args.resume}' to resume in {default_db(args.data_dir)}",
                        "give a run id from `farm report`")
    return row


def cmd_run(args: argparse.Namespace, command: str) -> int:
    plan = resume_plan(_resumed(args), args.devices) if args.resume else \
        pick(load_devices(args.devices), args.suite, args.device, args.model, inputs=args.inputs)
    outcome = run(plan, RunOptions(data_dir=args.data_dir, command=command))
    write_output(report_text(args.data_dir, outcome.run_id, args.format), None)
    return 0 if outcome.ok else 1


def cmd_tune(args: argparse.Namespace, command: str) -> int:
    from farm.models.registry import build_builtin
    from farm.run.tune import tune

    suite = checked_suite(find_suite(args.suite, default_path("suites")))
    device = load_devices(args.devices).get(args.device)
    model = build_builtin(suite.model.builtin, args.data_dir / "models").path if suite.model.builtin \
        else suite.model.path
    path = tune(model, device, args.budget, args.data_dir, print)
    print(f"tuned choices written to {path}; `farm run` uses them")
    return 0


def cmd_report(args: argparse.Namespace, command: str) -> int:
    write_output(report_file(args), args.output)
    return 0


def _ctx(args) -> FarmContext:
    up = running_farm(args.data_dir)
    return FarmContext(args.data_dir, args.data_dir / "logs" / "probe",
                       tuple(up["tracker"]) if up else None)


def cmd_devices(args: argparse.Namespace, command: str) -> int:
    if args.devices_cmd == "emulate":
        return _emulate(args)
    registry = load_devices(args.devices)
    ctx = _ctx(args)
    names = getattr(args, "name", None)
    devices = [registry.get(n) for n in names] if names else registry.devices
    with Store(default_db(args.data_dir)) as store:
        health = store.health()
    rows = []
    for d in devices:
        avail = make_transport(d, ctx).availability()
        status = "available" if avail.runnable else "unavailable"
        last = health.get(d.name)
        rows.append([d.name, d.target.describe(), d.transport.describe(), d.threads,
                     ",".join(d.tags), status + (" (emulated)" if d.emulated else ""), avail.reason,
                     f"{last['status']} in {last['run_id']}" + (f": {last['reason']}" if last["reason"] else "")
                     if last else "-"])
    print(tabulate(rows, headers=["name", "target", "transport", "threads", "tags", "status",
                                  "reason", "last health"]))
    if args.devices_cmd == "check" and names:
        return check_devices(ctx, devices, print)
    return 0


def _emulate(args: argparse.Namespace) -> int:
    from farm.provision import arm64

    done = arm64.provision(args.sysroot, progress=stderr_progress)
    how = f"built in {done.seconds:.0f} s" if done.built else "already provisioned"
    print(f"arm64 sysroot {how}: {done.sysroot}")
    return 0


def cmd_up(args: argparse.Namespace, command: str) -> int:
    if running_farm(args.data_dir):
        print("a farm is already up; `farm down` stops it")
        return 0
    if state_file(args.data_dir).exists():  # an earlier farm whose tracker died: none of it is reused
        _say_stopped(*stop_detached(args.data_dir), "of an earlier farm whose tracker no longer answers")
    registry = load_devices(args.devices)
    local = [d for d in registry.devices if d.transport.kind == TransportKind.LOCAL]
    farm = Farm(args.data_dir, args.data_dir / "logs" / "up", local, detached=True)
    try:
        started = []
        for d in local:
            if make_transport(d, farm.ctx).availability().runnable:
                farm.start(d)
                started.append(d.name)
        write_state(args.data_dir, farm.ctx.tracker, farm.children_pids())
    except BaseException:
        farm.close()
        raise
    print(f"tracker {farm.ctx.tracker[0]}:{farm.ctx.tracker[1]}; servers: {', '.join(started) or 'none'}")
    return 0


def cmd_down(args: argparse.Namespace, command: str) -> int:
    stopped, left = stop_detached(args.data_dir)
    if not stopped and not left:
        print("no farm was up")
    _say_stopped(stopped, left)
    return 0


def _say_stopped(stopped: list[int], left: list, whose: str = "") -> None:
    if stopped:
        print(f"stopped {len(stopped)} process groups {whose}".rstrip())
    for pid in left:
        print(f"left pid {pid} alone: it is not a process this farm started (its pid was reused, or "
              "farm.json was not written by `farm up`)")


def cmd_status(args: argparse.Namespace, command: str) -> int:
    up = running_farm(args.data_dir)
    if not up:
        print("no farm is up (`farm up` starts one; `farm run` starts its own)")
        return 1
    try:
        summary = tracker_summary(tuple(up["tracker"]))
    except DeviceFailure as e:
        raise FarmError(str(e), "run `farm down` then `farm up`") from None
    rows = [[k, v.get("free", 0), v.get("pending", 0)] for k, v in summary["queue_info"].items()]
    print(f"tracker {up['tracker'][0]}:{up['tracker'][1]}")
    print(tabulate(rows, headers=["key", "free", "pending"]))
    return 0
