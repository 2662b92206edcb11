"""Microcontroller backend: an int8 model as C (one call per layer into ``firmware/kernels``) for Cortex-M boards.

quantizer (the PT2E recipe on the MCU's patterns) -> convert (PT2E graph -> integer IR) -> reference (numpy, the
bit-exact int8 reference) -> planner (the tensor arena from liveness) -> writer (model.c / model.h / model.evm)
-> toolchain (gcc here, arm-none-eabi-gcc + QEMU for the board).
"""
from . import backend  # noqa: F401  (registers "mcu")
