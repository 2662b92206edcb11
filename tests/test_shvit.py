"""SHViT-specific checks: original-repo checkpoints (incl. distillation head), the depthwise-residual fold.

What every family must pass (timm keys and logits at 224/64/100 px, deploy form, export graph) is in
test_model_conformance.py."""
from __future__ import annotations

import re

import pytest
import torch

from edgevit.models import deploy
from edgevit.models.shvit import SHViT, checkpoint_filter_fn

pytestmark = pytest.mark.unit


def _tiny(**kwargs) -> SHViT:
    """A small SHViT with the real stage structure (attention in stages 2 and 3)."""
    args = dict(embed_dim=(32, 48, 64), partial_dim=(8, 12, 16), qk_dim=(8, 8, 8), depth=(1, 2, 1),
                types=("i", "s", "s"), num_classes=10)
    return SHViT(**{**args, **kwargs})


def _randomize(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial BN statistics and norm affines (fresh ones make folding trivially exact)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def _to_original_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm layout -> ysj9909/SHViT layout: one flat ``blocks{1,2,3}`` Sequential per stage."""
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"^stages\.(\d+)\.(downsample|blocks)\.(\d+)\.(.*)$", key)
        if m:
            stage, part, idx, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            if part == "blocks":
                key = f"blocks{stage + 1}.{idx + (3 if stage else 0)}.{rest}"
            else:  # downsample entries 0..4 -> [0.0, 0.1], 1, [2.0, 2.1]
                where = {0: "0.0", 1: "0.1", 2: "1", 3: "2.0", 4: "2.1"}[idx]
                key = f"blocks{stage + 1}.{where}.{rest}"
        out[key] = value
    return out


def test_original_checkpoint_layout_converts():
    torch.manual_seed(0)
    src = _tiny().eval()
    _randomize(src)
    original = _to_original_layout(src.state_dict())
    assert "blocks2.1.se.fc1.weight" in original and "blocks2.3.mixer.m.qkv.c.weight" in original
    dst = _tiny().eval()
    dst.load_state_dict(checkpoint_filter_fn({"model": original}, dst), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_distillation_head_is_merged_exactly():
    torch.manual_seed(0)
    src = _tiny().eval()
    dist = _tiny().eval()  # supplies a second, different BN + linear head
    _randomize(src, seed=1)
    _randomize(dist, seed=2)
    original = _to_original_layout(src.state_dict())
    original.update({k.replace("head.", "head_dist.", 1): v for k, v in dist.state_dict().items()
                     if k.startswith("head.")})
    dst = _tiny().eval()
    dst.load_state_dict(checkpoint_filter_fn(original, dst), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = src.forward_head(src.forward_features(x), pre_logits=True)
        expected = (src.head(pooled) + dist.head(pooled)) / 2
        torch.testing.assert_close(dst(x), expected, rtol=1e-5, atol=1e-5)


def test_depthwise_residuals_fold_into_one_conv():
    torch.manual_seed(0)
    model = _tiny().eval()
    _randomize(model)
    fused = deploy(model)
    # Every depthwise-conv residual (x + dwconv(x)) became a single conv with the identity in its centre tap.
    assert any(type(m).__name__ == "Residual" and type(m.m).__name__ == "Conv2dNorm" for m in model.modules())
    assert not any(type(m).__name__ == "Residual" and isinstance(m.m, torch.nn.Conv2d) for m in fused.modules())
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
