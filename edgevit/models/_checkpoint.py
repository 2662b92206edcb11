"""Loading real checkpoints (timm layout, or a family's original layout via its ``FamilySpec.checkpoint_filter``).

Accepts .safetensors, .pth/.pt and .bin; plain state dicts or ones wrapped as ``{"state_dict": ...}``,
``{"model": ...}`` (EMA variants too), with an optional DDP ``module.`` prefix. Every failure names the
file and, for a mismatch, the keys.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ._registry import FamilySpec, get_family_spec, list_families

__all__ = ["read_state_dict", "load_weights", "sha256_of"]

_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "module")
_SHOW = 8  # keys listed per category in an error message


_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")  # what --weights takes (README: `edgevit compile` options)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict, unwrapping common containers."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix in _SUFFIXES)[:5]
        raise CheckpointError(f"--weights {path} is a folder; give the checkpoint file itself "
                              f"({', '.join(_SUFFIXES)})" + (f", e.g. {path / found[0]} (this folder holds "
                                                             f"{', '.join(found)})" if found else "") + ".")
    if not path.exists():
        raise CheckpointError(f"Weights file {path} does not exist.")
    if not path.is_file():
        raise CheckpointError(f"--weights {path} is not a regular file; give the checkpoint file "
                              f"({', '.join(_SUFFIXES)}).")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj = load_file(str(path))
        else:
            # weights_only: a checkpoint is data; never run pickled code from it.
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise CheckpointError(f"Weights file {path} could not be read as a "
                              f"{path.suffix or 'torch'} checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no detail'}). "
                              "Is it truncated or in another format?") from None
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"Weights file {path} holds no state dict (expected a mapping of names to "
                              f"tensors, possibly under one of {', '.join(_WRAPPER_KEYS)}).")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def _checkpoint_filter(model: nn.Module, family: str | FamilySpec | None) -> Callable | None:
    if family is not None:
        return (family if isinstance(family, FamilySpec) else get_family_spec(family)).checkpoint_filter
    # The zoo's model classes live in their family's module, next to the family's filter.
    module = type(model).__module__
    for name in list_families():
        filter_fn = get_family_spec(name).checkpoint_filter
        if filter_fn is not None and filter_fn.__module__ == module:
            return filter_fn
    return None


def load_weights(model: nn.Module, path: str | Path, family: str | FamilySpec | None = None) -> str:
    """Load ``path`` into ``model`` strictly; returns the file's sha256.

    The family's ``checkpoint_filter`` converts original-repo layouts first. ``family`` names it; None
    recognises a zoo model by its class (defined in a family's module) and applies no filter to anything
    else (a user's module is loaded as saved). Missing, unexpected and mis-shaped keys are all reported
    together.
    """
    path = Path(path)
    state = read_state_dict(path)
    filter_fn = _checkpoint_filter(model, family)
    if filter_fn is not None:
        state = filter_fn(state, model)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
                 if k in state and state[k].shape != v.shape]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
        if misshaped:
            parts.append(f"{len(misshaped)} mis-shaped: {_listing(misshaped)}")
        raise CheckpointError(f"Weights file {path} does not match {type(model).__name__}: "
                              + "; ".join(parts) + ". Is it a checkpoint of another model or variant "
                              "(or another --num-classes)?")
    model.load_state_dict(state, strict=True)
    return sha256_of(path)
