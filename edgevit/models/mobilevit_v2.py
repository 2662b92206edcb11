"""MobileViT v2: MobileViT with separable (linear-complexity) self-attention.

Paper: Sachin Mehta and Mohammad Rastegari, "Separable Self-attention for Mobile Vision Transformers",
TMLR 2023, arXiv:2206.02680. Original code: https://github.com/apple/ml-cvnets
(``cvnets/models/classification/mobilevit_v2.py``, ``cvnets/layers/linear_attention.py``).

Same skeleton as v1 (``mobilevit.MobileViT``: stem, inverted residuals, three attention stages), with a
width multiplier on every stage and a different attention block: a depthwise 3x3 + 1x1 local part, the
map unfolded into (B, C, P, N) (P = 2x2 offsets, N patches), and transformer layers whose attention is
*separable*: one 1x1 conv produces a single query channel plus keys and values; the query is
softmaxed over the N patches, the keys are summed with those weights into one context vector per
offset, and the output is ``ReLU(values) * context``. Norms are GroupNorm with one group (over C, P, N).
There is no fusion conv; maps whose side is not a multiple of the patch are resized *before* the block
(align_corners=True, as the original does) and stay at that size.

State-dict keys and eval numerics follow timm 1.0.31 (``timm.models.mobilevit``); the family's checkpoint
filter (``mobilevit.checkpoint_filter_fn``) also converts the ml-cvnets layout.

Deploy form: BatchNorm folded; GroupNorm(1) as a standardisation whose affine moves into the next 1x1
conv; the context vector as a 3-D ``bmm`` (instead of a broadcast multiply and a sum over the last dim)
and its broadcast over the N patches as a ``bmm`` with a ones row, so every elementwise op has operands
of one shape (LiteRT's converter rejects timm's broadcasting ``mul`` here); the resize as two constant
matrix products.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_family, register_model
from .layers.norm import Standardize, fold_norm_affine
from .layers.resize import bilinear_resize
from .mobilevit import ConvNormAct, MobileViT, StageCfg, checkpoint_filter_fn, make_divisible, patch_grid

__all__ = ["MobileVitV2Block", "mobilevitv2_050", "mobilevitv2_075", "mobilevitv2_100", "mobilevitv2_micro"]


class GroupNorm1(nn.GroupNorm):
    """GroupNorm with one group: normalises each sample over all of (C, H, W)."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(1, num_channels, eps=eps)


class LinearSelfAttention(nn.Module):
    """Separable self-attention on (B, C, P, N) (timm keys: ``qkv_proj``, ``out_proj``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.qkv_proj = nn.Conv2d(dim, 1 + 2 * dim, 1)
        self.out_proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_proj(x)  # (B, 1 + 2C, P, N)
        query, key, value = qkv[:, :1], qkv[:, 1:1 + self.dim], qkv[:, 1 + self.dim:]
        scores = query.softmax(dim=-1)  # over the N patches
        context = (key * scores).sum(dim=-1, keepdim=True)  # (B, C, P, 1)
        return self.out_proj(F.relu(value) * context)

    def fuse(self) -> FusedLinearSelfAttention:
        return FusedLinearSelfAttention(self.qkv_proj, self.out_proj, self.dim)


class FusedLinearSelfAttention(nn.Module):
    """Inference form: the context reduction as a batched matmul, the values' ReLU fused into their conv.

    Same arithmetic as ``LinearSelfAttention``. ``qkv_proj`` is split into the query+key rows and the
    value rows, so the ReLU directly follows a conv (TFLite fuses it; a standalone int8 RELU is not
    taken by LiteRT's XNNPACK delegate). ``fold_norm_affine`` can still absorb a norm into both.
    """

    def __init__(self, qkv_proj: nn.Conv2d, out_proj: nn.Conv2d, dim: int):
        super().__init__()
        self.dim = dim
        self.qk_proj = _conv_rows(qkv_proj, 0, 1 + dim)
        self.v_proj = _conv_rows(qkv_proj, 1 + dim, 1 + 2 * dim)
        self.out_proj = out_proj

    def fold_norm(self, norm: nn.GroupNorm) -> None:
        self.qk_proj = fold_norm_affine(norm, self.qk_proj)
        self.v_proj = fold_norm_affine(norm, self.v_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, P, N = x.shape
        C = self.dim
        qk = self.qk_proj(x)  # (B, 1 + C, P, N)
        key = qk[:, 1:].transpose(1, 2).reshape(B * P, C, N)
        if N == 1:
            context = key  # a softmax over one patch is 1
        else:
            # Softmax on a 2-D view: on the 4-D map ExecuTorch's XNNPACK lowering computes it over the
            # wrong dim (it runs the graph channels-last and softmaxes over channels; 0.9 max error).
            scores = qk[:, :1].reshape(B * P, N).softmax(dim=-1).reshape(B * P, N, 1)
            context = torch.bmm(key, scores)  # (B*P, C, 1): the softmax-weighted sum of the keys
        value = F.relu(self.v_proj(x)).transpose(1, 2).reshape(B * P, C, N)
        out = value * context  # (B*P, C, N) * (B*P, C, 1)
        return self.out_proj(out.reshape(B, P, C, N).transpose(1, 2))


@torch.no_grad()
def _conv_rows(conv: nn.Conv2d, start: int, stop: int) -> nn.Conv2d:
    """The 1x1 conv computing output channels [start, stop) of ``conv``."""
    part = nn.Conv2d(conv.in_channels, stop - start, 1, bias=conv.bias is not None).to(conv.weight.dtype)
    part.weight.copy_(conv.weight[start:stop])
    if conv.bias is not None:
        part.bias.copy_(conv.bias[start:stop])
    return part


class ConvMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LinearTransformerBlock(nn.Module):
    """Pre-norm block of separable attention and a 1x1-conv MLP on (B, C, P, N)."""

    def __init__(self, dim: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1 = GroupNorm1(dim)
        self.attn = LinearSelfAttention(dim)
        self.norm2 = GroupNorm1(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    @torch.no_grad()
    def fuse(self) -> LinearTransformerBlock:
        # Children are fused already (attn is a FusedLinearSelfAttention): move the norms' affines
        # into the 1x1 convs that follow them.
        if isinstance(self.norm1, nn.GroupNorm):
            self.attn.fold_norm(self.norm1)
            self.norm1 = Standardize.like(self.norm1)
        if isinstance(self.norm2, nn.GroupNorm):
            self.mlp.fc1 = fold_norm_affine(self.norm2, self.mlp.fc1)
            self.norm2 = Standardize.like(self.norm2)
        return self


class MobileVitV2Block(nn.Module):
    """MobileViT v2 block: depthwise 3x3 + 1x1, unfold to (B, C, P, N), separable-attention layers,
    fold, 1x1 projection (no fusion with the input, no skip)."""

    def __init__(self, in_chs: int, transformer_dim: int, transformer_depth: int = 2, mlp_ratio: float = 2.0,
                 patch_size: int = 2):
        super().__init__()
        self.conv_kxk = ConvNormAct(in_chs, in_chs, 3, groups=in_chs)
        self.conv_1x1 = nn.Conv2d(in_chs, transformer_dim, 1, bias=False)
        self.transformer = nn.Sequential(*[LinearTransformerBlock(transformer_dim, mlp_ratio)
                                           for _ in range(transformer_depth)])
        self.norm = GroupNorm1(transformer_dim)
        self.conv_proj = ConvNormAct(transformer_dim, in_chs, 1, act=False)
        self.patch_size = (patch_size, patch_size)
        self.deployed = False  # resize with constant matrices instead of F.interpolate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.patch_size
        new_h, new_w = patch_grid(*x.shape[-2:], self.patch_size)
        if tuple(x.shape[-2:]) != (new_h, new_w):
            x = (bilinear_resize(x, (new_h, new_w), align_corners=True) if self.deployed
                 else F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True))
        x = self.conv_1x1(self.conv_kxk(x))
        B, C = x.shape[:2]
        nh, nw = new_h // ph, new_w // pw
        # Unfold (B, C, H, W) -> (B, C, P, N) in two 4-D transposes.
        x = x.reshape(B * C * nh, ph, nw, pw).transpose(2, 3)  # (B*C*nh, ph, pw, nw)
        x = x.reshape(B * C, nh, ph * pw, nw).transpose(1, 2).reshape(B, C, ph * pw, nh * nw)
        x = self.norm(self.transformer(x))
        # Fold: the inverse.
        x = x.reshape(B * C, ph * pw, nh, nw).transpose(1, 2).reshape(B * C * nh, ph, pw, nw)
        x = x.transpose(2, 3).reshape(B, C, new_h, new_w)
        return self.conv_proj(x)

    @torch.no_grad()
    def fuse(self) -> MobileVitV2Block:
        # The final GroupNorm's affine is per channel: the fold (a permutation) carries it to conv_proj.
        if isinstance(self.norm, nn.GroupNorm):
            self.conv_proj.conv = fold_norm_affine(self.norm, self.conv_proj.conv)
            self.norm = Standardize.like(self.norm)
        self.deployed = True
        return self


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------

# The conv->attention bridge: the first MobileViT v2 block.
_FAMILY = register_family("mobilevit_v2", bridge_module="MobileVitV2Block", checkpoint_filter=checkpoint_filter_fn,
                          paper="arXiv:2206.02680")

# ml-cvnets trains on [0, 1] RGB without mean/std normalisation (timm's cfg: mean 0, std 1).
_CFG = dict(family=_FAMILY.name, paper=_FAMILY.paper, input_size=(3, 256, 256), mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0), crop_pct=0.888, interpolation="bicubic", fixed_input_size=False, stride=32,
            img_size_kwarg="img_size")


def _stages(multiplier: float) -> tuple[StageCfg, ...]:
    chs = [int(c * multiplier) for c in (64, 128, 256, 384, 512)]
    attn = [make_divisible(0.5 * c) for c in chs]
    return (StageCfg(1, chs[0], 1, 2.0), StageCfg(2, chs[1], 2, 2.0), StageCfg(1, chs[2], 2, 2.0, attn[2], 2),
            StageCfg(1, chs[3], 2, 2.0, attn[3], 4), StageCfg(1, chs[4], 2, 2.0, attn[4], 3))


def _create(multiplier: float, img_size=None, **kwargs) -> MobileViT:
    del img_size  # no position tables
    return MobileViT(_stages(multiplier), stem_chs=int(32 * multiplier), num_features=0,
                     attn_block=MobileVitV2Block, **kwargs)


@register_model("mobilevitv2_050", **_CFG)
def mobilevitv2_050(**kwargs) -> MobileViT:
    """MobileViTv2-0.5."""
    return _create(0.5, **kwargs)


@register_model("mobilevitv2_075", **_CFG)
def mobilevitv2_075(**kwargs) -> MobileViT:
    """MobileViTv2-0.75."""
    return _create(0.75, **kwargs)


@register_model("mobilevitv2_100", **_CFG)
def mobilevitv2_100(**kwargs) -> MobileViT:
    """MobileViTv2-1.0."""
    return _create(1.0, **kwargs)


@register_model("mobilevitv2_micro", family=_FAMILY.name, input_size=(3, 64, 64), num_classes=10, crop_pct=1.0,
                interpolation="bilinear", fixed_input_size=False, stride=32,
                paper="edgevit micro variant (not a published model)")
def mobilevitv2_micro(img_size=None, **kwargs) -> MobileViT:
    """Every v2 code path (three separable-attention blocks, the input resize at 96 px), ~0.2 M params."""
    del img_size
    kwargs = {"num_classes": 10, **kwargs}
    stages = (StageCfg(1, 16, 1, 2.0), StageCfg(1, 24, 2, 2.0), StageCfg(1, 32, 2, 2.0, 16, 1),
              StageCfg(1, 48, 2, 2.0, 24, 2), StageCfg(1, 64, 2, 2.0, 32, 1))
    return MobileViT(stages, stem_chs=16, num_features=0, attn_block=MobileVitV2Block, **kwargs)
