"""One fusion protocol and one walker (timm's ``reparameterize_model``, ml-fastvit's ``reparameterize``).

Protocol: a module that can be simplified for inference defines ``fuse(self) -> nn.Module`` returning
its replacement (folded BatchNorm, merged branches, precomputed attention-bias tables). ``deploy()``
walks the tree bottom-up on a deep copy, so children are fused before their parents look at them.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["deploy", "is_deployed"]


def _fuse_children(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        setattr(module, name, _fuse_children(child))
    fuse = getattr(module, "fuse", None)
    return fuse() if callable(fuse) else module


@torch.no_grad()
def deploy(model: nn.Module) -> nn.Module:
    """Return the inference form of ``model`` (eval mode, fused); ``model`` itself is left untouched."""
    model = copy.deepcopy(model).eval()
    model = _fuse_children(model)
    model._edgevit_deployed = True  # noqa: SLF001 - marker read by is_deployed
    return model.eval()


def is_deployed(model: nn.Module) -> bool:
    return bool(getattr(model, "_edgevit_deployed", False))
