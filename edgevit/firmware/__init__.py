"""Firmware for boards: the serial agent in C (``firmware/agent/``), built for a board
(:mod:`.build`), run on an emulated board under QEMU (:mod:`.qemu`), with the protocol's constants
generated from :mod:`edgevit.serial_protocol` (:mod:`.protocol_header`)."""
from .build import BOARDS, BuildError, FirmwareBuild, build_agent, firmware_root
from .qemu import QemuBoard

__all__ = ["BOARDS", "BuildError", "FirmwareBuild", "build_agent", "firmware_root", "QemuBoard"]
