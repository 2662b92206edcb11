"""EfficientViT (MIT): multi-scale ReLU linear attention.

Paper: Han Cai, Junyan Li, Muyan Hu, Chuang Gan and Song Han, "EfficientViT: Multi-Scale Linear Attention
for High-Resolution Dense Prediction", ICCV 2023, arXiv:2205.14756.
Original code: https://github.com/mit-han-lab/efficientvit

Architecture: a stride-2 conv stem with depthwise-separable residual blocks, two MBConv stages, then two
stages of EfficientViT blocks: a "LiteMLA" context module (1x1 qkv conv; a 5x5 depthwise + grouped 1x1
aggregation that makes a second, multi-scale set of q/k/v; ReLU linear attention over all tokens, whose
normaliser comes from padding v with a column of ones and dividing by it) and an MBConv local module.
Hard-swish everywhere, BatchNorm everywhere except the head's LayerNorm.

State-dict keys and eval numerics follow timm 1.0.31 (``timm.models.efficientvit_mit``);
``checkpoint_filter_fn`` also converts the original repository's layout. Fully convolutional, so any
input size works.

Deploy form: BatchNorm folded into the convs, the attention core written as 3-D ``bmm`` on channels-first
maps with the ones-column replaced by its closed form (the denominator ``q . sum_n k_n``, the sum a spatial
mean times N), the head's LayerNorm a standardisation plus a per-channel affine. The attention core
(``ReluLinearAttention``) is on the family's ``float_modules``: its division cannot be held in int8 (a
denominator near zero turns rounding into unbounded error), so the int8 recipe keeps it float by rule.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_family, register_model
from .layers import fuse_conv_bn
from .layers.norm import Standardize

__all__ = ["EfficientVit", "ReluLinearAttention", "checkpoint_filter_fn", "efficientvit_b0", "efficientvit_b1",
           "efficientvit_mit_micro"]


def _pair(value, n: int) -> tuple:
    """timm's ``val2tuple``: a scalar repeated ``n`` times, or the sequence as given."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------

class ConvNormAct(nn.Module):
    """conv (``same``-style padding) -> optional BatchNorm -> optional activation."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 bias: bool = False, norm: bool = True, act_layer: type[nn.Module] | None = nn.ReLU):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, ((stride - 1) + (kernel_size - 1)) // 2,
                              groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_chs) if norm else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        if isinstance(self.norm, nn.BatchNorm2d):
            self.conv = fuse_conv_bn(self.conv, self.norm)
            self.norm = nn.Identity()
        return self if not isinstance(self.act, nn.Identity) else self.conv


class DSConv(nn.Module):
    """Depthwise conv + act, then pointwise conv."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, use_bias=False, norm=True,
                 act_layer=(nn.Hardswish, None)):
        super().__init__()
        use_bias, norm, act = _pair(use_bias, 2), _pair(norm, 2), _pair(act_layer, 2)
        self.depth_conv = ConvNormAct(in_chs, in_chs, 3, stride, in_chs, use_bias[0], norm[0], act[0])
        self.point_conv = ConvNormAct(in_chs, out_chs, 1, 1, 1, use_bias[1], norm[1], act[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expand + act, depthwise 3x3 (stride) + act, 1x1 project."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expand_ratio: float = 6, use_bias=False,
                 norm=True, act_layer=(nn.Hardswish, nn.Hardswish, None)):
        super().__init__()
        use_bias, norm, act = _pair(use_bias, 3), _pair(norm, 3), _pair(act_layer, 3)
        mid = round(in_chs * expand_ratio)
        self.inverted_conv = ConvNormAct(in_chs, mid, 1, 1, 1, use_bias[0], norm[0], act[0])
        self.depth_conv = ConvNormAct(mid, mid, 3, stride, mid, use_bias[1], norm[1], act[1])
        self.point_conv = ConvNormAct(mid, out_chs, 1, 1, 1, use_bias[2], norm[2], act[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class ResidualBlock(nn.Module):
    """``main(x) (+ x)``: timm's ``ResidualBlock`` with an identity shortcut or none (keys: ``main``)."""

    def __init__(self, main: nn.Module, shortcut: bool):
        super().__init__()
        self.main = main
        self.shortcut = nn.Identity() if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(x)
        return out + x if self.shortcut is not None else out


class ReluLinearAttention(nn.Module):
    """The linear-attention core of the deploy form, on (B*heads, 3*dim, H, W) maps of stacked [q, k, v].

    ``out = (v k^T) q / (N * mean_n(k) . q + eps)`` per head: the same as padding v with a ones-column
    (whose product with ``k^T`` is ``sum_n k``) and dividing by the last output column, but without a
    constant column (a pad of 1.0) or a slice of the product. Only 3-D bmm, a keep-dim spatial mean, an
    add and a division: ops XNNPACK and TFLite take. Its ops stay float in int8 (family rule).
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        BH, _, H, W = x.shape
        d = self.dim
        q = F.relu(x[:, :d].reshape(BH, d, H * W))  # (BH, d, N)
        k = F.relu(x[:, d:2 * d])                   # (BH, d, H, W)
        v = x[:, 2 * d:].reshape(BH, d, H * W)
        k_mean = k.mean((2, 3), keepdim=True).reshape(BH, 1, d)
        k = k.reshape(BH, d, H * W)
        num = torch.bmm(torch.bmm(v, k.transpose(1, 2)), q)    # (BH, d, N)
        den = torch.bmm(k_mean, q) * float(H * W) + self.eps  # (BH, 1, N)
        return (num / den).reshape(BH, d, H, W)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"


class LiteMLA(nn.Module):
    """Lightweight multi-scale linear attention (timm's ``LiteMLA``)."""

    def __init__(self, in_chs: int, out_chs: int, dim: int = 8, heads_ratio: float = 1.0,
                 scales: tuple[int, ...] = (5,), eps: float = 1e-5):
        super().__init__()
        self.eps, self.dim = eps, dim
        heads = int(in_chs // dim * heads_ratio)
        total = heads * dim
        self.qkv = ConvNormAct(in_chs, 3 * total, 1, bias=False, norm=False, act_layer=None)
        self.aggreg = nn.ModuleList([nn.Sequential(
            nn.Conv2d(3 * total, 3 * total, s, padding=s // 2, groups=3 * total, bias=False),
            nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False)) for s in scales])
        self.kernel_func = nn.ReLU()
        self.proj = ConvNormAct(total * (1 + len(scales)), out_chs, 1, bias=False, norm=True, act_layer=None)

    def _multi_scale(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        return torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)  # (B, heads' * 3 * dim, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        qkv = self._multi_scale(x).reshape(B, -1, 3 * self.dim, H * W).transpose(-1, -2)  # (B, h', N, 3d)
        q, k, v = qkv[..., :self.dim], qkv[..., self.dim:2 * self.dim], qkv[..., 2 * self.dim:]
        q, k = self.kernel_func(q), self.kernel_func(k)
        v = F.pad(v, (0, 1), mode="constant", value=1.0)
        out = q @ (k.transpose(-1, -2) @ v)
        out = out[..., :-1] / (out[..., -1:] + self.eps)
        return self.proj(out.transpose(-1, -2).reshape(B, -1, H, W))

    @torch.no_grad()
    def fuse(self) -> FusedLiteMLA:
        return FusedLiteMLA(self)


class FusedLiteMLA(nn.Module):
    """Inference form of ``LiteMLA``: heads folded into the batch, the core as ``ReluLinearAttention``."""

    def __init__(self, mla: LiteMLA):
        super().__init__()
        self.dim = mla.dim
        self.qkv, self.aggreg, self.proj = mla.qkv, mla.aggreg, mla.proj
        self.attn = ReluLinearAttention(mla.dim, mla.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        base = self.qkv(x)
        qkv = torch.cat([base] + [op(base) for op in self.aggreg], dim=1)
        out = self.attn(qkv.reshape(-1, 3 * self.dim, H, W))  # (B * heads', dim, H, W)
        return self.proj(out.reshape(B, -1, H, W))


class EfficientVitBlock(nn.Module):
    """Context module (LiteMLA residual), then local module (MBConv residual)."""

    def __init__(self, dim: int, head_dim: int = 32, expand_ratio: float = 4, act_layer=nn.Hardswish):
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(dim, dim, dim=head_dim), shortcut=True)
        self.local_module = ResidualBlock(
            MBConv(dim, dim, 1, expand_ratio, use_bias=(True, True, False), norm=(False, False, True),
                   act_layer=(act_layer, act_layer, None)), shortcut=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


def _local_block(in_chs: int, out_chs: int, stride: int, expand_ratio: float, act_layer,
                 fewer_norm: bool = False) -> nn.Module:
    if expand_ratio == 1:
        return DSConv(in_chs, out_chs, stride, use_bias=(True, False) if fewer_norm else False,
                      norm=(False, True) if fewer_norm else True, act_layer=(act_layer, None))
    return MBConv(in_chs, out_chs, stride, expand_ratio, use_bias=(True, True, False) if fewer_norm else False,
                  norm=(False, False, True) if fewer_norm else True, act_layer=(act_layer, act_layer, None))


class Stem(nn.Sequential):
    """Stride-2 conv, then ``depth`` residual depthwise-separable blocks (``in_conv``, ``res0``, ...)."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, act_layer):
        super().__init__()
        self.add_module("in_conv", ConvNormAct(in_chs, out_chs, 3, 2, act_layer=act_layer))
        for i in range(depth):
            self.add_module(f"res{i}", ResidualBlock(_local_block(out_chs, out_chs, 1, 1, act_layer), True))


class EfficientVitStage(nn.Module):
    """A stride-2 MBConv, then MBConv residuals (conv stages) or EfficientViT blocks (attention stages)."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, act_layer, expand_ratio: float, head_dim: int,
                 vit_stage: bool):
        super().__init__()
        blocks = [ResidualBlock(_local_block(in_chs, out_chs, 2, expand_ratio, act_layer, fewer_norm=vit_stage),
                                shortcut=False)]
        if vit_stage:
            blocks += [EfficientVitBlock(out_chs, head_dim, expand_ratio, act_layer) for _ in range(depth)]
        else:
            blocks += [ResidualBlock(_local_block(out_chs, out_chs, 1, expand_ratio, act_layer), True)
                       for _ in range(1, depth)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ClassifierHead(nn.Module):
    """1x1 conv + act, global average pool, Linear -> LayerNorm -> act -> Dropout -> Linear."""

    def __init__(self, in_chs: int, widths: tuple[int, int], num_classes: int = 1000, dropout: float = 0.0,
                 act_layer=nn.Hardswish):
        super().__init__()
        self.in_conv = ConvNormAct(in_chs, widths[0], 1, act_layer=act_layer)
        self.classifier = nn.Sequential(
            nn.Linear(widths[0], widths[1], bias=False),
            nn.LayerNorm(widths[1], eps=1e-5),
            act_layer(),
            nn.Dropout(dropout),
            nn.Linear(widths[1], num_classes) if num_classes > 0 else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(x).mean((2, 3), keepdim=True).flatten(1)  # keep-dim spatial mean: XNNPACK's pool
        return self.classifier(x)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        return _FusedClassifierHead(self) if isinstance(self.classifier[1], nn.LayerNorm) else self


class _FusedClassifierHead(nn.Module):
    """Inference form of the head, kept 4-D until the last linear: the pooled (B, C, 1, 1) map through a 1x1
    conv (the first linear), a standardisation over channels (the LayerNorm), its affine as a per-channel
    scale and shift (a nonlinearity follows, nothing can absorb it), the activation, then the classifier.
    (A linear + 2-D standardisation here made litert-torch emit a rank-4 batch_matmul that TFLite refuses.)"""

    def __init__(self, head: ClassifierHead):
        super().__init__()
        linear, norm, act, _, last = head.classifier
        self.in_conv = head.in_conv
        self.pre_logits = nn.Conv2d(linear.in_features, linear.out_features, 1).to(linear.weight)
        self.pre_logits.weight.copy_(linear.weight[:, :, None, None])
        self.pre_logits.bias.copy_(linear.bias if linear.bias is not None else torch.zeros_like(norm.bias))
        self.norm = Standardize(num_dims=3, eps=norm.eps)  # over (C, 1, 1): LayerNorm over C
        self.affine = _ChannelAffine(norm.weight.reshape(-1, 1, 1), norm.bias.reshape(-1, 1, 1))
        self.act = act
        self.classifier = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(x).mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        x = self.act(self.affine(self.norm(self.pre_logits(x))))
        return self.classifier(x.flatten(1))


class _ChannelAffine(nn.Module):
    """``x * weight + bias`` (a norm's affine, kept where nothing can absorb it)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

class EfficientVit(nn.Module):
    """EfficientViT-B classifier (arXiv:2205.14756)."""

    def __init__(self, in_chans: int = 3, widths: tuple[int, ...] = (), depths: tuple[int, ...] = (),
                 head_dim: int = 32, expand_ratio: float = 4, head_widths: tuple[int, int] = (),
                 drop_rate: float = 0.0, num_classes: int = 1000, act_layer=nn.Hardswish):
        super().__init__()
        self.num_classes = num_classes
        self.stem = Stem(in_chans, widths[0], depths[0], act_layer)  # (B, w0, H/2, W/2)
        self.stages = nn.Sequential(*[
            EfficientVitStage(widths[i], widths[i + 1], depths[i + 1], act_layer, expand_ratio, head_dim,
                              vit_stage=i >= 2)
            for i in range(len(widths) - 1)])  # strides 4, 8, 16, 32
        self.num_features = widths[-1]
        self.head = ClassifierHead(self.num_features, head_widths, num_classes, drop_rate, act_layer)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

# Original repo (mit-han-lab/efficientvit, efficientvit/models/efficientvit/{backbone,cls}.py) -> timm.
# Its classifier is ClsHead: op_list = [ConvLayer, AdaptiveAvgPool2d, LinearLayer(linear, norm), LinearLayer].
_ORIGINAL_HEAD = {"head.op_list.0.": "head.in_conv.", "head.op_list.2.linear.": "head.classifier.0.",
                  "head.op_list.2.norm.": "head.classifier.1.", "head.op_list.3.linear.": "head.classifier.4."}


def _original_key(key: str) -> str:
    for old, new in _ORIGINAL_HEAD.items():
        if key.startswith(old):
            return new + key[len(old):]
    m = re.match(r"^backbone\.input_stem\.op_list\.(\d+)\.(.*)$", key)
    if m:
        idx, rest = int(m.group(1)), m.group(2)
        return f"stem.in_conv.{rest}" if idx == 0 else f"stem.res{idx - 1}.{rest}"
    m = re.match(r"^backbone\.stages\.(\d+)\.op_list\.(\d+)\.(.*)$", key)
    if m:
        return f"stages.{m.group(1)}.blocks.{m.group(2)}.{m.group(3)}"
    return key


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: EfficientVit) -> dict[str, torch.Tensor]:
    """Make an EfficientViT (MIT) checkpoint loadable into ``model``: timm layout passes through, the original
    repository's (``backbone.input_stem.op_list.*``, ``backbone.stages.*.op_list.*``, ``head.op_list.*``)
    is renamed."""
    del model  # the layout alone decides the mapping
    if any(k.startswith(("backbone.", "head.op_list.")) for k in state_dict):
        state_dict = {_original_key(k): v for k, v in state_dict.items()}
    return state_dict


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------

# Bridge: the first multi-scale attention (deploy form). Float by rule: its ReLU-attention core.
_FAMILY = register_family("efficientvit_mit", bridge_module="FusedLiteMLA", checkpoint_filter=checkpoint_filter_fn,
                          float_modules=("ReluLinearAttention",), paper="arXiv:2205.14756")
_CFG = dict(family=_FAMILY.name, paper=_FAMILY.paper, crop_pct=0.95, interpolation="bicubic",
            fixed_input_size=False, stride=32, img_size_kwarg=None)


def _create(arch: dict, img_size=None, **kwargs) -> EfficientVit:
    del img_size  # fully convolutional: any input size
    return EfficientVit(**{**arch, **kwargs})


@register_model("efficientvit_b0", input_size=(3, 224, 224), **_CFG)
def efficientvit_b0(**kwargs) -> EfficientVit:
    """EfficientViT-B0."""
    return _create(dict(widths=(8, 16, 32, 64, 128), depths=(1, 2, 2, 2, 2), head_dim=16,
                        head_widths=(1024, 1280)), **kwargs)


@register_model("efficientvit_b1", input_size=(3, 224, 224), **_CFG)
def efficientvit_b1(**kwargs) -> EfficientVit:
    """EfficientViT-B1 (224 weights; timm also has 256 and 288 ones)."""
    return _create(dict(widths=(16, 32, 64, 128, 256), depths=(1, 2, 3, 3, 4), head_dim=16,
                        head_widths=(1536, 1600)), **kwargs)


@register_model("efficientvit_mit_micro", family=_FAMILY.name, input_size=(3, 64, 64), num_classes=10,
                crop_pct=1.0, interpolation="bilinear", fixed_input_size=False, stride=32, img_size_kwarg=None,
                paper="edgevit micro variant (not a published model)")
def efficientvit_mit_micro(**kwargs) -> EfficientVit:
    """Every code path at 64 px: stem residual, a conv stage with a residual MBConv, two attention stages
    (4x4 and 2x2 token maps)."""
    kwargs = {"num_classes": 10, **kwargs}
    return _create(dict(widths=(8, 16, 24, 32, 48), depths=(1, 2, 1, 1, 1), head_dim=8, head_widths=(96, 128)),
                   **kwargs)
