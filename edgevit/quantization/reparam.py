"""RepQ-ViT-style scale reparameterization of normalised activations (arXiv:2212.08254).

After LayerNorm/GroupNorm, some channels span far wider ranges than others, and one per-tensor int8
scale for all of them wastes levels on the narrow ones. The deploy form already moved each norm's
affine into the next linear (``Standardize`` + ``fold_norm_affine``); this step goes one further and
gives every channel the same calibrated width: ``x' = x_hat / s_c`` right after the standardisation,
undone exactly in the following linear / 1x1 conv (``W' = W * s``). RepQ-ViT also moves each channel's
centre into the bias; measured here that hurts (EfficientFormer micro: 31.1 -> 13.8 dB logit SQNR):
centring skewed channels at their range midpoints spreads the dense part of the tensor, and the
histogram observer can no longer clip a thin tail. So only the scale is reparameterized.
In fp32 the model is unchanged (checked for every norm; a norm whose consumer cannot be found, or
whose output moves, is left as it was).

The consumer is found by running the model: the linear or 1x1 conv whose input is a view of the
norm's output (the same storage). A norm followed by anything else first (a token mean, a transpose
that copies) is skipped.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.layers.norm import Standardize

__all__ = ["RescaledStandardize", "rescale_norms"]


class RescaledStandardize(Standardize):
    """Standardisation, then a per-channel ``x * inv_scale`` the next layer undoes."""

    def __init__(self, base: Standardize, inv_scale: torch.Tensor):
        super().__init__(base.num_dims, base.eps)
        view = (-1,) if base.num_dims == 1 else (-1, 1, 1)  # channels last (tokens) or dim 1 (NCHW)
        self.register_buffer("inv_scale", inv_scale.reshape(view).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.inv_scale


def _channels(norm: Standardize, y: torch.Tensor) -> torch.Tensor:
    """(channels, values) view of a norm output: last dim for LayerNorm, dim 1 for GroupNorm."""
    return y.reshape(-1, y.shape[-1]).T if norm.num_dims == 1 else y.transpose(0, 1).reshape(y.shape[1], -1)


def _is_pointwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1)
                                            and layer.groups == 1 and layer.padding in ((0, 0), "valid"))


@torch.no_grad()
def _observe(model: nn.Module, calibration: torch.Tensor, batch: int):
    """Per norm: channel min/max over the calibration set and the pointwise layers reading its output."""
    norms = {name: m for name, m in model.named_modules() if type(m) is Standardize}
    layers = {name: m for name, m in model.named_modules() if _is_pointwise(m)}
    stats: dict[str, list] = {name: [None, None, set()] for name in norms}
    storage_of: dict[int, str] = {}

    def norm_hook(name):
        def hook(module, args, y):
            lo, hi = _channels(module, y).aminmax(dim=1)
            s = stats[name]
            s[0] = lo if s[0] is None else torch.minimum(s[0], lo)
            s[1] = hi if s[1] is None else torch.maximum(s[1], hi)
            storage_of[y.untyped_storage().data_ptr()] = name
        return hook

    def layer_hook(name):
        def hook(module, args):
            owner = storage_of.get(args[0].untyped_storage().data_ptr())
            if owner is not None:
                stats[owner][2].add(name)
        return hook

    handles = [m.register_forward_hook(norm_hook(n)) for n, m in norms.items()]
    handles += [m.register_forward_pre_hook(layer_hook(n)) for n, m in layers.items()]
    try:
        for start in range(0, len(calibration), batch):
            storage_of.clear()
            model(calibration[start:start + batch])
    finally:
        for h in handles:
            h.remove()
    return norms, layers, stats


@torch.no_grad()
def _compensate(layer: nn.Module, scale: torch.Tensor) -> None:
    layer.weight.mul_(scale.reshape((1, -1) + (1,) * (layer.weight.dim() - 2)))


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


@torch.no_grad()
def rescale_norms(model: nn.Module, calibration: torch.Tensor, batch: int = 16, atol: float = 1e-4) -> list[str]:
    """Rescale every norm of ``model`` (deploy form, changed in place) whose output feeds exactly one
    pointwise layer; returns the names of the norms rescaled."""
    model.eval()
    norms, layers, stats = _observe(model, calibration, batch)
    probe = calibration[:batch]
    done = []
    for name, norm in norms.items():
        lo, hi, consumers = stats[name]
        if lo is None or len(consumers) != 1:
            continue
        layer = layers[next(iter(consumers))]
        width = (hi - lo).clamp_min(1e-6)
        scale = width / width.mean()
        in_features = layer.weight.shape[1]
        if scale.numel() != in_features:
            continue
        before = model(probe)
        saved = layer.weight.detach().clone()
        _set(model, name, RescaledStandardize(norm, 1.0 / scale))
        _compensate(layer, scale)
        after = model(probe)
        if (after - before).abs().max() > atol * max(1.0, float(before.abs().max())):
            _set(model, name, norm)  # not exact here (the consumer reads more than the norm): undo
            layer.weight.copy_(saved)
            continue
        done.append(name)
    return done
