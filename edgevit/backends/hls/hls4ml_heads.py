"""The M3ViT task heads through hls4ml: the one part of the accelerator hls4ml 1.3 converts as it is.

A task head is one Linear (dim -> outputs) applied to every patch token of the final LayerNorm's output. hls4ml
converts it as a Dense on a (1, dim) input, one token per call (its Dense on a (tokens, dim) input fails: "array
split does not result in an equal division"), into a Vitis HLS project whose types are edgevit's formats: input
and result ``act`` (AP_RND, AP_SAT), weights ``weight``, bias ``bias``, and an accumulator wide enough that every
product and sum is exact (:func:`exact_accum_format`, ``ap_fixed<46,18>`` for the defaults). The weights reach
hls4ml already on their grids, so its own rounding of them is the identity, and its Dense computes what edgevit's
reference does: exact sum of products plus bias, one AP_RND + AP_SAT cast to the act format. Its C-simulation is
bit-exact with ``run_reference(...).tensors["head"]`` (``tests/test_hls4ml_heads.py``).

Two routes (``convert_head(route=...)``):

- ``"qonnx"`` (default, the issue's example): a Brevitas QuantLinear whose quantizers have constant power-of-two
  scales (2^-frac of each format) -> QONNX -> hls4ml's ONNX frontend, which takes the types from the Quant nodes
  and infers the exact accumulator itself. QONNX's Quant rounds half to even (hls4ml: AP_RND_CONV); the kernels
  round half up, so the Dense's result type is set to AP_RND after conversion.
- ``"pytorch"``: hls4ml's PyTorch frontend on an ``nn.Linear`` (float64, weights on the grid), types set in the
  hls4ml config.

hls4ml, Brevitas and qonnx are imported inside the functions only (importing them is slow).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import EdgevitError
from .convert import MoeVitGraph
from .fixed import FixedFormat, quantize_checked, to_float
from .reference import Formats

__all__ = ["Hls4mlHead", "Hls4mlHeadError", "convert_head", "exact_accum_format", "head_precisions"]

PROJECT = "edgevit_head"


class Hls4mlHeadError(EdgevitError):
    """hls4ml could not convert, build or run a task head."""


def exact_accum_format(formats: Formats, dim: int) -> FixedFormat:
    """An accumulator that holds ``sum_dim(x * w) + b`` exactly: the product's fraction bits (the bias has no
    more, :meth:`Formats.check`), the product's integer bits plus log2(dim) for the sum, one for the bias."""
    a, w, b = formats.act, formats.weight, formats.bias
    frac = max(a.frac + w.frac, b.frac)
    int_bits = max(a.int_bits + w.int_bits + math.ceil(math.log2(max(dim, 1))), b.int_bits) + 1
    return FixedFormat(int_bits + frac, int_bits)


def _hls_type(fmt: FixedFormat, rounded: bool = True) -> str:
    kind = "ap_fixed" if fmt.signed else "ap_ufixed"
    return f"{kind}<{fmt.width},{fmt.int_bits},AP_RND,AP_SAT>" if rounded else f"{kind}<{fmt.width},{fmt.int_bits}>"


def head_precisions(formats: Formats, dim: int) -> dict[str, str]:
    """The hls4ml precisions of the head's Dense layer (and its input), as edgevit's formats."""
    return {"input": _hls_type(formats.act), "weight": _hls_type(formats.weight), "bias": _hls_type(formats.bias),
            "accum": _hls_type(exact_accum_format(formats, dim), rounded=False), "result": _hls_type(formats.act)}


@dataclass
class Hls4mlHead:
    """One task head as an hls4ml Vitis HLS project in ``folder``; :meth:`compile` builds hls4ml's C-sim library."""

    task: int
    folder: Path
    route: str                     # "pytorch" or "qonnx"
    formats: Formats
    dim: int
    outputs: int
    precisions: dict[str, str]     # the C++ types hls4ml wrote (input, weight, bias, accum, result)
    hls_model: Any = field(repr=False)
    compiled: bool = False

    def compile(self) -> Hls4mlHead:
        """hls4ml's own ``compile()``: writes the project and builds its C-simulation library with g++."""
        try:
            self.hls_model.compile()
        except Exception as e:     # hls4ml raises bare Exceptions (g++ failures included)
            raise Hls4mlHeadError(f"hls4ml could not build the C-simulation of head {self.task} in {self.folder}: "
                                  f"{e}. Check g++ (`g++ --version`) and hls4ml==1.3.0.") from e
        self.compiled = True
        return self

    def predict(self, features_raw: np.ndarray, class_token: bool = True) -> np.ndarray:
        """The head on the final features (tokens, dim), raw at the act format's fraction bits (what
        ``run_reference(...).tensors["norm"]`` holds) -> raw outputs (patch tokens, outputs), as
        ``tensors["head"]``. ``class_token``: row 0 is the class token, which the head skips, as edgevit's does.
        hls4ml's C-sim runs one token per call."""
        if not self.compiled:
            self.compile()
        x = np.asarray(features_raw)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise Hls4mlHeadError(f"head {self.task} takes (tokens, {self.dim}) features; got shape {x.shape}.")
        rows = x[1:] if class_token else x
        a = self.formats.act
        out = self.hls_model.predict(np.ascontiguousarray(to_float(rows, a.frac)))   # float64: exact on the grid
        out = np.asarray(out, dtype=np.float64).reshape(rows.shape[0], self.outputs)
        raw = np.ldexp(out, a.frac)
        if not np.array_equal(raw, np.rint(raw)):
            raise Hls4mlHeadError(f"hls4ml's head {self.task} returned values off the {a} grid; its result "
                                  f"precision is not the act format.")
        return raw.astype(np.int64)


def _quantized_head(graph: MoeVitGraph, task: int, formats: Formats) -> tuple[np.ndarray, np.ndarray]:
    """The head's weight (dim, out) and bias (out,) as floats exactly on their formats' grids."""
    out = []
    for name, fmt in ((f"head.{task}.weight", formats.weight), (f"head.{task}.bias", formats.bias)):
        raw, report = quantize_checked(graph.weights[name], fmt)     # as QuantizedWeights does
        report.raise_if_overflow(name)
        out.append(to_float(raw, fmt.frac))
    return out[0], out[1]


def convert_head(graph: MoeVitGraph, task: int | str, formats: Formats | None = None,
                 folder: str | Path = "hls4ml_head", route: str = "qonnx") -> Hls4mlHead:
    """Task ``task``'s head -> an hls4ml Vitis HLS project in ``folder``, one token per call.

    ``route``: ``"qonnx"`` (Brevitas QuantLinear with power-of-two scales -> QONNX -> hls4ml's ONNX frontend) or
    ``"pytorch"`` (hls4ml's PyTorch frontend on an ``nn.Linear``). Both give the same Dense; see the module doc."""
    if route not in ("qonnx", "pytorch"):
        raise Hls4mlHeadError(f"Unknown hls4ml route '{route}'; pick 'qonnx' (Brevitas -> QONNX) or 'pytorch'.")
    formats = formats or Formats()
    formats.check(graph)
    task = graph.task_index(task)
    weight, bias = _quantized_head(graph, task, formats)
    dim, outputs = weight.shape
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    precisions = head_precisions(formats, dim)
    try:
        if route == "pytorch":
            hls_model = _convert_pytorch(weight, bias, precisions, folder)
        else:
            hls_model = _convert_qonnx(weight, bias, formats, precisions, folder)
        hls_model.write()
    except Hls4mlHeadError:
        raise
    except Exception as e:         # hls4ml and its frontends raise bare Exceptions
        raise Hls4mlHeadError(f"hls4ml 1.3 could not convert task head {task} (Linear {dim} -> {outputs}) by the "
                              f"{route} route: {type(e).__name__}: {e}") from e
    return Hls4mlHead(task=task, folder=folder, route=route, formats=formats, dim=dim, outputs=outputs,
                      precisions=_precisions_of(hls_model), hls_model=hls_model)


def _precisions_of(hls_model) -> dict[str, str]:
    """The C++ types hls4ml actually wrote for the head (input, and the Dense's weight, bias, accum, result)."""
    def cpp(t) -> str:
        p = t.precision
        return p.definition_cpp() if hasattr(p, "definition_cpp") else str(p)

    dense = next(layer for layer in hls_model.get_layers() if layer.class_name == "Dense")
    return {"input": cpp(hls_model.get_input_variables()[0].type), "weight": cpp(dense.weights["weight"].type),
            "bias": cpp(dense.weights["bias"].type), "accum": cpp(dense.get_attr("accum_t")),
            "result": cpp(dense.get_output_variable().type)}


def _torch_head(weight: np.ndarray, bias: np.ndarray, linear, inp=None):
    """``linear`` (after ``inp``, an input quantizer, if given) with the head's weights."""
    import torch

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = inp
            self.proj = linear

        def forward(self, x):
            return self.proj(x if self.inp is None else self.inp(x))

    module = Head().eval()
    with torch.no_grad():
        module.proj.weight.copy_(torch.from_numpy(weight.T.copy()))
        module.proj.bias.copy_(torch.from_numpy(bias))
    return module


def _convert_pytorch(weight: np.ndarray, bias: np.ndarray, precisions: dict[str, str], folder: Path):
    import hls4ml
    import torch

    dim, outputs = weight.shape
    module = _torch_head(weight, bias, torch.nn.Linear(dim, outputs).double())
    config = hls4ml.utils.config_from_pytorch_model(module, input_shape=(dim,), granularity="name",
                                                    backend="Vitis", default_precision=precisions["result"])
    layers = config["LayerName"]
    for name, layer in layers.items():
        if name != "proj":                                     # the input layer
            layer["Precision"]["result"] = precisions["input"]
    layers["proj"]["Precision"] = {k: precisions[k] for k in ("weight", "bias", "accum", "result")}
    return hls4ml.converters.convert_from_pytorch_model(module, hls_config=config, output_dir=str(folder),
                                                        project_name=PROJECT, backend="Vitis", io_type="io_parallel")


def _brevitas_head(weight: np.ndarray, bias: np.ndarray, formats: Formats):
    """A Brevitas QuantLinear whose quantizers are edgevit's formats: constant power-of-two scales (2^-frac),
    not narrow range, input and output quantized to the act format."""
    from brevitas.core.scaling import ScalingImplType
    from brevitas.nn import QuantIdentity, QuantLinear
    from brevitas.quant.fixed_point import (
        Int8ActPerTensorFixedPoint,
        Int8BiasPerTensorFixedPointInternalScaling,
        Int8WeightPerTensorFixedPoint,
    )

    def fixed(base, fmt: FixedFormat):
        threshold = 2.0 ** (fmt.int_bits - 1)                   # scale = threshold / 2^(width-1) = 2^-frac
        return base.let(bit_width=fmt.width, narrow_range=False, scaling_impl_type=ScalingImplType.CONST,
                        scaling_const=threshold, scaling_init=threshold)

    act = fixed(Int8ActPerTensorFixedPoint, formats.act)
    dim, outputs = weight.shape
    linear = QuantLinear(dim, outputs, bias=True, weight_quant=fixed(Int8WeightPerTensorFixedPoint, formats.weight),
                         bias_quant=fixed(Int8BiasPerTensorFixedPointInternalScaling, formats.bias),
                         output_quant=act, return_quant_tensor=False)
    return _torch_head(weight, bias, linear, QuantIdentity(act_quant=act, return_quant_tensor=True))


def _convert_qonnx(weight: np.ndarray, bias: np.ndarray, formats: Formats, precisions: dict[str, str],
                   folder: Path):
    import hls4ml
    import torch
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    from ...quantization.lowbit import export_qonnx_bytes

    dim = weight.shape[0]
    module = _brevitas_head(weight, bias, formats)
    data = export_qonnx_bytes(module, torch.zeros(1, dim))
    (folder / "head.qonnx.onnx").write_bytes(data)
    model = cleanup_model(ModelWrapper(str(folder / "head.qonnx.onnx")))
    model = cleanup_model(model.transform(ConvertToChannelsLastAndClean()).transform(GemmToMatMul()))
    config = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend="Vitis",
                                                        default_precision=precisions["result"])
    hls_model = hls4ml.converters.convert_from_onnx_model(model, hls_config=config, output_dir=str(folder),
                                                          project_name=PROJECT, backend="Vitis",
                                                          io_type="io_parallel")
    # QONNX's Quant rounds half to even (rounding_mode ROUND -> AP_RND_CONV); edgevit's kernels round half up
    # (AP_RND). hls4ml has no Quant rounding mode for that, so the Dense's result type is set after conversion.
    a = formats.act
    dense = [layer for layer in hls_model.get_layers() if layer.class_name == "Dense"]
    if len(dense) != 1:
        raise Hls4mlHeadError(f"hls4ml turned the QONNX head into {[lay.class_name for lay in hls_model.get_layers()]}"
                              f"; expected one Dense layer.")
    result = dense[0].get_output_variable().type.precision
    if (result.width, result.integer, result.signed) != (a.width, a.int_bits, a.signed):
        raise Hls4mlHeadError(f"hls4ml gave the QONNX head's result {result}; expected the act format {a}.")
    result.rounding_mode, result.saturation_mode = "RND", "SAT"
    return hls_model
