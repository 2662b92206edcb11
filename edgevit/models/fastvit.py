"""FastViT.

Paper: Pavan Kumar Anasosalu Vasu et al., "FastViT: A Fast Hybrid Vision Transformer using Structural
Reparameterization", ICCV 2023, arXiv:2303.14189. Original code: https://github.com/apple/ml-fastvit

Architecture: a MobileOne stem (three reparameterizable conv blocks, stride 4), four stages joined by
a large-kernel (7x7) patch embedding, a MobileOne final conv with squeeze-excite, and a linear head.
Stages mix tokens with RepMixer (``x + s * (dwconv_bn(x) - bn(x))``, one depthwise conv after
reparameterization) or, in the SA variants' last stage, with multi-head self-attention behind a
conditional positional encoding (a 7x7 depthwise conv plus its input). Every MLP is a 7x7 depthwise
conv followed by a 1x1 conv FFN. Normalisation is BatchNorm throughout.

Training form: multi-branch (MobileOne: k x k conv + 1x1 conv + BatchNorm skip per block), with timm
1.0.31's module names (``timm.models.fastvit``) so its checkpoints load unchanged; ``checkpoint_filter_fn``
also converts apple/ml-fastvit's layout. Deploy form: every branch set folded into one conv (exact,
RepVGG arithmetic), layer scales folded into the convs before them, the attention's BatchNorm and 1/sqrt(d)
folded into its qkv projection, attention written as 1x1 convs, slices and 3-D bmm. Nothing depends on
the input resolution, so any multiple of 32 works.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_family, register_model
from .layers import DropPath, fold_layer_scale, fuse_bn_linear, fuse_conv_bn

__all__ = ["FastVit", "checkpoint_filter_fn", "fastvit_t8", "fastvit_t12", "fastvit_sa12", "fastvit_micro"]


# --------------------------------------------------------------------------------------------------
# Reparameterizable convolutions
# --------------------------------------------------------------------------------------------------

class ConvNorm(nn.Module):
    """Bias-free conv, then BatchNorm (timm's ``ConvNormAct`` without activation); 'same' padding."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__()
        padding = ((stride - 1) + (kernel_size - 1)) // 2
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fuse(self) -> nn.Conv2d:
        return fuse_conv_bn(self.conv, self.bn)


def _as_conv(module: nn.Module) -> nn.Conv2d:
    """A (possibly already fused) ConvNorm as a conv with bias."""
    return module.fuse() if isinstance(module, ConvNorm) else module


@torch.no_grad()
def _embed_kernel(conv: nn.Conv2d, kernel_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``conv`` zero-padded to a centred ``kernel_size`` kernel (same output grid when
    both convs use 'same' padding)."""
    pad = (kernel_size - conv.kernel_size[0]) // 2
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    return F.pad(conv.weight, [pad] * 4), bias


@torch.no_grad()
def _identity_kernel(channels: int, groups: int, kernel_size: int, like: torch.Tensor) -> torch.Tensor:
    """The kernel of a grouped ``kernel_size`` conv that copies its input (1 at every channel's centre tap)."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, kernel_size, kernel_size, dtype=like.dtype, device=like.device)
    kernel[torch.arange(channels), torch.arange(channels) % per_group, kernel_size // 2, kernel_size // 2] = 1.0
    return kernel


def _conv_like(weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int) -> nn.Conv2d:
    out_chs, in_per_group, k, _ = weight.shape
    conv = nn.Conv2d(in_per_group * groups, out_chs, k, stride, ((stride - 1) + (k - 1)) // 2, groups=groups,
                     bias=True).to(weight)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


def _with_tail(conv: nn.Conv2d, *tail: nn.Module) -> nn.Module:
    """``conv`` followed by the non-identity modules of ``tail``."""
    tail = [m for m in tail if not isinstance(m, nn.Identity)]
    return nn.Sequential(conv, *tail) if tail else conv


class SqueezeExcite(nn.Module):
    """Channel gate from the global mean: 1x1 conv, ReLU, 1x1 conv, sigmoid (timm's ``SEModule``)."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_divisor: int = 8):
        super().__init__()
        rd = max(rd_divisor, int(channels * rd_ratio + rd_divisor / 2) // rd_divisor * rd_divisor)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(rd, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # keep-dim spatial mean: the reduce XNNPACK lowers
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class MobileOneBlock(nn.Module):
    """MobileOne block (arXiv:2206.04040): ``k x k`` conv-BN branches + a 1x1 conv-BN branch + a BN skip,
    summed, then optional squeeze-excite and activation. ``fuse`` sums the branches into one conv."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, group_size: int = 0,
                 use_se: bool = False, use_act: bool = True, use_scale_branch: bool = True,
                 num_conv_branches: int = 1, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size, self.stride = in_chs, out_chs, kernel_size, stride
        # group_size 0: dense conv; 1: one input channel per group (depthwise, or channel multiplier).
        self.groups = in_chs // group_size if group_size else 1
        self.se = SqueezeExcite(out_chs, rd_divisor=1) if use_se else nn.Identity()
        self.identity = nn.BatchNorm2d(in_chs) if out_chs == in_chs and stride == 1 else None
        self.conv_kxk = nn.ModuleList([ConvNorm(in_chs, out_chs, kernel_size, stride, self.groups)
                                       for _ in range(num_conv_branches)]) if num_conv_branches > 0 else None
        self.conv_scale = (ConvNorm(in_chs, out_chs, 1, stride, self.groups)
                           if kernel_size > 1 and use_scale_branch else None)
        self.act = act_layer() if use_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = 0
        if self.identity is not None:
            out = self.identity(x)
        if self.conv_scale is not None:
            out = out + self.conv_scale(x)
        if self.conv_kxk is not None:
            for branch in self.conv_kxk:
                out = out + branch(x)
        return self.act(self.se(out))

    @torch.no_grad()
    def reparameterized_conv(self) -> nn.Conv2d:
        """The one conv equal to the sum of all branches (before SE and activation)."""
        k = self.kernel_size
        ref = next(self.parameters())
        weight = torch.zeros(self.out_chs, self.in_chs // self.groups, k, k, dtype=ref.dtype, device=ref.device)
        bias = torch.zeros(self.out_chs, dtype=ref.dtype, device=ref.device)
        branches = list(self.conv_kxk or []) + ([self.conv_scale] if self.conv_scale is not None else [])
        for branch in branches:
            w, b = _embed_kernel(_as_conv(branch), k)
            weight += w
            bias += b
        if self.identity is not None:
            bn = self.identity  # bn(x) = x * scale + shift: the identity kernel, scaled per channel
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            weight += _identity_kernel(self.in_chs, self.groups, k, weight) * scale.view(-1, 1, 1, 1)
            bias += bn.bias - bn.running_mean * scale
        return _conv_like(weight, bias, self.stride, self.groups)

    def fuse(self) -> nn.Module:
        return _with_tail(self.reparameterized_conv(), self.se, self.act)


class ReparamLargeKernelConv(nn.Module):
    """RepLKNet-style large-kernel conv-BN with a parallel small-kernel conv-BN (arXiv:2203.06717)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, group_size: int,
                 small_kernel: int = 3, use_se: bool = False, act_layer: type[nn.Module] | None = None):
        super().__init__()
        groups = in_chs // group_size if group_size else 1
        self.kernel_size = kernel_size
        self.large_conv = ConvNorm(in_chs, out_chs, kernel_size, stride, groups)
        self.small_conv = ConvNorm(in_chs, out_chs, small_kernel, stride, groups)
        self.se = SqueezeExcite(out_chs, rd_ratio=0.25) if use_se else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.se(self.large_conv(x) + self.small_conv(x)))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        large = _as_conv(self.large_conv)
        w, b = _embed_kernel(_as_conv(self.small_conv), self.kernel_size)
        conv = _conv_like(large.weight + w, large.bias + b, large.stride[0], large.groups)
        return _with_tail(conv, self.se, self.act)


class LayerScale2d(nn.Module):
    """Per-channel gain on an NCHW map, ``gamma`` of shape (C, 1, 1) (timm / ml-fastvit layout)."""

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def _channel_scale(layer_scale: nn.Module) -> torch.Tensor | float:
    return layer_scale.gamma.flatten() if isinstance(layer_scale, LayerScale2d) else 1.0


# --------------------------------------------------------------------------------------------------
# Token mixers and blocks
# --------------------------------------------------------------------------------------------------

class RepMixer(nn.Module):
    """``x + s * (mixer(x) - norm(x))``: a depthwise MobileOne block minus a BatchNorm skip.

    Every term is a per-channel linear map of a k x k neighbourhood, so the deploy form is one depthwise
    conv (the identity at the centre tap plus the scaled difference of the two reparameterized kernels).
    """

    def __init__(self, dim: int, kernel_size: int = 3, layer_scale_init_value: float | None = 1e-5):
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.norm = MobileOneBlock(dim, dim, kernel_size, group_size=1, use_act=False, use_scale_branch=False,
                                   num_conv_branches=0)
        self.mixer = MobileOneBlock(dim, dim, kernel_size, group_size=1, use_act=False)
        self.layer_scale = (LayerScale2d(dim, layer_scale_init_value) if layer_scale_init_value is not None
                            else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        # Children are already fused (deploy walks bottom-up): mixer and norm are plain depthwise convs.
        mixer, norm = self.mixer, self.norm
        if isinstance(mixer, MobileOneBlock):
            mixer, norm = mixer.fuse(), norm.fuse()
        scale = torch.as_tensor(_channel_scale(self.layer_scale), dtype=mixer.weight.dtype).expand(self.dim)
        weight = (_identity_kernel(self.dim, self.dim, self.kernel_size, mixer.weight)
                  + scale.view(-1, 1, 1, 1) * (mixer.weight - norm.weight))
        return _conv_like(weight, scale * (mixer.bias - norm.bias), 1, self.dim)


class ConvMlp(nn.Module):
    """7x7 depthwise conv-BN, then a 1x1 conv FFN (GELU)."""

    def __init__(self, in_chs: int, hidden_channels: int, act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0):
        super().__init__()
        self.conv = ConvNorm(in_chs, in_chs, 7, groups=in_chs)
        self.fc1 = nn.Conv2d(in_chs, hidden_channels, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden_channels, in_chs, 1)
        self.drop = nn.Dropout(drop)
        for conv in (self.fc1, self.fc2):
            nn.init.trunc_normal_(conv.weight, std=0.02)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(self.conv(x)))
        return self.drop(self.fc2(self.drop(x)))

    def fuse(self) -> nn.Sequential:
        return nn.Sequential(_as_conv(self.conv), self.fc1, self.act, self.fc2)  # dropout: identity in eval


class RepConditionalPosEnc(nn.Module):
    """Conditional positional encoding (arXiv:2102.10882): ``x + dwconv7x7(x)``; deploys as one conv."""

    def __init__(self, dim: int, spatial_shape: int = 7):
        super().__init__()
        self.dim, self.kernel_size = dim, spatial_shape
        self.pos_enc = nn.Conv2d(dim, dim, spatial_shape, 1, spatial_shape // 2, groups=dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos_enc(x) + x

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        weight = self.pos_enc.weight + _identity_kernel(self.dim, self.dim, self.kernel_size, self.pos_enc.weight)
        return _conv_like(weight, self.pos_enc.bias, 1, self.dim)


class RepMixerBlock(nn.Module):
    """RepMixer token mixing, then a ConvMlp residual with a layer scale."""

    def __init__(self, dim: int, kernel_size: int = 3, mlp_ratio: float = 4.0, act_layer: type[nn.Module] = nn.GELU,
                 proj_drop: float = 0.0, drop_path: float = 0.0, layer_scale_init_value: float | None = 1e-5):
        super().__init__()
        self.token_mixer = RepMixer(dim, kernel_size, layer_scale_init_value)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), act_layer, proj_drop)
        self.layer_scale = (LayerScale2d(dim, layer_scale_init_value) if layer_scale_init_value is not None
                            else nn.Identity())
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.drop_path(self.layer_scale(self.mlp(x)))

    @torch.no_grad()
    def fuse(self) -> FusedRepMixerBlock:
        return FusedRepMixerBlock(self.token_mixer, _fold_into_mlp(self.mlp, self.layer_scale))


class FusedRepMixerBlock(nn.Module):
    """Inference form of ``RepMixerBlock``: one depthwise conv, then ``x + mlp(x)`` (layer scale folded)."""

    def __init__(self, token_mixer: nn.Conv2d, mlp: nn.Sequential):
        super().__init__()
        self.token_mixer = token_mixer
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.mlp(x)


def _fold_into_mlp(mlp: nn.Module, layer_scale: nn.Module) -> nn.Sequential:
    mlp = mlp.fuse() if isinstance(mlp, ConvMlp) else mlp
    mlp[-1] = fold_layer_scale(mlp[-1], _channel_scale(layer_scale))
    return mlp


def _attend(qkv: torch.Tensor, num_heads: int, head_dim: int, q_scale: float | None = None) -> torch.Tensor:
    """Multi-head self-attention on a (B, 3C, N) projection, channels ordered [q | k | v], each head-major.

    Returns (B, C, N). Heads are folded into the batch, so the products are 3-D bmm and the splits are
    channel slices: ops XNNPACK and TFLite take (not 4-D matmul / SDPA / split_with_sizes).
    """
    B, three_c, N = qkv.shape
    C = three_c // 3
    q = qkv[:, :C].reshape(B * num_heads, head_dim, N)
    k = qkv[:, C:2 * C].reshape(B * num_heads, head_dim, N)
    v = qkv[:, 2 * C:].reshape(B * num_heads, head_dim, N)
    if q_scale is not None:
        q = q * q_scale
    attn = torch.bmm(q.transpose(1, 2), k).softmax(dim=-1)  # (B*h, N_q, N_k)
    return torch.bmm(v, attn.transpose(1, 2)).reshape(B, C, N)  # (B*h, d, N_q) -> (B, C, N)


class Attention(nn.Module):
    """Multi-head self-attention over the H*W tokens of an NCHW map (head_dim 32)."""

    def __init__(self, dim: int, head_dim: int = 32, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"attention width {dim} is not a multiple of head_dim {head_dim}")
        self.head_dim, self.num_heads = head_dim, dim // head_dim
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        out = _attend(self.qkv(tokens).transpose(1, 2), self.num_heads, self.head_dim, self.scale)
        out = self.proj_drop(self.proj(out.transpose(1, 2)))  # (B, N, C)
        return out.transpose(1, 2).reshape(B, C, H, W)


def _linear_as_conv(linear: nn.Linear) -> nn.Conv2d:
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=True).to(linear.weight)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None, None])
        conv.bias.copy_(linear.bias if linear.bias is not None else torch.zeros(linear.out_features))
    return conv


class AttentionBlock(nn.Module):
    """BatchNorm + multi-head self-attention residual, then a ConvMlp residual; both with layer scales."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, act_layer: type[nn.Module] = nn.GELU,
                 proj_drop: float = 0.0, drop_path: float = 0.0, layer_scale_init_value: float | None = 1e-5):
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.token_mixer = Attention(dim)
        self.layer_scale_1 = (LayerScale2d(dim, layer_scale_init_value) if layer_scale_init_value is not None
                              else nn.Identity())
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), act_layer, proj_drop)
        self.layer_scale_2 = (LayerScale2d(dim, layer_scale_init_value) if layer_scale_init_value is not None
                              else nn.Identity())
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.layer_scale_1(self.token_mixer(self.norm(x))))
        return x + self.drop_path2(self.layer_scale_2(self.mlp(x)))

    @torch.no_grad()
    def fuse(self) -> FusedAttentionBlock:
        return FusedAttentionBlock(self)


class FusedAttentionBlock(nn.Module):
    """Inference form of ``AttentionBlock`` (the family's conv->attention bridge): the BatchNorm and the
    query scale live in a 1x1 qkv conv, layer scales in the convs that end each branch."""

    @torch.no_grad()
    def __init__(self, block: AttentionBlock):
        super().__init__()
        attn = block.token_mixer
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        qkv = _linear_as_conv(fuse_bn_linear(block.norm, attn.qkv))
        dim = attn.proj.in_features
        qkv.weight[:dim].mul_(attn.scale)  # output channels [0, C) are the queries
        qkv.bias[:dim].mul_(attn.scale)
        self.qkv = qkv
        self.proj = fold_layer_scale(_linear_as_conv(attn.proj), _channel_scale(block.layer_scale_1))
        self.mlp = _fold_into_mlp(block.mlp, block.layer_scale_2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        attn = _attend(self.qkv(x).flatten(2), self.num_heads, self.head_dim).reshape(B, C, H, W)
        x = x + self.proj(attn)
        return x + self.mlp(x)


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """Stage transition: a stride-2 7x7 (+3x3) reparameterizable conv, then a 1x1 MobileOne block."""

    def __init__(self, patch_size: int, stride: int, in_chs: int, embed_dim: int,
                 act_layer: type[nn.Module] = nn.GELU, lkc_use_act: bool = False, use_se: bool = False):
        super().__init__()
        self.proj = nn.Sequential(
            ReparamLargeKernelConv(in_chs, embed_dim, patch_size, stride, group_size=1, small_kernel=3,
                                   use_se=use_se, act_layer=act_layer if lkc_use_act else None),
            MobileOneBlock(embed_dim, embed_dim, 1, act_layer=act_layer),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class FastVitStage(nn.Module):
    """Optional patch embedding into this stage's width, optional positional encoding, then the blocks."""

    def __init__(self, dim: int, dim_out: int, depth: int, token_mixer_type: str, downsample: bool = True,
                 se_downsample: bool = False, down_patch_size: int = 7, down_stride: int = 2,
                 pos_emb: bool = False, kernel_size: int = 3, mlp_ratio: float = 4.0,
                 act_layer: type[nn.Module] = nn.GELU, proj_drop_rate: float = 0.0,
                 drop_path_rates: tuple[float, ...] = (), layer_scale_init_value: float | None = 1e-5,
                 lkc_use_act: bool = False):
        super().__init__()
        self.downsample = (PatchEmbed(down_patch_size, down_stride, dim, dim_out, act_layer, lkc_use_act,
                                      se_downsample) if downsample else nn.Identity())
        self.pos_emb = RepConditionalPosEnc(dim_out) if pos_emb else nn.Identity()
        rates = list(drop_path_rates) or [0.0] * depth
        if token_mixer_type == "repmixer":
            blocks = [RepMixerBlock(dim_out, kernel_size, mlp_ratio, act_layer, proj_drop_rate, rates[i],
                                    layer_scale_init_value) for i in range(depth)]
        elif token_mixer_type == "attention":
            blocks = [AttentionBlock(dim_out, mlp_ratio, act_layer, proj_drop_rate, rates[i],
                                     layer_scale_init_value) for i in range(depth)]
        else:
            raise ValueError(f"unknown token mixer {token_mixer_type!r} (repmixer or attention)")
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pos_emb(self.downsample(x)))


class ClassifierHead(nn.Module):
    """Global average pool, dropout, linear (timm's ``ClassifierHead`` keys: ``head.fc``)."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.drop_rate = drop_rate
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True).flatten(1)  # keep-dim mean: the pooling form XNNPACK lowers
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)


class FastVit(nn.Module):
    """FastViT classifier (arXiv:2303.14189)."""

    def __init__(self, in_chans: int = 3, layers: tuple[int, ...] = (2, 2, 6, 2),
                 token_mixers: tuple[str, ...] = ("repmixer",) * 4, embed_dims: tuple[int, ...] = (64, 128, 256, 512),
                 mlp_ratios: tuple[float, ...] = (4,) * 4, downsamples: tuple[bool, ...] = (False, True, True, True),
                 se_downsamples: tuple[bool, ...] = (False,) * 4, repmixer_kernel_size: int = 3,
                 num_classes: int = 1000, pos_embs: tuple[bool, ...] = (False,) * 4, down_patch_size: int = 7,
                 down_stride: int = 2, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, layer_scale_init_value: float | None = 1e-5,
                 lkc_use_act: bool = False, cls_ratio: float = 2.0, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            MobileOneBlock(in_chans, embed_dims[0], 3, stride=2, act_layer=act_layer),
            MobileOneBlock(embed_dims[0], embed_dims[0], 3, stride=2, group_size=1, act_layer=act_layer),
            MobileOneBlock(embed_dims[0], embed_dims[0], 1, act_layer=act_layer),
        )  # (B, C0, H/4, W/4)
        # Stochastic depth: one rate per block, rising linearly over the whole net, grouped by stage.
        # (Plain Python: the model is also built on the meta device, where tensors hold no values.)
        total = sum(layers)
        flat = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        rates = [tuple(flat[sum(layers[:i]):sum(layers[:i + 1])]) for i in range(len(layers))]
        stages, prev = [], embed_dims[0]
        for i, depth in enumerate(layers):
            stages.append(FastVitStage(
                prev, embed_dims[i], depth, token_mixers[i], downsample=downsamples[i] or prev != embed_dims[i],
                se_downsample=se_downsamples[i], down_patch_size=down_patch_size, down_stride=down_stride,
                pos_emb=pos_embs[i], kernel_size=repmixer_kernel_size, mlp_ratio=mlp_ratios[i],
                act_layer=act_layer, proj_drop_rate=proj_drop_rate, drop_path_rates=rates[i],
                layer_scale_init_value=layer_scale_init_value, lkc_use_act=lkc_use_act))
            prev = embed_dims[i]
        self.stages = nn.Sequential(*stages)
        self.num_features = int(embed_dims[-1] * cls_ratio)
        self.final_conv = MobileOneBlock(embed_dims[-1], self.num_features, 3, group_size=1, use_se=True,
                                         act_layer=act_layer)
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.stages(self.stem(x)))  # (B, 2 * C3, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

# apple/ml-fastvit module names -> timm's (MobileOne branches, large-kernel conv, SE, head).
_ORIGINAL_NAMES = (("patch_embed.", "stem."), ("rbr_conv", "conv_kxk"), ("rbr_scale", "conv_scale"),
                   ("rbr_skip", "identity"), ("conv_exp", "final_conv"), ("lkb_origin", "large_conv"),
                   ("convffn", "mlp"), ("se.reduce", "se.fc1"), ("se.expand", "se.fc2"))


def _original_key(key: str, embeddings: list[int]) -> str:
    for old, new in _ORIGINAL_NAMES:
        key = key.replace(old, new)
    # Layer scales are bare parameters there, LayerScale2d modules here.
    key = re.sub(r"(layer_scale(?:_[12])?)$", r"\1.gamma", key)
    if key.startswith("head."):
        return "head.fc." + key[len("head."):]
    m = re.fullmatch(r"network\.(\d+)\.(.+)", key)
    if m is None:
        return key
    index, rest = int(m[1]), m[2]
    stage = sum(e <= index for e in embeddings)  # each patch embedding opens the next stage
    if rest.startswith("proj."):
        return f"stages.{stage}.downsample.{rest}"
    if rest.startswith("pe."):
        return f"stages.{stage}.pos_emb.pos_enc.{rest[len('pe.'):]}"
    return f"stages.{stage}.blocks.{rest}"


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module | None = None
                         ) -> dict[str, torch.Tensor]:
    """Make a FastViT checkpoint loadable: timm layout passes through; apple/ml-fastvit's layout
    (https://github.com/apple/ml-fastvit: ``patch_embed``, one flat ``network`` list in which each stage's
    blocks follow the patch embedding ``proj`` and the conditional positional encoding ``pe`` that open it,
    ``rbr_*`` MobileOne branches, bare ``layer_scale`` parameters) is converted. Wrappers (``state_dict``,
    ``model``) are unwrapped. A reparameterized (inference-mode) checkpoint cannot be split back into
    branches; load the training checkpoint instead.
    """
    del model  # the layout alone decides the mapping
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    if not any(k.startswith(("patch_embed.", "network.")) for k in state_dict):
        return dict(state_dict)
    embeddings = sorted({int(m[1]) for k in state_dict if (m := re.match(r"network\.(\d+)\.proj\.", k))})
    return {_original_key(k, embeddings): v for k, v in state_dict.items()}


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------

# The conv->attention bridge: the first attention block of an SA variant (deploy form). T8/T12 have none.
_FAMILY = register_family("fastvit", bridge_module="FusedAttentionBlock", checkpoint_filter=checkpoint_filter_fn,
                          paper="arXiv:2303.14189")

_CFG = dict(family=_FAMILY.name, paper=_FAMILY.paper, input_size=(3, 256, 256), crop_pct=0.9,
            interpolation="bicubic", fixed_input_size=False, stride=32, img_size_kwarg="img_size")


def _create(arch: dict, img_size: int | tuple[int, int] | None = None, **kwargs) -> FastVit:
    # No position tables (the positional encoding is a conv): ``img_size`` is accepted for the zoo's
    # uniform builder interface and unused.
    del img_size
    return FastVit(**{**arch, **kwargs})


@register_model("fastvit_t8", **_CFG)
def fastvit_t8(**kwargs) -> FastVit:
    """FastViT-T8."""
    return _create(dict(layers=(2, 2, 4, 2), embed_dims=(48, 96, 192, 384), mlp_ratios=(3, 3, 3, 3)), **kwargs)


@register_model("fastvit_t12", **_CFG)
def fastvit_t12(**kwargs) -> FastVit:
    """FastViT-T12."""
    return _create(dict(layers=(2, 2, 6, 2), embed_dims=(64, 128, 256, 512), mlp_ratios=(3, 3, 3, 3)), **kwargs)


@register_model("fastvit_sa12", **_CFG)
def fastvit_sa12(**kwargs) -> FastVit:
    """FastViT-SA12: attention with a conditional positional encoding in the last stage."""
    return _create(dict(layers=(2, 2, 6, 2), embed_dims=(64, 128, 256, 512), mlp_ratios=(4, 4, 4, 4),
                        pos_embs=(False, False, False, True),
                        token_mixers=("repmixer", "repmixer", "repmixer", "attention")), **kwargs)


@register_model("fastvit_micro", family=_FAMILY.name, input_size=(3, 64, 64), num_classes=10, crop_pct=1.0,
                interpolation="bilinear", fixed_input_size=False, stride=32,
                paper="edgevit micro variant (not a published model)")
def fastvit_micro(img_size=None, **kwargs) -> FastVit:
    """Every FastViT code path (MobileOne stem, RepMixer stages, large-kernel patch embeddings, positional
    encoding + attention stage, SE final conv), narrow: 64 px, 10 classes. Attention needs multiples of
    its head_dim (32)."""
    del img_size
    kwargs = {"num_classes": 10, **kwargs}
    return FastVit(layers=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128), mlp_ratios=(2, 2, 2, 2),
                   pos_embs=(False, False, False, True),
                   token_mixers=("repmixer", "repmixer", "repmixer", "attention"), **kwargs)
