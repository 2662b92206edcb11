"""Layer 1 of the serial protocol (docs/serial-protocol.md §2): frames on a byte stream.

A frame is ``A5 5A | version | type | seq (u16 LE) | length (u16 LE) | header CRC-16 (LE) | payload |
CRC-32 (LE)``. The header has its own CRC so a damaged length is caught at once and the decoder never
waits for bytes that are not coming; after any bad check it rescans from the byte after the marker, so
a frame hidden behind garbage or behind a truncated frame is still found.
"""
from __future__ import annotations

import binascii
import struct
import zlib
from dataclasses import dataclass

from ...serial_protocol import (
    HEADER_LAYOUT,
    HEADER_SIZE,
    MAX_PAYLOAD,
    MIN_MAX_PAYLOAD,
    OVERHEAD,
    SOF,
    TRAILER_SIZE,
    NakReason,
)

__all__ = ["SOF", "HEADER_SIZE", "TRAILER_SIZE", "OVERHEAD", "MAX_PAYLOAD", "MIN_MAX_PAYLOAD", "Frame", "Damaged",
           "DamageReason", "FrameDecoder", "crc16", "crc32", "encode"]

_HEADER = HEADER_LAYOUT      # marker, version, type, seq, payload length


def crc16(data: bytes) -> int:
    """CRC-16/IBM-3740 (a.k.a. CRC-16/CCITT-FALSE): poly 0x1021, init 0xFFFF, no reflection; check 0x29B1."""
    return binascii.crc_hqx(data, 0xFFFF)


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC (zlib.crc32, Ethernet): poly 0x04C11DB7 reflected, init/xorout 0xFFFFFFFF; check 0xCBF43926."""
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    version: int = 1


DamageReason = NakReason    # why a frame was damaged is what the NAK says


@dataclass(frozen=True)
class Damaged:
    """A frame whose header checked out but whose body did not: its type and seq can be trusted."""

    type: int
    seq: int
    reason: DamageReason


def encode(frame: Frame) -> bytes:
    if not 0 <= len(frame.payload) <= MAX_PAYLOAD:
        raise ValueError(f"payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}")
    header = _HEADER.pack(SOF, frame.version, frame.type, frame.seq & 0xFFFF, len(frame.payload))
    header += struct.pack("<H", crc16(header))
    return header + frame.payload + struct.pack("<I", crc32(header + frame.payload))


class FrameDecoder:
    """Feed it bytes as they arrive; it returns the frames (and damaged frames) they complete."""

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_payload = max_payload
        self._buf = bytearray()
        self.garbage_bytes = 0      # bytes skipped while looking for a frame
        self.damaged = 0

    def feed(self, data: bytes) -> list[Frame | Damaged]:
        buf, found = self._buf, []
        buf += data
        while True:
            start = buf.find(SOF)
            if start < 0:
                keep = 1 if buf[-1:] == SOF[:1] else 0  # a marker split across two reads
                self.garbage_bytes += len(buf) - keep
                del buf[:len(buf) - keep]
                return found
            self.garbage_bytes += start
            del buf[:start]
            if len(buf) < HEADER_SIZE:
                return found
            _, version, type_, seq, length = _HEADER.unpack_from(buf)
            if struct.unpack_from("<H", buf, _HEADER.size)[0] != crc16(bytes(buf[:_HEADER.size])):
                self._skip_marker()  # not a header: garbage that happened to contain the marker
                continue
            if length > self.max_payload:
                found.append(Damaged(type_, seq, DamageReason.TOO_LONG))
                self.damaged += 1
                self._skip_marker()
                continue
            end = HEADER_SIZE + length
            if len(buf) < end + TRAILER_SIZE:
                return found
            if struct.unpack_from("<I", buf, end)[0] != crc32(bytes(buf[:end])):
                found.append(Damaged(type_, seq, DamageReason.BAD_CRC))
                self.damaged += 1
                self._skip_marker()  # rescan: a shortened frame may have swallowed the start of the next
                continue
            found.append(Frame(type_, seq, bytes(buf[HEADER_SIZE:end]), version))
            del buf[:end + TRAILER_SIZE]

    def _skip_marker(self) -> None:
        self.garbage_bytes += 2
        del self._buf[:2]
