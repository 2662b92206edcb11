"""LeViT-style relative attention biases: one learned scalar per head and per (|dy|, |dx|) offset.

Families that attend over a fixed token grid (EfficientFormer, EfficientFormerV2) learn
``attention_biases`` of shape (heads, H * W), the offset ``(|dy|, |dx|)`` stored at ``|dy| * W + |dx|``.
The training form expands it to (heads, N_q, N_k) by indexing with ``attention_bias_idxs``; the deployed
form holds that expansion as a constant buffer, so exported graphs carry no gather on it.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["attention_bias_index", "AttentionBiasMixin"]


def attention_bias_index(resolution: tuple[int, int], query_stride: int = 1) -> torch.Tensor:
    """(N_q, N_k) long tensor: bias slot of every query/key pair on an ``H x W`` key grid.

    Queries sit on every ``query_stride``-th row and column of the key grid (a strided query, as in a
    downsampling attention); with the default stride of 1 queries and keys share the grid.
    """
    h, w = resolution
    key_y, key_x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")  # (H, W) each
    query_y = key_y[::query_stride, ::query_stride].reshape(-1, 1)  # (N_q, 1)
    query_x = key_x[::query_stride, ::query_stride].reshape(-1, 1)
    dy = (query_y - key_y.reshape(1, -1)).abs()  # (N_q, N_k)
    dx = (query_x - key_x.reshape(1, -1)).abs()
    return dy * w + dx


class AttentionBiasMixin:
    """Bias table handling for an ``nn.Module`` attention class.

    Call ``init_attention_bias`` in ``__init__``, add ``self.attention_bias()`` to the logits, and call
    ``freeze_attention_bias`` from ``fuse()``. No per-device caches: in eval the training form simply
    indexes (export-friendly), the deployed form reads a buffer.
    """

    attention_bias_table: torch.Tensor | None

    def init_attention_bias(self, num_heads: int, num_offsets: int, index: torch.Tensor,
                            persistent_index: bool) -> None:
        """Create ``attention_biases`` (zeros, (heads, num_offsets)) and register ``index`` for it."""
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, num_offsets))
        self.register_buffer("attention_bias_idxs", index, persistent=persistent_index)
        self.register_buffer("attention_bias_table", None, persistent=False)  # set by freeze

    def attention_bias(self) -> torch.Tensor:
        """The additive (heads, N_q, N_k) bias."""
        if self.attention_bias_table is not None:
            return self.attention_bias_table
        return self.attention_biases[:, self.attention_bias_idxs]

    @torch.no_grad()
    def freeze_attention_bias(self) -> None:
        """Replace the learned table and its index by their expansion (a non-persistent buffer)."""
        if self.attention_bias_table is not None:
            return
        table = self.attention_biases[:, self.attention_bias_idxs].detach().clone()
        del self.attention_biases
        del self.attention_bias_idxs
        self.attention_bias_table = table
