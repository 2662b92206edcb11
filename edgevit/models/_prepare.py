"""One model, ready for the flows: resolve -> weights -> reference (training form) -> deploy form.

``compile``, ``quant-report``, ``eval``, ``qat`` and ``bench`` all start from the same four steps; this is
them, once, with the manifest's ``weights`` record built the same way everywhere.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ._checkpoint import load_weights
from ._deploy import deploy
from ._registry import ModelSpec
from ._resolve import parse_input_shape, resolve_model
from ._synthetic import SYNTHETIC_WEIGHTS_NOTE

__all__ = ["PreparedModel", "prepare_model"]


@dataclass
class PreparedModel:
    name: str                                  # the zoo name, or the user's ``pkg.module:attr``
    family: str                                # "user" for a user's module
    spec: ModelSpec | None                     # None for a user's module
    reference: nn.Module                       # training form, eval mode, weights loaded
    deployed: nn.Module                        # deploy(reference): fused inference form
    example: torch.Tensor                      # zeros of input_shape
    input_shape: tuple[int, int, int, int]     # static (N, C, H, W)
    num_classes: int | None                    # classes: K of (N, K) logits, C of (N, C, H, W) dense maps
    preprocessing: dict                        # the manifest's preprocessing block
    weights: dict                              # the manifest's weights block: {"source", "sha256"}
    output_shape: tuple[int, ...] | None = None  # what the built model returns at input_shape


def prepare_model(ref: str, input_shape: Sequence[int] | str | None = None, num_classes: int | None = None,
                  weights: str | Path | None = None, *,
                  stage: Callable[[str], AbstractContextManager] | None = None) -> PreparedModel:
    """Resolve ``ref`` (a zoo name or ``pkg.module:attr``) at ``input_shape`` (N,C,H,W, as a sequence or
    the CLI's "1,3,224,224"; None: the zoo default), load ``weights`` (None: a zoo model gets synthetic
    weights, a user's module stays as built), then build the deploy form.

    ``stage`` (e.g. a ``StageProgress.stage``) is entered around the deploy step, the one that takes time.
    """
    shape = parse_input_shape(input_shape if input_shape is None or isinstance(input_shape, str)
                              else ",".join(str(v) for v in input_shape))
    resolved = resolve_model(ref, shape, num_classes, synthetic_weights=weights is None)
    if weights is not None:
        sha = load_weights(resolved.module, weights, resolved.spec.family_spec if resolved.spec else None)
        record = {"source": str(weights), "sha256": sha}
    elif resolved.spec is None:
        record = {"source": f"as built by {ref}", "sha256": None}
    else:
        record = {"source": SYNTHETIC_WEIGHTS_NOTE.format(seed=0), "sha256": None}
    reference = resolved.module.eval()
    with stage("deploy form (fold BatchNorm, reparameterize)") if stage is not None else nullcontext():
        deployed = deploy(reference)
    out = resolved.output_shape  # resolve_model ran the built model once at this shape
    return PreparedModel(
        name=resolved.name, family=resolved.family, spec=resolved.spec, reference=reference, deployed=deployed,
        example=torch.zeros(resolved.input_shape), input_shape=tuple(resolved.input_shape),
        num_classes=out[1] if out is not None and len(out) in (2, 4) else None,
        output_shape=tuple(out) if out is not None else None,
        preprocessing=resolved.preprocessing, weights=record)
