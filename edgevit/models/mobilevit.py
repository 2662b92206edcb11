"""MobileViT (v1) and the network skeleton MobileViT v2 shares.

Paper: Sachin Mehta and Mohammad Rastegari, "MobileViT: Light-weight, General-purpose, and
Mobile-friendly Vision Transformer", ICLR 2022, arXiv:2110.02178. Original code:
https://github.com/apple/ml-cvnets (``cvnets/models/classification/mobilevit.py``).

Architecture: a stride-2 3x3 stem, two stages of MobileNetV2 inverted residuals, then three stages of
[stride-2 inverted residual, MobileViT block]. The MobileViT block models local structure with a 3x3
conv and a 1x1 projection, *unfolds* the map into ``P = 2x2`` interleaved token sets (every token of a
set is at the same offset inside its 2x2 patch), runs a pre-norm transformer over each set, folds the
tokens back into a map and fuses it with the block input through a 3x3 conv. Maps whose side is not a
multiple of the patch are bilinearly resized around the transformer (as the original does).

State-dict keys and eval numerics follow timm 1.0.31 (``timm.models.mobilevit`` built through
``timm.models.byobnet``) so its checkpoints load unchanged; ``checkpoint_filter_fn`` converts the
original repository's (apple/ml-cvnets) layout for v1 and v2.

Deploy form: BatchNorm folded into every conv; LayerNorm as a standardisation whose affine moves into
the next linear (the last one, through the fold, into the 1x1 ``conv_proj``); attention as 3-D ``bmm``
with the 1/sqrt(d) scale folded into the query rows; unfold/fold as reshapes and 4-D transposes; the
resize (only at sizes that are not multiples of 64) as two constant matrix products.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_family, register_model
from .layers import fuse_conv_bn
from .layers.norm import Standardize, fold_norm_affine
from .layers.resize import bilinear_resize

__all__ = ["MobileViT", "StageCfg", "ConvNormAct", "BottleneckBlock", "MobileVitBlock", "make_divisible",
           "checkpoint_filter_fn", "mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "mobilevit_micro"]


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Round to a multiple of ``divisor``, never more than 10 % down (timm's and cvnets' rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < round_limit * value else new


# --------------------------------------------------------------------------------------------------
# Conv blocks
# --------------------------------------------------------------------------------------------------

class ConvAct(nn.Module):
    """Deploy form of ``ConvNormAct``: one conv with bias, then the activation."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module):
        super().__init__()
        self.conv = conv
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class ConvNormAct(nn.Module):
    """Bias-free conv, BatchNorm, optional SiLU (timm's ``ConvNormAct`` keys: ``conv``, ``bn``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> ConvAct:
        return ConvAct(fuse_conv_bn(self.conv, self.bn), self.act)


class BottleneckBlock(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand, depthwise 3x3 (stride), linear 1x1 project.

    The skip exists only where shapes allow (stride 1, same width); there is no projection shortcut.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, bottle_ratio: float = 4.0):
        super().__init__()
        mid = make_divisible(in_chs * bottle_ratio)
        self.has_skip = stride == 1 and in_chs == out_chs
        self.shortcut = nn.Identity() if self.has_skip else None
        self.conv1_1x1 = ConvNormAct(in_chs, mid, 1)
        self.conv2_kxk = ConvNormAct(mid, mid, 3, stride, groups=mid)
        self.conv3_1x1 = ConvNormAct(mid, out_chs, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return x + y if self.has_skip else y


# --------------------------------------------------------------------------------------------------
# Transformer over unfolded patches
# --------------------------------------------------------------------------------------------------

def _multi_head_attention(qkv: torch.Tensor, num_heads: int, scale: float | None) -> torch.Tensor:
    """(B, N, 3C) packed q|k|v -> (B, N, C). Slices and 3-D bmm (XNNPACK takes these; SDPA, split and
    4-D matmul it does not)."""
    B, N, C3 = qkv.shape
    C = C3 // 3
    D = C // num_heads

    def heads(t: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B * heads, N, D)
        return t.reshape(B, N, num_heads, D).transpose(1, 2).reshape(B * num_heads, N, D)

    q, k, v = heads(qkv[..., :C]), heads(qkv[..., C:2 * C]), heads(qkv[..., 2 * C:])
    if N == 1:  # one token per set (a 2x2 map): the softmax is 1 and the output is the value
        return qkv[..., 2 * C:]
    if scale is not None:
        q = q * scale
    attn = torch.bmm(q, k.transpose(1, 2)).softmax(dim=-1)  # (B * heads, N, N)
    out = torch.bmm(attn, v)  # (B * heads, N, D)
    return out.reshape(B, num_heads, N, D).transpose(1, 2).reshape(B, N, C)


class Attention(nn.Module):
    """Multi-head self-attention on (B, N, C) tokens (timm's ``Attention`` keys: ``qkv``, ``proj``)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(_multi_head_attention(self.qkv(x), self.num_heads, self.scale))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block (timm's ViT ``Block`` with SiLU MLP and no layer scale)."""

    def __init__(self, dim: int, num_heads: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    @torch.no_grad()
    def fuse(self) -> FusedTransformerBlock:
        return FusedTransformerBlock(self)


class FusedTransformerBlock(nn.Module):
    """Inference form: norms as standardisations, their affines and the query scale in the linears."""

    @torch.no_grad()
    def __init__(self, block: TransformerBlock):
        super().__init__()
        self.num_heads = block.attn.num_heads
        dim = block.attn.proj.in_features
        self.norm1 = Standardize.like(block.norm1)
        self.qkv = fold_norm_affine(block.norm1, block.attn.qkv)
        self.qkv.weight[:dim].mul_(block.attn.scale)  # output rows [0, dim) are the queries
        self.qkv.bias[:dim].mul_(block.attn.scale)
        self.proj = block.attn.proj
        self.norm2 = Standardize.like(block.norm2)
        self.fc1 = fold_norm_affine(block.norm2, block.mlp.fc1)
        self.act = block.mlp.act
        self.fc2 = block.mlp.fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.proj(_multi_head_attention(self.qkv(self.norm1(x)), self.num_heads, None))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


def patch_grid(h: int, w: int, patch: tuple[int, int]) -> tuple[int, int]:
    """Map size rounded up to whole patches (the size the transformer sees)."""
    return -(-h // patch[0]) * patch[0], -(-w // patch[1]) * patch[1]


class MobileVitBlock(nn.Module):
    """MobileViT block: local 3x3 conv + 1x1, unfold into 2x2-offset token sets, transformer, fold,
    1x1 projection, 3x3 fusion with the block input (timm's ``MobileVitBlock`` keys)."""

    def __init__(self, in_chs: int, transformer_dim: int, transformer_depth: int = 2, num_heads: int = 4,
                 mlp_ratio: float = 2.0, patch_size: int = 2):
        super().__init__()
        self.conv_kxk = ConvNormAct(in_chs, in_chs, 3)
        self.conv_1x1 = nn.Conv2d(in_chs, transformer_dim, 1, bias=False)
        self.transformer = nn.Sequential(*[TransformerBlock(transformer_dim, num_heads, mlp_ratio)
                                           for _ in range(transformer_depth)])
        self.norm = nn.LayerNorm(transformer_dim)
        self.conv_proj = ConvNormAct(transformer_dim, in_chs, 1)
        self.conv_fusion = ConvNormAct(2 * in_chs, in_chs, 3)
        self.patch_size = (patch_size, patch_size)
        self.deployed = False  # resize with constant matrices instead of F.interpolate

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        if self.deployed:
            return bilinear_resize(x, size, align_corners=False)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        B, C, H, W = x.shape
        ph, pw = self.patch_size
        new_h, new_w = patch_grid(H, W, self.patch_size)
        nh, nw = new_h // ph, new_w // pw
        x = self._resize(x, (new_h, new_w))
        # Unfold: (B, C, H, W) -> (B * P, N, C), token sets by offset inside the patch.
        x = x.reshape(B * C * nh, ph, nw, pw).transpose(1, 2)  # (B*C*nh, nw, ph, pw)
        x = x.reshape(B, C, nh * nw, ph * pw).transpose(1, 3).reshape(B * ph * pw, nh * nw, C)
        x = self.norm(self.transformer(x))
        # Fold: the inverse permutation.
        x = x.reshape(B, ph * pw, nh * nw, C).transpose(1, 3).reshape(B * C * nh, nw, ph, pw)
        x = x.transpose(1, 2).reshape(B, C, new_h, new_w)
        x = self._resize(x, (H, W))
        x = self.conv_proj(x)
        return self.conv_fusion(torch.cat((shortcut, x), dim=1))

    @torch.no_grad()
    def fuse(self) -> MobileVitBlock:
        # Children are fused already. The final norm's affine is per channel, which the fold (a
        # permutation) and the resize (rows summing to 1) carry unchanged to the 1x1 conv_proj.
        if isinstance(self.norm, nn.LayerNorm):
            self.conv_proj.conv = fold_norm_affine(self.norm, self.conv_proj.conv)
            self.norm = Standardize.like(self.norm)
        self.deployed = True
        return self


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageCfg:
    """``depth`` inverted residuals (the first with ``stride``) of width ``chs``, then, when
    ``attn_depth`` > 0, one attention block with ``attn_depth`` transformer layers of width ``attn_dim``."""

    depth: int
    chs: int
    stride: int
    bottle_ratio: float = 4.0
    attn_dim: int = 0
    attn_depth: int = 0


class MobileViT(nn.Module):
    """MobileViT v1/v2 classifier (timm's ByobNet layout: ``stem``, ``stages``, ``final_conv``, ``head.fc``).

    ``attn_block(chs, attn_dim, attn_depth)`` builds a stage's attention block (v1: ``MobileVitBlock``).
    """

    def __init__(self, stages: tuple[StageCfg, ...], stem_chs: int = 16, num_features: int = 0,
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, attn_block=None):
        super().__init__()
        attn_block = attn_block or MobileVitBlock
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.stem = ConvNormAct(in_chans, stem_chs, 3, 2)
        prev = stem_chs
        stage_modules = []
        for cfg in stages:
            blocks = []
            for i in range(cfg.depth):
                blocks.append(BottleneckBlock(prev, cfg.chs, cfg.stride if i == 0 else 1, cfg.bottle_ratio))
                prev = cfg.chs
            if cfg.attn_depth:
                blocks.append(attn_block(cfg.chs, cfg.attn_dim, cfg.attn_depth))
            stage_modules.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stage_modules)
        self.final_conv = ConvNormAct(prev, num_features, 1) if num_features else nn.Identity()
        self.num_features = num_features or prev
        self.head = nn.Module()
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.stages(self.stem(x)))  # (B, C, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # keepdim mean over (2, 3) is the pooling form XNNPACK lowers.
        x = x.mean((2, 3), keepdim=True).flatten(1)
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.head.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------------
# Checkpoints (apple/ml-cvnets layout -> timm layout, v1 and v2)
# --------------------------------------------------------------------------------------------------

_CONV = {"exp_1x1": "conv1_1x1", "conv_3x3": "conv2_kxk", "red_1x1": "conv3_1x1"}
_NORM = {"conv": "conv", "norm": "bn"}
# Inside one transformer layer: v1 TransformerEncoder (pre_norm_mha / pre_norm_ffn of Linear layers),
# v2 LinearAttnFFN (pre_norm_attn / pre_norm_ffn of 1x1 ConvLayer2d).
_TRANSFORMER = {"pre_norm_mha.0": "norm1", "pre_norm_mha.1.qkv_proj": "attn.qkv", "pre_norm_mha.1.out_proj":
                "attn.proj", "pre_norm_ffn.0": "norm2", "pre_norm_ffn.1": "mlp.fc1", "pre_norm_ffn.4": "mlp.fc2",
                "pre_norm_attn.0": "norm1", "pre_norm_attn.1.qkv_proj": "attn.qkv_proj",
                "pre_norm_attn.1.out_proj": "attn.out_proj", "pre_norm_ffn.3": "mlp.fc2"}


def _conv_layer(rest: str) -> str:
    """ml-cvnets ``ConvLayer2d``: ``block.conv`` / ``block.norm`` -> ``conv`` / ``bn``."""
    m = re.match(r"^block\.(conv|norm)\.(.*)$", rest)
    return f"{_NORM[m.group(1)]}.{m.group(2)}" if m else rest


def _original_key(key: str, attn_depths: dict[int, int]) -> str:
    if key.startswith("conv_1."):
        return "stem." + _conv_layer(key[len("conv_1."):])
    if key.startswith("conv_1x1_exp."):
        return "final_conv." + _conv_layer(key[len("conv_1x1_exp."):])
    if key.startswith("classifier.fc."):
        return "head.fc." + key[len("classifier.fc."):]
    m = re.match(r"^layer_(\d)\.(\d+)\.(.*)$", key)
    if m is None:
        return key
    stage, idx, rest = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
    prefix = f"stages.{stage}.{idx}"
    m = re.match(r"^block\.(exp_1x1|conv_3x3|red_1x1)\.(.*)$", rest)
    if m:  # inverted residual
        return f"{prefix}.{_CONV[m.group(1)]}.{_conv_layer(m.group(2))}"
    m = re.match(r"^local_rep\.(conv_3x3|conv_1x1|0|1)\.(.*)$", rest)
    if m:  # v1 names its local convs, v2 numbers them; the 1x1 has no norm
        if m.group(1) in ("conv_3x3", "0"):
            return f"{prefix}.conv_kxk.{_conv_layer(m.group(2))}"
        return f"{prefix}.conv_1x1.{m.group(2).removeprefix('block.conv.')}"
    m = re.match(r"^global_rep\.(\d+)\.(.*)$", rest)
    if m:
        layer, tail = int(m.group(1)), m.group(2)
        if layer == attn_depths.get(stage, -1):  # the norm after the last transformer layer
            return f"{prefix}.norm.{tail}"
        for old, new in _TRANSFORMER.items():
            if tail.startswith(old + "."):
                tail = new + "." + tail[len(old) + 1:]
                return f"{prefix}.transformer.{layer}.{tail.replace('.block.conv.', '.')}"
        return key
    m = re.match(r"^(conv_proj|fusion)\.(.*)$", rest)
    if m:
        return f"{prefix}.{'conv_fusion' if m.group(1) == 'fusion' else 'conv_proj'}.{_conv_layer(m.group(2))}"
    return key


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Convert an apple/ml-cvnets MobileViT v1/v2 checkpoint to this layout; timm's passes unchanged.

    ml-cvnets keeps ``conv_1``, ``layer_1..5`` (inverted residuals as ``block.exp_1x1/conv_3x3/red_1x1``,
    MobileViT blocks as ``local_rep``, ``global_rep`` = transformer layers + final norm, ``conv_proj``,
    ``fusion``), ``conv_1x1_exp`` and ``classifier.fc``; each conv layer is ``block.conv`` + ``block.norm``.
    """
    del model  # the layout alone decides the mapping
    state_dict = state_dict.get("model", state_dict)
    if not any(k.startswith(("conv_1.", "layer_1.")) for k in state_dict):
        return state_dict
    # The final norm is global_rep.<depth>: the highest index of each stage's global_rep.
    attn_depths: dict[int, int] = {}
    for k in state_dict:
        m = re.match(r"^layer_(\d)\.\d+\.global_rep\.(\d+)\.", k)
        if m:
            stage = int(m.group(1)) - 1
            attn_depths[stage] = max(attn_depths.get(stage, 0), int(m.group(2)))
    return {_original_key(k, attn_depths): v for k, v in state_dict.items()}


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------

# The conv->attention bridge: the first MobileViT block (local convs -> unfold -> transformer).
_FAMILY = register_family("mobilevit", bridge_module="MobileVitBlock", checkpoint_filter=checkpoint_filter_fn,
                          paper="arXiv:2110.02178")

# ml-cvnets trains on [0, 1] RGB without mean/std normalisation (timm's cfg: mean 0, std 1).
_CFG = dict(family=_FAMILY.name, paper=_FAMILY.paper, input_size=(3, 256, 256), mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0), crop_pct=0.9, interpolation="bicubic", fixed_input_size=False, stride=32,
            img_size_kwarg="img_size")


def _create(stages: tuple[StageCfg, ...], num_features: int, img_size=None, **kwargs) -> MobileViT:
    del img_size  # no position tables: maps not divisible by the patch are resized inside the blocks
    return MobileViT(stages, stem_chs=16, num_features=num_features, **kwargs)


def _v1_stages(chs: tuple[int, ...], dims: tuple[int, ...], bottle_ratio: float) -> tuple[StageCfg, ...]:
    return (StageCfg(1, chs[0], 1, bottle_ratio), StageCfg(3, chs[1], 2, bottle_ratio),
            StageCfg(1, chs[2], 2, bottle_ratio, dims[0], 2), StageCfg(1, chs[3], 2, bottle_ratio, dims[1], 4),
            StageCfg(1, chs[4], 2, bottle_ratio, dims[2], 3))


@register_model("mobilevit_xxs", **_CFG)
def mobilevit_xxs(**kwargs) -> MobileViT:
    """MobileViT-XXS."""
    return _create(_v1_stages((16, 24, 48, 64, 80), (64, 80, 96), 2.0), 320, **kwargs)


@register_model("mobilevit_xs", **_CFG)
def mobilevit_xs(**kwargs) -> MobileViT:
    """MobileViT-XS."""
    return _create(_v1_stages((32, 48, 64, 80, 96), (96, 120, 144), 4.0), 384, **kwargs)


@register_model("mobilevit_s", **_CFG)
def mobilevit_s(**kwargs) -> MobileViT:
    """MobileViT-S."""
    return _create(_v1_stages((32, 64, 96, 128, 160), (144, 192, 240), 4.0), 640, **kwargs)


@register_model("mobilevit_micro", family=_FAMILY.name, input_size=(3, 64, 64), num_classes=10, crop_pct=1.0,
                interpolation="bilinear", fixed_input_size=False, stride=32,
                paper="edgevit micro variant (not a published model)")
def mobilevit_micro(img_size=None, **kwargs) -> MobileViT:
    """Every v1 code path (identity and no skip, three MobileViT blocks, resize at 96 px), ~0.2 M params."""
    del img_size
    kwargs = {"num_classes": 10, **kwargs}
    stages = (StageCfg(1, 16, 1, 2.0), StageCfg(1, 24, 2, 2.0), StageCfg(1, 32, 2, 2.0, 32, 1),
              StageCfg(1, 40, 2, 2.0, 48, 2), StageCfg(1, 48, 2, 2.0, 48, 1))
    return MobileViT(stages, stem_chs=16, num_features=96, **kwargs)
