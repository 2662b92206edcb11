"""Folding BatchNorm into neighbouring convs/linears (the arithmetic behind ``deploy()``).

All functions return new modules in eval numerics: y = W'x + b' equals bn(conv(x)) (or the linear
variants) for the running statistics at the time of the call.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["fuse_conv_bn", "fuse_linear_bn", "fuse_bn_linear"]


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    # bn(x) = x * scale + shift
    weight = bn.weight if bn.affine else torch.ones_like(bn.running_var)
    bias = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    scale = weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bias - bn.running_mean * scale


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv -> bn  ==>  one conv with bias."""
    scale, shift = _bn_scale_shift(bn)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    fused.bias.copy_(conv_bias * scale + shift)
    return fused


@torch.no_grad()
def fuse_linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """linear -> bn over the output features  ==>  one linear."""
    scale, shift = _bn_scale_shift(bn)
    fused = nn.Linear(linear.in_features, linear.out_features, bias=True)
    fused.weight.copy_(linear.weight * scale[:, None])
    lin_bias = linear.bias if linear.bias is not None else torch.zeros_like(shift)
    fused.bias.copy_(lin_bias * scale + shift)
    return fused


@torch.no_grad()
def fuse_bn_linear(bn: nn.BatchNorm1d, linear: nn.Linear) -> nn.Linear:
    """bn over the input features -> linear  ==>  one linear (classifier heads)."""
    scale, shift = _bn_scale_shift(bn)
    fused = nn.Linear(linear.in_features, linear.out_features, bias=True)
    fused.weight.copy_(linear.weight * scale[None, :])
    lin_bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
    fused.bias.copy_(lin_bias + linear.weight @ shift)
    return fused
