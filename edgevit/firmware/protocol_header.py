"""Writes ``firmware/agent/include/edgevit_protocol.h`` from :mod:`edgevit.serial_protocol`.

``python -m edgevit.firmware.protocol_header`` regenerates it (``--check`` only compares); the header is
committed, and a test holds it equal to what this module writes, so C and Python share one source.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import serial_protocol as sp
from .._io import atomic_write_text
from .build import firmware_root

__all__ = ["protocol_header", "header_path", "write_protocol_header"]

_C_TYPES = {"B": ("uint8_t", 1), "H": ("uint16_t", 2), "I": ("uint32_t", 4)}


def _layout_lines(msg: sp.Msg, layout: sp.struct.Struct) -> list[str]:
    """Offsets and size of a payload layout: EV_<MSG>_SIZE, EV_<MSG>_OFF_<n>."""
    name = msg.name
    lines = [f"#define EV_{name}_SIZE {layout.size}u  /* struct '{layout.format}' */"]
    offset, field = 0, 0
    fmt = layout.format.lstrip("<")
    i = 0
    while i < len(fmt):
        count = ""
        while fmt[i].isdigit():
            count += fmt[i]
            i += 1
        code, n = fmt[i], int(count or 1)
        i += 1
        if code == "x":
            offset += n
            continue
        size = n if code == "s" else _C_TYPES[code][1]
        ctype = f"u8[{n}]" if code == "s" else _C_TYPES[code][0]
        lines.append(f"#define EV_{name}_OFF_{field} {offset}u  /* {ctype} */")
        offset += size
        field += 1
    return lines


def protocol_header() -> str:
    """The header's text (deterministic)."""
    out = [
        "/* edgevit_protocol.h - the serial protocol's constants (docs/serial-protocol.md).",
        " * Generated from edgevit/serial_protocol.py by `python -m edgevit.firmware.protocol_header`: do not edit. */",
        "#ifndef EDGEVIT_PROTOCOL_H", "#define EDGEVIT_PROTOCOL_H", "",
        f"#define EV_PROTOCOL_VERSION {sp.PROTOCOL_VERSION}u", f"#define EV_MIN_VERSION {sp.MIN_VERSION}u", "",
        "/* Frames (section 2) */",
        f"#define EV_SOF0 0x{sp.SOF[0]:02X}u", f"#define EV_SOF1 0x{sp.SOF[1]:02X}u",
        f"#define EV_HEADER_SIZE {sp.HEADER_SIZE}u      /* marker, version, type, seq, length, header CRC-16 */",
        f"#define EV_TRAILER_SIZE {sp.TRAILER_SIZE}u     /* CRC-32 of header and payload */",
        f"#define EV_OVERHEAD {sp.OVERHEAD}u",
        f"#define EV_MAX_PAYLOAD_LIMIT {sp.MAX_PAYLOAD}u", f"#define EV_MIN_MAX_PAYLOAD {sp.MIN_MAX_PAYLOAD}u",
        f"#define EV_HEARTBEAT_MS {sp.HEARTBEAT_MS}u", "",
        f"/* {sp.CRC16['name']} and {sp.CRC32['name']} (section 2.2) */",
        f"#define EV_CRC16_POLY 0x{sp.CRC16['poly']:04X}u", f"#define EV_CRC16_INIT 0x{sp.CRC16['init']:04X}u",
        f"#define EV_CRC16_XOROUT 0x{sp.CRC16['xorout']:04X}u", f"#define EV_CRC16_CHECK 0x{sp.CRC16['check']:04X}u",
        f"#define EV_CRC32_POLY_REFLECTED 0x{sp.CRC32['poly_reflected']:08X}u",
        f"#define EV_CRC32_INIT 0x{sp.CRC32['init']:08X}u", f"#define EV_CRC32_XOROUT 0x{sp.CRC32['xorout']:08X}u",
        f"#define EV_CRC32_CHECK 0x{sp.CRC32['check']:08X}u", "",
    ]
    for enum, prefix in ((sp.Msg, "EV_MSG_"), (sp.ErrorCode, "EV_ERR_"), (sp.ArtifactFormat, "EV_FORMAT_"),
                         (sp.FileId, "EV_FILE_"), (sp.NakReason, "EV_NAK_")):
        out.append(f"/* {enum.__name__} */")
        out.append("enum {")
        out += [f"    {prefix}{m.name} = 0x{m.value:02X}," for m in enum]
        out += ["};", ""]
    out.append("/* Artifact suffixes by format (INFO's \"formats\") */")
    out += [f'#define EV_FORMAT_SUFFIX_{f.name} "{f.suffix}"' for f in sp.ArtifactFormat]
    out += ["", "/* Payload layouts (little endian, no padding): size and field offsets (section 3) */"]
    for msg, layout in sp.LAYOUTS.items():
        out += _layout_lines(msg, layout)
        out.append(f"#define EV_{msg.name}_FIXED {1 if msg in sp.FIXED else 0}")
    out += ["", "#endif /* EDGEVIT_PROTOCOL_H */", ""]
    return "\n".join(out)


def header_path() -> Path:
    return firmware_root() / "agent" / "include" / "edgevit_protocol.h"


def write_protocol_header(path: Path | None = None) -> Path:
    return atomic_write_text(path or header_path(), protocol_header())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the committed header is current")
    args = parser.parse_args(argv)
    path = header_path()
    if args.check:
        current = path.is_file() and path.read_text() == protocol_header()
        print(f"{path}: {'up to date' if current else 'STALE: run python -m edgevit.firmware.protocol_header'}")
        return 0 if current else 1
    print(write_protocol_header(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
