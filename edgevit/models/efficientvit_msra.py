"""EfficientViT (MSRA): cascaded group attention in a sandwich layout.

Paper: Xinyu Liu, Houwen Peng, Ningxin Zheng, Yuqing Yang, Han Hu and Yixuan Yuan, "EfficientViT: Memory
Efficient Vision Transformer with Cascaded Group Attention", CVPR 2023, arXiv:2305.07027.
Original code: https://github.com/microsoft/Cream/tree/main/EfficientViT

Architecture: a 16x patchify stem of four stride-2 conv+BN, then three stages of "sandwich" blocks
[depthwise conv, FFN, attention, depthwise conv, FFN], each a residual. The attention splits the channels
into one slice per head and runs the heads in a cascade: head i sees its slice plus head i-1's output, its
queries pass a depthwise conv, and its logits get a learned bias per (|dy|, |dx|) offset. Attention runs in
local windows (7x7 at 224 px). Stages are joined by [dw conv, FFN] + an MBConv-style patch merge with
squeeze-excite + [dw conv, FFN]. BatchNorm everywhere, so everything but the attention products folds.

State-dict keys and eval numerics follow timm 1.0.31 (``timm.models.efficientvit_msra``);
``checkpoint_filter_fn`` also converts the original repository's layout (and merges its distillation head).
The bias tables are sized for the window, which depends on the input size: a variant is built for one
resolution (``img_size``).

Deploy form: BatchNorm folded, the identity of every depthwise-conv residual folded into its centre tap, the
query scale folded into the query's depthwise conv, bias tables precomputed, per-head slices instead of
``chunk``/``split``, 3-D bmm instead of 4-D matmul, window partition as 5-D transposes.
"""
from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_family, register_model
from .layers import AttentionBiasMixin, attention_bias_index, fuse_bn_linear, fuse_conv_bn
from .layers.layer_scale import fold_layer_scale

__all__ = ["EfficientVitMsra", "checkpoint_filter_fn", "efficientvit_m0", "efficientvit_m1", "efficientvit_m2",
           "efficientvit_msra_micro"]


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------

class ConvNorm(nn.Module):
    """Bias-free conv followed by BatchNorm (folded into one conv by ``fuse``)."""

    def __init__(self, in_chs: int, out_chs: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1,
                 bn_weight_init: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, ks, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        nn.init.constant_(self.bn.weight, bn_weight_init)  # 0: a residual branch starts as the identity
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fuse(self) -> nn.Conv2d:
        return fuse_conv_bn(self.conv, self.bn)


class NormLinear(nn.Module):
    """BatchNorm1d, Dropout, Linear (folded into one linear by ``fuse``)."""

    def __init__(self, in_features: int, out_features: int, drop: float = 0.0, std: float = 0.02):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.drop = nn.Dropout(drop)
        self.linear = nn.Linear(in_features, out_features)
        nn.init.trunc_normal_(self.linear.weight, std=std)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.bn(x)))

    def fuse(self) -> nn.Linear:
        return fuse_bn_linear(self.bn, self.linear)


class SqueezeExcite(nn.Module):
    """Channel gating from the pooled map (timm's ``SEModule``: 1x1 convs with bias, ReLU, sigmoid)."""

    def __init__(self, channels: int, rd_ratio: float = 0.25, divisor: int = 8):
        super().__init__()
        rd = max(divisor, int(channels * rd_ratio + divisor / 2) // divisor * divisor)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(rd, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class PatchMerging(nn.Module):
    """Stride-2 inverted bottleneck: 1x1 (4x) + ReLU, depthwise 3x3/2 + ReLU, squeeze-excite, 1x1."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        hid = dim * 4
        self.conv1 = ConvNorm(dim, hid)
        self.act = nn.ReLU()
        self.conv2 = ConvNorm(hid, hid, 3, 2, 1, groups=hid)
        self.se = SqueezeExcite(hid, 0.25)
        self.conv3 = ConvNorm(hid, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.se(self.act(self.conv2(self.act(self.conv1(x))))))


class ResidualDrop(nn.Module):
    """``x + m(x)``, the branch dropped per sample while training (stochastic depth)."""

    def __init__(self, m: nn.Module, drop: float = 0.0):
        super().__init__()
        self.m = m
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop > 0:
            keep = torch.rand(x.size(0), 1, 1, 1, device=x.device).ge_(self.drop).div(1 - self.drop)
            return x + self.m(x) * keep.detach()
        return x + self.m(x)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        # A "same" depthwise conv plus its input is one conv with 1 added to every filter's centre tap.
        m = self.m
        if not isinstance(m, nn.Conv2d):
            return self
        k = m.kernel_size
        if not (m.groups == m.in_channels == m.out_channels and m.stride == (1, 1)
                and m.padding == (k[0] // 2, k[1] // 2) and k[0] % 2 == 1 and k[1] % 2 == 1):
            return self
        m.weight[:, 0, k[0] // 2, k[1] // 2] += 1.0
        return m


class ConvMlp(nn.Module):
    """Pointwise FFN: 1x1 expand, ReLU, 1x1 project (zero-initialised BN gain)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = ConvNorm(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvNorm(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


def _head(feat: torch.Tensor, qkv: nn.Module, dw: nn.Module, bias: torch.Tensor, key_dim: int, val_dim: int,
          scale: float | None) -> torch.Tensor:
    """One attention head on a (B, C/heads, H, W) map: qkv conv, dw conv on q, softmax(q^T k + bias), v."""
    B, _, H, W = feat.shape
    feat = qkv(feat)
    q = dw(feat[:, :key_dim]).flatten(2)                    # (B, kd, N)
    k = feat[:, key_dim:2 * key_dim].flatten(2)              # (B, kd, N)
    # v token-major, sliced after the transpose: v @ attn^T written as (attn @ v^T)^T, so no bmm operand is
    # a bare transpose (TFLite turns a batch-1 bmm with a transposed operand into a FULLY_CONNECTED with
    # run-time weights, which its XNNPACK delegate leaves outside).
    v_t = feat.flatten(2).transpose(1, 2)[:, :, 2 * key_dim:]  # (B, N, vd)
    if scale is not None:
        q = q * scale
    attn = (torch.bmm(q.transpose(1, 2), k) + bias).softmax(dim=-1)  # (B, N_q, N_k)
    return torch.bmm(attn, v_t).transpose(1, 2).reshape(B, val_dim, H, W)


class CascadedGroupAttention(AttentionBiasMixin, nn.Module):
    """Heads over channel slices in a cascade (head i's input adds head i-1's output), with bias tables."""

    def __init__(self, dim: int, key_dim: int, num_heads: int = 8, attn_ratio: float = 4, resolution: int = 14,
                 kernels: tuple[int, ...] = (5, 5, 5, 5)):
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.scale = key_dim ** -0.5
        self.val_dim = int(attn_ratio * key_dim)
        self.resolution = resolution
        self.qkvs = nn.ModuleList([ConvNorm(dim // num_heads, key_dim * 2 + self.val_dim)
                                   for _ in range(num_heads)])
        self.dws = nn.ModuleList([ConvNorm(key_dim, key_dim, kernels[i], 1, kernels[i] // 2, groups=key_dim)
                                  for i in range(num_heads)])
        self.proj = nn.Sequential(nn.ReLU(), ConvNorm(self.val_dim * num_heads, dim, bn_weight_init=0.0))
        self.init_attention_bias(num_heads, resolution * resolution, attention_bias_index((resolution, resolution)),
                                 persistent_index=False)

    def _head_bias(self, i: int) -> torch.Tensor:
        if self.attention_bias_table is not None:
            # Deploy form: one (N, N) buffer per head; indexing the stacked table would export as a
            # select_copy that XNNPACK leaves outside its delegate in fp32.
            return getattr(self, f"attention_bias_head{i}")
        return self.attention_biases[i][self.attention_bias_idxs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = x.shape[1] // self.num_heads
        deployed = self.attention_bias_table is not None
        outs, feat = [], None
        for i in range(self.num_heads):
            part = x[:, i * step:(i + 1) * step]
            feat = part if feat is None else feat + part
            feat = _head(feat, self.qkvs[i], self.dws[i], self._head_bias(i), self.key_dim, self.val_dim,
                         None if deployed else self.scale)
            outs.append(feat)
        return self.proj(torch.cat(outs, 1))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        if self.attention_bias_table is None:
            self.freeze_attention_bias()
            for i, table in enumerate(self.attention_bias_table.unbind(0)):
                self.register_buffer(f"attention_bias_head{i}", table.clone(), persistent=False)
            self.attention_bias_table = torch.empty(0)  # marks the deploy form; the per-head buffers hold the data
            # q * scale after the dw conv: the conv's weights and bias scaled instead (deploy form only).
            self.dws = nn.ModuleList([fold_layer_scale(dw if isinstance(dw, nn.Conv2d) else dw.fuse(), self.scale)
                                      for dw in self.dws])
        return self


class LocalWindowAttention(nn.Module):
    """Cascaded group attention inside ``window_resolution`` windows (zero-padded to a whole number)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int = 8, attn_ratio: float = 4, resolution: int = 14,
                 window_resolution: int = 7, kernels: tuple[int, ...] = (5, 5, 5, 5)):
        super().__init__()
        self.window_resolution = window_resolution
        self.attn = CascadedGroupAttention(dim, key_dim, num_heads, attn_ratio, min(window_resolution, resolution),
                                           kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        ws = self.attn.resolution
        if H == ws and W == ws:
            return self.attn(x)
        pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        pH, pW = H + pad_b, W + pad_r
        nH, nW = pH // ws, pW // ws
        # Windows to the batch, channels first throughout; 5-D transposes at most.
        x = x.reshape(B * C, nH, ws, nW, ws).transpose(2, 3)                    # (B*C, nH, nW, ws, ws)
        x = x.reshape(B, C, nH * nW, ws * ws).transpose(1, 2)                   # (B, nHnW, C, ws*ws)
        x = self.attn(x.reshape(B * nH * nW, C, ws, ws))
        x = x.reshape(B, nH * nW, C, ws * ws).transpose(1, 2)                   # (B, C, nHnW, ws*ws)
        x = x.reshape(B * C, nH, nW, ws, ws).transpose(2, 3).reshape(B, C, pH, pW)
        if pad_b or pad_r:
            x = x[:, :, :H, :W]
        return x


class EfficientVitBlock(nn.Module):
    """The sandwich: dw conv, FFN, window attention, dw conv, FFN (each a residual)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int = 8, attn_ratio: float = 4, resolution: int = 14,
                 window_resolution: int = 7, kernels: tuple[int, ...] = (5, 5, 5, 5)):
        super().__init__()
        self.dw0 = ResidualDrop(ConvNorm(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0))
        self.ffn0 = ResidualDrop(ConvMlp(dim, dim * 2))
        self.mixer = ResidualDrop(LocalWindowAttention(dim, key_dim, num_heads, attn_ratio, resolution,
                                                       window_resolution, kernels))
        self.dw1 = ResidualDrop(ConvNorm(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0))
        self.ffn1 = ResidualDrop(ConvMlp(dim, dim * 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


def _dw_ffn(dim: int) -> nn.Sequential:
    return nn.Sequential(ResidualDrop(ConvNorm(dim, dim, 3, 1, 1, groups=dim)), ResidualDrop(ConvMlp(dim, dim * 2)))


class EfficientVitStage(nn.Module):
    """Optional downsample ([dw, FFN], patch merge, [dw, FFN]), then ``depth`` sandwich blocks."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, downsample: bool, num_heads: int,
                 attn_ratio: float, resolution: int, window_resolution: int, kernels: tuple[int, ...], depth: int):
        super().__init__()
        if downsample:
            self.resolution = (resolution - 1) // 2 + 1
            self.downsample = nn.Sequential(OrderedDict([("res1", _dw_ffn(in_dim)),
                                                         ("patchmerge", PatchMerging(in_dim, out_dim)),
                                                         ("res2", _dw_ffn(out_dim))]))
        else:
            self.resolution = resolution
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[EfficientVitBlock(out_dim, key_dim, num_heads, attn_ratio, self.resolution,
                                                        window_resolution, kernels) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class PatchEmbedding(nn.Sequential):
    """Four stride-2 conv+BN (ReLU between): 16x downsampling."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__(OrderedDict([
            ("conv1", ConvNorm(in_chans, dim // 8, 3, 2, 1)), ("relu1", nn.ReLU()),
            ("conv2", ConvNorm(dim // 8, dim // 4, 3, 2, 1)), ("relu2", nn.ReLU()),
            ("conv3", ConvNorm(dim // 4, dim // 2, 3, 2, 1)), ("relu3", nn.ReLU()),
            ("conv4", ConvNorm(dim // 2, dim, 3, 2, 1))]))


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

class EfficientVitMsra(nn.Module):
    """EfficientViT-M classifier (arXiv:2305.07027), built for one input resolution (its bias tables)."""

    def __init__(self, img_size: int | tuple[int, int] = 224, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: tuple[int, ...] = (64, 128, 192), key_dim: tuple[int, ...] = (16, 16, 16),
                 depth: tuple[int, ...] = (1, 2, 3), num_heads: tuple[int, ...] = (4, 4, 4),
                 window_size: tuple[int, ...] = (7, 7, 7), kernels: tuple[int, ...] = (5, 5, 5, 5),
                 drop_rate: float = 0.0):
        super().__init__()
        self.num_classes = num_classes
        self.patch_embed = PatchEmbedding(in_chans, embed_dim[0])
        img = min(img_size) if isinstance(img_size, (tuple, list)) else img_size
        resolution = img // 16  # the attention windows follow the smaller side, as timm's set_input_size
        stages, prev = [], embed_dim[0]
        for i, (ed, kd, d, nh, ws) in enumerate(zip(embed_dim, key_dim, depth, num_heads, window_size)):
            stage = EfficientVitStage(prev, ed, kd, i > 0, nh, ed / (kd * nh), resolution, ws, kernels, d)
            resolution, prev = stage.resolution, ed
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.num_features = embed_dim[-1]
        self.head = NormLinear(self.num_features, num_classes, drop_rate) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.patch_embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean((2, 3), keepdim=True).flatten(1)  # keep-dim mean: XNNPACK's pool
        return self.head(x)


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

def _original_key(key: str) -> str:
    """microsoft/Cream EfficientViT layout -> timm layout.

    The original names conv/linear children ``c`` / ``l``, keeps the stem as an indexed Sequential (convs at
    0, 2, 4, 6) and each stage as one flat ``blocks{1,2,3}`` whose first three entries in stages 2 and 3 are
    the downsample: [dw conv, FFN], PatchMerging, [dw conv, FFN].
    """
    key = re.sub(r"\.c\.(weight|bias)$", r".conv.\1", key)
    key = re.sub(r"\.c\.(running_mean|running_var|num_batches_tracked)$", r".conv.\1", key)
    key = re.sub(r"^(head|head_dist)\.l\.", r"\1.linear.", key)
    m = re.match(r"^patch_embed\.(\d+)\.(.*)$", key)
    if m:
        return f"patch_embed.conv{int(m.group(1)) // 2 + 1}.{m.group(2)}"
    m = re.match(r"^blocks(\d)\.(\d+)\.(.*)$", key)
    if m is None:
        return key
    stage, idx, rest = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
    if stage == 0:
        return f"stages.0.blocks.{idx}.{rest}"
    if idx >= 3:
        return f"stages.{stage}.blocks.{idx - 3}.{rest}"
    return f"stages.{stage}.downsample.{('res1', 'patchmerge', 'res2')[idx]}.{rest}"


@torch.no_grad()
def _merge_distillation_head(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold ``head_dist`` into ``head`` (eval-exact): the mean of two BN+linear heads is one affine map, stored
    as ``head.linear`` behind a BatchNorm that is an exact identity (var = 1 - eps)."""
    def affine(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        w = sd[f"{prefix}.linear.weight"]
        bn = nn.BatchNorm1d(w.shape[1])
        bn.load_state_dict({k[len(prefix) + 4:]: v for k, v in sd.items() if k.startswith(f"{prefix}.bn.")})
        lin = nn.Linear(w.shape[1], w.shape[0])
        lin.load_state_dict({"weight": w, "bias": sd[f"{prefix}.linear.bias"]})
        fused = fuse_bn_linear(bn.eval(), lin)
        return fused.weight, fused.bias

    (w1, b1), (w2, b2) = affine("head"), affine("head_dist")
    out = {k: v for k, v in sd.items() if not k.startswith("head_dist.")}
    n = w1.shape[1]
    out.update({"head.bn.weight": torch.ones(n), "head.bn.bias": torch.zeros(n),
                "head.bn.running_mean": torch.zeros(n), "head.bn.running_var": torch.full((n,), 1.0 - 1e-5),
                "head.linear.weight": (w1 + w2) / 2, "head.linear.bias": (b1 + b2) / 2})
    return out


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: EfficientVitMsra) -> dict[str, torch.Tensor]:
    """Make an EfficientViT (MSRA) checkpoint loadable into ``model``: timm layout passes through; the original
    repository's (``patch_embed.0.c``, ``blocks1..3``, ``head.l``, optional ``head_dist``) is converted;
    ``attention_bias_idxs`` (recomputed here) are dropped."""
    del model  # the layout alone decides the mapping
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith("attention_bias_idxs")}
    if any(k.startswith(("blocks1.", "patch_embed.0.")) for k in state_dict):
        state_dict = {_original_key(k): v for k, v in state_dict.items()}
    if any(k.startswith("head_dist.") for k in state_dict):
        state_dict = _merge_distillation_head(state_dict)
    return state_dict


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------

# Bridge: the first cascaded group attention (stage 1, right after the conv stem).
_FAMILY = register_family("efficientvit_msra", bridge_module="CascadedGroupAttention",
                          checkpoint_filter=checkpoint_filter_fn, paper="arXiv:2305.07027")
_CFG = dict(family=_FAMILY.name, paper=_FAMILY.paper, crop_pct=0.875, interpolation="bicubic",
            fixed_input_size=True, stride=32, img_size_kwarg="img_size")


def _create(arch: dict, **kwargs) -> EfficientVitMsra:
    return EfficientVitMsra(**{**arch, **kwargs})


@register_model("efficientvit_m0", input_size=(3, 224, 224), **_CFG)
def efficientvit_m0(**kwargs) -> EfficientVitMsra:
    """EfficientViT-M0."""
    return _create(dict(embed_dim=(64, 128, 192), depth=(1, 2, 3), num_heads=(4, 4, 4), kernels=(5, 5, 5, 5)),
                   **kwargs)


@register_model("efficientvit_m1", input_size=(3, 224, 224), **_CFG)
def efficientvit_m1(**kwargs) -> EfficientVitMsra:
    """EfficientViT-M1."""
    return _create(dict(embed_dim=(128, 144, 192), depth=(1, 2, 3), num_heads=(2, 3, 3), kernels=(7, 5, 3, 3)),
                   **kwargs)


@register_model("efficientvit_m2", input_size=(3, 224, 224), **_CFG)
def efficientvit_m2(**kwargs) -> EfficientVitMsra:
    """EfficientViT-M2."""
    return _create(dict(embed_dim=(128, 192, 224), depth=(1, 2, 3), num_heads=(4, 3, 2), kernels=(7, 5, 3, 3)),
                   **kwargs)


@register_model("efficientvit_msra_micro", family=_FAMILY.name, input_size=(3, 64, 64), num_classes=10,
                crop_pct=1.0, interpolation="bilinear", fixed_input_size=True, stride=32, img_size_kwarg="img_size",
                paper="edgevit micro variant (not a published model)")
def efficientvit_msra_micro(img_size: int = 64, **kwargs) -> EfficientVitMsra:
    """Every code path at 64 px: 2x2 windows on stage 1's 4x4 map (partitioned), whole-map attention on
    stage 2's 2x2 map, the downsample between them. Two stages: a third would attend over a 1x1 map, whose
    one-element softmax TFLite's int8 path cannot delegate."""
    kwargs = {"num_classes": 10, **kwargs}
    return _create(dict(img_size=img_size, embed_dim=(32, 64), key_dim=(8, 8), depth=(1, 1), num_heads=(2, 2),
                        window_size=(2, 2), kernels=(5, 3)), **kwargs)
