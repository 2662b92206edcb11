"""Synthetic weights for compiles without ``--weights`` (no checkpoint can be downloaded at run time).

timm's initialisation makes residual branches inert at the start of training: zero BatchNorm gammas at
branch ends, layer scales of 1e-5. Such a network is nearly the identity plus a head, its logits are
~1e-4, and verifying an int8 artifact of it measures only rounding near zero. A trained network has
every branch active. So, seeded and deterministic:

- BatchNorm: gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1), running mean ~ N(0, 0.1), running var ~ U(0.5, 1.5)
- any other per-channel weight (1-D or (C, 1, 1); not a bias) that init left tiny (|p| < 1e-3 everywhere:
  layer scales) ~ U(0.1, 0.5)
- everything else (conv/linear weights, attention-bias tables) keeps the family's own initialisation.

The manifest records these as synthetic; they are for the pipeline's timing, size and numerics checks,
not a model that classifies anything.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["apply_synthetic_weights", "SYNTHETIC_WEIGHTS_NOTE"]

SYNTHETIC_WEIGHTS_NOTE = ("synthetic (seed {seed}): family init with trained-like BatchNorm statistics and "
                          "layer scales; not a trained model")


@torch.no_grad()
def apply_synthetic_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    batchnorm_params = set()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if m.affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                batchnorm_params.update({id(m.weight), id(m.bias)})
    for name, p in model.named_parameters():
        # Per-channel: 1-D, or (C, 1, 1) as FastViT's LayerScale2d gains.
        if (p.ndim >= 1 and p.numel() == p.shape[0] and id(p) not in batchnorm_params and not name.endswith("bias")
                and p.numel() and p.abs().max() < 1e-3):
            p.copy_(torch.rand(p.shape, generator=g) * 0.4 + 0.1)
    return model
