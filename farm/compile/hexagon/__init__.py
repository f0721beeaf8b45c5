"""The Hexagon build: a lowered Relax model → one static Hexagon executable (model.elf) holding
the TVM kernels, the embedded weights and a generated driver that runs the kernels in the order
of the Relax main function. Runs under qemu-hexagon or the Qualcomm SDK's hexagon-sim.

Artifact files: model.elf (model-sdk.elf for the SDK's simulator), model.s (kernel assembly, for
instruction checks such as vrmpy), model.json (input/output tensors and kernels, read by the transport)."""

from __future__ import annotations

import json
from pathlib import Path

from farm.compile.cache import file_hash
from farm.compile.hexagon import driver
from farm.compile.hexagon.inline import inline_stages
from farm.compile.hexagon.plan import make_plan
from farm.compile.hexagon.tvm_adapt import build_kernels, kernel_target_dict
from farm.compile.hexagon.vrmpy import use_vrmpy
from farm.errors import FarmError
from farm.platform import hexagon_toolchain as toolchain
from farm.platform.artifacts import ASM_NAME, EXE_NAME, META_NAME, SDK_EXE_NAME

_RUNTIME = Path(__file__).parent / "runtime.c"
_BLOB = "farm_weights"


def cache_options() -> dict[str, str]:
    """What besides farm's Python code decides the artifact (the cache hashes *.py only)."""
    return {"pipeline": "zero+static-executable", "runtime.c": file_hash(_RUNTIME)}


def build_executable(mod, tag: str, out: Path) -> None:
    """Compile a Relax module (weights as constants) into out/model.elf."""
    from tvm import relax

    missing = toolchain.missing_tools()
    if missing:
        raise FarmError(f"the Hexagon toolchain is incomplete: missing {', '.join(missing)}",
                        "install the listed Debian packages")
    mod = relax.get_pipeline("zero")(use_vrmpy(mod))  # legalize, fold constants, fuse into call_tir kernels
    mod = inline_stages(mod)  # no materialized intermediate stages (see inline.py)
    plan = make_plan(mod)
    target = kernel_target_dict(tag)
    work = out / "work"
    work.mkdir()
    build_kernels(mod, target, work / "kernels.o", out / ASM_NAME)
    (work / "farm_plan.h").write_text(driver.plan_header(plan, _BLOB))
    (work / "weights.bin").write_bytes(plan.blob())
    (work / "weights.s").write_text(driver.blob_asm(_BLOB, str(work / "weights.bin")))
    toolchain.assemble(work / "weights.s", work / "weights.o", target["mcpu"])
    for exe, defines in ((EXE_NAME, ()), (SDK_EXE_NAME, ("FARM_SEMIHOSTING",))):
        toolchain.compile_c(_RUNTIME, work / "runtime.o", target["mcpu"], [work], defines)
        toolchain.link([work / "kernels.o", work / "runtime.o", work / "weights.o"], out / exe)
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    tensors = plan.tensors
    (out / META_NAME).write_text(json.dumps({
        "inputs": [{"shape": tensors[i].shape, "dtype": tensors[i].dtype} for i in plan.inputs],
        "outputs": [{"shape": tensors[i].shape, "dtype": tensors[i].dtype} for i in plan.outputs],
        "kernels": [s.kernel for s in plan.steps],
        "target": target, "arena_bytes": plan.arena_bytes, "weights_bytes": plan.blob_bytes,
    }, indent=1))
