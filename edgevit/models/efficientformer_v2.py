"""EfficientFormerV2: Rethinking Vision Transformers for MobileNet Size and Speed.

Li, Hu, Wen, Evangelidis, Salahi, Wang, Tulyakov, Ren. ICCV 2023, arXiv:2212.08059.
Original implementation (Apache-2.0): https://github.com/snap-research/EfficientFormer

Unlike V1, the whole network stays in NCHW and every block is one design: an optional attention token
mixer followed by an inverted-residual MLP (1x1 expand, 3x3 depthwise, 1x1 project, all BatchNorm'd),
both on layer-scaled residual branches. Attention appears only in the last ``num_vit`` blocks of the
last two stages, and is made affordable at stride 16 by attending on a 2x-subsampled map (upsampled back
afterwards). Attention adds a depthwise "local" path to the values, talking heads (1x1 convs across heads
before and after the softmax) and learned relative-position biases. The downsampling into the last
stage adds an attention branch whose queries come from a local-global (depthwise conv + subsampling)
projection. The classifier is DeiT-style distilled: ``head`` and ``head_dist`` averaged at inference.

State-dict keys, shapes and eval numerics match timm 1.0.31's ``efficientformerv2_{s0,s1,s2,l}``;
``checkpoint_filter_fn`` converts the original repository's checkpoints. ``deploy()`` folds every
BatchNorm (the last one into the classifier) and LayerScale, absorbs the query subsampling into its
depthwise conv, expands the attention-bias tables once, folds the softmax temperature into the query
projections and merges the two heads.
"""
from __future__ import annotations

import copy
import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_family, register_model
from .layers import (
    AttentionBiasMixin,
    DropPath,
    LayerScale,
    attention_bias_index,
    average_heads,
    fold_layer_scale,
    fuse_bn_linear,
    fuse_conv_bn,
)

__all__ = ["EfficientFormerV2", "checkpoint_filter_fn", "efficientformerv2_s0", "efficientformerv2_s1",
           "efficientformerv2_s2", "efficientformerv2_l"]

_WIDTHS = {"s0": (32, 48, 96, 176), "s1": (32, 48, 120, 224), "s2": (32, 64, 144, 288),
           "l": (40, 80, 192, 384)}
_DEPTHS = {"s0": (2, 2, 6, 4), "s1": (3, 3, 9, 6), "s2": (4, 4, 12, 8), "l": (5, 5, 15, 10)}
# MLP expansion per block; the attention-heavy middle of stage 3 and 4 is kept cheaper at 3x.
_MLP_RATIOS = {
    "s0": (4, 4, (4, 3, 3, 3, 4, 4), (4, 3, 3, 4)),
    "s1": (4, 4, (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4)),
    "s2": (4, 4, (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4)),
    "l": (4, 4, (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 4, 3, 3, 3, 3, 4, 4, 4)),
}
_NUM_VIT = {"s0": 2, "s1": 2, "s2": 4, "l": 6}  # attention blocks at the end of stages 3 and 4
_DROP_PATH = {"s0": 0.0, "s1": 0.0, "s2": 0.02, "l": 0.1}


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------

class ConvNorm(nn.Module):
    """Conv2d (with bias, 'same' padding for odd kernels) followed by BatchNorm2d."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2,
                              groups=groups)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fuse(self) -> nn.Module:
        return fuse_conv_bn(self.conv, self.bn)


class ConvNormAct(ConvNorm):
    """ConvNorm followed by an activation (GELU unless told otherwise)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act_layer: type[nn.Module] = nn.GELU):
        super().__init__(in_chs, out_chs, kernel_size, stride, groups)
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> nn.Module:
        return nn.Sequential(fuse_conv_bn(self.conv, self.bn), self.act)


class Stem(nn.Module):
    """Two stride-2 3x3 ConvNormAct layers: (B, 3, H, W) -> (B, C, H/4, W/4)."""

    def __init__(self, in_chans: int, out_chs: int, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.conv1 = ConvNormAct(in_chans, out_chs // 2, 3, stride=2, act_layer=act_layer)
        self.conv2 = ConvNormAct(out_chs // 2, out_chs, 3, stride=2, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class ConvMlp(nn.Module):
    """Inverted residual MLP: 1x1 expand -> 3x3 depthwise -> 1x1 project (BN after each, GELU after two)."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = ConvNormAct(dim, hidden_dim, 1, act_layer=act_layer)
        self.mid = ConvNormAct(hidden_dim, hidden_dim, 3, groups=hidden_dim, act_layer=act_layer)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = ConvNorm(hidden_dim, dim, 1)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.mid(self.fc1(x)))
        return self.drop2(self.fc2(x))

    def fuse(self) -> nn.Module:
        self.drop1 = self.drop2 = nn.Identity()
        return self


def _softmax_last(attn: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim of (B, heads, Nq, Nk), taken on a 3-D view.

    ExecuTorch 1.5.1's XNNPACK lowering moves a 4-D tensor that sits between 1x1 convs (the talking
    heads) to channels-last and then normalises over the wrong axis: 6-10 dB SQNR in fp32, silently.
    A 3-D view cannot be channels-last, so the delegate keeps the axis right (142 dB). Same numerics.
    """
    B, heads, nq, nk = attn.shape
    return attn.reshape(B * heads, nq, nk).softmax(dim=-1).reshape(B, heads, nq, nk)


class Attention2d(AttentionBiasMixin, nn.Module):
    """Multi-head self-attention on an NCHW map, with talking heads and a local value path.

    Queries, keys and values are 1x1 ConvNorms (values ``attn_ratio`` times wider than keys); a 3x3
    depthwise ConvNorm of the values is added to the attention output, restoring the locality that
    global attention blurs. With ``stride`` the map is first reduced by a strided depthwise ConvNorm
    and the output is bilinearly upsampled back, which is how stage 3 (stride 16) affords attention.
    ``resolution`` is the input map size; the bias table follows the (possibly reduced) attended grid.
    """

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: int = 4,
                 resolution: tuple[int, int] = (7, 7), stride: int | None = None,
                 act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        # Softmax temperature; None once fuse() has folded it into the query projection.
        self.scale: float | None = key_dim ** -0.5
        if stride is not None:
            self.resolution = tuple(math.ceil(r / stride) for r in resolution)
            self.stride_conv = ConvNorm(dim, dim, 3, stride=stride, groups=dim)
        else:
            self.resolution = tuple(resolution)
            self.stride_conv = None
        key_chs, val_chs = key_dim * num_heads, self.val_dim * num_heads
        self.q = ConvNorm(dim, key_chs)
        self.k = ConvNorm(dim, key_chs)
        self.v = ConvNorm(dim, val_chs)
        self.v_local = ConvNorm(val_chs, val_chs, 3, groups=val_chs)
        # "Talking heads": 1x1 convs over the head axis of the (B, heads, N, N) attention map.
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.act = act_layer()
        self.proj = ConvNorm(val_chs, dim)
        h, w = self.resolution
        self.init_attention_bias(num_heads, h * w, attention_bias_index(self.resolution),
                                 persistent_index=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        h, w = self.resolution
        n, heads = h * w, self.num_heads
        # One batch entry per (image, head), so both products export as a plain bmm: a 4-D matmul
        # exports as expand + bmm, and XNNPACK leaves the (no-op) expands out of its delegate.
        q = self.q(x).reshape(B * heads, self.key_dim, n).transpose(1, 2)  # (B*heads, N, kd)
        k = self.k(x).reshape(B * heads, self.key_dim, n)  # (B*heads, kd, N)
        v = self.v(x)
        v_local = self.v_local(v)  # (B, heads*vd, h, w)
        v = v.reshape(B * heads, self.val_dim, n).transpose(1, 2)  # (B*heads, N, vd)

        attn = torch.bmm(q, k).view(B, heads, n, n)
        if self.scale is not None:
            attn = attn * self.scale
        attn = self.talking_head1(attn + self.attention_bias())
        attn = self.talking_head2(_softmax_last(attn))

        x = torch.bmm(attn.flatten(0, 1), v)  # (B*heads, N, vd)
        x = x.transpose(1, 2).reshape(B, -1, h, w) + v_local  # (B, heads*vd, h, w)
        if self.stride_conv is not None:
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        return self.proj(self.act(x))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        # Children are already plain convs (deploy() walks bottom-up).
        self.freeze_attention_bias()
        if self.scale is not None:
            self.q, self.scale = fold_layer_scale(self.q, self.scale), None
        return self


class LocalGlobalQuery(nn.Module):
    """Stride-2 query map: a depthwise 3x3 conv (local) plus plain 2x subsampling (global), then 1x1."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.pool = nn.AvgPool2d(1, stride=2)  # a 1x1 window at stride 2: picks pixel (2i, 2j)
        self.local = nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim)
        self.proj = ConvNorm(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.local(x)
        if self.pool is not None:
            q = q + self.pool(x)
        return self.proj(q)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        if self.pool is not None:
            # Pixel (2i, 2j) is the centre tap of the stride-2, padding-1 3x3 window at output (i, j),
            # so the subsampling branch is +1 on the centre weight of the depthwise conv.
            local = copy.deepcopy(self.local)
            centre = local.kernel_size[0] // 2
            local.weight[:, :, centre, centre] += 1.0
            self.local, self.pool = local, None
        return self


class Attention2dDownsample(AttentionBiasMixin, nn.Module):
    """Attention that halves the map: stride-2 local-global queries attend to full-resolution keys.

    Used as a branch of the last downsampling. The local value path is a stride-2 depthwise ConvNorm;
    ``resolution`` is the input map size, the output is ceil(H/2) x ceil(W/2) with ``out_dim`` channels.
    """

    def __init__(self, dim: int, out_dim: int, key_dim: int = 16, num_heads: int = 8, attn_ratio: int = 4,
                 resolution: tuple[int, int] = (14, 14), act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.scale: float | None = key_dim ** -0.5
        self.resolution = tuple(resolution)
        self.out_resolution = tuple(math.ceil(r / 2) for r in resolution)
        key_chs, val_chs = key_dim * num_heads, self.val_dim * num_heads
        self.q = LocalGlobalQuery(dim, key_chs)
        self.k = ConvNorm(dim, key_chs)
        self.v = ConvNorm(dim, val_chs)
        self.v_local = ConvNorm(val_chs, val_chs, 3, stride=2, groups=val_chs)
        self.act = act_layer()
        self.proj = ConvNorm(val_chs, out_dim)
        H, W = self.resolution
        # One bias per offset on the key grid; queries sit on its even rows and columns.
        self.init_attention_bias(num_heads, H * W, attention_bias_index(self.resolution, query_stride=2),
                                 persistent_index=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        H, W = self.resolution
        h, w = self.out_resolution
        heads = self.num_heads
        # (B*heads) batches for plain bmm, as in Attention2d; n output queries, N full-resolution keys.
        q = self.q(x).reshape(B * heads, self.key_dim, h * w).transpose(1, 2)  # (B*heads, n, kd)
        k = self.k(x).reshape(B * heads, self.key_dim, H * W)  # (B*heads, kd, N)
        v = self.v(x)
        v_local = self.v_local(v)  # (B, heads*vd, h, w)
        v = v.reshape(B * heads, self.val_dim, H * W).transpose(1, 2)  # (B*heads, N, vd)

        attn = torch.bmm(q, k).view(B, heads, h * w, H * W)
        if self.scale is not None:
            attn = attn * self.scale
        attn = _softmax_last(attn + self.attention_bias())

        x = torch.bmm(attn.flatten(0, 1), v)  # (B*heads, n, vd)
        x = x.transpose(1, 2).reshape(B, -1, h, w) + v_local  # (B, heads*vd, h, w)
        return self.proj(self.act(x))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        self.freeze_attention_bias()
        if self.scale is not None:
            self.q.proj, self.scale = fold_layer_scale(self.q.proj, self.scale), None
        return self


class Downsample(nn.Module):
    """Stride-2 3x3 ConvNorm between stages, plus (into the last stage) an attention branch."""

    def __init__(self, in_chs: int, out_chs: int, resolution: tuple[int, int], use_attn: bool = False,
                 act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.conv = ConvNorm(in_chs, out_chs, 3, stride=2)
        self.attn = (Attention2dDownsample(in_chs, out_chs, resolution=resolution, act_layer=act_layer)
                     if use_attn else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.attn is not None:
            out = out + self.attn(x)
        return out


class EfficientFormerV2Block(nn.Module):
    """``x += ls1 * attention(x)`` (attention blocks only), then ``x += ls2 * ConvMlp(x)``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, resolution: tuple[int, int] = (7, 7),
                 stride: int | None = None, use_attn: bool = False, drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init_value: float | None = 1e-5, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()

        def layer_scale() -> nn.Module:
            if layer_scale_init_value is None:
                return nn.Identity()
            return LayerScale(dim, layer_scale_init_value, channels_first=True)

        if use_attn:
            self.token_mixer = Attention2d(dim, resolution=resolution, stride=stride, act_layer=act_layer)
            self.ls1 = layer_scale()
            self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        else:
            self.token_mixer = self.ls1 = self.drop_path1 = None
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.ls2 = layer_scale()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_mixer is not None:
            x = x + self.drop_path1(self.ls1(self.token_mixer(x)))
        return x + self.drop_path2(self.ls2(self.mlp(x)))

    def fuse(self) -> nn.Module:
        # Children are fused first, so both branches end in a plain conv that can absorb the scale.
        if isinstance(self.ls1, LayerScale):
            self.token_mixer.proj, self.ls1 = fold_layer_scale(self.token_mixer.proj, self.ls1), nn.Identity()
        if isinstance(self.ls2, LayerScale):
            self.mlp.fc2, self.ls2 = fold_layer_scale(self.mlp.fc2, self.ls2), nn.Identity()
        if self.token_mixer is not None:
            self.drop_path1 = nn.Identity()
        self.drop_path2 = nn.Identity()
        return self


class EfficientFormerV2Stage(nn.Module):
    """Optional downsampling, then ``depth`` blocks of which the last ``num_attn`` use attention."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, resolution: tuple[int, int],
                 downsample: bool = True, downsample_attn: bool = False, num_attn: int = 0,
                 attn_stride: int | None = None, mlp_ratios: tuple[float, ...] | float = 4.0,
                 drop: float = 0.0, drop_path: list[float] | None = None,
                 layer_scale_init_value: float | None = 1e-5, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        if downsample:
            self.downsample = Downsample(in_chs, out_chs, resolution, use_attn=downsample_attn,
                                         act_layer=act_layer)
            resolution = tuple(math.ceil(r / 2) for r in resolution)
        else:
            if in_chs != out_chs:
                raise ValueError(f"a stage without downsampling keeps its width ({in_chs} != {out_chs})")
            self.downsample = nn.Identity()
        mlp_ratios = _per_block(mlp_ratios, depth)
        drop_path = drop_path or [0.0] * depth
        self.blocks = nn.Sequential(*[
            EfficientFormerV2Block(out_chs, mlp_ratios[i], resolution, attn_stride,
                                   use_attn=i >= depth - num_attn, drop=drop, drop_path=drop_path[i],
                                   layer_scale_init_value=layer_scale_init_value, act_layer=act_layer)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

class EfficientFormerV2(nn.Module):
    """EfficientFormerV2 classifier; see the module docstring.

    Stage layout follows the paper: attention blocks (the last ``num_vit`` of a stage) in stages 3 and
    4 only, stage 3's attention at half its resolution, and an attention branch in the downsampling
    into stage 4. ``img_size`` sizes the attention-bias tables.
    """

    def __init__(self, depths: tuple[int, ...] = (2, 2, 6, 4),
                 embed_dims: tuple[int, ...] = (32, 48, 96, 176), mlp_ratios: float | tuple = 4.0,
                 in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "avg", img_size: int | tuple[int, int] = 224,
                 downsamples: tuple[bool, ...] | None = None, num_vit: int = 0,
                 layer_scale_init_value: float | None = 1e-5, drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, drop_path_rate: float = 0.0, distillation: bool = True,
                 act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '' (got {global_pool!r})")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.distilled_training = False  # set_distilled_training(True) to get both heads' logits

        num_stages = len(depths)
        downsamples = downsamples or (False,) + (True,) * (num_stages - 1)
        mlp_ratios = mlp_ratios if isinstance(mlp_ratios, (tuple, list)) else (mlp_ratios,) * num_stages
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        resolution = tuple(math.ceil(s / 4) for s in img_size)  # after the stem's two stride-2 convs
        drop_paths = _drop_path_rates(drop_path_rate, depths)

        self.stem = Stem(in_chans, embed_dims[0], act_layer=act_layer)
        stages = []
        in_chs = embed_dims[0]
        for i in range(num_stages):
            stages.append(EfficientFormerV2Stage(
                in_chs, embed_dims[i], depths[i], resolution, downsample=downsamples[i],
                downsample_attn=i >= 3, num_attn=num_vit if i >= 2 else 0, attn_stride=2 if i == 2 else None,
                mlp_ratios=mlp_ratios[i], drop=proj_drop_rate, drop_path=drop_paths[i],
                layer_scale_init_value=layer_scale_init_value, act_layer=act_layer))
            if downsamples[i]:
                resolution = tuple(math.ceil(r / 2) for r in resolution)
            in_chs = embed_dims[i]
        self.stages = nn.Sequential(*stages)

        self.num_features = embed_dims[-1]
        self.norm = nn.BatchNorm2d(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist: nn.Module | None = None
        if distillation:
            self.head_dist = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
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
        self.head.apply(_init_weights)
        if self.head_dist is not None:
            self.head_dist = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
            self.head_dist.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> normalised map (B, C, H/32, W/32)."""
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor,
                     pre_logits: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.global_pool == "avg":
            # keepdim=True: the form XNNPACK delegates as global average pooling.
            x = x.mean((2, 3), keepdim=True).flatten(1)  # (B, C)
        x = self.head_drop(x)
        if pre_logits:
            return x
        if self.head_dist is None:  # not distilled, or deployed with the heads merged
            return self.head(x)
        logits, logits_dist = self.head(x), self.head_dist(x)
        if self.distilled_training and self.training:
            return logits, logits_dist
        return (logits + logits_dist) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """Merge the two heads, and fold the final BatchNorm into them.

        A per-channel affine commutes with average pooling, so with a linear classifier after the pool
        the final BN goes into the classifier and ``norm`` becomes the identity (the deployed
        ``forward_features`` then returns un-normalised features; ``forward`` is unchanged). Otherwise
        the BN becomes an equivalent 1x1 depthwise conv.
        """
        head = self.head if self.head_dist is None else average_heads(self.head, self.head_dist)
        if isinstance(self.norm, nn.BatchNorm2d):
            if self.global_pool == "avg" and isinstance(head, nn.Linear):
                head, self.norm = fuse_bn_linear(self.norm, head), nn.Identity()
            else:
                self.norm = _batchnorm_as_conv(self.norm)
        self.head, self.head_dist, self.head_drop = head, None, nn.Identity()
        return self


def _batchnorm_as_conv(bn: nn.BatchNorm2d) -> nn.Conv2d:
    """An eval-mode BatchNorm2d as the 1x1 depthwise conv computing the same per-channel affine."""
    channels = bn.num_features
    identity = nn.Conv2d(channels, channels, 1, groups=channels, bias=False,
                         device=bn.running_mean.device, dtype=bn.running_mean.dtype)
    nn.init.ones_(identity.weight)
    return fuse_conv_bn(identity, bn)


def _init_weights(module: nn.Module) -> None:
    # Linear layers get ViT's truncated normal; convs keep PyTorch's default (as the reference does).
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _per_block(value: float | tuple[float, ...], depth: int) -> tuple[float, ...]:
    if isinstance(value, (tuple, list)):
        if len(value) != depth:
            raise ValueError(f"expected {depth} per-block values, got {len(value)}")
        return tuple(value)
    return (value,) * depth


def _drop_path_rates(rate: float, depths: tuple[int, ...]) -> list[list[float]]:
    """Stochastic depth rising linearly from 0 (first block) to ``rate`` (last block), split by stage."""
    total = sum(depths)
    rates = [rate * i / max(total - 1, 1) for i in range(total)]
    starts = [sum(depths[:i]) for i in range(len(depths))]
    return [rates[s:s + d] for s, d in zip(starts, depths)]


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

_ORIGINAL_STEM = {"0": "conv1.conv", "1": "conv1.bn", "3": "conv2.conv", "4": "conv2.bn"}  # 2, 5: GELU

# Renames inside a block or a downsampling embedding of the original repo, applied in order. The
# original wraps each conv and its BN in a Sequential (".0" / ".1"); attention projections put the
# activation first (".0"), so there conv and BN are ".1" and ".2".
_ORIGINAL_RENAMES = [
    (r"^(\d+)\.layer_scale_([12])$", r"\1.ls\2.gamma"),
    (r"\.mlp\.fc1\.", ".mlp.fc1.conv."),
    (r"\.mlp\.norm1\.", ".mlp.fc1.bn."),
    (r"\.mlp\.mid\.", ".mlp.mid.conv."),
    (r"\.mlp\.mid_norm\.", ".mlp.mid.bn."),
    (r"\.mlp\.fc2\.", ".mlp.fc2.conv."),
    (r"\.mlp\.norm2\.", ".mlp.fc2.bn."),
    (r"^(\d+\.token_mixer|attn)\.(q|k|v|v_local|stride_conv)\.0\.", r"\1.\2.conv."),
    (r"^(\d+\.token_mixer|attn)\.(q|k|v|v_local|stride_conv)\.1\.", r"\1.\2.bn."),
    (r"^(\d+\.token_mixer|attn)\.proj\.1\.", r"\1.proj.conv."),
    (r"^(\d+\.token_mixer|attn)\.proj\.2\.", r"\1.proj.bn."),
    (r"^attn\.q\.local\.0\.", "attn.q.local."),
    (r"^attn\.q\.proj\.0\.", "attn.q.proj.conv."),
    (r"^attn\.q\.proj\.1\.", "attn.q.proj.bn."),
    # the embedding's own conv: "proj"/"norm" without the attention branch, "conv"/"bn" with it
    (r"^(proj|conv)\.", "conv.conv."),
    (r"^(norm|bn)\.", "conv.bn."),
]


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module | None = None
                         ) -> dict[str, torch.Tensor]:
    """Convert a snap-research/EfficientFormer (V2) checkpoint to this (timm) layout; others pass through.

    The original model is ``patch_embed`` (a plain Sequential stem), then one flat ``network`` list in
    which each stage's block list is followed by the downsampling ``Embedding`` into the next stage.
    Layer scales are (C, 1, 1) parameters, convs and BNs live in nested Sequentials, the expanded
    ``attention_bias_idxs`` are stored (timm recomputes them) and the distillation head is ``dist_head``.
    """
    if not any(k.startswith(("patch_embed.", "network.")) for k in state_dict):
        return dict(state_dict)

    # A network entry whose next key component is a number is a block list; anything else is an
    # embedding. Counting embeddings up to an entry gives its stage (robust to a missing downsample).
    entries = {int(m[1]): m[2].isdigit() for k in state_dict if (m := re.match(r"network\.(\d+)\.(\w+)", k))}
    embeddings = sorted(i for i, is_blocks in entries.items() if not is_blocks)

    out = {}
    for key, value in state_dict.items():
        if key.endswith("attention_bias_idxs"):
            continue
        if m := re.fullmatch(r"patch_embed\.(\d+)\.(.+)", key):
            key = f"stem.{_ORIGINAL_STEM[m[1]]}.{m[2]}"
        elif m := re.fullmatch(r"network\.(\d+)\.(.+)", key):
            index, rest = int(m[1]), m[2]
            for pattern, replacement in _ORIGINAL_RENAMES:
                rest = re.sub(pattern, replacement, rest)
            if rest.endswith((".ls1.gamma", ".ls2.gamma")):
                value = value.reshape(-1)
            stage = sum(e <= index for e in embeddings)
            key = f"stages.{stage}.{'blocks' if entries[index] else 'downsample'}.{rest}"
        elif key.startswith("dist_head."):
            key = "head_dist." + key[len("dist_head."):]
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------

# The conv->attention bridge: the attention downsample into the last stage.
_FAMILY = register_family("efficientformer_v2", bridge_module="Attention2dDownsample",
                          checkpoint_filter=checkpoint_filter_fn, paper="arXiv:2212.08059")

_META = dict(family=_FAMILY.name, paper=_FAMILY.paper, input_size=(3, 224, 224), crop_pct=0.95,
             interpolation="bicubic", fixed_input_size=True)


def _create(variant: str, **kwargs) -> EfficientFormerV2:
    kwargs.setdefault("drop_path_rate", _DROP_PATH[variant])
    return EfficientFormerV2(depths=_DEPTHS[variant], embed_dims=_WIDTHS[variant],
                             mlp_ratios=_MLP_RATIOS[variant], num_vit=_NUM_VIT[variant], **kwargs)


@register_model("efficientformerv2_s0", **_META)
def efficientformerv2_s0(**kwargs) -> EfficientFormerV2:
    """EfficientFormerV2-S0: 3.6M params."""
    return _create("s0", **kwargs)


@register_model("efficientformerv2_s1", **_META)
def efficientformerv2_s1(**kwargs) -> EfficientFormerV2:
    """EfficientFormerV2-S1: 6.2M params."""
    return _create("s1", **kwargs)


@register_model("efficientformerv2_s2", **_META)
def efficientformerv2_s2(**kwargs) -> EfficientFormerV2:
    """EfficientFormerV2-S2: 12.7M params."""
    return _create("s2", **kwargs)


@register_model("efficientformerv2_l", **_META)
def efficientformerv2_l(**kwargs) -> EfficientFormerV2:
    """EfficientFormerV2-L: 26.3M params."""
    return _create("l", **kwargs)
