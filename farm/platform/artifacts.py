"""File names of a Hexagon build's artifact: written by compile/hexagon, read by the hexagon-sim
transport — the contract between the two stages, so neither imports the other."""

EXE_NAME = "model.elf"  # Linux user-mode system calls: qemu-hexagon
SDK_EXE_NAME = "model-sdk.elf"  # the same kernels and plan with semihosting calls: hexagon-sim
ASM_NAME = "model.s"
META_NAME = "model.json"
