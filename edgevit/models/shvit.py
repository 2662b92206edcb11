"""SHViT.

Paper: Seokju Yun and Youngmin Ro, "SHViT: Single-Head Vision Transformer with Memory Efficient Macro
Design", CVPR 2024, arXiv:2401.16456. Original code: https://github.com/ysj9909/SHViT

Architecture: a 16x patchify stem of four stride-2 convs, then three stages of blocks built from
``x + f(x)`` residuals: a depthwise 3x3 conv (a cheap local mixer), optionally single-head attention,
and a 1x1 conv FFN. The attention ("SHSA") runs one head on only the first ``pdim`` channels and
passes the rest through untouched, which is where the memory and latency savings come from. Stages
are joined by a downsample of [dw conv, FFN, MBConv-style patch merging with squeeze-excite,
dw conv, FFN]. Normalisation is BatchNorm everywhere except a GroupNorm(1) before the attention,
so nearly everything folds into convs at deploy time.

State-dict keys and eval numerics follow timm 1.0.31 (``timm.models.shvit``) so its checkpoints load
unchanged; ``checkpoint_filter_fn`` also converts the original repository's layout. Nothing depends
on the input resolution (no position tables), so any input size works.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_family, register_model
from .layers import fuse_bn_linear, fuse_conv_bn
from .layers.norm import Standardize, fold_norm_affine

__all__ = ["SHViT", "checkpoint_filter_fn", "shvit_s1", "shvit_s2", "shvit_s3", "shvit_s4"]


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------

class Conv2dNorm(nn.Module):
    """Bias-free conv followed by BatchNorm (folded into one conv by ``fuse``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0):
        super().__init__()
        self.c = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        # A zero BN gain makes a residual branch start out as the identity.
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))

    def fuse(self) -> nn.Conv2d:
        return fuse_conv_bn(self.c, self.bn)


class NormLinear(nn.Module):
    """BatchNorm1d over features, then a linear classifier (folded into one linear by ``fuse``)."""

    def __init__(self, in_features: int, out_features: int, std: float = 0.02):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.l = nn.Linear(in_features, out_features)
        nn.init.trunc_normal_(self.l.weight, std=std)
        nn.init.zeros_(self.l.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l(self.bn(x))

    def fuse(self) -> nn.Linear:
        return fuse_bn_linear(self.bn, self.l)


class Residual(nn.Module):
    """``x + m(x)``."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        # A depthwise, stride-1, "same"-padded conv plus its input is one conv with 1 added to the
        # centre tap of every filter: the skip connection disappears.
        m = self.m.fuse() if isinstance(self.m, Conv2dNorm) else self.m
        if not isinstance(m, nn.Conv2d):
            return self
        k = m.kernel_size
        same_depthwise = (m.groups == m.in_channels == m.out_channels and m.stride == (1, 1)
                          and m.dilation == (1, 1) and k[0] % 2 == 1 and k[1] % 2 == 1
                          and m.padding == (k[0] // 2, k[1] // 2))
        if not same_depthwise:
            self.m = m
            return self
        if m.bias is None:
            m.bias = nn.Parameter(torch.zeros(m.out_channels, dtype=m.weight.dtype, device=m.weight.device))
        m.weight[:, 0, k[0] // 2, k[1] // 2] += 1.0
        return m


class FFN(nn.Module):
    """Pointwise MLP on NCHW maps: 1x1 expand, ReLU, 1x1 project."""

    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.pw1 = Conv2dNorm(dim, hidden)
        self.act = act_layer()
        self.pw2 = Conv2dNorm(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """Channel gating from globally pooled features (1x1 convs with bias, ReLU, sigmoid)."""

    def __init__(self, channels: int, rd_ratio: float = 0.25):
        super().__init__()
        rd = _make_divisible(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(rd, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class PatchMerging(nn.Module):
    """Stride-2 inverted bottleneck (4x expansion, depthwise 3x3/2, squeeze-excite, projection)."""

    def __init__(self, dim: int, out_dim: int, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        hidden = dim * 4
        self.conv1 = Conv2dNorm(dim, hidden)
        self.act1 = act_layer()
        self.conv2 = Conv2dNorm(hidden, hidden, 3, 2, 1, groups=hidden)
        self.act2 = act_layer()
        self.se = SqueezeExcite(hidden, 0.25)
        self.conv3 = Conv2dNorm(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        return self.conv3(self.se(x))


def _single_head_attention(x: torch.Tensor, qkv: nn.Module, norm: nn.Module, qk_dim: int, pdim: int,
                           q_scale: float | None = None) -> torch.Tensor:
    """Attend over the first ``pdim`` channels of ``x`` (B, dim, H, W); pass the rest through.

    Returns the re-joined (B, dim, H, W) map, before the output projection. Channel slices and bmm
    rather than split / matmul: those lower to ops XNNPACK takes (slice_copy, bmm) instead of
    split_with_sizes / expand.
    """
    B, _, H, W = x.shape
    x1, x2 = x[:, :pdim], x[:, pdim:]
    proj = qkv(norm(x1)).flatten(2)  # (B, 2*qk + pdim, N)
    q = proj[:, :qk_dim]
    k = proj[:, qk_dim:2 * qk_dim]
    v = proj[:, 2 * qk_dim:]
    if q_scale is not None:
        q = q * q_scale
    attn = torch.bmm(q.transpose(1, 2), k).softmax(dim=-1)  # (B, N_q, N_k)
    x1 = torch.bmm(v, attn.transpose(1, 2)).reshape(B, pdim, H, W)  # (B, pdim, N_q) -> map
    return torch.cat([x1, x2], dim=1)


class SHSA(nn.Module):
    """Single-head self-attention over the first ``pdim`` channels; the rest bypass it.

    Both parts are concatenated again and mixed by a ReLU + 1x1 conv projection.
    """

    def __init__(self, dim: int, qk_dim: int, pdim: int, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.dim, self.qk_dim, self.pdim = dim, qk_dim, pdim
        self.scale = qk_dim ** -0.5
        self.pre_norm = nn.GroupNorm(1, pdim)  # normalises each sample over (C, H, W)
        self.qkv = Conv2dNorm(pdim, 2 * qk_dim + pdim)
        self.proj = nn.Sequential(act_layer(), Conv2dNorm(dim, dim, bn_weight_init=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _single_head_attention(x, self.qkv, self.pre_norm, self.qk_dim, self.pdim, self.scale)
        return self.proj(x)

    @torch.no_grad()
    def fuse(self) -> FusedSHSA:
        return FusedSHSA(self)


class FusedSHSA(nn.Module):
    """Inference form of ``SHSA``: GroupNorm affine and the query scale folded into the qkv conv."""

    @torch.no_grad()
    def __init__(self, attn: SHSA):
        super().__init__()
        self.dim, self.qk_dim, self.pdim = attn.dim, attn.qk_dim, attn.pdim
        qkv = attn.qkv.fuse() if isinstance(attn.qkv, Conv2dNorm) else attn.qkv
        self.pre_norm = Standardize.like(attn.pre_norm)
        qkv = fold_norm_affine(attn.pre_norm, qkv)
        qkv.weight[:self.qk_dim].mul_(attn.scale)  # output channels [0, qk_dim) are the queries
        qkv.bias[:self.qk_dim].mul_(attn.scale)
        self.qkv = qkv
        self.proj = attn.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(_single_head_attention(x, self.qkv, self.pre_norm, self.qk_dim, self.pdim))


class BasicBlock(nn.Module):
    """Depthwise-conv residual, optional SHSA residual (``mixer="s"``), FFN residual."""

    def __init__(self, dim: int, qk_dim: int, pdim: int, mixer: str, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.conv = Residual(Conv2dNorm(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0))
        # Early stages ("i") skip attention: at high resolution it costs more than it gives.
        self.mixer = Residual(SHSA(dim, qk_dim, pdim, act_layer)) if mixer == "s" else nn.Identity()
        self.ffn = Residual(FFN(dim, dim * 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.mixer(self.conv(x)))


def _downsample(in_dim: int, out_dim: int, act_layer: type[nn.Module]) -> nn.Sequential:
    """Stage transition: refine at the old width, merge patches (stride 2), refine at the new width."""
    return nn.Sequential(
        Residual(Conv2dNorm(in_dim, in_dim, 3, 1, 1, groups=in_dim)),
        Residual(FFN(in_dim, in_dim * 2, act_layer)),
        PatchMerging(in_dim, out_dim, act_layer),
        Residual(Conv2dNorm(out_dim, out_dim, 3, 1, 1, groups=out_dim)),
        Residual(FFN(out_dim, out_dim * 2, act_layer)),
    )


class SHViTStage(nn.Module):
    """Optional downsample into this stage's width, then ``depth`` basic blocks."""

    def __init__(self, in_dim: int, dim: int, qk_dim: int, pdim: int, mixer: str, depth: int,
                 downsample: bool, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.downsample = _downsample(in_dim, dim, act_layer) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[BasicBlock(dim, qk_dim, pdim, mixer, act_layer) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

class SHViT(nn.Module):
    """SHViT classifier (arXiv:2401.16456)."""

    def __init__(self, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: tuple[int, ...] = (128, 256, 384), partial_dim: tuple[int, ...] = (32, 64, 96),
                 qk_dim: tuple[int, ...] = (16, 16, 16), depth: tuple[int, ...] = (1, 2, 3),
                 types: tuple[str, ...] = ("s", "s", "s"), drop_rate: float = 0.0,
                 act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        c = embed_dim[0]
        self.patch_embed = nn.Sequential(
            Conv2dNorm(in_chans, c // 8, 3, 2, 1), act_layer(),
            Conv2dNorm(c // 8, c // 4, 3, 2, 1), act_layer(),
            Conv2dNorm(c // 4, c // 2, 3, 2, 1), act_layer(),
            Conv2dNorm(c // 2, c, 3, 2, 1),
        )  # (B, C0, H/16, W/16)
        self.stages = nn.Sequential(*[
            SHViTStage(embed_dim[max(i - 1, 0)], embed_dim[i], qk_dim[i], partial_dim[i], types[i], depth[i],
                       downsample=i > 0, act_layer=act_layer)
            for i in range(len(embed_dim))])
        self.num_features = embed_dim[-1]
        self.head = NormLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.patch_embed(x))  # (B, C, H/64, W/64), rounded up

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # keepdim mean over (2, 3) is the pooling form XNNPACK lowers.
        x = x.mean((2, 3), keepdim=True).flatten(1)  # (B, C)
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def residual_streams(self) -> list[dict]:
        """Where the un-normalised residual stream runs, for ``edgevit.quantization.equalize``: module names of
        the deploy form (in the training form they name ``Conv2dNorm``/``Residual`` modules and the step
        leaves the model alone).

        The stream is cut into segments at every depthwise residual conv: with its skip folded in (deploy
        form) it reads one segment and writes the next, so each segment gets its own channel scales for free.
        A segment is written by the stem's last conv, the patch merging's projection or a depthwise residual
        conv, and by the residual branches' last convs on it (FFN ``pw2``, attention ``proj``); it is read by
        the FFNs' ``pw1``, the attention's projection (the channels past ``pdim``, which bypass attention),
        the next depthwise residual conv or patch merging ``conv1``, and the head after the mean. The
        attention's GroupNorm(1) reads the first ``pdim`` channels together: they share one scale (the norm
        is invariant to it up to its eps).
        """
        segments: list[dict] = []

        def start(producer: str, tap: str | None = None) -> dict:
            segment = {"name": producer, "producers": [producer], "consumers": [], "taps": [tap or producer],
                       "tied": []}
            segments.append(segment)
            return segment

        def residual_dw(current: dict, name: str) -> dict:
            current["consumers"].append((name, 0))
            return start(name)

        def ffn(current: dict, name: str) -> None:
            current["consumers"].append((f"{name}.m.pw1", 0))
            current["producers"].append(f"{name}.m.pw2")
            current["taps"].append(name)

        current = start(f"patch_embed.{len(self.patch_embed) - 1}")
        for i, stage in enumerate(self.stages):
            p = f"stages.{i}"
            if not isinstance(stage.downsample, nn.Identity):
                current = residual_dw(current, f"{p}.downsample.0")
                ffn(current, f"{p}.downsample.1")
                current["consumers"].append((f"{p}.downsample.2.conv1", 0))
                current = start(f"{p}.downsample.2.conv3", tap=f"{p}.downsample.2")
                current = residual_dw(current, f"{p}.downsample.3")
                ffn(current, f"{p}.downsample.4")
            for j, block in enumerate(stage.blocks):
                b = f"{p}.blocks.{j}"
                current = residual_dw(current, f"{b}.conv")
                if not isinstance(block.mixer, nn.Identity):
                    pdim = block.mixer.m.pdim
                    current["consumers"].append((f"{b}.mixer.m.proj.1", pdim))
                    current["producers"].append(f"{b}.mixer.m.proj.1")
                    current["taps"].append(f"{b}.mixer")
                    current["tied"].append((0, pdim))
                ffn(current, f"{b}.ffn")
        if not isinstance(self.head, nn.Linear):  # training form, or no head (the features are the output)
            segments.pop()
        else:
            current["consumers"].append(("head", 0))
        return segments


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

def _original_key(key: str) -> str:
    """Original repo layout -> timm layout.

    The original keeps each stage as one flat ``blocks{1,2,3}`` Sequential whose first three entries
    (stages 2 and 3) form the downsample: [dw conv, FFN], PatchMerging, [dw conv, FFN].
    """
    m = re.match(r"^blocks(\d)\.(\d+)\.(.*)$", key)
    if m is None:
        return key
    stage, idx, rest = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
    if stage == 0:
        return f"stages.0.blocks.{idx}.{rest}"
    if idx >= 3:
        return f"stages.{stage}.blocks.{idx - 3}.{rest}"
    if idx == 1:
        return f"stages.{stage}.downsample.2.{rest}"
    sub, tail = rest.split(".", 1)  # entries 0 and 2 are [dw conv, FFN] pairs
    return f"stages.{stage}.downsample.{int(sub) + (0 if idx == 0 else 3)}.{tail}"


@torch.no_grad()
def _merge_distillation_head(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold ``head_dist`` into ``head`` (eval-exact).

    A DeiT-style distilled model predicts the mean of its two BN+linear heads at eval time. That mean
    is one affine map, stored here as ``head.l`` behind an identity BatchNorm.
    """
    def affine(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        bn = nn.BatchNorm1d(sd[f"{prefix}.bn.weight"].shape[0])
        bn.load_state_dict({k[len(prefix) + 4:]: v for k, v in sd.items() if k.startswith(f"{prefix}.bn.")})
        lin = nn.Linear(sd[f"{prefix}.l.weight"].shape[1], sd[f"{prefix}.l.weight"].shape[0])
        lin.load_state_dict({"weight": sd[f"{prefix}.l.weight"], "bias": sd[f"{prefix}.l.bias"]})
        fused = fuse_bn_linear(bn.eval(), lin)
        return fused.weight, fused.bias

    (w1, b1), (w2, b2) = affine("head"), affine("head_dist")
    out = {k: v for k, v in sd.items() if not k.startswith("head_dist.")}
    eps = 1e-5  # BatchNorm1d default: var = 1 - eps makes the BN an exact identity
    n = w1.shape[1]
    out.update({"head.bn.weight": torch.ones(n), "head.bn.bias": torch.zeros(n),
                "head.bn.running_mean": torch.zeros(n), "head.bn.running_var": torch.full((n,), 1.0 - eps),
                "head.l.weight": (w1 + w2) / 2, "head.l.bias": (b1 + b2) / 2})
    return out


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: SHViT) -> dict[str, torch.Tensor]:
    """Make an SHViT checkpoint loadable into ``model``.

    Accepts timm-layout and original-repo-layout state dicts (optionally under ``"model"``). A
    distillation head (``head_dist``) from the original training recipe is merged into ``head``.
    """
    del model  # the layout alone decides the mapping
    state_dict = state_dict.get("model", state_dict)
    if any(k.startswith("blocks1.") for k in state_dict):
        state_dict = {_original_key(k): v for k, v in state_dict.items()}
    if any(k.startswith("head_dist.") for k in state_dict):
        state_dict = _merge_distillation_head(state_dict)
    return state_dict


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------

# The conv->attention bridge: the first partial-channel single-head attention (deploy form).
_FAMILY = register_family("shvit", bridge_module="FusedSHSA", checkpoint_filter=checkpoint_filter_fn,
                          paper="arXiv:2401.16456")

# The net downsamples by 64, but the native 224 already rounds up at the last stage, so any multiple
# of 32 behaves like the trained resolution.
_CFG = dict(family=_FAMILY.name, paper=_FAMILY.paper, crop_pct=0.875, interpolation="bicubic",
            fixed_input_size=False, stride=32, img_size_kwarg="img_size")


def _create(arch: dict, img_size: int | tuple[int, int] | None = None, **kwargs) -> SHViT:
    # No position tables: nothing depends on the input size. ``img_size`` is accepted for the zoo's
    # uniform builder interface and unused.
    del img_size
    return SHViT(**{**arch, **kwargs})


@register_model("shvit_s1", input_size=(3, 224, 224), **_CFG)
def shvit_s1(**kwargs) -> SHViT:
    """SHViT-S1."""
    return _create(dict(embed_dim=(128, 224, 320), depth=(2, 4, 5), partial_dim=(32, 48, 68),
                        types=("i", "s", "s")), **kwargs)


@register_model("shvit_s2", input_size=(3, 224, 224), **_CFG)
def shvit_s2(**kwargs) -> SHViT:
    """SHViT-S2."""
    return _create(dict(embed_dim=(128, 308, 448), depth=(2, 4, 5), partial_dim=(32, 66, 96),
                        types=("i", "s", "s")), **kwargs)


@register_model("shvit_s3", input_size=(3, 224, 224), **_CFG)
def shvit_s3(**kwargs) -> SHViT:
    """SHViT-S3."""
    return _create(dict(embed_dim=(192, 352, 448), depth=(3, 5, 5), partial_dim=(48, 75, 96),
                        types=("i", "s", "s")), **kwargs)


@register_model("shvit_s4", input_size=(3, 256, 256), **_CFG)
def shvit_s4(**kwargs) -> SHViT:
    """SHViT-S4 (trained and evaluated at 256)."""
    return _create(dict(embed_dim=(224, 336, 448), depth=(4, 7, 6), partial_dim=(48, 72, 96),
                        types=("i", "s", "s")), **kwargs)
