"""The wire format: split.proto's messages (loaded by grpcio from the .proto itself, no generated code to
drift) and boundary-tensor encoding (float32, float16, or int8 with one scale: QuantPipe-style)."""
from __future__ import annotations

import functools

import numpy as np
import torch

from ..errors import EdgevitError

__all__ = ["protos", "services", "encode", "decode", "BOUNDARY_DTYPES", "GRPC_OPTIONS"]

BOUNDARY_DTYPES = ("float32", "float16", "int8")
# Keepalive: a dead peer is noticed within seconds even when no frame is due; large frames allowed.
GRPC_OPTIONS = [("grpc.keepalive_time_ms", 2000), ("grpc.keepalive_timeout_ms", 2000),
                ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0),
                ("grpc.http2.min_ping_interval_without_data_ms", 1000), ("grpc.http2.max_ping_strikes", 0),
                ("grpc.max_send_message_length", 512 * 2**20), ("grpc.max_receive_message_length", 512 * 2**20)]


@functools.lru_cache(maxsize=1)
def _loaded():
    try:
        import grpc
    except ImportError:
        raise EdgevitError("Split inference needs grpcio and grpcio-tools: pip install grpcio grpcio-tools") from None
    return grpc.protos_and_services("edgevit/split/split.proto")


def protos():
    return _loaded()[0]


def services():
    return _loaded()[1]


def encode(tensor: torch.Tensor, dtype: str = "float32"):
    """A torch tensor -> ``Tensor`` message in ``dtype``."""
    if dtype not in BOUNDARY_DTYPES:
        raise EdgevitError(f"Boundary dtype '{dtype}' is not one of {', '.join(BOUNDARY_DTYPES)}.")
    x = tensor.detach().to(torch.float32).contiguous().numpy()
    msg = protos().Tensor(shape=list(x.shape), dtype=dtype)
    if dtype == "float32":
        msg.data = x.astype("<f4").tobytes()
    elif dtype == "float16":
        msg.data = x.astype("<f2").tobytes()
    else:
        lo, hi = float(min(x.min(initial=0.0), 0.0)), float(max(x.max(initial=0.0), 0.0))
        scale = (hi - lo) / 255.0 or 1.0
        zero = int(round(-lo / scale)) - 128
        msg.data = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8).tobytes()
        msg.scale, msg.zero_point = scale, zero
    return msg


def decode(msg) -> torch.Tensor:
    shape = tuple(msg.shape)
    if msg.dtype == "float32":
        x = np.frombuffer(msg.data, dtype="<f4")
    elif msg.dtype == "float16":
        x = np.frombuffer(msg.data, dtype="<f2").astype(np.float32)
    elif msg.dtype == "int8":
        x = (np.frombuffer(msg.data, dtype=np.int8).astype(np.float32) - msg.zero_point) * msg.scale
    else:
        raise EdgevitError(f"A frame carries a tensor of dtype '{msg.dtype}'; expected one of "
                           f"{', '.join(BOUNDARY_DTYPES)} (peers of different edgevit versions?).")
    return torch.from_numpy(x.reshape(shape).copy())
