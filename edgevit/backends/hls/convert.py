"""Torch M3ViT (training form) -> :class:`MoeVitGraph`: the dimensions and float weights the accelerator runs.

The accelerator has one schedule for the whole family (embed, then per block LayerNorm -> qkv -> attention
-> proj + residual -> LayerNorm -> MLP or MoE + residual, then the final LayerNorm and the task's head), so
the graph is those dimensions plus named weight tensors laid out as the kernels read them: every linear
weight as (in, out), the attention scale folded into the query columns, the class token and position
embeddings folded into one per-token bias of the patch embedding (token 0's patch is all zeros).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import EdgevitError

__all__ = ["MoeVitGraph", "BlockShape", "convert_m3vit", "patchify"]


@dataclass(frozen=True)
class BlockShape:
    moe: bool
    hidden: int              # MLP hidden (dense) or expert hidden (MoE)


@dataclass
class MoeVitGraph:
    name: str
    tokens: int              # class token + patches
    dim: int
    heads: int
    patch_dim: int           # 3 * patch * patch
    grid: tuple[int, int]
    patch_size: int
    num_experts: int
    top_k: int
    tasks: tuple[tuple[str, int], ...]
    blocks: list[BlockShape]
    weights: dict[str, np.ndarray] = field(repr=False)   # float64, kernel layout
    ln_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def moe_blocks(self) -> list[int]:
        return [i for i, b in enumerate(self.blocks) if b.moe]

    def task_index(self, task: int | str) -> int:
        names = [n for n, _ in self.tasks]
        if isinstance(task, str):
            if task not in names:
                raise EdgevitError(f"Unknown task '{task}': {self.name} has tasks {', '.join(names)}. "
                                   f"Pick one of those with --task.")
            return names.index(task)
        if not 0 <= task < len(names):
            raise EdgevitError(f"Task index {task} is out of range: {self.name} has {len(names)} tasks "
                               f"({', '.join(names)}).")
        return task


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy().copy()


@torch.no_grad()
def convert_m3vit(model: torch.nn.Module, name: str = "m3vit") -> MoeVitGraph:
    """Read an :class:`edgevit.models.m3vit.M3ViT` (training form) into the accelerator's layout."""
    from ...models.m3vit import M3ViT, MoE  # models is below backends in the layering

    if not isinstance(model, M3ViT):
        raise EdgevitError(f"The hls backend builds the M3ViT MoE accelerator; {name} is a "
                           f"{type(model).__name__}. Pick an m3vit_* model (edgevit zoo --family m3vit).")
    D = model.embed_dim
    heads = model.blocks[0].attn.num_heads
    w: dict[str, np.ndarray] = {}
    conv = model.patch_embed
    w["embed.weight"] = _np(conv.weight.reshape(D, -1).T)                       # (3*p*p, D)
    bias = np.repeat(_np(conv.bias)[None, :], 1 + model.grid[0] * model.grid[1], axis=0)
    bias[0] = 0.0                                                              # the class token has no patch
    bias += _np(model.pos_embed[0])
    bias[0] += _np(model.cls_token[0, 0])
    w["embed.bias"] = bias                                                     # (T, D): per-token bias
    shapes = []
    top_k, num_experts = 0, 0
    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}."
        w[p + "norm1.weight"], w[p + "norm1.bias"] = _np(block.norm1.weight), _np(block.norm1.bias)
        qkv_w, qkv_b = _np(block.attn.qkv.weight.T), _np(block.attn.qkv.bias)
        qkv_w[:, :D] *= block.attn.scale                                       # q * scale, folded
        qkv_b[:D] *= block.attn.scale
        w[p + "qkv.weight"], w[p + "qkv.bias"] = qkv_w, qkv_b
        w[p + "proj.weight"], w[p + "proj.bias"] = _np(block.attn.proj.weight.T), _np(block.attn.proj.bias)
        w[p + "norm2.weight"], w[p + "norm2.bias"] = _np(block.norm2.weight), _np(block.norm2.bias)
        mlp = block.mlp
        if isinstance(mlp, MoE):
            top_k, num_experts = mlp.top_k, mlp.num_experts
            for t, gate in enumerate(mlp.gates):
                w[p + f"gate.{t}.weight"], w[p + f"gate.{t}.bias"] = _np(gate.weight.T), _np(gate.bias)
            for e in range(mlp.num_experts):
                w[p + f"expert.{e}.fc1.weight"] = _np(mlp.fc1_weight[e])
                w[p + f"expert.{e}.fc1.bias"] = _np(mlp.fc1_bias[e])
                w[p + f"expert.{e}.fc2.weight"] = _np(mlp.fc2_weight[e])
                w[p + f"expert.{e}.fc2.bias"] = _np(mlp.fc2_bias[e])
            shapes.append(BlockShape(moe=True, hidden=mlp.fc1_weight.shape[2]))
        else:
            w[p + "fc1.weight"], w[p + "fc1.bias"] = _np(mlp.fc1.weight.T), _np(mlp.fc1.bias)
            w[p + "fc2.weight"], w[p + "fc2.bias"] = _np(mlp.fc2.weight.T), _np(mlp.fc2.bias)
            shapes.append(BlockShape(moe=False, hidden=mlp.fc1.out_features))
    w["norm.weight"], w["norm.bias"] = _np(model.norm.weight), _np(model.norm.bias)
    for t, head in enumerate(model.heads):
        w[f"head.{t}.weight"], w[f"head.{t}.bias"] = _np(head.proj.weight.T), _np(head.proj.bias)
    return MoeVitGraph(name=name, tokens=1 + model.grid[0] * model.grid[1], dim=D, heads=heads,
                       patch_dim=w["embed.weight"].shape[0], grid=model.grid, patch_size=model.patch_size,
                       num_experts=num_experts, top_k=top_k, tasks=model.tasks, blocks=shapes, weights=w,
                       ln_eps=model.norm.eps)


def patchify(images: torch.Tensor | np.ndarray, patch_size: int) -> np.ndarray:
    """(B, 3, H, W) images -> (B, tokens, 3*p*p) rows in the conv weight's (c, kh, kw) order, a zero row first
    for the class token: what the host writes to the accelerator's input buffer."""
    x = torch.as_tensor(images, dtype=torch.float64)
    B, C, H, W = x.shape
    p = patch_size
    rows = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)
    return torch.cat([torch.zeros(B, 1, C * p * p, dtype=x.dtype), rows], dim=1).numpy()
