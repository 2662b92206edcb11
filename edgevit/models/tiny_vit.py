"""TinyViT.

Paper: Kan Wu et al., "TinyViT: Fast Pretraining Distillation for Small Vision Transformers",
ECCV 2022, arXiv:2207.10666. Original code: https://github.com/microsoft/Cream/tree/main/TinyViT

Architecture: a stride-4 conv stem, one stage of inverted-residual (MBConv) blocks, then three
stages of local-window attention blocks, each opened by a conv patch-merging downsample. Every
attention block is ``x + attn(windows(x))``, a depthwise 3x3 conv, then ``x + mlp(x)``. Attention
uses a learned bias per head and per |dy|, |dx| offset inside the window (LeViT style). The head is
global average pool -> LayerNorm -> linear.

State-dict keys and eval numerics follow timm 1.0.31 (``timm.models.tiny_vit``) so its checkpoints
load unchanged; ``checkpoint_filter_fn`` also converts the original repository's layout. The window
size is fixed per stage, so any input resolution works (windows are zero-padded at the borders).
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_family, register_model
from .layers import DropPath, attention_bias_index, fuse_conv_bn
from .layers.norm import Standardize, fold_norm_affine

__all__ = ["TinyVit", "checkpoint_filter_fn", "tiny_vit_5m_224", "tiny_vit_11m_224", "tiny_vit_21m_224"]


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------

class ConvNorm(nn.Module):
    """Bias-free conv followed by BatchNorm (folded into one conv by ``fuse``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        # Zero-init of the last BN in a residual branch starts the block as an identity.
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fuse(self) -> nn.Conv2d:
        return fuse_conv_bn(self.conv, self.bn)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convs: image -> stride-4 feature map."""

    def __init__(self, in_chs: int, out_chs: int, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.conv1 = ConvNorm(in_chs, out_chs // 2, 3, 2, 1)
        self.act = act_layer()
        self.conv2 = ConvNorm(out_chs // 2, out_chs, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise 3x3, 1x1 project, activation after the residual add."""

    def __init__(self, dim: int, expand_ratio: float, act_layer: type[nn.Module] = nn.GELU,
                 drop_path: float = 0.0):
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvNorm(dim, hidden)
        self.act1 = act_layer()
        self.conv2 = ConvNorm(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = act_layer()
        self.conv3 = ConvNorm(hidden, dim, bn_weight_init=0.0)
        self.act3 = act_layer()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        y = self.conv3(y)
        return self.act3(x + self.drop_path(y))


class PatchMerging(nn.Module):
    """Stride-2 downsample between stages: 1x1 conv to the new width, depthwise 3x3/2, 1x1 conv."""

    def __init__(self, dim: int, out_dim: int, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.conv1 = ConvNorm(dim, out_dim)
        self.act1 = act_layer()
        self.conv2 = ConvNorm(out_dim, out_dim, 3, 2, 1, groups=out_dim)
        self.act2 = act_layer()
        self.conv3 = ConvNorm(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        return self.conv3(x)


class ConvStage(nn.Module):
    """First stage: MBConv blocks only (no downsample; the stem already reduced by 4)."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, act_layer: type[nn.Module],
                 drop_path: list[float]):
        super().__init__()
        self.blocks = nn.Sequential(*[MBConv(dim, expand_ratio, act_layer, drop_path[i]) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class NormMlp(nn.Module):
    """Pre-norm MLP on channels-last tokens."""

    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.fc1(self.norm(x))))
        return self.drop2(self.fc2(x))

    def fuse(self) -> NormMlp:
        # The LayerNorm's gamma/beta ride along in fc1; only the standardisation stays.
        if isinstance(self.norm, nn.LayerNorm):
            self.fc1 = fold_norm_affine(self.norm, self.fc1)
            self.norm = Standardize.like(self.norm, gemv=True)
        return self


def _attend(qkv: torch.Tensor, num_heads: int, key_dim: int, val_dim: int, bias: torch.Tensor,
            q_scale: float | None = None) -> torch.Tensor:
    """Multi-head attention from fused projections.

    ``qkv`` is (B, N, heads * (2 * key_dim + val_dim)), channels grouped per head as [q, k, v];
    ``bias`` is (heads, N, N). Returns (B, N, heads * val_dim). Written with slices and bmm (no
    split, 4D matmul or scaled_dot_product_attention) so every op of the exported graph is one that
    XNNPACK takes.
    """
    B, N, _ = qkv.shape
    # Heads folded into the batch: (B*heads, N, 2*kd + vd).
    qkv = qkv.view(B, N, num_heads, -1).transpose(1, 2).reshape(B * num_heads, N, -1)
    q = qkv[:, :, :key_dim]
    k = qkv[:, :, key_dim:2 * key_dim]
    v = qkv[:, :, 2 * key_dim:]
    if q_scale is not None:
        q = q * q_scale
    attn = torch.bmm(q, k.transpose(1, 2)).view(B, num_heads, N, N) + bias  # (B, heads, N, N)
    attn = attn.softmax(dim=-1).view(B * num_heads, N, N)
    x = torch.bmm(attn, v).view(B, num_heads, N, val_dim)  # (B, heads, N, vd)
    return x.transpose(1, 2).reshape(B, N, num_heads * val_dim)


class Attention(nn.Module):
    """Multi-head self-attention inside one window, with a learned per-offset bias (training form)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float = 1.0,
                 resolution: tuple[int, int] = (7, 7)):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.out_dim = self.val_dim * num_heads
        self.scale = key_dim ** -0.5
        self.resolution = resolution

        self.norm = nn.LayerNorm(dim)
        # Output channels are grouped per head as [q (key_dim), k (key_dim), v (val_dim)].
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Linear(self.out_dim, dim)

        # One learned scalar per head and per window offset (|dy|, |dx|), stored at |dy| * W + |dx|.
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution[0] * resolution[1]))
        # Derived from `resolution`, so not saved: checkpoints may come from another window size.
        self.register_buffer("attention_bias_idxs", attention_bias_index(resolution), persistent=False)

    def bias_table(self) -> torch.Tensor:
        """(heads, N, N) bias expanded from the per-offset table."""
        return self.attention_biases[:, self.attention_bias_idxs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, N, C)
        qkv = self.qkv(self.norm(x))
        x = _attend(qkv, self.num_heads, self.key_dim, self.val_dim, self.bias_table(), self.scale)
        return self.proj(x)

    @torch.no_grad()
    def fuse(self) -> FusedAttention:
        return FusedAttention(self)


class FusedAttention(nn.Module):
    """Inference form of ``Attention``.

    The LayerNorm affine and the 1/sqrt(d) query scale live in ``qkv``; the bias table is expanded
    once into a plain (heads, N, N) buffer, so the exported graph has no gather.
    """

    @torch.no_grad()
    def __init__(self, attn: Attention):
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = attn.num_heads, attn.key_dim, attn.val_dim
        self.out_dim = attn.out_dim
        self.norm = Standardize.like(attn.norm, gemv=True)
        qkv = fold_norm_affine(attn.norm, attn.qkv)
        # Scale the query rows of each head's [q, k, v] group.
        row_scale = torch.ones(self.num_heads, 2 * self.key_dim + self.val_dim, dtype=qkv.weight.dtype,
                               device=qkv.weight.device)
        row_scale[:, :self.key_dim] = attn.scale
        row_scale = row_scale.flatten()
        qkv.weight.mul_(row_scale[:, None])
        qkv.bias.mul_(row_scale)
        self.qkv = qkv
        self.proj = attn.proj
        self.register_buffer("attention_bias", attn.bias_table().detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, N, C)
        qkv = self.qkv(self.norm(x))
        return self.proj(_attend(qkv, self.num_heads, self.key_dim, self.val_dim, self.attention_bias))


class TinyVitBlock(nn.Module):
    """Window attention + depthwise conv + MLP on a channels-last (B, H, W, C) map."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, mlp_ratio: float = 4.0,
                 drop: float = 0.0, drop_path: float = 0.0, local_conv_size: int = 3,
                 act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.window_size = window_size
        self.attn = Attention(dim, dim // num_heads, num_heads, attn_ratio=1.0,
                              resolution=(window_size, window_size))
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = NormMlp(dim, int(dim * mlp_ratio), act_layer, drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.local_conv = ConvNorm(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        ws = self.window_size
        # Static Python ints at a fixed input shape: export sees a fixed pad, no branching on data.
        pad_b, pad_r = -H % ws, -W % ws
        if pad_b or pad_r:
            # Zero tokens fill the border windows and take part as keys, as in the reference model.
            # int8: the XNNPACK quantizer gives this pad its input's qparams (backends/executorch/quantizer.py).
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        nh, nw = Hp // ws, Wp // ws
        if nh == 1 and nw == 1:  # one window: no partition reshuffle needed
            x = self.attn(x.reshape(B, ws * ws, C)).view(B, Hp, Wp, C)  # via (B, ws*ws, C)
        else:
            # Partition with rank <= 5 tensors (batch and window-row merged).
            x = x.reshape(B * nh, ws, nw, ws, C).transpose(1, 2)  # (B*nh, nw, ws, ws, C)
            x = self.attn(x.reshape(B * nh * nw, ws * ws, C))  # (B*nh*nw, ws*ws, C)
            x = x.view(B * nh, nw, ws, ws, C).transpose(1, 2).reshape(B, Hp, Wp, C)
        if pad_b or pad_r:
            x = x[:, :H, :W]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self._window_attention(x))  # (B, H, W, C)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # conv runs channels-first
        return x + self.drop_path2(self.mlp(x))

    @torch.no_grad()
    def fuse(self) -> FusedTinyVitBlock:
        return FusedTinyVitBlock(self)


def _to_window_heads(qkv: torch.Tensor, nh: int, nw: int, ws: int, heads: int) -> torch.Tensor:
    """(B, nh*ws, nw*ws, heads*D) -> (B*nh*nw*heads, ws*ws, D): window partition and head split as one
    transpose (rank <= 6, XNNPACK's limit: batch and window row merged)."""
    B, D = qkv.shape[0], qkv.shape[-1] // heads
    if nh == nw == 1:  # one window: only the heads move
        return qkv.reshape(B, ws * ws, heads, D).transpose(1, 2).reshape(B * heads, ws * ws, D)
    x = qkv.reshape(B * nh, ws, nw, ws, heads, D).permute(0, 2, 4, 1, 3, 5)  # (B*nh, nw, heads, ws, ws, D)
    return x.reshape(B * nh * nw * heads, ws * ws, D)


def _from_window_heads(x: torch.Tensor, batch: int, nh: int, nw: int, ws: int, heads: int) -> torch.Tensor:
    """Inverse of ``_to_window_heads``: (B*nh*nw*heads, ws*ws, D) -> (B, nh*ws, nw*ws, heads*D)."""
    D = x.shape[-1]
    if nh == nw == 1:
        return x.view(batch, heads, ws * ws, D).transpose(1, 2).reshape(batch, ws, ws, heads * D)
    x = x.view(batch * nh, nw, heads, ws, ws, D).permute(0, 3, 1, 4, 2, 5)  # (B*nh, ws, nw, ws, heads, D)
    return x.reshape(batch, nh * ws, nw * ws, heads * D)


class FusedTinyVitBlock(nn.Module):
    """Inference form of ``TinyVitBlock``: the same maths in fewer XNNPACK operators.

    - Norm and qkv run on the (padded) map itself (they are per token), so the window partition and the
      head split are one transpose of the qkv map, and the head merge and window reverse one more
      (instead of a reshape+transpose pair each, twice, around the attention).
    - One window (the map is the window: ``stages.2`` and ``stages.3`` at 224): the heads move without a
      partition.
    - After the depthwise conv the map is reshaped to tokens once, so both residual adds see the layout
      the linears use (otherwise XNNPACK's layout pass transposes the MLP's output and the sum back).
    - The norms' row means are linears (``Standardize.like(..., gemv=True)``), not 4D means.
    - The first block of a stage (``stage_entry``, set by ``TinyVitStage.fuse``) opens with a reshape of its
      input to its own shape: the stage's permute of the downsample conv's output then ends in a view, so
      XNNPACK's layout pass converts the tokens to their (B, H, W, C) buffer there instead of carrying the
      conv's NHWC tag into the residual add (which cost a transpose of the attention output and one before
      the local conv); edgevit's ``CancelLayoutTransposesPass`` then drops the permute pair into the view.
    Drop paths are identities at inference and are not kept.
    """

    @torch.no_grad()
    def __init__(self, block: TinyVitBlock):
        super().__init__()
        attn = block.attn if isinstance(block.attn, FusedAttention) else block.attn.fuse()
        self.window_size = block.window_size
        self.attn = attn
        self.local_conv = block.local_conv.fuse() if isinstance(block.local_conv, ConvNorm) else block.local_conv
        self.mlp = block.mlp.fuse()
        self.stage_entry = False

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        ws, attn = self.window_size, self.attn
        heads, kd = attn.num_heads, attn.key_dim
        pad_b, pad_r = -H % ws, -W % ws
        if pad_b or pad_r:  # zero tokens, normalised and projected like the reference's padded windows
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        nh, nw = (H + pad_b) // ws, (W + pad_r) // ws
        qkv = _to_window_heads(attn.qkv(attn.norm(x)), nh, nw, ws, heads)  # (windows*heads, N, 2kd + vd)
        q, k, v = qkv[:, :, :kd], qkv[:, :, kd:2 * kd], qkv[:, :, 2 * kd:]
        scores = torch.bmm(q, k.transpose(1, 2))  # (windows*heads, N, N)
        # (no batch-1 shortcut: a graph traced at one image must still take a batch, e.g. QONNX's dynamic copy)
        windows, n = B * nh * nw, ws * ws
        scores = (scores.view(windows, heads, n, n) + attn.attention_bias).softmax(dim=-1)
        scores = scores.view(windows * heads, n, n)
        x = _from_window_heads(torch.bmm(scores, v), B, nh, nw, ws, heads)  # (B, Hp, Wp, heads*vd)
        if pad_b or pad_r:
            x = x[:, :H, :W]
        return attn.proj(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, C = x.shape
        if self.stage_entry:
            x = x.reshape(B, H, W, C)  # a view op the layout pass stops at (see class docstring)
        x = x + self._window_attention(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(B, H * W, C)
        return (x + self.mlp(x)).view(B, H, W, C)


class TinyVitStage(nn.Module):
    """PatchMerging downsample, then attention blocks (channels-last inside, NCHW at the boundary)."""

    def __init__(self, dim: int, out_dim: int, depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, drop: float, drop_path: list[float], local_conv_size: int,
                 act_layer: type[nn.Module]):
        super().__init__()
        self.downsample = PatchMerging(dim, out_dim, act_layer)
        self.blocks = nn.Sequential(*[
            TinyVitBlock(out_dim, num_heads, window_size, mlp_ratio, drop, drop_path[i], local_conv_size, act_layer)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        x = self.blocks(x.permute(0, 2, 3, 1))  # (B, H, W, C)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)

    def fuse(self) -> TinyVitStage:
        if len(self.blocks) and isinstance(self.blocks[0], FusedTinyVitBlock):
            self.blocks[0].stage_entry = True
        return self


class NormClassifierHead(nn.Module):
    """Global average pool -> LayerNorm -> dropout -> linear."""

    def __init__(self, dim: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # keepdim mean over (2, 3) is the pooling form XNNPACK lowers.
        x = self.norm(x.mean((2, 3), keepdim=True).flatten(1))  # (B, C)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def fuse(self) -> NormClassifierHead:
        # Note: after this, ``pre_logits=True`` returns the standardised features without the
        # LayerNorm affine (that now lives in ``fc``); logits are unchanged.
        if isinstance(self.norm, nn.LayerNorm) and isinstance(self.fc, nn.Linear):
            self.fc = fold_norm_affine(self.norm, self.fc)
            self.norm = Standardize.like(self.norm, gemv=True)
        return self


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

class TinyVit(nn.Module):
    """TinyViT classifier (arXiv:2207.10666)."""

    def __init__(self, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: tuple[int, ...] = (96, 192, 384, 768), depths: tuple[int, ...] = (2, 2, 6, 2),
                 num_heads: tuple[int, ...] = (3, 6, 12, 24), window_sizes: tuple[int, ...] = (7, 7, 14, 7),
                 mlp_ratio: float = 4.0, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, mbconv_expand_ratio: float = 4.0, local_conv_size: int = 3,
                 act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.num_classes = num_classes
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], act_layer)

        # Stochastic depth grows linearly from 0 over all blocks of all stages (plain Python, so
        # building on the meta device works).
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(depths[:i]) for i in range(len(depths))]
        stages: list[nn.Module] = [ConvStage(embed_dims[0], depths[0], mbconv_expand_ratio, act_layer,
                                             dpr[:depths[0]])]
        for i in range(1, len(depths)):
            stages.append(TinyVitStage(
                embed_dims[i - 1], embed_dims[i], depths[i], num_heads[i], window_sizes[i], mlp_ratio,
                proj_drop_rate, dpr[starts[i]:starts[i] + depths[i]], local_conv_size, act_layer))
        self.stages = nn.Sequential(*stages)

        self.num_features = embed_dims[-1]
        self.head = NormClassifierHead(self.num_features, num_classes, drop_rate)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.patch_embed(x))  # (B, C, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

# Original repo (Cream/TinyViT) -> timm layout. There, each stage ends with the downsample into the
# next one (``layers.i.downsample``); timm opens stage i+1 with it. Conv2d_BN names its conv ``c``.
_ORIGINAL_RENAMES = [
    (re.compile(r"^patch_embed\.seq\.0\."), "patch_embed.conv1."),
    (re.compile(r"^patch_embed\.seq\.2\."), "patch_embed.conv2."),
    (re.compile(r"^layers\.(\d+)\.downsample\."), lambda m: f"stages.{int(m.group(1)) + 1}.downsample."),
    (re.compile(r"^layers\.(\d+)\.blocks\."), r"stages.\1.blocks."),
    (re.compile(r"\.c\.weight$"), ".conv.weight"),
    (re.compile(r"^norm_head\."), "head.norm."),
    (re.compile(r"^head\.(weight|bias)$"), r"head.fc.\1"),
]


def _resize_offset_bias(table: torch.Tensor, num_offsets: int) -> torch.Tensor:
    """Resample a (heads, S*S) per-offset bias table to (heads, T*T) for another window size."""
    heads, src = table.shape
    s, t = int(round(src ** 0.5)), int(round(num_offsets ** 0.5))
    grid = table.float().reshape(1, heads, s, s)
    grid = F.interpolate(grid, size=(t, t), mode="bicubic", antialias=True)
    return grid.reshape(heads, t * t).to(table.dtype)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: TinyVit) -> dict[str, torch.Tensor]:
    """Make a TinyViT checkpoint loadable into ``model``.

    Accepts timm-layout and original-repo-layout state dicts (optionally under ``"model"``). Drops the
    derived ``attention_bias_idxs`` and resamples bias tables when the window size differs.
    """
    state_dict = state_dict.get("model", state_dict)
    original = any(k.startswith("layers.") or k.startswith("patch_embed.seq.") for k in state_dict)
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if key.endswith("attention_bias_idxs"):
            continue
        if original:
            for pattern, repl in _ORIGINAL_RENAMES:
                key = pattern.sub(repl, key)
        if key.endswith("attention_biases") and key in target and value.shape != target[key].shape:
            value = _resize_offset_bias(value, target[key].shape[1])
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------

# The conv->attention bridge: the patch merging from the conv stage into the attention stages.
# Histogram (MSE) activation ranges: tools/bench_tiny_vit_sizes.py, tiny_vit_5m_224 on Fashion-MNIST weights at
# 64 / 96 / 160 px, verification SQNR min-max 29.4 / 25.4 / 24.0 dB -> 30.1 / 27.3 / 28.3 (500 test images:
# 29.5 / 25.9 / 24.5 -> 29.7 / 28.1 / 27.5, int8 top-1 +0.2 / +0.8 / +0.6); tiny_vit_micro +0.4 dB, top-1 within
# noise (README "The int8 recipe").
_FAMILY = register_family("tiny_vit", bridge_module="PatchMerging", checkpoint_filter=checkpoint_filter_fn,
                          paper="arXiv:2207.10666", observer="histogram")

_CFG = dict(family=_FAMILY.name, paper=_FAMILY.paper, input_size=(3, 224, 224), crop_pct=0.95,
            interpolation="bicubic", fixed_input_size=False, stride=32, img_size_kwarg="img_size")


def _create(arch: dict, img_size: int | tuple[int, int] | None = None, **kwargs) -> TinyVit:
    # Window sizes are fixed per stage and padding covers any map size, so nothing depends on the
    # input resolution: ``img_size`` is accepted for the zoo's uniform builder interface and unused.
    del img_size
    return TinyVit(**{**arch, **kwargs})


@register_model("tiny_vit_5m_224", **_CFG)
def tiny_vit_5m_224(**kwargs) -> TinyVit:
    """TinyViT-5M (ImageNet-1k head by default)."""
    return _create(dict(embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2), num_heads=(2, 4, 5, 10),
                        window_sizes=(7, 7, 14, 7), drop_path_rate=0.0), **kwargs)


@register_model("tiny_vit_11m_224", **_CFG)
def tiny_vit_11m_224(**kwargs) -> TinyVit:
    """TinyViT-11M (ImageNet-1k head by default)."""
    return _create(dict(embed_dims=(64, 128, 256, 448), depths=(2, 2, 6, 2), num_heads=(2, 4, 8, 14),
                        window_sizes=(7, 7, 14, 7), drop_path_rate=0.1), **kwargs)


@register_model("tiny_vit_21m_224", **_CFG)
def tiny_vit_21m_224(**kwargs) -> TinyVit:
    """TinyViT-21M (ImageNet-1k head by default)."""
    return _create(dict(embed_dims=(96, 192, 384, 576), depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 18),
                        window_sizes=(7, 7, 14, 7), drop_path_rate=0.2), **kwargs)
