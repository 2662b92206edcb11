"""The model zoo: plain-PyTorch mobile ViTs whose state_dict keys and numerics match timm 1.0.31.

Public API::

    create_model(name, weights=None, **kwargs) -> nn.Module   # training form, eval() not called
    deploy(model) -> nn.Module                                  # fused inference form (a copy)
    list_models(family=None) -> list[str]
    get_model_spec(name) -> ModelSpec                           # metadata without building
"""
from __future__ import annotations

from torch import nn

from ._deploy import deploy, is_deployed
from ._registry import ModelSpec, get_model_spec, list_models, register_model

# Importing the family modules registers their variants.
from . import efficientformer, efficientformer_v2, micro, shvit, tiny_vit  # noqa: F401,E402

__all__ = ["create_model", "deploy", "is_deployed", "get_model_spec", "list_models", "register_model",
           "ModelSpec"]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model (random init) by its timm name."""
    spec = get_model_spec(name)
    kwargs.setdefault("num_classes", spec.num_classes)
    return spec.builder(**kwargs)
