"""Classifier-head arithmetic for deployment."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["average_heads"]


@torch.no_grad()
def average_heads(head: nn.Module, head_dist: nn.Module) -> nn.Module:
    """One module computing ``(head(x) + head_dist(x)) / 2`` (DeiT-style distilled models in eval).

    Both linear: the average of two affine maps is the affine map of averaged weights. Both identity
    (no classifier): the average is the identity.
    """
    if isinstance(head, nn.Identity) and isinstance(head_dist, nn.Identity):
        return nn.Identity()
    if not (isinstance(head, nn.Linear) and isinstance(head_dist, nn.Linear)):
        raise TypeError(f"cannot merge {type(head).__name__} and {type(head_dist).__name__} heads")
    merged = nn.Linear(head.in_features, head.out_features, bias=True,
                       device=head.weight.device, dtype=head.weight.dtype)
    merged.weight.copy_((head.weight + head_dist.weight) / 2)
    zeros = torch.zeros_like(merged.bias)
    merged.bias.copy_(((head.bias if head.bias is not None else zeros)
                       + (head_dist.bias if head_dist.bias is not None else zeros)) / 2)
    return merged
