"""The execution plan of a lowered Relax module: its main function as a static sequence of
call_tir steps over tensors (inputs, embedded constants, activations), for a driver on the DSP.

Only the shape the zero pipeline produces is accepted: a dataflow block of `call_tir` with
static shapes, tensor constants, and a tensor or tuple of tensors as result. Anything else is a
clear error naming what the Hexagon executor cannot run."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from farm.errors import FarmError

ALIGN = 128  # HVX vector size: every tensor starts on a vector boundary


class PlanError(FarmError):
    """The lowered model contains something the static Hexagon executor cannot run."""


@dataclass
class Tensor:
    shape: tuple[int, ...]
    dtype: str
    kind: str  # input | const | act
    offset: int = 0  # into the constant blob (const) or the activation arena (input/act)
    value: np.ndarray | None = None  # const only

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Step:
    kernel: str
    args: list[int]  # tensor ids: inputs of the call, then its outputs


@dataclass
class Plan:
    tensors: list[Tensor] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    arena_bytes: int = 0
    blob_bytes: int = 0

    def blob(self) -> bytes:
        """Every constant at its offset, padded to ALIGN."""
        out = bytearray(self.blob_bytes)
        for t in self.tensors:
            if t.kind == "const":
                raw = np.ascontiguousarray(t.value).tobytes()
                out[t.offset:t.offset + len(raw)] = raw
        return bytes(out)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _tensor_type(sinfo, what: str) -> tuple[tuple[int, ...], str]:
    from tvm import relax

    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
        raise PlanError(f"{what} is not a tensor of known shape",
                        "the Hexagon executor runs static-shape tensor graphs only")
    try:
        shape = tuple(int(d) for d in sinfo.shape.values)
    except TypeError:
        raise PlanError(f"{what} has a symbolic shape {sinfo.shape}",
                        "give the model's inputs static shapes in the suite") from None
    return shape, str(sinfo.dtype)


def make_plan(mod) -> Plan:
    """Walk `main` of a legalized, fused Relax module into a Plan."""
    main = mod["main"]
    walk = _Walk()
    for p in main.params:
        walk.ids[p] = walk.new(*_tensor_type(p.ty, f"input '{p.name}'"), "input")
        walk.plan.inputs.append(walk.ids[p])
    for block in main.body.blocks:
        for binding in block.bindings:
            walk.bind(binding.var, binding.value)
    walk.plan.outputs = walk.tensors(main.body.body)
    _assign_memory(walk.plan)
    return walk.plan


class _Walk:
    """The Plan being built and what each Relax variable of main holds: a tensor id, or a list of
    ids for a tuple."""

    def __init__(self):
        self.plan = Plan()
        self.ids: dict = {}

    def new(self, shape, dtype, kind, value=None) -> int:
        self.plan.tensors.append(Tensor(tuple(shape), dtype, kind, value=value))
        return len(self.plan.tensors) - 1

    def operand(self, e) -> int:
        import tvm
        from tvm import relax

        if isinstance(e, tvm.ir.Constant):
            arr = e.value.numpy()
            return self.new(arr.shape, str(arr.dtype), "const", arr)
        if isinstance(e, relax.Var) and isinstance(self.ids.get(e), int):
            return self.ids[e]
        raise PlanError(f"unsupported operand {type(e).__name__} in main",
                        "the Hexagon executor takes tensors and constants as kernel arguments")

    def tensors(self, e) -> list[int]:
        """The tensors of a tensor or (nested) tuple expression, flattened in order."""
        from tvm import relax

        if isinstance(e, relax.Tuple):
            return [t for f in e.fields for t in self.tensors(f)]
        if isinstance(e, relax.Var) and isinstance(self.ids.get(e), list):
            return self.ids[e]
        return [self.operand(e)]

    def bind(self, var, value) -> None:
        from tvm import relax

        if isinstance(value, relax.Var) and value in self.ids:  # plain alias
            self.ids[var] = self.ids[value]
        elif isinstance(value, relax.Tuple):  # tuples only group tensors: no copy
            self.ids[var] = self.tensors(value)
        elif isinstance(value, relax.TupleGetItem) and isinstance(self.ids.get(value.tuple_value), list):
            self.ids[var] = self.ids[value.tuple_value][value.index]
        else:
            self.ids[var] = self.kernel(value)

    def kernel(self, value) -> int | list[int]:
        """A call_tir becomes one Step writing new activation tensors; anything else is refused."""
        import tvm
        from tvm import relax

        if not (isinstance(value, relax.Call) and value.op == tvm.ir.Op.get("relax.call_tir")):
            op = getattr(value.op, "name", type(value).__name__) if isinstance(
                value, relax.Call) else type(value).__name__
            raise PlanError(f"main calls '{op}', which the Hexagon executor cannot run",
                            "only call_tir kernels run on the DSP; report the model")
        func, args = value.args[0], value.args[1]
        if len(value.args) > 2:
            raise PlanError(f"call_tir to {func.name_hint} passes symbolic shape arguments",
                            "the Hexagon executor needs static shapes")
        arg_ids = [self.operand(a) for a in args.fields]
        tupled = isinstance(value.ty, relax.TupleType)
        outs = [self.new(*_tensor_type(t, f"output of {func.name_hint}"), "act")
                for t in (value.ty.fields if tupled else [value.ty])]
        self.plan.steps.append(Step(func.name_hint, arg_ids + outs))
        return outs if tupled else outs[0]


def _assign_memory(plan: Plan) -> None:
    """Constants get blob offsets; inputs and activations share an arena, an activation's slot
    reused once its last reader ran (first fit over [first write, last read] intervals)."""
    blob = 0
    for t in plan.tensors:
        if t.kind == "const":
            t.offset, blob = blob, blob + _align(t.nbytes)
    plan.blob_bytes = max(blob, ALIGN)
    end = len(plan.steps)
    first: dict[int, int] = {i: -1 for i in plan.inputs}
    last: dict[int, int] = {}
    for s, step in enumerate(plan.steps):
        for a in step.args:
            first.setdefault(a, s)
            last[a] = s
    for o in plan.outputs + plan.inputs:
        last[o] = end  # read back (outputs) or kept for the whole run (inputs: simpler, small)
    live: list[tuple[int, int, int]] = []  # (offset, size, last use)
    arena = 0
    order = sorted((i for i, t in enumerate(plan.tensors) if t.kind != "const"),
                   key=lambda i: first.get(i, end))
    for i in order:
        t, start = plan.tensors[i], first.get(i, end)
        live = [b for b in live if b[2] >= start]  # blocks whose last reader ran before start
        size, offset = _align(t.nbytes), 0
        for b_off, b_size, _ in sorted(live):
            if offset + size <= b_off:
                break
            offset = max(offset, b_off + b_size)
        t.offset = offset
        live.append((offset, size, last.get(i, start)))
        arena = max(arena, offset + size)
    plan.arena_bytes = max(arena, ALIGN)
