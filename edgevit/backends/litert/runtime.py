"""Running .tflite models with the LiteRT interpreter (its default XNNPACK CPU delegate) here."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ...errors import EdgevitError
from .._native_log import capture_native_stderr

__all__ = ["load_model", "op_counts", "io_quantization"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow/absl start-up chatter
os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # it prints to stdout; edgevit shows its own stages


def _interpreter(data: bytes, threads: int, name: str):
    from ai_edge_litert.interpreter import Interpreter

    with capture_native_stderr() as log:
        try:
            interpreter = Interpreter(model_content=data, num_threads=threads)
            interpreter.allocate_tensors()
        except Exception as e:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError alike
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise EdgevitError(f"LiteRT cannot load {name}: {reason}. Is the .tflite file corrupt or "
                               "truncated?") from None
    del log
    return interpreter


def _to_model(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input -> the model's input dtype (a fully int8 model takes quantized input)."""
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
    data = Path(artifact).read_bytes() if isinstance(artifact, (str, Path)) else artifact
    name = str(artifact) if isinstance(artifact, (str, Path)) else "the converted model"
    interpreter = _interpreter(data, threads, name)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()

    def run(x: torch.Tensor) -> torch.Tensor:
        interpreter.set_tensor(inp["index"], _to_model(x.detach().numpy(), inp))
        interpreter.invoke()
        return torch.from_numpy(_from_model(interpreter.get_tensor(out["index"]), out))

    run.interpreter, run.data = interpreter, data  # the interpreter reads the buffer in place
    return run


def op_counts(data: bytes) -> dict[str, int]:
    """Op name -> count in the .tflite graph (before delegation)."""
    from ai_edge_litert.interpreter import Interpreter

    with capture_native_stderr():
        interpreter = Interpreter(model_content=data, experimental_preserve_all_tensors=False)
    counts: dict[str, int] = {}
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the only op listing the API offers
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts
