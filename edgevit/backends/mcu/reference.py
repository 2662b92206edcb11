"""The Python int8 reference: every MCU kernel in numpy integer arithmetic, on the IR's integers only.

This is what the generated C must equal bit for bit (tests compare the bytes). Formulas are ``convert``'s module
docstring; the helpers below are the exact integer primitives the C kernels use (``firmware/kernels``).
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import EdgevitError
from .ir import Layer, McuGraph

__all__ = ["requantize", "rounding_divide", "run_reference", "quantize_input", "dequantize_output"]


def requantize(acc, multiplier, shift) -> np.ndarray:
    """CMSIS-NN single rounding: ``((acc * M) >> (30 - shift)) + 1) >> 1`` on int64 (arithmetic shifts)."""
    acc = np.asarray(acc, dtype=np.int64)
    multiplier = np.asarray(multiplier, dtype=np.int64)
    total = 31 - np.asarray(shift, dtype=np.int64)
    return ((acc * multiplier) >> (total - 1)) + 1 >> 1


def rounding_divide(num, den) -> np.ndarray:
    """num / den (den > 0) rounded half away from zero, as C's ``ev_rdiv``."""
    num = np.asarray(num, dtype=np.int64)
    den = np.asarray(den, dtype=np.int64)
    q = (np.abs(num) + den // 2) // den
    return np.where(num < 0, -q, q)


def _clamp(values, lo, hi) -> np.ndarray:
    return np.clip(values, lo, hi).astype(np.int8)


def _i64(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int64)


def _conv(layer: Layer, x: np.ndarray) -> np.ndarray:
    p = layer.params
    c, h, w = p["in_shape"]
    oc, oh, ow = p["out_shape"]
    kh, kw = p["kernel"]
    (sh, sw), (ph, pw) = p["stride"], p["padding"]
    weights = _i64(layer.consts["weights"])
    xi = _i64(x.reshape(c, h, w))
    if layer.op != "conv1x1":
        xi = xi - p["input_zero_point"]           # padded taps are then 0: (z_x - z_x) * w
    padded = np.zeros((c, h + 2 * ph, w + 2 * pw), dtype=np.int64)
    padded[:, ph:ph + h, pw:pw + w] = xi
    acc = np.zeros((oc, oh, ow), dtype=np.int64) + _i64(layer.consts["bias"])[:, None, None]
    for i in range(kh):
        for j in range(kw):
            patch = padded[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]   # (c, oh, ow)
            if layer.op == "depthwise_conv2d":
                acc += weights[:, 0, i, j][:, None, None] * patch
            else:
                acc += np.einsum("oc,chw->ohw", weights[:, :, i, j], patch)
    out = requantize(acc, layer.consts["multiplier"][:, None, None], layer.consts["shift"][:, None, None])
    return _clamp(out + p["output_zero_point"], p["act_min"], p["act_max"])


def _fully_connected(layer: Layer, x: np.ndarray) -> np.ndarray:
    p = layer.params
    acc = _i64(x.reshape(p["rows"], p["in_features"])) @ _i64(layer.consts["weights"]).T + _i64(layer.consts["bias"])
    out = requantize(acc, layer.consts["multiplier"], layer.consts["shift"])
    return _clamp(out + p["output_zero_point"], p["act_min"], p["act_max"])


def _broadcast(layer: Layer, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = layer.params
    out4 = p["out_shape4"]

    def view(x, strides):
        shape = [n if s else 1 for n, s in zip(out4, strides, strict=True)]
        return np.broadcast_to(_i64(x).reshape(shape), out4)

    return view(a, p["a_strides"]), view(b, p["b_strides"])


def _add(layer: Layer, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    p = layer.params
    a, b = _broadcast(layer, a, b)
    sa = requantize((a - p["a_zero_point"]) << p["left_shift"], p["a_multiplier"], p["a_shift"])
    sb = requantize((b - p["b_zero_point"]) << p["left_shift"], p["b_multiplier"], p["b_shift"])
    out = requantize(sa + sb, p["out_multiplier"], p["out_shift"])
    return _clamp(out + p["output_zero_point"], p["act_min"], p["act_max"])


def _mul(layer: Layer, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    p = layer.params
    a, b = _broadcast(layer, a, b)
    out = requantize((a - p["a_zero_point"]) * (b - p["b_zero_point"]), p["multiplier"], p["shift"])
    return _clamp(out + p["output_zero_point"], p["act_min"], p["act_max"])


def _bmm(layer: Layer, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    p = layer.params
    a = _i64(a.reshape(p["batch"], p["m"], p["k"])) - p["a_zero_point"]
    b = _i64(b.reshape(p["batch"], p["k"], p["n"])) - p["b_zero_point"]
    out = requantize(a @ b, p["multiplier"], p["shift"])
    return _clamp(out + p["output_zero_point"], -128, 127)


def _mean(layer: Layer, x: np.ndarray) -> np.ndarray:
    p = layer.params
    acc = _i64(x.reshape(p["rows"], p["inner"])).sum(axis=1) - p["inner"] * p["input_zero_point"]
    return _clamp(requantize(acc, p["multiplier"], p["shift"]) + p["output_zero_point"], -128, 127)


def _softmax(layer: Layer, x: np.ndarray) -> np.ndarray:
    p = layer.params
    rows = _i64(x.reshape(p["rows"], p["inner"]))
    e = _i64(layer.consts["exp_table"])[rows.max(axis=1, keepdims=True) - rows]
    total = e.sum(axis=1, keepdims=True)
    return (np.clip((256 * e + total // 2) // total, 0, 255) - 128).astype(np.int8)


def _norm(layer: Layer, x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    p = layer.params
    d = _i64(x.reshape(p["rows"], p["n"])) - _i64(mean.reshape(p["rows"], 1))
    v = ((d * d).sum(axis=1) << 8) + p["eps_term"]
    r = np.array([math.isqrt(int(value) << 16) for value in v], dtype=np.int64)[:, None]
    y = np.where(r > 0, rounding_divide(d * p["k"], np.maximum(r, 1)), 0)
    return _clamp(y + p["output_zero_point"], -128, 127)


def _concat(layer: Layer, *xs: np.ndarray) -> np.ndarray:
    p = layer.params
    return np.concatenate([x.reshape(p["outer"], c) for x, c in zip(xs, p["chunks"], strict=True)], axis=1)


def _slice(layer: Layer, x: np.ndarray) -> np.ndarray:
    p = layer.params
    return x.reshape(p["outer"], p["in_chunk"])[:, p["offset"]:p["offset"] + p["out_chunk"]]


def _transpose(layer: Layer, x: np.ndarray) -> np.ndarray:
    return x.reshape(layer.params["in_shape4"]).transpose(layer.params["perm4"])


def _lut(layer: Layer, x: np.ndarray) -> np.ndarray:
    return layer.consts["table"][_i64(x) + 128]


_KERNELS = {"conv2d": _conv, "conv1x1": _conv, "depthwise_conv2d": _conv, "fully_connected": _fully_connected,
            "add": _add, "mul": _mul, "bmm": _bmm, "mean": _mean, "softmax": _softmax, "norm": _norm,
            "concat": _concat, "slice": _slice, "transpose": _transpose, "lut": _lut,
            "copy": lambda layer, x: x.copy(), "constant": lambda layer: layer.consts["data"].copy()}


def run_reference(graph: McuGraph, x: np.ndarray, keep: bool = False) -> np.ndarray | dict[int, np.ndarray]:
    """Run the int8 input ``x`` (the input tensor's shape) through every layer; the output tensor (or, with
    ``keep``, every tensor by id)."""
    first = np.asarray(x, dtype=np.int8).reshape(graph.tensors[graph.input].shape)
    values: dict[int, np.ndarray] = {graph.input: first}

    def get(tid: int) -> np.ndarray:
        return values[graph.root(tid)].reshape(graph.tensors[tid].shape)

    for layer in graph.layers:
        kernel = _KERNELS.get(layer.op)
        if kernel is None:
            raise EdgevitError(f"layer {layer.name}: no reference kernel for op '{layer.op}'")
        out = kernel(layer, *(get(t) for t in layer.inputs))
        values[layer.output] = np.ascontiguousarray(out, dtype=np.int8).reshape(graph.tensors[layer.output].shape)
    if keep:
        return {tid: get(tid) for tid in graph.tensors if graph.root(tid) in values}
    return get(graph.output)


def quantize_input(graph: McuGraph, x) -> np.ndarray:
    """Float images (N, C, H, W) -> int8, as the graph's first quantize does (torch's op: round half to even)."""
    import torch
    import torchao.quantization.pt2e  # noqa: F401  (registers torch.ops.quantized_decomposed)

    t = graph.tensors[graph.input]
    q = torch.ops.quantized_decomposed.quantize_per_tensor.default(torch.as_tensor(x, dtype=torch.float32), t.scale,
                                                                   t.zero_point, -128, 127, torch.int8)
    return q.numpy()


def dequantize_output(graph: McuGraph, y: np.ndarray) -> np.ndarray:
    t = graph.tensors[graph.output]
    return ((y.astype(np.float32) - np.float32(t.zero_point)) * np.float32(t.scale)).astype(np.float32)
