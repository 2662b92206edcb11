"""Host side of the linear unit: the numpy reference, random tiles, field packing and the UART protocol client.

The reference is the HLS backend's own arithmetic (``edgevit.backends.hls.fixed.requantize`` on the exact
integer accumulate, as ``reference._Reference.linear``), so "the RTL matches the reference" means "the RTL matches
the HLS kernel", which C-simulation holds bit-exact against the numpy model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends.hls.fixed import requantize
from ..errors import EdgevitError
from .mac import ACT, BIAS, BIAS_SHIFT, WEIGHT, TileShape

__all__ = ["Tile", "reference", "random_tile", "pack", "unpack", "Client", "ProtocolError"]


class ProtocolError(EdgevitError):
    """The board answered something the protocol does not allow (or nothing)."""


@dataclass
class Tile:
    """One linear-unit job on raw integers: x (rows, n) act, w (n, cols) weight, b (cols,) bias."""

    x: np.ndarray
    w: np.ndarray
    b: np.ndarray

    @property
    def n(self) -> int:
        return int(self.w.shape[0])


def reference(tile: Tile) -> np.ndarray:
    """y (rows, cols) raw act: exact ``x @ w + (b << 8)``, one AP_RND + AP_SAT requantize (as the HLS linear)."""
    acc = tile.x.astype(np.int64) @ tile.w.astype(np.int64) + (tile.b.astype(np.int64) << BIAS_SHIFT)[None, :]
    return requantize(acc, ACT.frac + WEIGHT.frac, ACT)


def random_tile(rng: np.random.Generator, shape: TileShape, n: int | None = None) -> Tile:
    """Random raw values at a random magnitude per tensor (from a few bits to the full width), so tiles cover
    small values (rounding), mid-range and saturation in both directions."""
    n = int(rng.integers(1, shape.max_in + 1)) if n is None else n

    def draw(size, width):
        bits = int(rng.integers(1, width + 1))       # magnitude: |v| < 2**(bits-1), the full range at bits = width
        hi = 1 << (bits - 1)
        return rng.integers(-hi, hi, size=size, dtype=np.int64)

    return Tile(x=draw((shape.rows, n), ACT.width), w=draw((n, shape.cols), WEIGHT.width), b=draw(shape.cols,
                                                                                                BIAS.width))


def pack(values, width: int) -> int:
    """Fields of ``width`` bits, two's complement, values[0] in the low bits."""
    out = 0
    mask = (1 << width) - 1
    for k, v in enumerate(np.asarray(values, dtype=np.int64).ravel()):
        out |= (int(v) & mask) << (k * width)
    return out


def unpack(word: int, width: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``count`` signed fields."""
    mask, sign = (1 << width) - 1, 1 << (width - 1)
    vals = [(word >> (k * width)) & mask for k in range(count)]
    return np.array([v - (1 << width) if v & sign else v for v in vals], dtype=np.int64)


def _le(value: int, nbytes: int) -> bytes:
    return value.to_bytes(nbytes, "little")


def encode_length(n: int) -> bytes:
    return b"N" + _le(n, 2)


def encode_bias(b: np.ndarray) -> bytes:
    return b"B" + _le(pack(b, BIAS.width), len(b) * BIAS.width // 8)


def encode_weights(w: np.ndarray) -> bytes:
    cols = w.shape[1]
    return b"W" + b"".join(_le(pack(row, WEIGHT.width), cols * WEIGHT.width // 8) for row in w)


def encode_inputs(x: np.ndarray) -> bytes:
    rows = x.shape[0]
    return b"X" + b"".join(_le(pack(x[:, i], ACT.width), rows * ACT.width // 8) for i in range(x.shape[1]))


def decode_results(data: bytes, shape: TileShape) -> np.ndarray:
    count = shape.rows * shape.cols
    if len(data) != count * 3:
        raise ProtocolError(f"expected {count * 3} result bytes, got {len(data)}")
    return unpack(int.from_bytes(data, "little"), ACT.width, count).reshape(shape.rows, shape.cols)


class Client:
    """Drive the board's linear unit over a byte stream with ``write(bytes)`` and ``read(n)`` (a pyserial
    ``Serial`` opened at the build's baud rate, or anything with the same two methods)."""

    def __init__(self, port):
        self.port = port
        self.shape: TileShape | None = None

    def _expect(self, nbytes: int, what: str) -> bytes:
        data = self.port.read(nbytes)
        if len(data) != nbytes:
            raise ProtocolError(f"{what}: expected {nbytes} bytes from the board, got {len(data)} "
                                "(wrong port or baud rate, or the bitstream is not loaded)")
        return data

    def _ack(self, what: str) -> None:
        reply = self._expect(1, what)
        if reply != b"K":
            raise ProtocolError(f"{what}: the board answered {reply!r} instead of b'K'")

    def identify(self) -> TileShape:
        self.port.write(b"I")
        data = self._expect(6, "identify")
        if data[:2] != b"EV":
            raise ProtocolError(f"identify: answer {data!r} does not start with b'EV' (not an edgevit linear unit)")
        self.shape = TileShape(rows=data[2], cols=data[3], max_in=int.from_bytes(data[4:6], "little"))
        return self.shape

    def run(self, tile: Tile) -> np.ndarray:
        shape = self.shape or self.identify()
        if tile.x.shape[0] != shape.rows or tile.w.shape[1] != shape.cols or not 1 <= tile.n <= shape.max_in:
            raise ProtocolError(f"tile x{tile.x.shape} w{tile.w.shape} does not fit the board's "
                                f"{shape.label} unit (max_in {shape.max_in})")
        for what, payload in (("length", encode_length(tile.n)), ("bias", encode_bias(tile.b)),
                              ("weights", encode_weights(tile.w)), ("inputs", encode_inputs(tile.x))):
            self.port.write(payload)
            self._ack(what)
        self.port.write(b"R")
        return decode_results(self._expect(shape.rows * shape.cols * 3, "results"), shape)
