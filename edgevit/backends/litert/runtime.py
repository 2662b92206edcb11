"""Running .tflite models with the LiteRT interpreter (its default XNNPACK CPU delegate) here."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ...errors import EdgevitError
from .._native_log import capture_native_stderr
from ..base import OpSummary

__all__ = ["load_model", "delegation", "outside_ops", "io_quantization"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow/absl start-up chatter
os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # it prints to stdout; edgevit shows its own stages


def _interpreter(data: bytes, threads: int, name: str):
    from ai_edge_litert.interpreter import Interpreter

    if not data:
        raise EdgevitError(f"LiteRT cannot load {name}: the file is empty.")
    with capture_native_stderr():  # "Created TensorFlow Lite XNNPACK delegate for CPU." and friends
        try:
            interpreter = Interpreter(model_content=data, num_threads=threads)
            interpreter.allocate_tensors()  # applies the XNNPACK delegate; kernels check their inputs here
        except Exception as e:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError alike
            reason = " ".join(str(e).split()) or type(e).__name__
            raise EdgevitError(f"LiteRT cannot load {name}: {reason.rstrip('.')}. Is the .tflite file corrupt, "
                               "truncated, or from a newer LiteRT?") from None
    return interpreter


def _to_model(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input -> the model's input dtype (a .tflite quantized elsewhere may take int8 input)."""
    if detail["dtype"] == np.float32:
        return np.ascontiguousarray(x, dtype=np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(detail["dtype"])


def _from_model(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.copy()
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def io_quantization(data: bytes) -> dict:
    """Input/output dtype and (scale, zero_point) a deployer must apply around the model."""
    interpreter = _interpreter(data, 1, "the converted model")
    describe = (lambda d: {"dtype": np.dtype(d["dtype"]).name, "scale": float(d["quantization"][0]),
                           "zero_point": int(d["quantization"][1])})
    return {"input": describe(interpreter.get_input_details()[0]),
            "output": describe(interpreter.get_output_details()[0])}


def load_model(artifact: bytes | Path, threads: int = 1):
    """A ``Tensor -> Tensor`` callable running the model's first signature (NCHW float32 in and out)."""
    name = str(artifact) if isinstance(artifact, (str, Path)) else "the converted model"
    if isinstance(artifact, (str, Path)):
        try:
            data = Path(artifact).read_bytes()
        except OSError as e:
            raise EdgevitError(f"Cannot read {name}: {e.strerror or e}.") from None
    else:
        data = bytes(artifact)
    interpreter = _interpreter(data, threads, name)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()

    def run(x: torch.Tensor) -> torch.Tensor:
        interpreter.set_tensor(inp["index"], _to_model(x.detach().float().numpy(), inp))
        interpreter.invoke()
        return torch.from_numpy(_from_model(interpreter.get_tensor(out["index"]), out))

    run.interpreter, run.data = interpreter, data  # the interpreter reads the buffer in place
    return run


def _delegated_nodes(interpreter) -> tuple[dict[int, dict], list[dict], set[int]]:
    """(model nodes by index, DELEGATE nodes, indices of the model nodes the partitions replaced).

    The interpreter keeps the model's original nodes and appends one DELEGATE node per partition; only the
    partitions and the nodes outside them run. A node belongs to a partition when it lies between the
    partition's inputs and outputs, so walking back from each DELEGATE node's outputs to its inputs
    recovers exactly the nodes it replaced; the rest run on TFLite's builtin kernels.
    """
    nodes = interpreter._get_ops_details()  # noqa: SLF001 - the only node listing the Python API offers
    partitions = [n for n in nodes if n["op_name"] == "DELEGATE"]
    model_nodes = {n["index"]: n for n in nodes if n["op_name"] != "DELEGATE"}
    producer = {int(t): i for i, n in model_nodes.items() for t in n["outputs"]}
    delegated: set[int] = set()
    for partition in partitions:
        boundary = {int(t) for t in partition["inputs"]}
        stack = [int(t) for t in partition["outputs"]]
        while stack:
            tensor = stack.pop()
            node = producer.get(tensor)
            if tensor in boundary or node is None or node in delegated:
                continue  # a partition input, a constant/graph input, or already walked
            delegated.add(node)
            stack.extend(int(t) for t in model_nodes[node]["inputs"] if t >= 0)
    return model_nodes, partitions, delegated


def delegation(data: bytes) -> tuple[OpSummary, dict]:
    """Which ops of the .tflite the XNNPACK delegate took, read off the interpreter after it applied it
    (see :func:`_delegated_nodes`)."""
    interpreter = _interpreter(data, 1, "the converted model")
    model_nodes, partitions, delegated = _delegated_nodes(interpreter)
    summary = OpSummary(delegated=Counter(model_nodes[i]["op_name"] for i in delegated),
                        non_delegated=Counter(n["op_name"] for i, n in model_nodes.items() if i not in delegated),
                        delegate_calls=len(partitions))
    return summary, {"model_ops": len(model_nodes), "xnnpack_partitions": len(partitions)}


def outside_ops(data: bytes) -> list[tuple[str, str]]:
    """(op name, first output tensor name) of every node XNNPACK left to TFLite's builtin kernels."""
    interpreter = _interpreter(data, 1, "the converted model")
    model_nodes, _, delegated = _delegated_nodes(interpreter)
    return [(n["op_name"], interpreter._get_tensor_details(int(n["outputs"][0]), 0)["name"])  # noqa: SLF001
            for i, n in sorted(model_nodes.items()) if i not in delegated and len(n["outputs"])]
