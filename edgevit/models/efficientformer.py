"""EfficientFormer: Vision Transformers at MobileNet Speed.

Li, Yuan, Wen, Hu, Evangelidis, Tulyakov, Wang, Ren. NeurIPS 2022, arXiv:2206.01191.
Original implementation (Apache-2.0): https://github.com/snap-research/EfficientFormer

A four-stage pyramid (strides 4, 8, 16, 32) of "MetaBlocks", each a token mixer and an MLP on
layer-scaled residual branches. Most blocks are the 4-D kind (MB4D) working on NCHW maps: 3x3 average
pooling as the mixer and a BatchNorm'd 1x1-conv MLP, i.e. only ops that are fast on mobile NPUs/CPUs.
The last ``num_vit`` blocks of the final stage flatten the 7x7 map to 49 tokens and are the 3-D kind
(MB3D): pre-LayerNorm multi-head self-attention with a learned relative-position bias, then a linear MLP.
The classifier is DeiT-style distilled: ``head`` and ``head_dist`` are averaged at inference.

State-dict keys, shapes and eval numerics match timm 1.0.31's ``efficientformer_l{1,3,7}``, so timm
checkpoints load as is; ``checkpoint_filter_fn`` converts the original repository's checkpoints.
``deploy()`` folds every BatchNorm and every LayerScale that follows a weight layer (the pooling
mixers' stay a multiply), expands the attention-bias table once, folds the softmax temperature into the
query projection and merges the two heads.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from ._registry import register_family, register_model
from .layers import (
    AttentionBiasMixin,
    DropPath,
    LayerScale,
    attention_bias_index,
    average_heads,
    fold_layer_scale,
    fuse_conv_bn,
)
from .layers.norm import Standardize, fold_norm_affine

__all__ = ["EfficientFormer", "checkpoint_filter_fn", "efficientformer_l1", "efficientformer_l3",
           "efficientformer_l7"]

_WIDTHS = {"l1": (48, 96, 224, 448), "l3": (64, 128, 320, 512), "l7": (96, 192, 384, 768)}
_DEPTHS = {"l1": (3, 2, 6, 4), "l3": (4, 4, 12, 6), "l7": (6, 6, 18, 8)}
_NUM_VIT = {"l1": 1, "l3": 4, "l7": 8}  # attention (MB3D) blocks at the end of the last stage


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------

class Stem(nn.Module):
    """Two stride-2 3x3 conv-BN-ReLU layers: (B, 3, H, W) -> (B, C, H/4, W/4)."""

    def __init__(self, in_chans: int, out_chs: int):
        super().__init__()
        mid_chs = out_chs // 2
        self.conv1 = nn.Conv2d(in_chans, mid_chs, 3, stride=2, padding=1)
        self.norm1 = nn.BatchNorm2d(mid_chs)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(mid_chs, out_chs, 3, stride=2, padding=1)
        self.norm2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.conv1(x)))
        return self.act2(self.norm2(self.conv2(x)))

    def fuse(self) -> nn.Module:
        return nn.Sequential(fuse_conv_bn(self.conv1, self.norm1), nn.ReLU(),
                             fuse_conv_bn(self.conv2, self.norm2), nn.ReLU())


class Downsample(nn.Module):
    """Stride-2 3x3 conv + BN between stages (the paper's patch embedding)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))

    def fuse(self) -> nn.Module:
        return fuse_conv_bn(self.conv, self.norm)


class PoolMixer(nn.Module):
    """PoolFormer token mixer: local average minus the input itself.

    The residual adds ``x`` back, so subtracting it here makes the branch carry only what the
    neighbourhood adds. Border windows average real pixels only (``count_include_pad=False``), which
    is also the padding mode XNNPACK's average pooling implements.
    """

    def __init__(self, pool_size: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class ConvMlp(nn.Module):
    """MB4D MLP on NCHW maps: 1x1 conv -> BN -> GELU -> 1x1 conv -> BN."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.norm1 = nn.BatchNorm2d(hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.norm1(self.fc1(x))))
        return self.drop2(self.norm2(self.fc2(x)))

    def fuse(self) -> nn.Module:
        if isinstance(self.norm1, nn.BatchNorm2d):
            self.fc1, self.norm1 = fuse_conv_bn(self.fc1, self.norm1), nn.Identity()
            self.fc2, self.norm2 = fuse_conv_bn(self.fc2, self.norm2), nn.Identity()
        self.drop1 = self.drop2 = nn.Identity()
        return self


class Mlp(nn.Module):
    """MB3D MLP on tokens (B, N, C): linear -> GELU -> linear."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Attention(AttentionBiasMixin, nn.Module):
    """Multi-head self-attention on (B, N, C) tokens of an H x W grid, with relative-position biases.

    As in LeViT, queries and keys are ``key_dim`` wide per head and values ``attn_ratio`` times wider.
    A single projection makes all three; each head's slice of its output is laid out ``[q | k | v]``.
    """

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: float = 4.0,
                 resolution: tuple[int, int] = (7, 7)):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        # Softmax temperature; None once fuse() has folded it into the query projection.
        self.scale: float | None = key_dim ** -0.5
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Linear(num_heads * self.val_dim, dim)
        # The index is persistent here because timm (and the original repo) keep it in checkpoints.
        self.init_attention_bias(num_heads, resolution[0] * resolution[1], attention_bias_index(resolution),
                                 persistent_index=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        kd = self.key_dim
        # One batch entry per (image, head), so both products export as a plain bmm: a 4-D matmul
        # exports as expand + bmm, and XNNPACK leaves the (no-op) expands out of its delegate.
        qkv = self.qkv(x).reshape(B, N, self.num_heads, -1)  # (B, N, heads, 2kd + vd)
        qkv = qkv.transpose(1, 2).flatten(0, 1)  # (B*heads, N, 2kd + vd)
        # Slices rather than split(): same tensors, but slice_copy is an op XNNPACK takes.
        q, k, v = qkv[..., :kd], qkv[..., kd:2 * kd], qkv[..., 2 * kd:]
        attn = torch.bmm(q, k.transpose(1, 2))  # (B*heads, N, N)
        if self.scale is not None:
            attn = attn * self.scale
        attn = (attn.view(B, self.num_heads, N, N) + self.attention_bias()).softmax(dim=-1)
        x = torch.bmm(attn.flatten(0, 1), v)  # (B*heads, N, vd)
        x = x.view(B, self.num_heads, N, -1).transpose(1, 2).reshape(B, N, -1)  # (B, N, heads*vd)
        return self.proj(x)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        self.freeze_attention_bias()
        if self.scale is not None:
            # Scale only the query rows of qkv: the first key_dim outputs of every head's slice.
            row_scale = torch.ones(self.num_heads, 2 * self.key_dim + self.val_dim)
            row_scale[:, :self.key_dim] = self.scale
            self.qkv = fold_layer_scale(self.qkv, row_scale.flatten())
            self.scale = None
        return self


class TokenFlatten(nn.Module):
    """(B, C, H, W) -> (B, H*W, C): the switch from MB4D to MB3D blocks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class MetaBlock4d(nn.Module):
    """MB4D on (B, C, H, W): ``x += ls1 * (pool(x) - x)``, then ``x += ls2 * ConvMlp(x)``."""

    def __init__(self, dim: int, pool_size: int = 3, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, layer_scale_init_value: float = 1e-5):
        super().__init__()
        self.token_mixer = PoolMixer(pool_size)
        self.ls1 = LayerScale(dim, layer_scale_init_value, channels_first=True)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop=drop)
        self.ls2 = LayerScale(dim, layer_scale_init_value, channels_first=True)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.token_mixer(x)))
        return x + self.drop_path2(self.ls2(self.mlp(x)))

    def fuse(self) -> nn.Module:
        # The layer scale may only go into fc2 once fc2 carries its BN. deploy() has fused the MLP
        # already (it walks bottom-up); fusing again is a no-op but keeps a direct call correct.
        # ls1 stays: the pooling branch has no weights to absorb it.
        self.mlp = self.mlp.fuse()
        if isinstance(self.ls2, LayerScale):
            self.mlp.fc2, self.ls2 = fold_layer_scale(self.mlp.fc2, self.ls2), nn.Identity()
        self.drop_path1 = self.drop_path2 = nn.Identity()
        return self


class MetaBlock3d(nn.Module):
    """MB3D on (B, N, C): pre-norm attention and MLP, each on a layer-scaled residual."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, resolution: tuple[int, int] = (7, 7),
                 drop: float = 0.0, drop_path: float = 0.0, layer_scale_init_value: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = Attention(dim, resolution=resolution)
        self.ls1 = LayerScale(dim, layer_scale_init_value)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.ls2 = LayerScale(dim, layer_scale_init_value)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.token_mixer(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def fuse(self) -> nn.Module:
        if isinstance(self.ls1, LayerScale):
            self.token_mixer.proj = fold_layer_scale(self.token_mixer.proj, self.ls1)
            self.mlp.fc2 = fold_layer_scale(self.mlp.fc2, self.ls2)
            self.ls1 = self.ls2 = nn.Identity()
        if isinstance(self.norm1, nn.LayerNorm):
            # XNNPACK does not delegate native_layer_norm: keep only the standardisation and hand the
            # affine to the linear that follows, so the whole block stays in one delegate.
            self.token_mixer.qkv = fold_norm_affine(self.norm1, self.token_mixer.qkv)
            self.mlp.fc1 = fold_norm_affine(self.norm2, self.mlp.fc1)
            self.norm1, self.norm2 = Standardize.like(self.norm1), Standardize.like(self.norm2)
        self.drop_path1 = self.drop_path2 = nn.Identity()
        self.mlp.drop1 = self.mlp.drop2 = nn.Identity()
        return self


class EfficientFormerStage(nn.Module):
    """Optional downsampling, MB4D blocks, then (if ``num_vit``) a flatten and ``num_vit`` MB3D blocks.

    The flatten is an entry of ``blocks`` (so block indices, and checkpoint keys, count it).
    """

    def __init__(self, in_chs: int, out_chs: int, depth: int, downsample: bool = True, num_vit: int = 0,
                 resolution: tuple[int, int] = (7, 7), pool_size: int = 3, mlp_ratio: float = 4.0,
                 drop: float = 0.0, drop_path: list[float] | None = None,
                 layer_scale_init_value: float = 1e-5):
        super().__init__()
        if not downsample and in_chs != out_chs:
            raise ValueError(f"a stage without downsampling keeps its width ({in_chs} != {out_chs})")
        self.downsample = Downsample(in_chs, out_chs) if downsample else nn.Identity()
        drop_path = drop_path or [0.0] * depth
        num_4d = depth - min(num_vit, depth)
        blocks: list[nn.Module] = [
            MetaBlock4d(out_chs, pool_size, mlp_ratio, drop, drop_path[i], layer_scale_init_value)
            for i in range(num_4d)]
        if num_4d < depth:
            blocks.append(TokenFlatten())
            blocks += [MetaBlock3d(out_chs, mlp_ratio, resolution, drop, drop_path[i], layer_scale_init_value)
                       for i in range(num_4d, depth)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

class EfficientFormer(nn.Module):
    """EfficientFormer (v1) classifier; see the module docstring.

    ``img_size`` only sets the token grid of the attention biases (H/32 x W/32); timm always uses 7x7,
    which is what 224 gives. Checkpoints only fit the resolution they were trained at.
    """

    def __init__(self, depths: tuple[int, ...] = (3, 2, 6, 4),
                 embed_dims: tuple[int, ...] = (48, 96, 224, 448), in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = "avg",
                 downsamples: tuple[bool, ...] | None = None, num_vit: int = 1, mlp_ratio: float = 4.0,
                 pool_size: int = 3, layer_scale_init_value: float = 1e-5, drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 img_size: int | tuple[int, int] = 224):
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '' (got {global_pool!r})")
        if num_vit < 1:
            # The head pools tokens and normalises with LayerNorm, so the last stage must end in MB3D.
            raise ValueError("EfficientFormer needs num_vit >= 1")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.distilled_training = False  # set_distilled_training(True) to get both heads' logits

        num_stages = len(depths)
        downsamples = downsamples or (False,) + (True,) * (num_stages - 1)
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        resolution = tuple(math.ceil(s / 4) for s in img_size)  # after the stem's two stride-2 convs
        drop_paths = _drop_path_rates(drop_path_rate, depths)

        self.stem = Stem(in_chans, embed_dims[0])
        stages = []
        in_chs = embed_dims[0]
        for i in range(num_stages):
            if downsamples[i]:
                resolution = tuple(math.ceil(r / 2) for r in resolution)
            stages.append(EfficientFormerStage(
                in_chs, embed_dims[i], depths[i], downsample=downsamples[i],
                num_vit=num_vit if i == num_stages - 1 else 0, resolution=resolution,
                pool_size=pool_size, mlp_ratio=mlp_ratio, drop=proj_drop_rate, drop_path=drop_paths[i],
                layer_scale_init_value=layer_scale_init_value))
            in_chs = embed_dims[i]
        self.stages = nn.Sequential(*stages)

        self.num_features = embed_dims[-1]
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist: nn.Module | None = (nn.Linear(self.num_features, num_classes) if num_classes > 0
                                            else nn.Identity())
        self.apply(_init_weights)

    def set_distilled_training(self, enable: bool = True) -> None:
        """In training mode, return ``(logits, logits_dist)`` for a distillation loss."""
        self.distilled_training = enable

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '' (got {global_pool!r})")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(_init_weights)
        self.head_dist.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> normalised tokens (B, H/32 * W/32, C)."""
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor,
                     pre_logits: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.global_pool == "avg":
            # Token mean, written as a keep-dim spatial mean of a (B, C, N, 1) map: that is the only
            # form of mean XNNPACK delegates (global average pooling); x.mean(1) would fall back.
            x = x.transpose(1, 2).unsqueeze(-1).mean((2, 3), keepdim=True).flatten(1)  # (B, C)
        x = self.head_drop(x)
        if pre_logits:
            return x
        if self.head_dist is None:  # deployed: the two heads are already merged
            return self.head(x)
        logits, logits_dist = self.head(x), self.head_dist(x)
        if self.distilled_training and self.training:
            return logits, logits_dist
        return (logits + logits_dist) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """Merge the eval-mode average of ``head`` and ``head_dist`` into one linear layer."""
        if self.head_dist is not None:
            self.head, self.head_dist = average_heads(self.head, self.head_dist), None
        if isinstance(self.norm, nn.LayerNorm) and isinstance(self.head, nn.Linear) and self.global_pool == "avg":
            # The final norm's per-channel affine commutes with the token mean, so it joins the head;
            # the deployed forward_features then returns standardised features without the affine.
            self.head = fold_norm_affine(self.norm, self.head)
            self.norm = Standardize.like(self.norm)
        self.head_drop = nn.Identity()
        return self


def _init_weights(module: nn.Module) -> None:
    # Linear layers get ViT's truncated normal; convs keep PyTorch's default (as the reference does).
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _drop_path_rates(rate: float, depths: tuple[int, ...]) -> list[list[float]]:
    """Stochastic depth rising linearly from 0 (first block) to ``rate`` (last block), split by stage."""
    total = sum(depths)
    rates = [rate * i / max(total - 1, 1) for i in range(total)]
    starts = [sum(depths[:i]) for i in range(len(depths))]
    return [rates[s:s + d] for s, d in zip(starts, depths)]


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

_ORIGINAL_STEM = {"0": "conv1", "1": "norm1", "3": "conv2", "4": "norm2"}  # 2 and 5 are the ReLUs


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module | None = None
                         ) -> dict[str, torch.Tensor]:
    """Convert a snap-research/EfficientFormer checkpoint to this (timm) layout; others pass through.

    The original model is ``patch_embed`` (a plain Sequential stem), then one flat ``network`` list in
    which each stage's block list is followed by the downsampling embedding (``proj``/``norm``) that
    leads into the next stage; layer scales are bare parameters ``layer_scale_{1,2}`` and the
    distillation head is ``dist_head``.
    """
    if not any(k.startswith(("patch_embed.", "network.")) for k in state_dict):
        return dict(state_dict)

    # A network entry whose next key component is a number is a block list; anything else is an
    # embedding. Counting embeddings up to an entry gives its stage (robust to a missing downsample).
    entries = {int(m[1]): m[2].isdigit() for k in state_dict if (m := re.match(r"network\.(\d+)\.(\w+)", k))}
    embeddings = sorted(i for i, is_blocks in entries.items() if not is_blocks)

    out = {}
    for key, value in state_dict.items():
        if m := re.fullmatch(r"patch_embed\.(\d+)\.(.+)", key):
            key = f"stem.{_ORIGINAL_STEM[m[1]]}.{m[2]}"
        elif m := re.fullmatch(r"network\.(\d+)\.(.+)", key):
            index, rest = int(m[1]), m[2]
            stage = sum(e <= index for e in embeddings)
            if entries[index]:
                rest = re.sub(r"^(\d+)\.layer_scale_([12])$", r"\1.ls\2.gamma", rest)
                key = f"stages.{stage}.blocks.{rest}"
            else:
                rest = re.sub(r"^proj\.", "conv.", rest)  # the embedding's norm keeps its name
                key = f"stages.{stage}.downsample.{rest}"
        elif key.startswith("dist_head."):
            key = "head_dist." + key[len("dist_head."):]
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------

# The conv->attention bridge: the first 3-D attention block after the 4-D -> token flatten.
_FAMILY = register_family("efficientformer", bridge_module="MetaBlock3d", checkpoint_filter=checkpoint_filter_fn,
                          paper="arXiv:2206.01191")

_META = dict(family=_FAMILY.name, paper=_FAMILY.paper, input_size=(3, 224, 224), crop_pct=0.95,
             interpolation="bicubic", fixed_input_size=True)


def _create(variant: str, **kwargs) -> EfficientFormer:
    return EfficientFormer(depths=_DEPTHS[variant], embed_dims=_WIDTHS[variant], num_vit=_NUM_VIT[variant],
                           **kwargs)


@register_model("efficientformer_l1", **_META)
def efficientformer_l1(**kwargs) -> EfficientFormer:
    """EfficientFormer-L1: 12.3M params, one attention block."""
    return _create("l1", **kwargs)


@register_model("efficientformer_l3", **_META)
def efficientformer_l3(**kwargs) -> EfficientFormer:
    """EfficientFormer-L3: 31.4M params, four attention blocks."""
    return _create("l3", **kwargs)


@register_model("efficientformer_l7", **_META)
def efficientformer_l7(**kwargs) -> EfficientFormer:
    """EfficientFormer-L7: 82.2M params, the whole last stage is attention blocks."""
    return _create("l7", **kwargs)
