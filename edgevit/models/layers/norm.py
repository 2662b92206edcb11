"""Inference forms of LayerNorm / single-group GroupNorm (shared by TinyViT and SHViT deploy paths).

At inference a norm followed by a linear map (``nn.Linear`` or a 1x1 ``nn.Conv2d``) can hand its
per-channel affine ``x_hat * gamma + beta`` to that map, leaving only the standardisation. That part
is written with 4D ``mean`` over dims (2, 3), subtraction, multiplication and ``rsqrt``: the ops
XNNPACK accepts. ``native_layer_norm`` / ``native_group_norm`` are not delegated there, and each one
left on the CPU would split the delegated graph in two.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Standardize", "fold_norm_affine"]


class Standardize(nn.Module):
    """Zero mean / unit variance over the trailing ``num_dims`` dims, no affine.

    ``num_dims=1`` is LayerNorm over the last dim; ``num_dims=3`` on NCHW is GroupNorm with one group.
    Same numerics as those norms (biased variance, ``eps`` inside the root).

    ``features=C`` (LayerNorm over a last dim of C, opt-in): both row means are a ``linear`` with one
    constant 1/C output row instead of the 4D mean. XNNPACK's mean is a global average pool that wants
    NHWC, so each 4D mean costs a reshape and layout transposes around it; the GEMV form is a fully
    connected op on the tokens as they are (kept fp32 in int8 like the 4D form: the ``Standardize``
    rule), 9 XNNPACK nodes per norm instead of 17.
    """

    def __init__(self, num_dims: int, eps: float = 1e-5, features: int | None = None):
        super().__init__()
        self.num_dims = num_dims
        self.eps = eps
        self.features = features
        if features is not None:
            if num_dims != 1:
                raise ValueError("the GEMV form standardises over the last dim only (num_dims=1)")
            # Not saved: derived from ``features``.
            self.register_buffer("row_mean", torch.full((1, features), 1.0 / features), persistent=False)

    @classmethod
    def like(cls, norm: nn.LayerNorm | nn.GroupNorm, gemv: bool = False) -> Standardize:
        """The standardisation part of ``norm`` (its affine goes elsewhere, see ``fold_norm_affine``).
        ``gemv=True``: the row means as a linear (LayerNorm only; see the class docstring)."""
        if isinstance(norm, nn.GroupNorm):
            if norm.num_groups != 1:
                raise ValueError("only single-group GroupNorm reduces over whole samples")
            return cls(num_dims=3, eps=norm.eps)
        if len(norm.normalized_shape) != 1:
            raise ValueError("only LayerNorm over the last dim is supported")
        return cls(num_dims=1, eps=norm.eps, features=norm.normalized_shape[0] if gemv else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.features is not None:
            x = x - F.linear(x, self.row_mean)
            return x * torch.rsqrt(F.linear(x * x, self.row_mean) + self.eps)
        shape = x.shape
        rows = math.prod(shape[:-self.num_dims])
        feats = math.prod(shape[-self.num_dims:])
        # Reductions as a 4D mean over (2, 3) with keepdim, the one reduce XNNPACK lowers.
        x = x.reshape(rows, 1, 1, feats)
        x = x - x.mean((2, 3), keepdim=True)
        var = (x * x).mean((2, 3), keepdim=True)
        x = x * torch.rsqrt(var + self.eps)
        return x.reshape(shape)

    def extra_repr(self) -> str:
        gemv = f", features={self.features} (GEMV means)" if self.features is not None else ""
        return f"num_dims={self.num_dims}, eps={self.eps}{gemv}"


@torch.no_grad()
def fold_norm_affine(norm: nn.LayerNorm | nn.GroupNorm, layer: nn.Linear | nn.Conv2d) -> nn.Linear | nn.Conv2d:
    """``layer(norm(x)) == folded(standardize(x))``: move the norm's per-channel affine into ``layer``.

    ``layer`` must mix channels pointwise (a Linear, or a dense 1x1 unpadded Conv2d) so that the
    per-input-channel scale and shift commute with it.
    """
    if isinstance(layer, nn.Conv2d) and (layer.kernel_size != (1, 1) or layer.groups != 1
                                         or layer.padding not in ((0, 0), "valid")):
        raise ValueError("only a dense 1x1 conv can absorb a norm's affine")
    weight = layer.weight.detach()
    w2d = weight.reshape(weight.shape[0], weight.shape[1])  # (out, in) for Linear and 1x1 conv
    gamma = norm.weight if norm.weight is not None else torch.ones(w2d.shape[1], dtype=weight.dtype)
    beta = norm.bias if norm.bias is not None else torch.zeros(w2d.shape[1], dtype=weight.dtype)
    bias = layer.bias if layer.bias is not None else torch.zeros(w2d.shape[0], dtype=weight.dtype)
    if isinstance(layer, nn.Linear):
        folded = nn.Linear(layer.in_features, layer.out_features, bias=True)
    else:
        folded = nn.Conv2d(layer.in_channels, layer.out_channels, 1, stride=layer.stride, bias=True)
    folded = folded.to(device=weight.device, dtype=weight.dtype)
    folded.weight.copy_((w2d * gamma[None, :]).reshape(weight.shape))
    folded.bias.copy_(bias + w2d @ beta)
    return folded
