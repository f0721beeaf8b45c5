"""`farm tune`: for every distinct conv of a suite's model, time candidate schedules (template
parameters: output channels per tile, pixels per tile) on the device through the farm's own
transport (tracker + RPC server, the path the suites use) and keep the fastest in
tuned/<target>/<model>.json. Each candidate is the kernel the model's build really compiles:
the same packed conv, channel-blocked in and out where the build blocks it (blocked.py); the
record says which layout was measured. The record is rewritten after every measurement, so an
interrupted tune resumes where it stopped; `farm run` then builds with the tuned choices.
Records of another version of the model (another recipe hash) are never used: tune names them."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from farm.compile.schedules.conv import ConvShape
from farm.compile.schedules.plan import Choice, Plan, TargetFeatures
from farm.compile.schedules.records import TUNED_DIR, other_versions, record_path, save_choices
from farm.config.devices import Device
from farm.config.suites import LatencySpec

MEASURE = LatencySpec(warmup=1, number=3, repeat=3)


@dataclass(frozen=True)
class Task:
    shape: ConvShape
    padding: int
    in_block: int = 0  # the model's build feeds this conv channel-blocked data (blocked.py)
    out_block: int = 0  # ... and blocks its output

    def layout(self) -> str:
        """The measured layout, named as the lowering report names it."""
        from farm.compile.schedules.blocked import blocked_label

        return blocked_label(self.out_block, self.in_block) if self.out_block else "nchw"


def tasks_of(mod, plan: Plan) -> list[Task]:
    """The distinct convs of a Relax module (square stride / padding only, like ResNet's), each in
    the layout the build gives it on the plan's target (the first occurrence's, where they differ)."""
    from tvm import relax

    from farm.compile.schedules.blocked import block_channels, channel_block
    from farm.compile.schedules.conv import conv_shape

    found: dict[str, Task] = {}
    contexts: dict[str, int] = {}
    block = channel_block(plan.features)
    if block:
        block_channels(mod, plan, [], contexts)

    @relax.expr_functor.visitor
    class Finder(relax.PyExprVisitor):
        def visit_call_(self, call):
            super().visit_call_(call)
            if getattr(call.op, "name", "") != "relax.nn.conv2d":
                return
            s = conv_shape(call)
            pad = {int(p) for p in call.attrs.padding}
            if isinstance(s, str) or len(pad) != 1 or s.stride[0] != s.stride[1]:
                return
            blocked = s.key() in contexts
            found.setdefault(s.key(), Task(s, pad.pop(), contexts.get(s.key(), 0),
                                           block if blocked else 0))

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            Finder().visit_expr(func)
    return list(found.values())


def candidates(plan: Plan, s: ConvShape) -> list[Choice]:
    """The default first, then other tile sizes of the same template, most promising first."""
    base = plan.default(s)
    if base is None:
        return []
    out = [base]
    for k in (1, 2, 4):
        vo = base.lanes * k
        if s.oc % vo:
            continue
        for px in sorted({d for d in range(2, 15) if s.ow % d == 0} | {1}):
            if 4 <= px * k <= 28:  # accumulators that fit the register file
                c = replace(base, vo=vo, px=px)
                if c not in out:
                    out.append(c)
    # most promising first: about 12-16 accumulators (vectors × pixels) keep the pipes busy
    return out[:1] + sorted(out[1:], key=lambda c: abs(c.px * c.vo // c.lanes - 14))


def tune(model_path: Path, device: Device, budget: int, data_dir: Path,
         progress: Callable[[str], None], root: Path = TUNED_DIR) -> Path:
    """Tune the convs of `model_path` on `device`, at most `budget` new measurements; returns the
    record's path."""
    import json

    from farm.compile.build import lower_model
    from farm.compile.schedules import target_features
    from farm.platform.targets import make_target, target_dict
    from farm.transports.embedded import Farm

    target = make_target(device)
    feats = target_features(target)
    plan = Plan(feats)
    path = record_path(target_dict(device), model_path.stem, root)
    for old in other_versions(path):
        progress(f"[tune] {old} is for another version of this model and is not used: delete it")
    kernels = json.loads(path.read_text())["kernels"] if path.exists() else {}
    mod, _ = lower_model(model_path)  # ONNX or TFLite
    tasks = tasks_of(mod, plan)
    for t in tasks:  # measurements of another layout (an older build) do not count
        if kernels.get(t.shape.key(), {}).get("layout") != t.layout():
            kernels.pop(t.shape.key(), None)
    todo = [(t, c) for t in tasks for c in candidates(plan, t.shape)
            if _label(c) not in kernels.get(t.shape.key(), {}).get("tried", {})]
    todo.sort(key=lambda tc: candidates(plan, tc[0].shape).index(tc[1]))  # defaults of all first
    todo = todo[:budget]
    progress(f"[tune] {len(todo)} measurements on '{device.name}' ({device.threads} thread(s)), "
             f"record {path}")
    with Farm(data_dir, data_dir / "logs" / "tune", [device]) as farm, \
            tempfile.TemporaryDirectory(prefix="farm-tune-") as tmp:
        farm.start(device)
        with farm.transport(device).open(120) as session:
            for i, (task, choice) in enumerate(todo, 1):
                ms = _measure(session, task, choice, target, feats, device, Path(tmp) / f"k{i}.so")
                entry = kernels.setdefault(task.shape.key(), {"tried": {}, "layout": task.layout()})
                entry["tried"][_label(choice)] = ms
                best = entry.get("ms")
                if ms is not None and (best is None or ms < best):
                    entry.update(choice=choice.to_json(), ms=ms)
                save_choices(path, kernels)
                progress(f"[tune] {i}/{len(todo)} {task.shape.key()} {choice.describe()} {task.layout()}: "
                         + (f"{ms:.3f} ms" if ms is not None else "failed to build")
                         + (f" (best {entry['ms']:.3f} ms)" if entry.get("ms") else ""))
    return path


def _label(c: Choice) -> str:
    return f"vo{c.vo}_px{c.px}"


def _measure(session, task: Task, choice: Choice, target, feats: TargetFeatures, device: Device,
             lib: Path) -> float | None:
    """Median ms of the conv with `choice` on the device; None if that choice does not build."""
    from farm.compile.schedules.kernel import build, conv_module, packed_conv_module
    from farm.platform.targets import export_fn

    s = task.shape
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (s.oc, s.ic, s.kh, s.kw)).astype(s.wdtype)
    try:
        if s.out_dtype == "int32":  # the packed conv and a requantize, as the model compiles them
            mod = packed_conv_module(s, w, choice, task.padding, task.in_block, task.out_block)
        else:  # float convs: with their own (float) epilogue left to FuseOps, like the model's
            mod = conv_module([s.n, s.ic, s.h, s.w], s.dtype, w, s.stride[0], task.padding,
                              s.out_dtype)
        ex, _ = build(mod, target, feats, choice)
        fcompile = export_fn(device)
        ex.export_library(str(lib), **({"fcompile": fcompile} if fcompile else {}))
    except Exception:  # noqa: BLE001 - a candidate that TVM cannot build is skipped, not fatal
        return None
    shape = [int(d) for d in mod["main"].params[0].ty.shape]
    x = (rng.integers(0, 256, shape) if s.dtype == "uint8"
         else rng.standard_normal(shape)).astype(s.dtype)
    samples = session.load(lib).time([x], MEASURE)
    return float(np.median(samples)) * 1e3
