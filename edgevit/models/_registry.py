"""Model registry: name -> builder + metadata (timm's ``register_model`` + ``default_cfgs`` in one place).

A family file registers its family once (the facts shared by all its variants: the conv->attention
bridge the quantizer may keep float, the converter for original-repository checkpoints)::

    register_family("efficientformer", bridge_module="MetaBlock3d", checkpoint_filter=checkpoint_filter_fn,
                    paper="arXiv:2206.01191")

and decorates one small function per variant::

    @register_model("efficientformer_l1", family="efficientformer", paper="arXiv:2206.01191")
    def efficientformer_l1(**kwargs) -> EfficientFormer:
        return EfficientFormer(depths=(3, 2, 6, 4), ..., **kwargs)

The metadata (input size, preprocessing) is data, so the CLI, calibration and manifests read it
without building the model.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..errors import UnknownNameError

__all__ = ["FamilySpec", "ModelSpec", "register_family", "get_family_spec", "list_families", "register_model",
           "get_model_spec", "list_models", "IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD"]

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FamilySpec:
    """What every variant of one architecture family shares."""

    name: str
    # Class name of the family's first conv->attention bridge module as it appears in the deploy form
    # (the module the quantizer's ``float_bridges`` step keeps float; Q-HyViT: its activation ranges are
    # the hardest to fit). None: the family has no such bridge.
    bridge_module: str | None = None
    # ``filter(state_dict, model) -> state_dict``: converts the original repository's checkpoint layout
    # (and wrappers, distillation heads) to this package's; applied by ``load_weights``.
    checkpoint_filter: Callable[[dict, nn.Module], dict] | None = field(default=None, repr=False)
    paper: str = ""
    # Class names of deploy-form modules whose ops int8 cannot hold (EfficientViT's ReLU-attention division):
    # the int8 recipe always keeps them float, and the manifest names the layers this rule kept float.
    float_modules: tuple[str, ...] = ()
    # The int8 recipe's activation observer for this family when the user names none (None: the recipe's
    # DEFAULT_OBSERVER); a measured choice, recorded in the manifest like any other observer.
    observer: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """Everything known about a registered model without building it."""

    name: str
    family: str
    builder: Callable[..., nn.Module] = field(repr=False)
    input_size: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    mean: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, float, float] = IMAGENET_DEFAULT_STD
    crop_pct: float = 0.95
    interpolation: str = "bicubic"
    # Models with absolute position tables (attention biases sized for the stage resolution) only
    # take the resolution they were built for; others take any multiple of ``stride``.
    fixed_input_size: bool = False
    stride: int = 32
    # Builder keyword that sets the resolution for models whose tables depend on it (None: the model
    # cannot be rebuilt for another size; for fully convolutional front ends any size just works).
    img_size_kwarg: str | None = "img_size"
    paper: str = ""

    @property
    def family_spec(self) -> FamilySpec:
        return get_family_spec(self.family)

    @property
    def resolution(self) -> int:
        return self.input_size[-1]

    def preprocessing(self) -> dict:
        """The preprocessing block written into manifests (what a deployer must replicate)."""
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
                "crop_pct": self.crop_pct, "interpolation": self.interpolation}


_REGISTRY: dict[str, ModelSpec] = {}
_FAMILIES: dict[str, FamilySpec] = {}


def register_family(name: str, *, bridge_module: str | None = None,
                    checkpoint_filter: Callable[[dict, nn.Module], dict] | None = None, paper: str = "",
                    float_modules: tuple[str, ...] = (), observer: str | None = None) -> FamilySpec:
    """Register a family (once, before its variants); returns its spec."""
    if name in _FAMILIES:
        raise ValueError(f"family {name!r} registered twice")
    spec = _FAMILIES[name] = FamilySpec(name, bridge_module, checkpoint_filter, paper, tuple(float_modules),
                                        observer)
    return spec


def get_family_spec(name: str) -> FamilySpec:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise UnknownNameError("family", name, _FAMILIES, plural="families") from None


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def register_model(name: str, *, family: str, **meta) -> Callable:
    """Register a variant builder under ``name`` (timm's name) with its metadata; ``family`` must have
    been registered with :func:`register_family`."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        if family not in _FAMILIES:
            raise ValueError(f"model {name!r}: family {family!r} is not registered (register_family first)")
        _REGISTRY[name] = ModelSpec(name=name, family=family, builder=builder, **meta)
        return builder

    return decorate


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("model", name, _REGISTRY) from None


def list_models(family: str | None = None) -> list[str]:
    return sorted(n for n, s in _REGISTRY.items() if family is None or s.family == family)
