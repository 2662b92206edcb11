"""FastViT-specific checks: the structural reparameterization (parameter counts, against timm's own
``reparameterize_model``) and apple/ml-fastvit checkpoints.

What every family must pass (timm keys and logits at 256/64/100 px, deploy form, export graph) is in
test_model_conformance.py."""
from __future__ import annotations

import re

import pytest
import torch
from randomize import randomize
from torch import nn

from edgevit.models import create_model, deploy
from edgevit.models.fastvit import (
    LayerScale2d,
    MobileOneBlock,
    ReparamLargeKernelConv,
    RepConditionalPosEnc,
    RepMixer,
    checkpoint_filter_fn,
)

pytestmark = pytest.mark.unit

TRAINING_ONLY = (MobileOneBlock, RepMixer, ReparamLargeKernelConv, RepConditionalPosEnc, LayerScale2d,
                 nn.modules.batchnorm._BatchNorm)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_t8_reparameterizes_to_4_00_m_parameters_like_timm(timm):
    """FastViT-T8: 4.03 M parameters to train, 4.00 M after timm's reparameterization. Our deploy form also
    folds two things timm's leaves: the RepMixer blocks' 1,824 MLP layer-scale gains (a multiply per block
    there, folded into fc2 here) and the ConvMlp depthwise conv's BatchNorm (2 per channel there, 1 conv
    bias here): 2 x 1,824 = 3,648 fewer, 3.99 M."""
    torch.manual_seed(0)
    ref = randomize(timm.create_model("fastvit_t8")).eval()
    ours = create_model("fastvit_t8").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    from timm.utils.model import reparameterize_model

    ref_deployed = reparameterize_model(ref)
    fused = deploy(ours)
    block_dims = sum(m.token_mixer.dim for m in ours.modules() if type(m).__name__ == "RepMixerBlock")
    assert block_dims == 1824
    assert (_params(ours), _params(ref_deployed), _params(fused)) == (4_026_232, 3_996_040, 3_996_040 - 2 * block_dims)
    assert f"{_params(ours) / 1e6:.2f} M -> {_params(ref_deployed) / 1e6:.2f} M" == "4.03 M -> 4.00 M"
    # Nothing multi-branch, no BatchNorm, no layer scale left: one conv per reparameterized module.
    assert not [type(m).__name__ for m in fused.modules() if isinstance(m, TRAINING_ONLY)]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref_deployed(x), rtol=1e-5, atol=1e-5)


# timm -> apple/ml-fastvit module names (the inverse of what checkpoint_filter_fn undoes).
_TO_ORIGINAL = (("stem.", "patch_embed."), ("conv_kxk", "rbr_conv"), ("conv_scale", "rbr_scale"),
                ("identity", "rbr_skip"), ("final_conv", "conv_exp"), ("large_conv", "lkb_origin"),
                (".mlp.", ".convffn."), ("se.fc1", "se.reduce"), ("se.fc2", "se.expand"))


def _to_original_layout(state_dict: dict[str, torch.Tensor], has_downsample: list[bool],
                        has_pos_emb: list[bool]) -> dict[str, torch.Tensor]:
    """timm layout -> ml-fastvit's: one flat ``network`` list of [proj, pe, blocks] per stage."""
    index, slots = 0, {}
    for stage, (down, pos) in enumerate(zip(has_downsample, has_pos_emb, strict=True)):
        for part, present in (("downsample", down), ("pos_emb", pos), ("blocks", True)):
            if present:
                slots[(stage, part)] = index
                index += 1
    out = {}
    for key, value in state_dict.items():
        if m := re.fullmatch(r"stages\.(\d+)\.(downsample|pos_emb|blocks)\.(.+)", key):
            rest = m[3].replace("pos_enc.", "pe.") if m[2] == "pos_emb" else m[3]
            key = f"network.{slots[(int(m[1]), m[2])]}.{rest}"
        for new, old in _TO_ORIGINAL:
            key = key.replace(new, old)
        key = re.sub(r"\.gamma$", "", key).replace("head.fc.", "head.")
        out[key] = value
    return out


def test_ml_fastvit_checkpoint_layout_converts():
    """fastvit_micro has every module kind (stem, RepMixer, patch embeddings, CPE, attention, SE head)."""
    src = randomize(create_model("fastvit_micro")).eval()
    down = [not isinstance(s.downsample, nn.Identity) for s in src.stages]
    pos = [not isinstance(s.pos_emb, nn.Identity) for s in src.stages]
    original = _to_original_layout(src.state_dict(), down, pos)
    for key in ("patch_embed.0.rbr_conv.0.conv.weight", "network.0.0.token_mixer.mixer.rbr_skip.running_var",
                "network.1.proj.0.lkb_origin.bn.weight", "network.6.pe.weight", "network.7.0.layer_scale_1",
                "network.7.0.convffn.conv.conv.weight", "conv_exp.se.reduce.weight", "head.weight"):
        assert key in original, key
    dst = create_model("fastvit_micro").eval()
    dst.load_state_dict(checkpoint_filter_fn({"state_dict": original}, dst), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))
