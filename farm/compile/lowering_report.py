"""What a compiled int8 model really computes with, per device.

Two sources: the Relax module after integer lowering (the operand dtypes of every conv2d / matmul,
and why anything stayed float) and the disassembly of the exported library (which dot-product
instruction families appear, per kernel symbol; TVM names fused kernels after their ops)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from farm.compile.int8.lookup import LOOKUP
from farm.compile.int8.lower import INPUT_QUANTIZE
from farm.compile.int8.pools import AVG_POOL_SUM

DOT_OPS = {"relax.nn.conv2d": "conv2d", "relax.matmul": "dense"}

# disassembler per target family; the command gets the library path appended
DISASSEMBLERS: dict[str, list[str]] = {
    "x86": ["objdump", "-d", "--no-show-raw-insn"],
    "arm": ["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn"],
    # without the HVX attributes llvm-objdump prints HVX packets as <unknown>
    "hexagon": ["llvm-objdump-14", "-d", "--no-show-raw-insn", "--triple=hexagon",
                "--mcpu=hexagonv68", "--mattr=+hvxv68,+hvx-length128b"],
}

# instruction family → mnemonic regex, most capable first; per target family
FAMILIES: dict[str, list[tuple[str, str]]] = {
    "x86": [("vpdpbusd", r"vpdpbusds?"), ("vpmaddubsw", r"vpmaddubsw"), ("vpmaddwd", r"vpmaddwd"),
            ("vpmulld (widened to int32)", r"vpmulld"), ("float-fma", r"vfmadd\w+")],
    "arm": [("smmla/ummla", r"(u|s|us)mmla"), ("sdot/udot", r"(s|u|us|su)dot"),
            ("smull/smlal", r"(s|u)(mull|mlal)2?"), ("mla (widened to int32)", r"mla"),
            ("float-fma", r"fmla")],
    "hexagon": [("vrmpy", r"vrmpy\w*"), ("vmpy", r"vmpy\w*"), ("float-fma", r"sfmpy\w*")],
}
INT_FAMILIES = {"vpdpbusd", "vpmaddubsw", "vpmaddwd", "vpmulld (widened to int32)", "smmla/ummla",
                "sdot/udot", "smull/smlal", "mla (widened to int32)", "vrmpy", "vmpy"}
_WRAPPER = "__tvm_ffi_"  # packed-function wrappers around the kernels: no compute of their own


def _op_bindings(mod, names):
    """(binding, op name) for every var binding of the module's Relax functions that calls one of
    the ops `names`."""
    import tvm
    from tvm import relax

    for _, func in mod.functions.items():
        if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr):
            continue
        for block in func.body.blocks:
            for b in block.bindings:
                v = b.value
                if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op) and v.op.name in names:
                    yield b, v.op.name


def relax_dot_ops(mod, reasons: dict[str, str]) -> list[dict[str, Any]]:
    """Every conv2d / matmul of the lowered module with the dtypes its compute uses."""
    ops: list[dict[str, Any]] = []
    for b, name in _op_bindings(mod, DOT_OPS):
        dtypes = [str(a.ty.dtype) for a in b.value.args[:2]]
        compute = _compute_class(dtypes)
        kind = "avg_pool2d" if b.var.name.startswith(AVG_POOL_SUM) else DOT_OPS[name]
        entry = {"name": b.var.name, "op": kind, "inputs": dtypes, "out": str(b.var.ty.dtype), "compute": compute}
        if compute != "int8":
            entry["fallback"] = _reason(compute, reasons)
        ops.append(entry)
    return ops


def relax_lookup_ops(mod) -> list[dict[str, Any]]:
    """Every lookup-table op of the lowered module (lookup.py): an element-wise function computed
    as table[q], integer in and out."""
    return [{"name": b.var.name.removeprefix(f"{LOOKUP}_"), "op": "lookup", "inputs": ["256-entry table"],
             "out": str(b.var.ty.dtype), "compute": "int8"}
            for b, _ in _op_bindings(mod, ("relax.take",)) if b.var.name.startswith(LOOKUP)]


def relax_float_classes(mod, reasons: dict[str, str]) -> dict[str, int]:
    """How many quantizes left in float read each op class (softmax, mean, divide, ...), most first:
    the op the quantize's input is bound to in the lowered module, through reshapes."""
    from tvm import relax

    from farm.compile.rewrite import bindings, op_name

    floats = float_chains(reasons)
    counts: Counter = Counter()
    for _, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        defs = bindings(func)
        for var, value in defs.items():
            if var.name in floats and op_name(value) == "relax.quantize":
                src = defs.get(value.args[0])
                while op_name(src) in _RESHAPES:  # e.g. softmax → reshape → quantize: a softmax
                    src = defs.get(src.args[0])
                counts[op_name(src).removeprefix("relax.").split(".")[-1] or "other"] += 1
    return dict(counts.most_common())


_RESHAPES = ("relax.reshape", "relax.permute_dims", "relax.squeeze", "relax.expand_dims", "relax.flatten")


def _compute_class(dtypes: list[str]) -> str:
    if all(d in ("int8", "uint8") for d in dtypes):
        return "int8"
    if all(d.startswith(("int", "uint")) for d in dtypes):
        return "int16" if max(int(re.sub(r"\D", "", d)) for d in dtypes) <= 16 else "int32"
    return "float32" if "float32" in dtypes else dtypes[0]


def float_chains(reasons: dict[str, str]) -> dict[str, str]:
    """Quantize ops whose producer stayed in float, and why (quantizing the model input is not
    a fallback: its input is float by definition)."""
    return {k: v for k, v in reasons.items() if v != INPUT_QUANTIZE}


def _reason(compute: str, reasons: dict[str, str]) -> str:
    if compute == "int16":
        return ("int16 operands: a grouped conv with a weight zero point ≠ 0 whose centred weights do not fit int8, "
                "weights wider than 8 bits, or two activation operands")
    why = sorted(set(float_chains(reasons).values()))
    return "left in float" + (f" ({'; '.join(why)})" if why else ": not between dequantize and quantize")


def disassemble(lib: Path, family: str) -> dict[str, Counter]:
    """Instruction families per function symbol of a library (.so/.o) or an assembly text file."""
    if lib.suffix in (".s", ".asm"):
        return _count(lib.read_text(errors="replace"), family, r"^([A-Za-z_$][\w.$]*):")  # not .L labels
    cmd = DISASSEMBLERS.get(family)
    if cmd is None:
        raise LookupError(f"no disassembler for target family '{family}'")
    if shutil.which(cmd[0]) is None:
        raise LookupError(f"disassembler {cmd[0]} is not installed")
    text = subprocess.run([*cmd, str(lib)], capture_output=True, text=True, check=True).stdout
    return _count(text, family, r"^[0-9a-f]+ <([^>]+)>:")


def _count(text: str, family: str, header: str) -> dict[str, Counter]:
    pats = [(name, re.compile(rf"\b{rx}\b")) for name, rx in FAMILIES[family]]
    head = re.compile(header)
    out: dict[str, Counter] = {}
    current = None
    for line in text.splitlines():
        m = head.match(line)
        if m:
            current = m.group(1)
            out.setdefault(current, Counter())
            continue
        if current is None or not line.strip():
            continue
        for name, rx in pats:
            if rx.search(line):
                out.setdefault(current, Counter())[name] += 1
    return out


def build_report(ops: list[dict[str, Any]], lib: Path, family: str, reasons: dict[str, str] | None = None,
                 float_classes: dict[str, int] | None = None) -> dict[str, Any]:
    """The stored lowering report: ops with dtypes, other ops left in float (with reasons, and
    counted per op class), kernels with instruction families (rendered by farm/report/lowering.py)."""
    report: dict[str, Any] = {"family": family, "ops": ops, "kernels": {},
                              "float_ops": float_chains(reasons or {}), "float_classes": float_classes or {}}
    try:
        per_symbol = disassemble(lib, family)
    except (LookupError, OSError, subprocess.CalledProcessError) as e:
        report["disassembly_error"] = str(e)
        per_symbol = {}
    for sym, counts in per_symbol.items():
        if any(k in sym for k in ("conv2d", "matmul", "dense")) and not sym.startswith(_WRAPPER):
            report["kernels"][sym] = dict(counts)
    report["summary"] = summarize(report)
    return report


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    ops = [o for o in report["ops"] if o["op"] in DOT_OPS.values()]
    integer = [o for o in ops if o["compute"] == "int8"]
    found: Counter = Counter()
    for counts in report["kernels"].values():
        found.update(counts)
    return {"ops": len(ops), "int8_ops": len(integer), "float_ops": len(report.get("float_ops", {})),
            "float_classes": report.get("float_classes", {}),
            "lookup_ops": sum(1 for o in report["ops"] if o["op"] == "lookup"),
            "computes": dict(Counter(o["compute"] for o in ops)),
            "fallbacks": [f"{o['name']} ({o['op']}, {o['compute']}): {o['fallback']}"
                          for o in ops if "fallback" in o]
            + [f"{k} (float): {v}" for k, v in report.get("float_ops", {}).items()],
            "instructions": [f for f in (n for n, _ in FAMILIES.get(report["family"], []))
                             if f in found and f in INT_FAMILIES],
            "kernels_with": {f: sum(1 for c in report["kernels"].values() if f in c)
                             for f in found if f in INT_FAMILIES},
            "dot_kernels": len(report["kernels"])}
