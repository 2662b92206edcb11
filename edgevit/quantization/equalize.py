"""Per-channel equalisation of un-normalised residual streams (``equalize-stream``).

A residual stream with no normalisation on it (``x + f(x)`` after ``x + f(x)``, no LayerNorm/BatchNorm in
the skip path) keeps whatever channel ranges training gave it; one per-tensor int8 scale then wastes levels
on the narrow channels (SHViT micro on Fashion-MNIST: per-channel max |x| 5.55 at most, 0.18 at the median).
This step divides stream channel ``c`` by a calibrated ``s_c`` and compensates exactly in fp32: every
layer writing the stream divides its output channel ``c`` (weight row and bias) by ``s_c``, every layer
reading it multiplies its input channel ``c`` (weight column; a depthwise conv's filter ``c``) by ``s_c``.
A layer that reads one segment and writes the next (a depthwise residual conv with its skip folded in)
does both, so each segment between two of them gets its own scales. This is cross-layer equalisation
(Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction", ICCV 2019,
arXiv:1906.04721) along a residual stream, balanced as SmoothQuant does (Xiao et al., arXiv:2211.10438):
``s_c = (r_c / median(r)) ** alpha`` with ``r_c`` the channel's calibrated max |x|, so every channel
moves toward the median channel's range and the consumers' weights take the rest.

Measured (tools/bench_accuracy.py, Fashion-MNIST 10,000 test images, top-1 vs fp32, .pte / .tflite):
shvit_s1 -1.11 / -0.70 without the step; alpha 0.5 with s >= 1 only (wide channels shrink, narrow ones
stay) -0.74 / -0.63; alpha 1 toward the median both ways -0.11 / -0.32; alpha 0.75 (the default)
-0.16 / -0.25 (shvit_micro -0.12 / +0.09). Verification SQNR shvit_s1 11.7 -> 19.3 dB (.pte),
10.4 -> 18.7 dB (.tflite).

The model says where its streams are (``model.residual_streams()``, a list of dicts of module names, see
:class:`ResidualStream`); a model without that method is left as it is. Channels that a scale-sensitive
op reads together (a GroupNorm over several channels) are listed as ``tied`` and share one ``s``. In fp32
the model is unchanged: each stream is checked on calibration images and undone if the logits move.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["ResidualStream", "equalize_streams", "stream_ranges"]

_FLOOR = 0.1  # a channel narrower than a tenth of the median is scaled as one a tenth of it (not blown up)


@dataclass(frozen=True)
class ResidualStream:
    """One stream segment of constant width: module names of the deploy-form model.

    ``producers``: layers whose output channels are the stream's (output ``c`` divided by ``s_c``).
    ``consumers``: ``(layer, start)``: the layer's input channels ``start..`` are stream channels ``start..``
    (multiplied by ``s_c``); a depthwise conv's filters count as its input channels.
    ``taps``: modules whose output is the stream (where its ranges are observed).
    ``tied``: ``(start, stop)`` channel ranges that must share one scale (a norm over them).
    """

    name: str
    producers: tuple[str, ...]
    consumers: tuple[tuple[str, int], ...]
    taps: tuple[str, ...]
    tied: tuple[tuple[int, int], ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, d: dict) -> ResidualStream:
        return cls(d["name"], tuple(d["producers"]), tuple((n, int(s)) for n, s in d["consumers"]),
                   tuple(d["taps"]), tuple((int(a), int(b)) for a, b in d.get("tied", ())))


def _streams(model: nn.Module) -> list[ResidualStream]:
    describe = getattr(model, "residual_streams", None)
    if describe is None:
        return []
    return [ResidualStream.from_dict(d) for d in describe()]


def _per_channel_absmax(y: torch.Tensor) -> torch.Tensor:
    """(C,) max |y| over everything but the channel axis (dim 1 of NCHW, last of (B, C))."""
    y = y.detach().abs()
    return y.amax(dim=0) if y.dim() == 2 else y.transpose(0, 1).reshape(y.shape[1], -1).amax(dim=1)


@torch.no_grad()
def stream_ranges(model: nn.Module, calibration: torch.Tensor, batch: int = 16) -> dict[str, torch.Tensor]:
    """Per stream: per-channel max |x| over its taps and the calibration images."""
    streams = _streams(model)
    ranges: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, args, y):
            r = _per_channel_absmax(y)
            ranges[name] = r if name not in ranges else torch.maximum(ranges[name], r)
        return record

    handles = [model.get_submodule(tap).register_forward_hook(hook(s.name)) for s in streams for tap in s.taps]
    try:
        model.eval()
        for start in range(0, len(calibration), batch):
            model(calibration[start:start + batch])
    finally:
        for h in handles:
            h.remove()
    return ranges


def _scales(r: torch.Tensor, stream: ResidualStream, alpha: float) -> torch.Tensor:
    """``s_c = (r_c / median(r)) ** alpha``: every channel moves toward the median channel's range (wide ones
    shrink, narrow ones grow, at most ``1 / _FLOOR`` times: a near-dead channel is not blown up); tied
    channels share the geometric mean of their scales."""
    ref = r.median().clamp_min(1e-8)
    s = (r / ref).clamp_min(_FLOOR) ** alpha
    for a, b in stream.tied:
        s[a:b] = s[a:b].log().mean().exp()
    return s


def _is_depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels \
        and layer.out_channels == layer.in_channels


@torch.no_grad()
def _apply(model: nn.Module, stream: ResidualStream, s: torch.Tensor) -> None:
    """Scale the stream's producers by ``1/s`` and consumers by ``s`` (in place)."""
    for name in stream.producers:
        layer = model.get_submodule(name)
        view = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.div_(s.reshape(view))
        if layer.bias is not None:
            layer.bias.div_(s)
    for name, start in stream.consumers:
        layer = model.get_submodule(name)
        if _is_depthwise(layer):
            layer.weight[start:].mul_(s[start:].reshape((-1,) + (1,) * (layer.weight.dim() - 1)))
        else:
            layer.weight[:, start:].mul_(s[start:].reshape((1, -1) + (1,) * (layer.weight.dim() - 2)))


def _checkable(model: nn.Module, stream: ResidualStream, width: int) -> bool:
    """Every named layer exists, is a plain conv/linear, and has the stream's width where it touches it."""
    for name in (*stream.producers, *(n for n, _ in stream.consumers)):
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            return False
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            return False
    for name in stream.producers:
        if model.get_submodule(name).weight.shape[0] != width:
            return False
    for name, start in stream.consumers:
        layer = model.get_submodule(name)
        cols = layer.weight.shape[0] if _is_depthwise(layer) else layer.weight.shape[1]
        if cols != width or not 0 <= start < width:
            return False
    return True


@torch.no_grad()
def equalize_streams(model: nn.Module, calibration: torch.Tensor, alpha: float = 0.75, batch: int = 16,
                     atol: float = 1e-4) -> dict[str, dict]:
    """Equalise every residual stream ``model`` (deploy form, changed in place) describes; returns, per stream
    equalised, its channel spread (max / median of the per-channel max |x|) before and after and its largest
    scale. ``alpha``: how far each channel moves toward the median channel's range (0: not at all, 1: all the
    way; 0.75 measured best, see the module docstring)."""
    model.eval()
    streams = _streams(model)
    if not streams:
        return {}
    ranges = stream_ranges(model, calibration, batch)
    probe = calibration[:batch]
    done: dict[str, dict] = {}
    for stream in streams:
        r = ranges.get(stream.name)
        if r is None or not _checkable(model, stream, r.numel()):
            continue
        s = _scales(r, stream, alpha)
        names = {*stream.producers, *(n for n, _ in stream.consumers)}
        saved = {n: {k: v.detach().clone() for k, v in model.get_submodule(n).named_parameters()} for n in names}
        before = model(probe)
        _apply(model, stream, s)
        after = model(probe)
        if (after - before).abs().max() > atol * max(1.0, float(before.abs().max())):
            for n, params in saved.items():  # not exact here: undo
                for k, v in params.items():
                    getattr(model.get_submodule(n), k).copy_(v)
            continue
        spread = float(r.max() / r.median().clamp_min(1e-8))
        after_r = r / s
        done[stream.name] = {"spread_before": round(spread, 2),
                             "spread_after": round(float(after_r.max() / after_r.median().clamp_min(1e-8)), 2),
                             "max_scale": round(float(s.max()), 2)}
    return done
