"""Bilinear resizing written as two constant matrix products (the deploy form of ``F.interpolate``).

Bilinear interpolation is separable and linear: ``resize(x) = A_h @ x @ A_w^T`` with one fixed
(out, in) matrix per axis whose rows hold the two interpolation weights. Written that way the deployed
graph has two ``linear`` ops with constant weights (XNNPACK fully-connected, TFLite FULLY_CONNECTED)
instead of ``upsample_bilinear2d``, which decomposes into index gathers XNNPACK does not take. The
weights follow PyTorch's source-index rule (``area_pixel_compute_source_index``), so both forms agree
to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bilinear_matrix", "bilinear_resize"]


def bilinear_matrix(size_in: int, size_out: int, align_corners: bool) -> list[list[float]]:
    """(size_out, size_in) interpolation weights of ``F.interpolate(mode="bilinear")`` along one axis."""
    if align_corners:
        scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    else:
        scale = size_in / size_out
    rows = []
    for dst in range(size_out):
        src = scale * dst if align_corners else max(scale * (dst + 0.5) - 0.5, 0.0)
        i0 = min(int(src), size_in - 1)
        i1 = i0 + 1 if i0 < size_in - 1 else i0
        frac = src - i0
        row = [0.0] * size_in
        row[i0] += 1.0 - frac
        row[i1] += frac
        rows.append(row)
    return rows


def bilinear_resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=...)`` on (B, C, H, W) as two linears.

    The matrices are built from the static shapes, so an exported graph holds them as constants.
    """
    h_in, w_in = x.shape[-2:]
    h_out, w_out = size
    if (h_in, w_in) == (h_out, w_out):
        return x
    a_w = torch.tensor(bilinear_matrix(w_in, w_out, align_corners), dtype=x.dtype, device=x.device)
    a_h = torch.tensor(bilinear_matrix(h_in, h_out, align_corners), dtype=x.dtype, device=x.device)
    x = F.linear(x, a_w)  # (B, C, H_in, W_out)
    return F.linear(x.transpose(2, 3), a_h).transpose(2, 3)  # (B, C, H_out, W_out)
