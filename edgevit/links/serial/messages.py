"""Layer 2 of the serial protocol (docs/serial-protocol.md §3-4): message types and their payloads.

Requests (host -> agent) are fixed little-endian structs, so a microcontroller parses them with one
memcpy; answers that describe things (INFO's details, RESULT) are UTF-8 JSON, easy to print from C and to
read on the host. ``LAYOUTS`` is the one place the struct layouts live; a trailing variable part (data,
JSON, text) follows the struct.
"""
from __future__ import annotations

import json
import struct
from enum import IntEnum

from ...errors import EdgevitError

__all__ = ["PROTOCOL_VERSION", "MIN_VERSION", "Msg", "ErrorCode", "ArtifactFormat", "FileId", "LAYOUTS",
           "pack", "unpack", "pack_json", "unpack_json", "ProtocolError"]

PROTOCOL_VERSION = 1    # the newest version this implementation speaks
MIN_VERSION = 1         # the oldest


class Msg(IntEnum):
    HELLO = 0x01            # H->A  start a session, offer versions
    INFO = 0x02             # A->H  chosen version, max payload, who the device is
    ACK = 0x03              # A->H  success; u32 whose meaning depends on the request
    NAK = 0x04              # A->H  "your frame <seq> arrived damaged, send it again"
    ERROR = 0x05            # A->H  the request failed; code + text
    PING = 0x06             # H->A  are you there (ACK 0, or BUSY during a run)
    BYE = 0x07              # H->A  end of session
    UPLOAD_BEGIN = 0x10     # H->A  size, format, sha256 -> ACK bytes already held (resume point)
    UPLOAD_DATA = 0x11      # H->A  offset + bytes -> ACK bytes now held
    UPLOAD_END = 0x12       # H->A  -> ACK size once the sha256 matches
    RUN = 0x20              # H->A  run an uploaded artifact -> BUSY..., then RESULT or ERROR
    BUSY = 0x21             # A->H  still running (heartbeat); u32 ms since RUN
    RESULT = 0x22           # A->H  JSON: the files the run produced
    READ = 0x30             # H->A  a piece of a result file
    DATA = 0x31             # A->H  offset + bytes


class ErrorCode(IntEnum):
    UNSUPPORTED_VERSION = 1
    UNKNOWN_TYPE = 2
    BAD_PAYLOAD = 3
    TOO_LARGE = 4
    BAD_OFFSET = 5
    HASH_MISMATCH = 6
    NOT_UPLOADED = 7
    UNSUPPORTED_FORMAT = 8
    RUN_FAILED = 9
    NO_RESULT = 10
    BUSY = 11
    STORAGE = 12
    INTERNAL = 13


class ArtifactFormat(IntEnum):
    PTE = 1
    TFLITE = 2

    @property
    def suffix(self) -> str:
        return "." + self.name.lower()


class FileId(IntEnum):
    ETDUMP = 1      # the runtime's ETDump of the last run (.pte)
    RESULT = 2      # result.json: times, memory, per-op rows (.tflite), log


# The fixed part of each payload ("<" = little endian, no padding; "x" = reserved byte, sent as 0).
LAYOUTS: dict[Msg, struct.Struct] = {
    Msg.HELLO: struct.Struct("<BBH"),           # min_version, max_version, host max_payload
    Msg.INFO: struct.Struct("<BxH"),            # version, reserved, agent max_payload; + JSON
    Msg.ACK: struct.Struct("<I"),               # value
    Msg.NAK: struct.Struct("<B"),               # reason (1 bad CRC, 2 too long)
    Msg.ERROR: struct.Struct("<H"),             # code; + UTF-8 text
    Msg.PING: struct.Struct("<"),
    Msg.BYE: struct.Struct("<"),
    Msg.UPLOAD_BEGIN: struct.Struct("<IB3x32s"),  # size, format, reserved, sha256
    Msg.UPLOAD_DATA: struct.Struct("<I"),         # offset; + bytes
    Msg.UPLOAD_END: struct.Struct("<"),
    Msg.RUN: struct.Struct("<IIH2x32s"),          # runs, warmup, threads, reserved, sha256
    Msg.BUSY: struct.Struct("<I"),                # ms since the RUN arrived
    Msg.RESULT: struct.Struct("<"),               # + JSON
    Msg.READ: struct.Struct("<BxHI"),             # file id, reserved, length, offset
    Msg.DATA: struct.Struct("<I"),                # offset; + bytes
}
# Messages whose payload is exactly the struct (no trailing part).
_FIXED = {Msg.HELLO, Msg.ACK, Msg.NAK, Msg.PING, Msg.BYE, Msg.UPLOAD_BEGIN, Msg.UPLOAD_END, Msg.RUN, Msg.BUSY,
          Msg.READ}


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
