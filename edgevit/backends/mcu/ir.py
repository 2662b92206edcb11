"""The MCU target's integer IR: int8 tensors with (scale, zero point), layers with integer parameters only.

Everything a kernel needs is an integer here (weights, int32 biases, fixed-point multipliers, lookup tables), so
the numpy reference (``reference.py``) and the generated C (``writer.py``) read the same numbers and agree bit for
bit. The scales are kept for the host's quantize / dequantize of the graph's input and output and for reports.

``model.evm`` serialises it deterministically: ``b"EVM1"``, a little-endian u32 header length, the header (JSON,
sorted keys, no spaces), then every constant array's raw little-endian bytes in header order.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import numpy as np

from ...errors import EdgevitError

__all__ = ["Tensor", "Layer", "McuGraph", "EVM_MAGIC"]

EVM_MAGIC = b"EVM1"
_DTYPES = {"int8": np.int8, "uint8": np.uint8, "int32": np.int32, "uint32": np.uint32}


@dataclass
class Tensor:
    id: int
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    alias_of: int | None = None     # a reshape: same bytes as tensor ``alias_of``, another shape

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Layer:
    name: str                       # module path + op, unique ("stages.1.blocks.0.ffn.m.pw1:conv1x1")
    op: str                         # a kernel of firmware/kernels (conv2d, conv1x1, depthwise_conv2d, ...)
    inputs: list[int]
    output: int
    params: dict = field(default_factory=dict)          # ints / lists of ints
    consts: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class McuGraph:
    name: str
    tensors: dict[int, Tensor]
    layers: list[Layer]
    input: int
    output: int

    def root(self, tid: int) -> int:
        """The tensor whose bytes ``tid`` uses (follows reshape aliases)."""
        while self.tensors[tid].alias_of is not None:
            tid = self.tensors[tid].alias_of
        return tid

    @property
    def const_bytes(self) -> int:
        return sum(a.nbytes for layer in self.layers for a in layer.consts.values())

    def ops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.op] = counts.get(layer.op, 0) + 1
        return dict(sorted(counts.items()))

    # -- serialisation ----------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        blobs: list[bytes] = []
        layers = []
        for layer in self.layers:
            consts = {}
            for key in sorted(layer.consts):
                array = np.ascontiguousarray(layer.consts[key])
                dtype = array.dtype.name
                if dtype not in _DTYPES:
                    raise EdgevitError(f"layer {layer.name}: constant {key} has dtype {dtype}; the IR stores "
                                       f"{', '.join(_DTYPES)} only.")
                consts[key] = {"dtype": dtype, "shape": list(array.shape)}
                blobs.append(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
            layers.append({"name": layer.name, "op": layer.op, "inputs": layer.inputs, "output": layer.output,
                           "params": layer.params, "consts": consts})
        header = {"format": "edgevit-mcu-ir", "version": 1, "name": self.name, "input": self.input,
                  "output": self.output, "layers": layers,
                  "tensors": [{"id": t.id, "shape": list(t.shape), "scale": float(t.scale),
                               "zero_point": int(t.zero_point), "alias_of": t.alias_of}
                              for t in sorted(self.tensors.values(), key=lambda t: t.id)]}
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        return EVM_MAGIC + struct.pack("<I", len(text)) + text + b"".join(blobs)

    @classmethod
    def from_bytes(cls, data: bytes) -> McuGraph:
        if data[:4] != EVM_MAGIC or len(data) < 8:
            raise EdgevitError(f"Not an edgevit MCU model (model.evm): it starts with {data[:4]!r}, not {EVM_MAGIC!r}. "
                               "Give the model.evm an `edgevit compile --device <mcu board>` wrote.")
        (length,) = struct.unpack("<I", data[4:8])
        try:
            header = json.loads(data[8:8 + length])
        except ValueError as e:
            raise EdgevitError(f"model.evm's header is not valid JSON ({e}); the file is damaged: compile "
                               "again.") from None
        offset = 8 + length
        layers = []
        for entry in header["layers"]:
            consts = {}
            for key in sorted(entry["consts"]):
                spec = entry["consts"][key]
                dtype = np.dtype(_DTYPES[spec["dtype"]]).newbyteorder("<")
                count = int(np.prod(spec["shape"], dtype=np.int64))
                end = offset + count * dtype.itemsize
                if end > len(data):
                    raise EdgevitError("model.evm is truncated (a constant runs past the end); compile again.")
                consts[key] = np.frombuffer(data, dtype=dtype, count=count, offset=offset).astype(
                    dtype.newbyteorder("=")).reshape(spec["shape"])
                offset = end
            layers.append(Layer(entry["name"], entry["op"], list(entry["inputs"]), entry["output"],
                                entry["params"], consts))
        tensors = {t["id"]: Tensor(t["id"], tuple(t["shape"]), t["scale"], t["zero_point"], t["alias_of"])
                   for t in header["tensors"]}
        return cls(header["name"], tensors, layers, header["input"], header["output"])
