"""LayerScale (Touvron et al., "Going deeper with Image Transformers", arXiv:2103.17239).

A learnable per-channel gain on a residual branch, initialised small so that deep stacks start close to
identity. At inference it is a constant diagonal scale, so ``fold_layer_scale`` pushes it into the
branch's last conv/linear and the multiply disappears from the deployed graph.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["LayerScale", "fold_layer_scale"]


class LayerScale(nn.Module):
    """``x * gamma`` per channel; channels last for tokens (B, N, C), first for maps (B, C, H, W)."""

    def __init__(self, dim: int, init_value: float = 1e-5, channels_first: bool = False):
        super().__init__()
        self.channels_first = channels_first
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma.view(-1, 1, 1) if self.channels_first else self.gamma
        return x * gamma

    def extra_repr(self) -> str:
        return f"{self.gamma.shape[0]}, channels_first={self.channels_first}"


@torch.no_grad()
def fold_layer_scale(layer: nn.Conv2d | nn.Linear,
                     scale: LayerScale | torch.Tensor | float) -> nn.Conv2d | nn.Linear:
    """Return a copy of ``layer`` whose outputs come out multiplied by ``scale``.

    ``scale`` is a LayerScale, a per-output-channel vector or a scalar. Each output row of the weight
    and the bias is multiplied alike, so ``layer(x) * scale == fold_layer_scale(layer, scale)(x)``.
    """
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise TypeError(f"cannot fold a channel scale into {type(layer).__name__}")
    gamma = scale.gamma if isinstance(scale, LayerScale) else scale
    fused = copy.deepcopy(layer)
    gamma = torch.as_tensor(gamma, dtype=fused.weight.dtype, device=fused.weight.device)
    gamma = gamma.expand(fused.weight.shape[0])
    fused.weight.mul_(gamma.view(-1, *([1] * (fused.weight.ndim - 1))))
    if fused.bias is not None:
        fused.bias.mul_(gamma)
    return fused
