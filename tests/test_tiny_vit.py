"""TinyViT-specific checks: original-repo checkpoints, bias-table resampling, the deploy block's operators.

What every family must pass (timm keys and logits at 224/64/100 px, padded windows included; deploy form;
export graph) is in test_model_conformance.py; int8 with padded windows is in test_compile.py."""
from __future__ import annotations

import re
from collections import Counter

import pytest
import torch

from edgevit.models import deploy
from edgevit.models.tiny_vit import FusedTinyVitBlock, TinyVit, TinyVitBlock, checkpoint_filter_fn

pytestmark = pytest.mark.unit


def _tiny(**kwargs) -> TinyVit:
    """A few-thousand-parameter TinyViT with the real stage structure (fast to build and run)."""
    args = dict(embed_dims=(16, 32, 32, 64), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                window_sizes=(7, 7, 14, 7), num_classes=10)
    return TinyVit(**{**args, **kwargs})


def _randomize(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial BN statistics, norm affines and attention biases (fresh ones make folding trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for name, p in model.named_parameters():
            if name.endswith("attention_biases"):
                p.copy_(torch.randn(p.shape, generator=g))


def _to_original_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm layout -> Cream/TinyViT layout (the inverse of what checkpoint_filter_fn must undo)."""
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"^stages\.(\d+)\.downsample\.(.*)$", key)
        if m:  # the original ends stage i-1 with the downsample into stage i
            key = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        key = re.sub(r"^stages\.(\d+)\.blocks\.", r"layers.\1.blocks.", key)
        key = key.replace("patch_embed.conv1.", "patch_embed.seq.0.")
        key = key.replace("patch_embed.conv2.", "patch_embed.seq.2.")
        key = re.sub(r"\.conv\.weight$", ".c.weight", key)
        key = key.replace("head.norm.", "norm_head.").replace("head.fc.", "head.")
        out[key] = value
    return out


def test_original_checkpoint_layout_converts():
    torch.manual_seed(0)
    src = _tiny().eval()
    _randomize(src)
    original = _to_original_layout(src.state_dict())
    assert any(k.startswith("layers.0.downsample.") for k in original)
    # Old checkpoints also carry the derived index buffers; they must be dropped.
    original["layers.1.blocks.0.attn.attention_bias_idxs"] = torch.zeros(49, 49, dtype=torch.long)
    dst = _tiny().eval()
    dst.load_state_dict(checkpoint_filter_fn({"model": original}, dst), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_timm_layout_passes_through_and_resamples_bias_tables():
    torch.manual_seed(0)
    src = _tiny()
    dst = _tiny(window_sizes=(7, 5, 10, 5))
    sd = src.state_dict()
    with torch.no_grad():
        sd["stages.1.blocks.0.attn.attention_biases"].fill_(0.25)
    out = checkpoint_filter_fn(sd, dst)
    dst.load_state_dict(out, strict=True)
    assert out["stages.2.blocks.0.attn.attention_biases"].shape == (2, 100)
    # Resampling a constant table keeps it constant.
    torch.testing.assert_close(out["stages.1.blocks.0.attn.attention_biases"], torch.full((2, 25), 0.25))
    assert out["patch_embed.conv1.conv.weight"] is sd["patch_embed.conv1.conv.weight"]


def _aten_ops(module: torch.nn.Module, x: torch.Tensor) -> Counter:
    graph = torch.export.export(module, (x,)).graph
    return Counter(str(n.target).removeprefix("aten.") for n in graph.nodes if n.op == "call_function")


@pytest.mark.parametrize("size,batch", [(8, 2), (6, 2), (4, 1)])  # 2x2 windows; 6x6 padded to them; one window
def test_deploy_block_moves_windows_and_heads_in_one_transpose_each_way(size, batch):
    """The deploy block is the training block's maths with fewer operators: window partition + head split is
    one permute of the qkv map (head merge + window reverse one more), the conv two, k one; the norms'
    row means are linears (no 4D mean, which XNNPACK wraps in layout transposes)."""
    torch.manual_seed(0)
    block = TinyVitBlock(32, 2, window_size=4).eval()
    _randomize(block)
    fused = deploy(block)
    assert isinstance(fused, FusedTinyVitBlock)
    x = torch.randn(batch, size, size, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), block(x), rtol=1e-5, atol=1e-5)
    ops, before = _aten_ops(fused, x), _aten_ops(block, x)

    def layout(c: Counter) -> int:
        return sum(c[op] for op in ("permute.default", "transpose.int", "reshape.default", "view.default"))

    # one window: no partition to fold, the same count of layout ops (their gain is in the norms' means)
    fewer = layout(ops) <= layout(before) if size == 4 else layout(ops) < layout(before)
    assert ops["permute.default"] + ops["transpose.int"] == 5 and fewer, (ops, before)
    assert ops["linear.default"] == 8 and ops["mean.dim"] == 0, ops  # 2 norms x 2 means, qkv, proj, fc1, fc2
