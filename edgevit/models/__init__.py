"""The model zoo: plain-PyTorch mobile ViTs whose state_dict keys and numerics match timm 1.0.31.

Public API (everything other packages use; the ``_``-modules are private)::

    create_model(name, **kwargs) -> nn.Module                     # training form, random init
    deploy(model) -> nn.Module; is_deployed(model) -> bool        # fused inference form (a copy)
    list_models(family=None) -> list[str]; list_families() -> list[str]
    get_model_spec(name) -> ModelSpec                             # metadata without building
    get_family_spec(name) -> FamilySpec                           # bridge module, checkpoint filter
    register_family(name, ...); register_model(name, family=...)  # how a family file adds itself

    prepare_model(ref, input_shape=None, num_classes=None, weights=None) -> PreparedModel
        # resolve -> weights -> reference -> deploy form -> preprocessing, as every flow needs it
    resolve_model(ref, ...) -> ResolvedModel; parse_input_shape(text)
    load_weights(model, path, family=None) -> sha256; read_state_dict(path); sha256_of(path)
    apply_synthetic_weights(model, seed); SYNTHETIC_WEIGHTS_NOTE
    count_params_and_macs(name, input_size=None) -> (params, MACs)
"""
from __future__ import annotations

from torch import nn

# Importing the family modules registers their families and variants.
from . import (  # noqa: F401,E402
    efficientformer,
    efficientformer_v2,
    efficientvit_mit,
    efficientvit_msra,
    fastvit,
    m3vit,
    micro,
    mobilenetv4,
    mobilevit,
    mobilevit_v2,
    shvit,
    tiny_vit,
)
from ._checkpoint import load_weights, read_state_dict, sha256_of
from ._complexity import count_params_and_macs
from ._deploy import deploy, is_deployed
from ._prepare import PreparedModel, prepare_model
from ._registry import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    FamilySpec,
    ModelSpec,
    get_family_spec,
    get_model_spec,
    list_families,
    list_models,
    register_family,
    register_model,
)
from ._resolve import ResolvedModel, parse_input_shape, resolve_model
from ._synthetic import SYNTHETIC_WEIGHTS_NOTE, apply_synthetic_weights

__all__ = ["create_model", "deploy", "is_deployed", "list_models", "list_families", "get_model_spec",
           "get_family_spec", "register_model", "register_family", "ModelSpec", "FamilySpec", "prepare_model",
           "PreparedModel", "resolve_model", "ResolvedModel", "parse_input_shape", "load_weights",
           "read_state_dict", "sha256_of", "apply_synthetic_weights", "SYNTHETIC_WEIGHTS_NOTE",
           "count_params_and_macs", "IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD"]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model (random init) by its timm name."""
    spec = get_model_spec(name)
    kwargs.setdefault("num_classes", spec.num_classes)
    return spec.builder(**kwargs)
