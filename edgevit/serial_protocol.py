"""The serial protocol's constants, in one place (docs/serial-protocol.md): message types, error codes,
artifact formats, result files, payload layouts and frame parameters.

This leaf module imports nothing of edgevit. The Python link (``edgevit.links.serial``) re-exports it, and
``python -m edgevit.firmware.protocol_header`` turns it into ``firmware/agent/include/edgevit_protocol.h``
for the C agent, so the two implementations cannot drift apart.
"""
from __future__ import annotations

import struct
from enum import IntEnum

__all__ = ["PROTOCOL_VERSION", "MIN_VERSION", "Msg", "ErrorCode", "ArtifactFormat", "FileId", "NakReason",
           "LAYOUTS", "FIXED", "SOF", "HEADER_LAYOUT", "HEADER_SIZE", "TRAILER_SIZE", "OVERHEAD", "MAX_PAYLOAD",
           "MIN_MAX_PAYLOAD", "CRC16", "CRC32", "HEARTBEAT_MS"]

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
    PTE = 1         # ExecuTorch program
    TFLITE = 2      # LiteRT model
    HLS = 3         # the FPGA accelerator's weight image (an hls artifact's weights.bin)
    MCU = 4         # an edgevit MCU C model (model.evm); the board was flashed with it

    @property
    def suffix(self) -> str:
        return _SUFFIXES[self]


_SUFFIXES = {ArtifactFormat.PTE: ".pte", ArtifactFormat.TFLITE: ".tflite", ArtifactFormat.HLS: ".bin",
             ArtifactFormat.MCU: ".evm"}


class FileId(IntEnum):
    ETDUMP = 1      # the runtime's ETDump of the last run (.pte)
    RESULT = 2      # result.json: times, memory, per-op rows, log
    OUTPUT = 3      # the raw output tensor of the last execution (firmware agents)


class NakReason(IntEnum):
    BAD_CRC = 1     # the header was sound, the payload or its CRC-32 was not
    TOO_LONG = 2    # the header announces more payload than this receiver takes


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
FIXED = frozenset({Msg.HELLO, Msg.ACK, Msg.NAK, Msg.PING, Msg.BYE, Msg.UPLOAD_BEGIN, Msg.UPLOAD_END, Msg.RUN,
                   Msg.BUSY, Msg.READ})

# Frames (§2): marker, version, type, seq (u16), payload length (u16), header CRC-16, payload, CRC-32.
SOF = b"\xa5\x5a"
HEADER_LAYOUT = struct.Struct("<2sBBHH")    # marker, version, type, seq, payload length
HEADER_SIZE = HEADER_LAYOUT.size + 2        # + header CRC-16
TRAILER_SIZE = 4                            # CRC-32 over header and payload
OVERHEAD = HEADER_SIZE + TRAILER_SIZE
MAX_PAYLOAD = 0xFFFF                        # what the u16 length can say
MIN_MAX_PAYLOAD = 256                       # every implementation accepts payloads at least this long
HEARTBEAT_MS = 1000                         # an agent sends BUSY at least this often during a run (§5.3)

# CRC parameters (§2.2), in the Rocksoft model's terms; check = the CRC of b"123456789".
CRC16 = {"name": "CRC-16/IBM-3740", "width": 16, "poly": 0x1021, "init": 0xFFFF, "reflect": False,
         "xorout": 0x0000, "check": 0x29B1}
CRC32 = {"name": "CRC-32/ISO-HDLC", "width": 32, "poly": 0x04C11DB7, "poly_reflected": 0xEDB88320,
         "init": 0xFFFFFFFF, "reflect": True, "xorout": 0xFFFFFFFF, "check": 0xCBF43926}
