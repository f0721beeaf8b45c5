"""Every adaptation of TVM 0.27 needed to build Hexagon kernels without the Qualcomm SDK, in one
place.

TVM's `hexagon` target kind goes through tirx.build's host/device split as a *device* (its
packed-API host code then fails: "unknown intrinsic tirx.tvm_call_packed") and links through the
global `tvm.contrib.hexagon.link_shared`, which wants the SDK's hexagon-link. Instead of patching
either, we compile with an `llvm` target carrying the tag's Hexagon triple, CPU and features: TVM
treats it as a host target (one module, packed-API entry points `__tvm_ffi_<name>`) and its
LLVM module writes a plain relocatable object that Debian's ld.lld links.

HVX floating point is dropped from the features (and the tag's `-force-hvx-float` is not passed):
qemu-hexagon aborts on HVX float instructions, so float code is scalar; integer HVX (vrmpy, ...)
stays enabled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_NO_HVX_FLOAT = ("-hvx-qfloat", "-hvx-ieee-fp")


def kernel_target_dict(tag: str) -> dict[str, Any]:
    """An llvm target dict with the Hexagon triple/cpu/features of a `qcom/hexagon-*` tag."""
    import tvm

    attrs = tvm.target.Target({"tag": tag}).attrs
    mattr = [a for a in attrs["mattr"] if not a.lstrip("+-").startswith(("hvx-qfloat", "hvx-ieee-fp"))]
    return {"kind": "llvm", "mtriple": str(attrs["mtriple"]), "mcpu": str(attrs["mcpu"]),
            "mattr": mattr + list(_NO_HVX_FLOAT), "num-cores": 1}


def prim_funcs(mod):
    """The module's PrimFuncs as public functions named by their global var (Relax lowering
    leaves them private; MakePackedAPI only wraps functions that have a global symbol)."""
    import tvm

    return tvm.IRModule({gv: f.with_attr("global_symbol", gv.name_hint)
                         for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)})


def build_kernels(mod, target_dict: dict[str, Any], obj: Path, asm: Path) -> None:
    """Compile the module's PrimFuncs to a Hexagon object file and its assembly listing."""
    import tvm

    lib = tvm.tirx.build(prim_funcs(mod), tvm.target.Target(target_dict))
    lib.write_to_file(str(obj))
    asm.write_text(lib.inspect_source("asm"))
