"""Layer 2 of the serial protocol (docs/serial-protocol.md §3-4): message types and their payloads.

Requests (host -> agent) are fixed little-endian structs, so a microcontroller parses them with one
memcpy; answers that describe things (INFO's details, RESULT) are UTF-8 JSON, easy to print from C and to
read on the host. ``LAYOUTS`` is the one place the struct layouts live; a trailing variable part (data,
JSON, text) follows the struct.
"""
from __future__ import annotations

import json

from ...errors import EdgevitError
from ...serial_protocol import FIXED, LAYOUTS, MIN_VERSION, PROTOCOL_VERSION, ArtifactFormat, ErrorCode, FileId, Msg

__all__ = ["PROTOCOL_VERSION", "MIN_VERSION", "Msg", "ErrorCode", "ArtifactFormat", "FileId", "LAYOUTS",
           "pack", "unpack", "pack_json", "unpack_json", "ProtocolError"]

# The constants live in the leaf module edgevit.serial_protocol (the C agent's header is generated from it).
_FIXED = FIXED


class ProtocolError(EdgevitError):
    """A frame that checked out but whose content breaks the protocol (wrong size, bad JSON)."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_PAYLOAD):
        super().__init__(message)
        self.code = code


def pack(msg: Msg, *fields, tail: bytes = b"") -> bytes:
    return LAYOUTS[msg].pack(*fields) + tail


def unpack(msg: Msg, payload: bytes) -> tuple[tuple, bytes]:
    """The struct's fields and the trailing bytes; a payload of the wrong size is a ProtocolError."""
    layout = LAYOUTS[Msg(msg)]
    if len(payload) < layout.size or (msg in _FIXED and len(payload) != layout.size):
        raise ProtocolError(f"{Msg(msg).name} payload is {len(payload)} bytes; its layout needs "
                            f"{'exactly' if msg in _FIXED else 'at least'} {layout.size}")
    return layout.unpack_from(payload), payload[layout.size:]


def pack_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def unpack_json(data: bytes, what: str) -> dict:
    try:
        obj = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"{what} is not UTF-8 JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} is JSON but not an object")
    return obj
