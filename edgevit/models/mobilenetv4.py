"""MobileNetV4 hybrid.

Paper: Danfeng Qin et al., "MobileNetV4: Universal Models for the Mobile Ecosystem", ECCV 2024,
arXiv:2404.10518. Reference code (TensorFlow): https://github.com/tensorflow/models (official/vision,
``mobilenet.py``). The PyTorch weights come from timm itself (Ross Wightman trained the
``mobilenetv4_hybrid_medium`` checkpoints in timm; there is no other PyTorch layout), so the checkpoint
filter only unwraps wrappers.

Architecture: a stride-2 3x3 conv stem, then five stages of blocks:

- FusedIB (``EdgeResidual``): a full k x k expansion conv, then a 1x1 projection;
- UIB (``UniversalInvertedResidual``): optional depthwise conv before the 1x1 expansion, optional
  depthwise conv between expansion and projection; its four instances are ExtraDW (both), ConvNeXt-like
  (start only), IB (middle only) and FFN (neither);
- Mobile MQA (``MobileAttention``): BatchNorm, then multi-query attention: every head has its own query,
  all heads share one key and one value projection, computed from a map downsampled by a strided 3x3
  depthwise conv + BatchNorm (``kv_stride`` 2 in stage 3, 1 in stage 4);
- a 1x1 conv, then MobileNetV3's head: global pool, 1x1 conv + BatchNorm + ReLU, linear.

Residual UIB and attention blocks carry layer scales. State-dict keys and eval numerics follow timm 1.0.31
(``timm.models.mobilenetv3``, ``_efficientnet_blocks``, ``layers.attention2d``). Deploy form: BatchNorms
folded into the convs after which they sit, the attention's pre-norm as a per-channel 1x1 depthwise conv
(it feeds padded strided convs, so it cannot move into them exactly), the query scale and layer scales
folded into the projections, attention as 3-D bmm. Nothing depends on the input size. The layer scales
(init 1e-5) leave those projections with max |w| ~ 1e-3 per channel: int8 keeps them only because the recipe's
weight scale floor is below XNNPACK's 2**-12 activation floor (``quantization/recipe.py``, ``_WEIGHT_EPS``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_family, register_model
from .layers import DropPath, LayerScale, fold_layer_scale, fuse_conv_bn

__all__ = ["MobileNetV4", "checkpoint_filter_fn", "mobilenetv4_hybrid_medium", "mobilenetv4_hybrid_micro"]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``), never more than 10 % below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _same_padding(kernel_size: int, stride: int) -> int:
    return ((stride - 1) + (kernel_size - 1)) // 2


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by an optional activation (timm's ``BatchNormAct2d``: the same state-dict keys)."""

    def __init__(self, num_features: int, act_layer: type[nn.Module] | None = None):
        super().__init__(num_features)
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


def _fuse(conv: nn.Conv2d, bn: BatchNormAct2d) -> nn.Module:
    """conv -> BatchNorm [-> act]  ==>  conv [-> act]."""
    fused = fuse_conv_bn(conv, bn)
    return fused if isinstance(bn.act, nn.Identity) else nn.Sequential(fused, bn.act)


class ConvNormAct(nn.Module):
    """Bias-free conv with 'same'-style padding, BatchNorm, optional activation."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 act_layer: type[nn.Module] | None = nn.ReLU):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, _same_padding(kernel_size, stride),
                              groups=groups, bias=False)
        self.bn = BatchNormAct2d(out_chs, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fuse(self) -> nn.Module:
        return _fuse(self.conv, self.bn)


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------

class EdgeResidual(nn.Module):
    """FusedIB: k x k expansion conv + BN + act, then 1x1 projection + BN; residual when shapes allow."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, exp_ratio: float,
                 act_layer: type[nn.Module] = nn.ReLU, drop_path: float = 0.0):
        super().__init__()
        mid = make_divisible(in_chs * exp_ratio)
        self.has_skip = in_chs == out_chs and stride == 1
        self.conv_exp = nn.Conv2d(in_chs, mid, kernel_size, stride, _same_padding(kernel_size, stride), bias=False)
        self.bn1 = BatchNormAct2d(mid, act_layer)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pwl = nn.Conv2d(mid, out_chs, 1, bias=False)
        self.bn2 = BatchNormAct2d(out_chs)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pwl(self.bn1(self.conv_exp(x))))
        return self.drop_path(out) + x if self.has_skip else out

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        body = nn.Sequential(_fuse(self.conv_exp, self.bn1), _fuse(self.conv_pwl, self.bn2))
        return Residual(body) if self.has_skip else body


class Residual(nn.Module):
    """``x + m(x)`` (deploy form of the residual blocks)."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class UniversalInvertedResidual(nn.Module):
    """UIB: [dw k_start] -> 1x1 expand + act -> [dw k_mid + act] -> 1x1 project -> layer scale (+ x)."""

    def __init__(self, in_chs: int, out_chs: int, dw_kernel_size_start: int, dw_kernel_size_mid: int,
                 stride: int, exp_ratio: float, act_layer: type[nn.Module] = nn.ReLU,
                 layer_scale_init_value: float | None = 1e-5, drop_path: float = 0.0):
        super().__init__()
        self.has_skip = in_chs == out_chs and stride == 1
        mid = make_divisible(in_chs * exp_ratio)
        # The stride sits on the middle depthwise conv when there is one, else on the first.
        self.dw_start = (ConvNormAct(in_chs, in_chs, dw_kernel_size_start, 1 if dw_kernel_size_mid else stride,
                                     groups=in_chs, act_layer=None) if dw_kernel_size_start else nn.Identity())
        self.pw_exp = ConvNormAct(in_chs, mid, 1, act_layer=act_layer)
        self.dw_mid = (ConvNormAct(mid, mid, dw_kernel_size_mid, stride, groups=mid, act_layer=act_layer)
                       if dw_kernel_size_mid else nn.Identity())
        self.se = nn.Identity()
        self.pw_proj = ConvNormAct(mid, out_chs, 1, act_layer=None)
        self.dw_end = nn.Identity()
        self.layer_scale = (LayerScale(out_chs, layer_scale_init_value, channels_first=True)
                            if layer_scale_init_value is not None else nn.Identity())
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw_proj(self.se(self.dw_mid(self.pw_exp(self.dw_start(x)))))
        out = self.layer_scale(self.dw_end(out))
        return self.drop_path(out) + x if self.has_skip else out

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        # Children are fused first (deploy walks bottom-up): every ConvNormAct is a conv [+ act] here.
        parts = [m for m in (self.dw_start, self.pw_exp, self.dw_mid, self.pw_proj) if not isinstance(m, nn.Identity)]
        if isinstance(self.layer_scale, LayerScale):
            parts[-1] = fold_layer_scale(parts[-1], self.layer_scale)  # pw_proj has no activation: a conv
        body = nn.Sequential(*parts)
        return Residual(body) if self.has_skip else body


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Multi-query attention: ``q`` (B, heads * kd, H, W) and the shared key map ``k`` (B, kd, H', W') and value
    tokens ``v`` (B, H' * W', vd). Returns (B, heads * vd, H, W).

    Heads are stacked along the query axis, so the products are two 3-D bmm (XNNPACK and TFLite take those;
    not 4-D matmul or SDPA). The values come as tokens, not as a transposed map: TFLite's converter turns a
    bmm whose right operand is a transpose into FULLY_CONNECTED with run-time weights, which XNNPACK refuses.
    """
    B, _, H, W = q.shape
    kd, vd = k.shape[1], v.shape[-1]
    q = q.reshape(B, num_heads, kd, H * W).transpose(2, 3).reshape(B, num_heads * H * W, kd)
    attn = torch.bmm(q, k.flatten(2)).softmax(dim=-1)  # (B, heads * N, N')
    out = torch.bmm(attn, v)  # (B, heads * N, vd)
    return out.reshape(B, num_heads, H * W, vd).transpose(2, 3).reshape(B, num_heads * vd, H, W)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H * W, C)


class MultiQueryAttention2d(nn.Module):
    """Multi-query attention with a strided depthwise conv + BN shrinking the key/value map."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, key_dim: int, value_dim: int, kv_stride: int = 1,
                 dw_kernel_size: int = 3, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim, self.kv_stride = num_heads, key_dim, value_dim, kv_stride
        self.scale = key_dim ** -0.5
        self.query = nn.Sequential()
        self.query.add_module("proj", nn.Conv2d(dim, num_heads * key_dim, 1, bias=False))
        self.key = self._kv(dim, key_dim, kv_stride, dw_kernel_size)
        self.value = self._kv(dim, value_dim, kv_stride, dw_kernel_size)
        self.attn_drop = nn.Dropout(attn_drop)
        self.output = nn.Sequential()
        self.output.add_module("proj", nn.Conv2d(num_heads * value_dim, dim_out, 1, bias=False))
        self.output.add_module("drop", nn.Dropout(proj_drop))
        for conv in [self.query.proj, self.key.proj, self.value.proj, self.output.proj] + (
                [self.key.down_conv, self.value.down_conv] if kv_stride > 1 else []):
            nn.init.xavier_uniform_(conv.weight)

    @staticmethod
    def _kv(dim: int, out_dim: int, stride: int, kernel_size: int) -> nn.Sequential:
        seq = nn.Sequential()
        if stride > 1:
            seq.add_module("down_conv", nn.Conv2d(dim, dim, kernel_size, stride, _same_padding(kernel_size, stride),
                                                  groups=dim, bias=False))
            seq.add_module("norm", nn.BatchNorm2d(dim))
        seq.add_module("proj", nn.Conv2d(dim, out_dim, 1, bias=False))
        return seq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn_drop.p and self.training:
            raise NotImplementedError("attention dropout is not implemented (timm's pretrained configs use 0)")
        out = _attend(self.query(x) * self.scale, self.key(x), _tokens(self.value(x)), self.num_heads)
        return self.output(out)


class MobileAttention(nn.Module):
    """Mobile MQA block: BatchNorm, multi-query attention, layer scale, residual."""

    def __init__(self, in_chs: int, out_chs: int, num_heads: int, key_dim: int, value_dim: int,
                 kv_stride: int = 1, dw_kernel_size: int = 3, layer_scale_init_value: float | None = 1e-5,
                 drop_path: float = 0.0):
        super().__init__()
        self.has_skip = in_chs == out_chs
        self.norm = BatchNormAct2d(in_chs)
        self.attn = MultiQueryAttention2d(in_chs, out_chs, num_heads, key_dim, value_dim, kv_stride, dw_kernel_size)
        self.layer_scale = (LayerScale(out_chs, layer_scale_init_value, channels_first=True)
                            if layer_scale_init_value is not None else nn.Identity())
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer_scale(self.attn(self.norm(x)))
        return self.drop_path(out) + x if self.has_skip else out

    @torch.no_grad()
    def fuse(self) -> FusedMobileAttention:
        return FusedMobileAttention(self)


def _affine_conv(bn: nn.BatchNorm2d) -> nn.Conv2d:
    """BatchNorm (eval) as a 1x1 depthwise conv: a per-channel scale and shift XNNPACK and TFLite run."""
    c = bn.num_features
    identity = nn.Conv2d(c, c, 1, groups=c, bias=False).to(bn.weight)
    nn.init.ones_(identity.weight)
    return fuse_conv_bn(identity, bn)


class FusedMobileAttention(nn.Module):
    """Inference form of ``MobileAttention`` (the family's conv->attention bridge): the pre-norm as a 1x1
    depthwise conv, key/value BatchNorms folded into their downsampling convs, the 1/sqrt(d) query scale
    into the query projection, the layer scale into the output projection."""

    @torch.no_grad()
    def __init__(self, block: MobileAttention):
        super().__init__()
        attn = block.attn
        self.has_skip, self.num_heads = block.has_skip, attn.num_heads
        self.norm = _affine_conv(block.norm)
        self.query = fold_layer_scale(attn.query.proj, attn.scale)
        self.key = self._fused_kv(attn.key)
        # Values: the strided depthwise conv on the map, then the projection as a linear on tokens (see _attend).
        proj = attn.value.proj
        value_proj = nn.Linear(proj.in_channels, proj.out_channels, bias=False).to(proj.weight)
        value_proj.weight.copy_(proj.weight.flatten(1))
        self.value_down = fuse_conv_bn(attn.value.down_conv, attn.value.norm) if attn.kv_stride > 1 else nn.Identity()
        self.value = value_proj
        scale = block.layer_scale if isinstance(block.layer_scale, LayerScale) else 1.0
        self.output = fold_layer_scale(attn.output.proj, scale)

    @staticmethod
    def _fused_kv(seq: nn.Sequential) -> nn.Module:
        if not hasattr(seq, "down_conv"):
            return seq.proj
        return nn.Sequential(fuse_conv_bn(seq.down_conv, seq.norm), seq.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        out = self.output(_attend(self.query(h), self.key(h), self.value(_tokens(self.value_down(h))), self.num_heads))
        return x + out if self.has_skip else out


class ConvBnAct(nn.Module):
    """Conv + BN + act (timm's ``ConvBnAct`` block keys: ``conv``, ``bn1``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                 act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, _same_padding(kernel_size, stride), bias=False)
        self.bn1 = BatchNormAct2d(out_chs, act_layer)
        self.aa = nn.Identity()
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv(x))

    def fuse(self) -> nn.Module:
        return _fuse(self.conv, self.bn1)


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

# Block specs, one tuple per block (repeats written out):
#   ("er", kernel, stride, expansion, out)                 FusedIB
#   ("uir", dw_start, dw_mid, stride, expansion, out)      UIB (0 = no such depthwise conv)
#   ("mqa", heads, key_dim, kv_stride, out)                Mobile MQA (value_dim = key_dim, 3x3 kv conv)
#   ("cn", kernel, stride, out)                            conv + BN + act
_HYBRID_MEDIUM = (
    (("er", 3, 2, 4, 48),),
    (("uir", 3, 5, 2, 4, 80), ("uir", 3, 3, 1, 2, 80)),
    (("uir", 3, 5, 2, 6, 160), ("uir", 0, 0, 1, 2, 160), ("uir", 3, 3, 1, 4, 160), ("uir", 3, 5, 1, 4, 160),
     ("mqa", 4, 64, 2, 160), ("uir", 3, 3, 1, 4, 160), ("mqa", 4, 64, 2, 160), ("uir", 3, 0, 1, 4, 160),
     ("mqa", 4, 64, 2, 160), ("uir", 3, 3, 1, 4, 160), ("mqa", 4, 64, 2, 160), ("uir", 3, 0, 1, 4, 160)),
    (("uir", 5, 5, 2, 6, 256), ("uir", 5, 5, 1, 4, 256), ("uir", 3, 5, 1, 4, 256), ("uir", 3, 5, 1, 4, 256),
     ("uir", 0, 0, 1, 2, 256), ("uir", 3, 5, 1, 2, 256), ("uir", 0, 0, 1, 2, 256), ("uir", 0, 0, 1, 4, 256),
     ("mqa", 4, 64, 1, 256), ("uir", 3, 0, 1, 4, 256), ("mqa", 4, 64, 1, 256), ("uir", 5, 5, 1, 4, 256),
     ("mqa", 4, 64, 1, 256), ("uir", 5, 0, 1, 4, 256), ("mqa", 4, 64, 1, 256), ("uir", 5, 0, 1, 4, 256)),
    (("cn", 1, 1, 960),),
)


class MobileNetV4(nn.Module):
    """MobileNetV4 classifier (arXiv:2404.10518) with MobileNetV3's efficient head."""

    def __init__(self, stages: tuple = _HYBRID_MEDIUM, num_classes: int = 1000, in_chans: int = 3,
                 stem_size: int = 32, num_features: int = 1280, act_layer: type[nn.Module] = nn.ReLU,
                 layer_scale_init_value: float | None = 1e-5, drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.conv_stem = nn.Conv2d(in_chans, stem_size, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(stem_size, act_layer)
        total = sum(len(s) for s in stages)
        built, chs, index = [], stem_size, 0
        for stage in stages:
            blocks = []
            for spec in stage:
                drop_path = drop_path_rate * index / total  # stochastic depth rises linearly with depth
                blocks.append(self._block(spec, chs, act_layer, layer_scale_init_value, drop_path))
                chs, index = spec[-1], index + 1
            built.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*built)
        self.num_features, self.head_hidden_size = chs, num_features
        self.conv_head = nn.Conv2d(chs, num_features, 1, bias=False)
        self.norm_head = BatchNormAct2d(num_features, act_layer)
        self.act2 = nn.Identity()
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    @staticmethod
    def _block(spec: tuple, in_chs: int, act_layer, ls_init, drop_path) -> nn.Module:
        kind = spec[0]
        if kind == "er":
            _, k, s, e, out = spec
            return EdgeResidual(in_chs, out, k, s, e, act_layer, drop_path)
        if kind == "uir":
            _, k_start, k_mid, s, e, out = spec
            return UniversalInvertedResidual(in_chs, out, k_start, k_mid, s, e, act_layer, ls_init, drop_path)
        if kind == "mqa":
            _, heads, key_dim, kv_stride, out = spec
            return MobileAttention(in_chs, out, heads, key_dim, key_dim, kv_stride, 3, ls_init, drop_path)
        if kind == "cn":
            _, k, s, out = spec
            return ConvBnAct(in_chs, out, k, s, act_layer)
        raise ValueError(f"unknown block kind {kind!r} (er, uir, mqa, cn)")

    def _init_weights(self) -> None:
        # As timm: EfficientNet-style fan-out normal for convs and fan-out uniform for the classifier; the
        # attention projections keep their xavier init.
        attention_convs = {id(m) for b in self.modules() if isinstance(b, MultiQueryAttention2d)
                           for m in b.modules() if isinstance(m, nn.Conv2d)}
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and id(m) not in attention_convs:
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / (m.weight.size(0) ** 0.5)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))  # (B, 960, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)  # keep-dim spatial mean: the pooling form XNNPACK lowers
        x = self.flatten(self.act2(self.norm_head(self.conv_head(x))))
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def fuse(self) -> MobileNetV4:
        # Stem and head BatchNorms into their convs; the blocks fused themselves already.
        if isinstance(self.bn1, nn.BatchNorm2d):
            self.conv_stem = _fuse(self.conv_stem, self.bn1)
            self.bn1 = nn.Identity()
        if isinstance(self.norm_head, nn.BatchNorm2d):
            self.conv_head = _fuse(self.conv_head, self.norm_head)
            self.norm_head = nn.Identity()
        return self


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module | None = None
                         ) -> dict[str, torch.Tensor]:
    """MobileNetV4's PyTorch weights originate in timm (its layout is this package's): only wrappers
    (``state_dict``, ``model``, ``state_dict_ema``, ``model_ema``; a DDP ``module.`` prefix) are unwrapped.
    The TensorFlow reference checkpoints (tensorflow/models) are not PyTorch files and are not read."""
    del model
    for wrapper in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------

# The conv->attention bridge: the first mobile MQA block (deploy form).
_FAMILY = register_family("mobilenetv4", bridge_module="FusedMobileAttention", checkpoint_filter=checkpoint_filter_fn,
                          paper="arXiv:2404.10518")


@register_model("mobilenetv4_hybrid_medium", family=_FAMILY.name, paper=_FAMILY.paper, input_size=(3, 256, 256),
                crop_pct=0.95, interpolation="bicubic", fixed_input_size=False, stride=32, img_size_kwarg="img_size")
def mobilenetv4_hybrid_medium(img_size=None, **kwargs) -> MobileNetV4:
    """MobileNetV4-Hybrid-Medium (timm's default tag: e200_r256_in12k_ft_in1k, 256 px, crop 0.95)."""
    del img_size  # no position tables: any size works
    return MobileNetV4(_HYBRID_MEDIUM, **kwargs)


# Every block kind of the hybrid (FusedIB; UIB as ExtraDW, IB-less FFN and ConvNeXt-like; MQA with and
# without key/value downsampling; the conv + efficient head), narrow and shallow.
_HYBRID_MICRO = (
    (("er", 3, 2, 4, 16),),
    (("uir", 3, 5, 2, 4, 24), ("uir", 3, 3, 1, 2, 24)),
    (("uir", 3, 5, 2, 4, 48), ("uir", 0, 0, 1, 2, 48), ("mqa", 2, 16, 2, 48), ("uir", 3, 0, 1, 2, 48)),
    (("uir", 5, 5, 2, 4, 64), ("mqa", 2, 16, 1, 64), ("uir", 5, 0, 1, 2, 64)),
    (("cn", 1, 1, 192),),
)


@register_model("mobilenetv4_hybrid_micro", family=_FAMILY.name, input_size=(3, 64, 64), num_classes=10,
                crop_pct=1.0, interpolation="bilinear", fixed_input_size=False, stride=32,
                paper="edgevit micro variant (not a published model)")
def mobilenetv4_hybrid_micro(img_size=None, **kwargs) -> MobileNetV4:
    del img_size
    kwargs = {"num_classes": 10, **kwargs}
    return MobileNetV4(_HYBRID_MICRO, stem_size=16, num_features=256, **kwargs)
