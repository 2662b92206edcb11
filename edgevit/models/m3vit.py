"""M3ViT: a multi-task Mixture-of-Experts ViT (the model Edge-MoE accelerates on an FPGA).

Papers: Hanxue Liang et al., "M3ViT: Mixture-of-Experts Vision Transformer for Efficient Multi-task
Learning with Model-Accelerator Co-design", NeurIPS 2022, arXiv:2210.14793; Rishov Sarkar et al.,
"Edge-MoE: Memory-Efficient Multi-Task Vision Transformer Architecture with Task-level Sparsity via
Mixture-of-Experts", ICCAD 2023, arXiv:2305.18691 (code: https://github.com/sharc-lab/Edge-MoE).

Architecture: a 16x16 patch embedding plus a class token and learned position embeddings, then a plain
pre-norm ViT whose odd blocks replace the MLP with a Mixture-of-Experts layer: one gate per task scores the
experts for every token, the top-k experts run on that token and their outputs are summed with the softmax
of the selected scores as weights. Only the experts a task needs do any work (task-level sparsity). Each
task has a small per-patch head on the final features (semantic segmentation logits, depth).

The task is a run-time choice (``model.task``), not a rebuild: the FPGA accelerator reads it from a
register. The deploy form (``deploy``) makes routing static-shape for phones: every expert runs densely
and is weighted by a gate vector that is zero outside the top-k (``torch.topk`` is not delegated), with
LayerNorm reduced to a standardisation whose affine folds into the linear layers after it. The top-k
selection there (:class:`StaticTopKGate`) is written with the elementwise ops XNNPACK delegates (sub,
relu, ceil, minimum, 4-D mean, softmax, div) and none that an int8 quantizer turns into a wide-range
int8 tensor, so one model lowers to one XNNPACK delegate on ExecuTorch and LiteRT.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_family, register_model
from .layers.norm import Standardize, fold_norm_affine

__all__ = ["M3ViT", "MoE", "DenseMoE", "StaticTopKGate", "TaskHead", "m3vit_micro", "m3vit_tiny", "m3vit_small",
           "M3VIT_TASKS"]

# (name, output channels per patch): Edge-MoE's two Cityscapes tasks at 128x256.
M3VIT_TASKS: tuple[tuple[str, int], ...] = (("semseg", 19), ("depth", 1))


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head self-attention over all tokens (qkv in one linear, as timm's ViT)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        # (B, N, 3C) -> 3 x (B*heads, N, head_dim): 3-D bmm, the form XNNPACK delegates whole.
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = (t.reshape(B * self.num_heads, N, self.head_dim) for t in (qkv[0], qkv[1], qkv[2]))
        attn = torch.softmax(torch.bmm(q * self.scale, k.transpose(1, 2)), dim=-1)
        out = torch.bmm(attn, v).reshape(B, self.num_heads, N, self.head_dim).transpose(1, 2).reshape(B, N, C)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def top_k_gate(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Dense gate weights: softmax over each token's ``k`` largest logits, zero elsewhere (ties: lower index).

    Written with max / compare / where only, so it exports at a static shape and lowers without ``topk``;
    the FPGA kernel and the fixed-point reference select the same experts with the same tie rule.
    """
    E = logits.shape[-1]
    index = torch.arange(E, device=logits.device, dtype=logits.dtype)
    remaining = logits
    selected = torch.zeros_like(logits, dtype=torch.bool)
    for _ in range(k):
        best = remaining.amax(dim=-1, keepdim=True)
        # lowest index among the maxima: the one hardware's sequential compare keeps
        first = torch.where(remaining == best, index, torch.full_like(index, E)).amin(dim=-1, keepdim=True)
        pick = index == first
        selected = selected | pick
        remaining = torch.where(pick, torch.full_like(remaining, -torch.inf), remaining)
    top = logits.amax(dim=-1, keepdim=True)
    weights = torch.where(selected, torch.exp(logits - top), torch.zeros_like(logits))
    return weights / weights.sum(dim=-1, keepdim=True)


class MoE(nn.Module):
    """Task-gated Mixture of Experts: ``num_tasks`` gates over ``num_experts`` two-layer GELU experts, top-k.

    Expert weights are stacked (E, in, out) so a checkpoint is one tensor per role, not E modules.
    """

    def __init__(self, dim: int, hidden: int, num_experts: int, top_k: int, num_tasks: int):
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.gates = nn.ModuleList(nn.Linear(dim, num_experts) for _ in range(num_tasks))
        self.fc1_weight = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.fc1_bias = nn.Parameter(torch.zeros(num_experts, hidden))
        self.fc2_weight = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.fc2_bias = nn.Parameter(torch.zeros(num_experts, dim))
        for w in (self.fc1_weight, self.fc2_weight):
            nn.init.trunc_normal_(w, std=0.02)
        self.task = 0

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., E): the selected experts' softmax weights, zero for the others."""
        return top_k_gate(self.gates[self.task](x), self.top_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        tokens = x.reshape(B * N, C)
        gate = self.gate_weights(tokens)                               # (T, E)
        out = torch.zeros_like(tokens)
        for e in range(self.num_experts):                              # only the tokens routed to e
            rows = gate[:, e].nonzero().flatten() if not x.is_meta else self._average_rows(e, tokens.shape[0])
            if rows.numel():
                h = F.gelu(tokens[rows] @ self.fc1_weight[e] + self.fc1_bias[e])
                out.index_add_(0, rows, gate[rows, e, None] * (h @ self.fc2_weight[e] + self.fc2_bias[e]))
        return out.reshape(B, N, C)

    def _average_rows(self, e: int, T: int) -> torch.Tensor:
        """On the meta device there are no values to route on (``edgevit models`` counts MACs there): expert
        ``e`` takes its even share of the ``T * top_k`` routed tokens, so the count is the average routing's."""
        routed = T * self.top_k
        share = routed // self.num_experts + int(e < routed % self.num_experts)
        return torch.arange(share, device="meta")

    def fuse(self) -> DenseMoE:
        return DenseMoE(self)


class StaticTopKGate(nn.Module):
    """:func:`top_k_gate` at a static shape with only ops XNNPACK delegates and no wide-range intermediate.

    Expert ``i`` is selected when fewer than ``k`` experts beat it, where ``j`` beats ``i`` if
    ``l_j > l_i``, or ``l_j == l_i`` and ``j < i`` (the lower index wins, as in :func:`top_k_gate`)::

        rank_i = i + sum_{j > i} [l_j > l_i] - sum_{j < i} [l_j < l_i]

    Every indicator is ``ceil(relu(d))`` of a difference ``d`` masked to one triangle with ``minimum``
    (exactly 0 or 1; ``clamp`` would be LiteRT's RELU_0_TO_1, which its XNNPACK delegate does not take);
    the sum is a 4-D mean (XNNPACK's one reduce); the weights are the softmax
    over all experts with the unselected ones zeroed by ``minimum(p, selected)`` and renormalised by one
    division. Intermediates are 0/1 flags, ranks / E and probabilities: int8 represents them exactly (or
    to 1/255), unlike a -inf mask. Returns ``E * weights`` (the consumer folds the 1/E: one division less).
    """

    def __init__(self, num_experts: int, top_k: int):
        super().__init__()
        E = self.num_experts = num_experts
        self.top_k = top_k
        j, i = torch.meshgrid(torch.arange(E), torch.arange(E), indexing="xy")  # [i, j]: row i, column j
        self.register_buffer("upper", (j > i).float(), persistent=False)     # j > i
        self.register_buffer("lower", (j < i).float(), persistent=False)     # j < i
        # Selected iff (rank_i - i) / E < (k - i) / E; the threshold sits half a step below.
        self.register_buffer("threshold", (top_k - 0.5 - torch.arange(E, dtype=torch.float32)) / E,
                             persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        T, E = logits.shape
        rows, cols = logits.reshape(T, E, 1), logits.reshape(T, 1, E)
        above = torch.minimum(torch.ceil(torch.relu(cols - rows)), self.upper)   # j > i and l_j > l_i
        below = torch.minimum(torch.ceil(torch.relu(rows - cols)), self.lower)   # j < i and l_j < l_i
        rank = (above - below).reshape(T, E, 1, E).mean((2, 3), keepdim=True).reshape(T, E)  # (rank_i - i) / E
        # threshold - rank is in [(k - 0.5) / E - 1, (k - 0.5) / E] (never +-1): its ceil is 1 or 0 (or -0.)
        selected = torch.ceil(self.threshold - rank)                          # 1 for the top k, else 0
        kept = torch.minimum(torch.softmax(logits, dim=-1), selected)
        return kept / kept.reshape(T, 1, 1, E).mean((2, 3), keepdim=True).reshape(T, 1)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, top_k={self.top_k}"


class DenseMoE(nn.Module):
    """Deploy form of :class:`MoE`: every expert runs on every token (static shapes), weighted by the gate.

    Same result as the sparse form (unselected experts get weight 0); k/E of the expert MACs are useful.
    All experts' first layers are one (C -> E*(H+1)) linear, the gate scales each expert's hidden units,
    and all second layers are one (E*(H+1) -> C) linear with no bias::

        out = sum_e g_e (h_e W2_e + b2_e) = (g (x) [h, c]) [W2; B2 / c]

    Unit H+1 of each expert is a constant ``c = gelu(1)`` (zero weights, bias 1) that carries the expert's
    output bias through the same linear, so no reduction over experts and no bias add is left: the experts
    are two GEMMs that int8 quantizes like any linear (a separate ``g @ B2`` add would meet an int8 add of a
    near-constant tensor, which XNNPACK refuses when the biases are all zero).
    """

    def __init__(self, moe: MoE):
        super().__init__()
        E, C, H = moe.fc1_weight.shape
        self.num_experts, self.top_k, self.hidden = E, moe.top_k, H + 1
        self.gate = moe.gates[moe.task]
        self.router = StaticTopKGate(E, moe.top_k)
        w1, b1 = moe.fc1_weight.detach(), moe.fc1_bias.detach()
        w2, b2 = moe.fc2_weight.detach(), moe.fc2_bias.detach()
        one = torch.ones(E, 1, dtype=b1.dtype, device=b1.device)
        constant = F.gelu(one[0])                                                # what the bias unit outputs
        self.fc1 = nn.Linear(C, E * (H + 1)).to(w1)
        self.fc1.weight.data.copy_(torch.cat([w1.permute(0, 2, 1), w1.new_zeros(E, 1, C)], dim=1)
                                   .reshape(E * (H + 1), C))
        self.fc1.bias.data.copy_(torch.cat([b1, one], dim=1).reshape(E * (H + 1)))
        # The router returns E * weights: the 1/E lives here.
        self.fc2 = nn.Linear(E * (H + 1), C, bias=False).to(w2)
        self.fc2.weight.data.copy_(torch.cat([w2, b2[:, None, :] / constant], dim=1).reshape(E * (H + 1), C).t() / E)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        T, E = B * N, self.num_experts
        gate = self.router(self.gate(x).reshape(T, E))                                   # (T, E), E * weights
        h = F.gelu(self.fc1(x)).reshape(T, E, self.hidden) * gate.reshape(T, E, 1)
        return self.fc2(h.reshape(T, E * self.hidden)).reshape(B, N, C)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, moe: dict | None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MoE(dim, **moe) if moe else Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def fuse(self) -> nn.Module:
        return DeployBlock(self)


class DeployAttention(nn.Module):
    """:class:`Attention` with a norm's affine and the ``1/sqrt(d)`` query scale folded into ``qkv``, and q, k, v
    taken by slices (``qkv[0]`` would be a ``select``, which XNNPACK does not delegate)."""

    def __init__(self, attn: Attention, norm: nn.LayerNorm):
        super().__init__()
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        qkv = fold_norm_affine(norm, attn.qkv)
        C = qkv.out_features // 3
        with torch.no_grad():
            qkv.weight[:C] *= attn.scale
            qkv.bias[:C] *= attn.scale
        self.qkv, self.proj = qkv, attn.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        h, d = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(B, N, 3 * h, d).permute(0, 2, 1, 3)              # (B, 3h, N, d)
        q, k, v = (qkv[:, i * h:(i + 1) * h].reshape(B * h, N, d) for i in range(3))
        attn = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)
        out = torch.bmm(attn, v).reshape(B, h, N, d).permute(0, 2, 1, 3).reshape(B, N, C)
        return self.proj(out)


class DeployBlock(nn.Module):
    """Block with both LayerNorms as standardisations whose affines live in the next linear layers."""

    def __init__(self, block: Block):
        super().__init__()
        self.norm1 = Standardize.like(block.norm1)
        self.attn = DeployAttention(block.attn, block.norm1)
        self.norm2 = Standardize.like(block.norm2)
        mlp = block.mlp
        if isinstance(mlp, MoE):  # the walker fuses children first; a block fused on its own still works
            mlp = mlp.fuse()
        if isinstance(mlp, DenseMoE):
            mlp.gate = fold_norm_affine(block.norm2, mlp.gate)
        mlp.fc1 = fold_norm_affine(block.norm2, mlp.fc1)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TaskHead(nn.Module):
    """Per-patch linear prediction, returned as an image-shaped map (B, out, H/16, W/16)."""

    def __init__(self, dim: int, out_chs: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        self.proj = nn.Linear(dim, out_chs)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        B = patches.shape[0]
        return self.proj(patches).transpose(1, 2).reshape(B, -1, *self.grid)


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

class M3ViT(nn.Module):
    """Multi-task MoE ViT. ``forward`` returns the current task's head output; ``forward_features`` the
    final (normalised) tokens, class token first: (B, 1 + patches, dim)."""

    def __init__(self, img_size: tuple[int, int] = (128, 256), patch_size: int = 16, embed_dim: int = 192,
                 depth: int = 12, num_heads: int = 3, mlp_ratio: float = 4.0, num_experts: int = 16,
                 top_k: int = 2, expert_hidden: int = 384, moe_every: int = 2,
                 tasks: tuple[tuple[str, int], ...] = M3VIT_TASKS, num_classes: int | None = None, task: int | str = 0,
                 in_chans: int = 3):
        super().__init__()
        if isinstance(img_size, int):
            img_size = (img_size, img_size)
        if num_classes is not None:  # the first task's classes (the zoo's num_classes convention)
            tasks = ((tasks[0][0], num_classes), *tasks[1:])
        self.img_size, self.patch_size, self.embed_dim = tuple(img_size), patch_size, embed_dim
        self.grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.tasks = tuple(tasks)
        self.num_classes = tasks[0][1]
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], embed_dim))
        moe = dict(hidden=expert_hidden, num_experts=num_experts, top_k=top_k, num_tasks=len(tasks))
        # Odd blocks are MoE (Edge-MoE: "every other layer"), even blocks a dense MLP.
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, int(embed_dim * mlp_ratio),
                                            moe if i % moe_every == moe_every - 1 else None) for i in range(depth)))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.heads = nn.ModuleList(TaskHead(embed_dim, out, self.grid) for _, out in tasks)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.task = task

    # The task: an index or a name, switched at run time (every gate and the head follow it).
    @property
    def task(self) -> int:
        return self._task

    @task.setter
    def task(self, value: int | str) -> None:
        names = [name for name, _ in self.tasks]
        if isinstance(value, str):
            if value not in names:
                raise ValueError(f"unknown task {value!r}; this model has {', '.join(names)}")
            value = names.index(value)
        if not 0 <= value < len(names):
            raise ValueError(f"task index {value} out of range; this model has {len(names)} tasks ({', '.join(names)})")
        self._task = value
        for m in self.modules():
            if isinstance(m, MoE):
                m.task = value

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        x = self.patch_embed(x).flatten(2).transpose(1, 2)                   # (B, patches, dim)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads[self.task](self.forward_features(x)[:, 1:])

    def fuse(self) -> DeployM3ViT:
        return DeployM3ViT(self)


class DeployM3ViT(nn.Module):
    """Inference form for CPU runtimes, fixed to the task chosen when it was deployed (``model.task``).

    The class token enters as a zero row padded in front of the patches (a constant pad, no ``expand`` over
    the batch), to which the position table adds ``cls_token + pos_embed[0]``; the final LayerNorm is a
    standardisation of the patch tokens with its affine in the head."""

    def __init__(self, model: M3ViT):
        super().__init__()
        self.patch_embed = model.patch_embed
        pos = model.pos_embed.detach().clone()
        pos[:, :1] += model.cls_token.detach()
        self.pos = nn.Parameter(pos, requires_grad=False)                  # (1, 1 + patches, dim)
        self.blocks = model.blocks
        self.norm = Standardize.like(model.norm)
        head = model.heads[model.task]
        self.head = TaskHead(head.proj.in_features, head.proj.out_features, head.grid)
        self.head.proj = fold_norm_affine(model.norm, head.proj)
        self.task_name = model.tasks[model.task][0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)           # (B, patches, dim)
        x = self.blocks(F.pad(patches, (0, 0, 1, 0)) + self.pos)
        return self.head(self.norm(x[:, 1:]))

    def extra_repr(self) -> str:
        return f"task={self.task_name!r}"


def count_active_macs(model: M3ViT, expert_tokens: list[list[int]] | None = None) -> int:
    """MACs per image counting only the experts that run (``expert_tokens[moe_layer][e]`` tokens each; None:
    top_k experts per token, the average). Patch embedding, attention, MLPs, experts and gates; not the head."""
    D, T = model.embed_dim, 1 + model.grid[0] * model.grid[1]
    macs = (T - 1) * model.patch_embed.weight[0].numel() * D
    moe_index = 0
    for block in model.blocks:
        macs += T * (3 * D * D + D * D) + 2 * T * T * D
        mlp = block.mlp
        if isinstance(mlp, MoE):
            H = mlp.fc1_weight.shape[2]
            routed = (sum(expert_tokens[moe_index]) if expert_tokens is not None else T * mlp.top_k)
            macs += T * D * mlp.num_experts + routed * 2 * D * H
            moe_index += 1
        else:
            macs += 2 * T * D * mlp.fc1.out_features
    return macs


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
    """Unwrap training wrappers (``module.`` from DDP, ``backbone.`` from multi-task trainers); every other key
    is passed on as is, so a checkpoint of another model still fails ``load_weights`` with its key lists."""
    del model
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


# The first attention block after the patch embedding is where conv features meet attention (Q-HyViT's bridge).
_FAMILY = register_family("m3vit", bridge_module="DeployBlock", checkpoint_filter=checkpoint_filter_fn,
                          paper="arXiv:2210.14793 (M3ViT); arXiv:2305.18691 (Edge-MoE)")
_CFG = dict(family="m3vit", num_classes=19, fixed_input_size=True, stride=16, crop_pct=1.0,
            interpolation="bilinear", paper="arXiv:2210.14793")


@register_model("m3vit_micro", input_size=(3, 32, 64), **{**_CFG, "paper": "edgevit micro variant (not published)"})
def m3vit_micro(**kwargs) -> M3ViT:
    """9 tokens, dim 32, one dense and one MoE block (4 experts, top-2): a C-simulation in seconds."""
    kwargs = {"img_size": (32, 64), **kwargs}
    return M3ViT(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_experts=4, top_k=2, expert_hidden=32,
                 **kwargs)


@register_model("m3vit_tiny", input_size=(3, 128, 256), **_CFG)
def m3vit_tiny(**kwargs) -> M3ViT:
    """Edge-MoE's configuration: 129 tokens, dim 192, depth 12, 3 heads, MLP 768, odd blocks MoE (16 x 384, top-2)."""
    kwargs = {"img_size": (128, 256), **kwargs}
    return M3ViT(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, num_experts=16, top_k=2, expert_hidden=384,
                 **kwargs)


@register_model("m3vit_small", input_size=(3, 128, 256), **_CFG)
def m3vit_small(**kwargs) -> M3ViT:
    """ViT-S width (dim 384, 6 heads, MLP 1536), odd blocks MoE (16 x 768, top-2)."""
    kwargs = {"img_size": (128, 256), **kwargs}
    return M3ViT(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0, num_experts=16, top_k=2, expert_hidden=768,
                 **kwargs)
