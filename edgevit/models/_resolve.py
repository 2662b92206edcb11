"""Turn what the user typed (a zoo name or ``package.module:attr``) into a model and its metadata."""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import EdgevitError
from ._registry import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ModelSpec, get_model_spec
from ._synthetic import apply_synthetic_weights

__all__ = ["ResolvedModel", "resolve_model", "parse_input_shape"]


@dataclass
class ResolvedModel:
    name: str
    family: str
    module: nn.Module                          # training form, eval mode
    input_shape: tuple[int, int, int, int]     # static (N, C, H, W)
    spec: ModelSpec | None                     # None for a user's module
    preprocessing: dict = field(default_factory=dict)
    output_shape: tuple[int, ...] | None = None  # of one forward at input_shape (None: not one tensor)


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or any(v <= 0 for v in shape):
        raise EdgevitError(f"--input-shape '{text}' is not four positive integers N,C,H,W "
                           "(for example 1,3,224,224).")
    return shape


def _zoo_model(spec: ModelSpec, shape: tuple[int, ...] | None, num_classes: int | None,
               synthetic_weights: bool) -> ResolvedModel:
    default = (1, *spec.input_size)
    shape = shape or default
    n, c, h, w = shape
    if c != spec.input_size[0]:
        raise EdgevitError(f"{spec.name} takes {spec.input_size[0]} input channels, not {c} "
                           f"(--input-shape {','.join(map(str, shape))}).")
    kwargs = {"num_classes": num_classes or spec.num_classes}
    if (h, w) != tuple(spec.input_size[1:]):
        if h % spec.stride or w % spec.stride:
            raise EdgevitError(f"{spec.name} needs height and width divisible by {spec.stride}; "
                               f"{h}x{w} is not (default {spec.input_size[1]}x{spec.input_size[2]}).")
        if spec.img_size_kwarg is None:
            raise EdgevitError(f"{spec.name} only takes {spec.input_size[1]}x{spec.input_size[2]} inputs "
                               f"(its attention tables are sized for that resolution); got {h}x{w}.")
        kwargs[spec.img_size_kwarg] = (h, w) if h != w else h
    torch.manual_seed(0)  # reproducible init, so two compiles without weights agree
    module = spec.builder(**kwargs).eval()
    if synthetic_weights:
        apply_synthetic_weights(module, seed=0)
    pre = spec.preprocessing()
    pre["input_size"] = [c, h, w]
    return ResolvedModel(spec.name, spec.family, module, (n, c, h, w), spec, pre)


def _user_model(ref: str, shape: tuple[int, ...] | None) -> ResolvedModel:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise EdgevitError(f"'{ref}' is not a model name or a 'package.module:attribute' reference.")
    if shape is None:
        raise EdgevitError(f"A user model ({ref}) needs --input-shape N,C,H,W.")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the user's own package in the cwd
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except ImportError as e:
        raise EdgevitError(f"Cannot import module '{module_name}' for {ref}: {e}.") from None
    except AttributeError:
        raise EdgevitError(f"Module '{module_name}' has no attribute '{attr}'.") from None
    if isinstance(obj, nn.Module):
        module = obj
    elif callable(obj):
        try:
            module = obj()
        except Exception as e:  # noqa: BLE001 - the user's constructor; report, don't trace
            raise EdgevitError(f"Calling {ref}() to build the model failed: {type(e).__name__}: {e}.") from None
        if not isinstance(module, nn.Module):
            raise EdgevitError(f"{ref}() returned {type(module).__name__}, not a torch.nn.Module.")
    else:
        raise EdgevitError(f"{ref} is neither an nn.Module nor a callable that builds one.")
    return ResolvedModel(ref, "user", module.eval(), tuple(shape), None, _user_preprocessing(module, ref, shape))


def _user_preprocessing(module: nn.Module, ref: str, shape: tuple[int, ...]) -> dict:
    """The eval transform a user's module was trained with: its ``pretrained_cfg`` (timm's convention: mean,
    std, crop_pct, interpolation), else ImageNet mean/std, no crop, bilinear."""
    pre = {"input_size": list(shape[1:]), "mean": list(IMAGENET_DEFAULT_MEAN),
           "std": list(IMAGENET_DEFAULT_STD), "crop_pct": 1.0, "interpolation": "bilinear"}
    cfg = getattr(module, "pretrained_cfg", None)
    if not isinstance(cfg, dict):
        return pre
    for key in ("mean", "std", "crop_pct", "interpolation"):
        if cfg.get(key) is not None:
            pre[key] = list(cfg[key]) if key in ("mean", "std") else cfg[key]
    if len(pre["mean"]) != shape[1] or len(pre["std"]) != shape[1] or not 0 < float(pre["crop_pct"]) <= 1 \
            or pre["interpolation"] not in ("bilinear", "bicubic", "nearest"):
        raise EdgevitError(f"{ref}.pretrained_cfg does not describe a preprocessing edgevit can apply: mean/std "
                           f"need {shape[1]} values, crop_pct (0, 1], interpolation bilinear|bicubic|nearest "
                           f"(got {cfg}).")
    return pre


def resolve_model(ref: str, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
                  synthetic_weights: bool = True) -> ResolvedModel:
    """A zoo model by name (timm's names) or a user's ``pkg.module:builder`` at a static input shape.

    Zoo models get :func:`apply_synthetic_weights` unless real weights will be loaded over them.
    A user's module is taken as built (its builder decides its weights).
    """
    if ":" in ref:
        resolved = _user_model(ref, input_shape)
    else:
        resolved = _zoo_model(get_model_spec(ref), input_shape, num_classes, synthetic_weights)
    _check_forward(resolved)
    return resolved


@torch.no_grad()
def _check_forward(resolved: ResolvedModel) -> None:
    """Run one eager forward so a shape the model cannot take is reported before any export; records the
    output shape."""
    x = torch.zeros(resolved.input_shape)
    try:
        out = resolved.module(x)
    except Exception as e:  # noqa: BLE001
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EdgevitError(f"{resolved.name} cannot take input shape "
                           f"{','.join(map(str, resolved.input_shape))}: {first}") from None
    resolved.output_shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
