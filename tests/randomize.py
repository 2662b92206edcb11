"""Non-trivial parameter values for tests of folds: a fresh init (BatchNorm mean 0 / var 1, 1e-5 layer scales,
zero bias tables) makes most folds trivially exact."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["randomize"]


def randomize(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial values everywhere deploy folds something: a fresh init (BN mean 0 / var 1, 1e-5 layer scales,
    zero bias tables) makes most folds trivially exact."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.1)
            elif name.endswith("attention_biases"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model
