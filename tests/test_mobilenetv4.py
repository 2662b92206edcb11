"""MobileNetV4-hybrid-specific checks: multi-query attention with downsampled keys/values in the deploy form, and
the checkpoint filter (timm is where the PyTorch weights come from, so it only unwraps wrappers).

What every family must pass (timm keys and logits, deploy form, export graph) is in test_model_conformance.py."""
from __future__ import annotations

import pytest
import torch
from randomize import randomize
from torch import nn

from edgevit.models import create_model, deploy
from edgevit.models.mobilenetv4 import FusedMobileAttention, MobileAttention, checkpoint_filter_fn

pytestmark = pytest.mark.unit


def test_mqa_shares_one_downsampled_key_and_value_across_heads():
    """Hooks on the micro variant at 64 px: stage 3 (4x4 map) attends over a 2x2 key/value map
    (stride-2 depthwise conv), stage 4 (2x2) over the full map; every head has its own query, one key/value."""
    model = randomize(create_model("mobilenetv4_hybrid_micro")).eval()
    fused = deploy(model)
    blocks = [m for m in fused.modules() if isinstance(m, FusedMobileAttention)]
    assert len(blocks) == sum(isinstance(m, MobileAttention) for m in model.modules()) == 2
    seen = []
    for block in blocks:
        block.query.register_forward_hook(lambda m, i, o: seen.append(("q", tuple(o.shape))))
        block.key.register_forward_hook(lambda m, i, o: seen.append(("k", tuple(o.shape))))
        block.value.register_forward_hook(lambda m, i, o: seen.append(("v", tuple(o.shape))))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
    # 2 heads x key_dim 16 queries; one 16-channel key map and one set of 16-channel value tokens, from the map at
    # half resolution in stage 3 (4 tokens of 16 queries), at full resolution in stage 4 (4 of 4).
    assert seen == [("q", (1, 32, 4, 4)), ("k", (1, 16, 2, 2)), ("v", (1, 4, 16)),
                    ("q", (1, 32, 2, 2)), ("k", (1, 16, 2, 2)), ("v", (1, 4, 16))]
    # The pre-attention BatchNorm became a per-channel 1x1 depthwise conv (no BatchNorm op left).
    assert all(isinstance(b.norm, nn.Conv2d) and b.norm.groups == b.norm.in_channels for b in blocks)


@pytest.mark.parametrize("wrap", [lambda sd: {"state_dict_ema": sd}, lambda sd: {"model": sd},
                                  lambda sd: {f"module.{k}": v for k, v in sd.items()}, lambda sd: sd],
                         ids=["ema", "model", "ddp-prefix", "plain"])
def test_checkpoint_filter_unwraps_wrappers(wrap):
    src = randomize(create_model("mobilenetv4_hybrid_micro")).eval()
    dst = create_model("mobilenetv4_hybrid_micro").eval()
    dst.load_state_dict(checkpoint_filter_fn(wrap(dict(src.state_dict())), dst), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))
