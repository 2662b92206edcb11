"""Every registered model: builds, matches timm 1.0.31 key-for-key and numerically, deploys, exports."""
from __future__ import annotations

import pytest
import torch

from edgevit.models import create_model, deploy, get_model_spec, list_models

# The full zoo at 224 is too slow for CI on 2 cores; each family's smallest variant runs the
# numeric checks at full resolution, every variant runs the key-layout check (cheap, meta device).
SMALLEST = ["efficientformer_l1", "efficientformerv2_s0", "tiny_vit_5m_224", "shvit_s1"]
# edgevit's own 64-px, 10-class variants (edgevit/models/micro.py): no timm counterpart to compare with.
MICRO = [n for n in list_models() if n.endswith("_micro")]
TIMM_NAMES = [n for n in list_models() if n not in MICRO]


def _input(name: str, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, *get_model_spec(name).input_size, generator=g)


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_state_dict_layout_matches_timm(name, timm):
    spec = get_model_spec(name)
    with torch.device("meta"):
        ours = create_model(name)
        ref = timm.create_model(name, num_classes=spec.num_classes)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert sorted(ours_sd) == sorted(ref_sd)
    mismatched = {k: (tuple(ours_sd[k].shape), tuple(v.shape)) for k, v in ref_sd.items()
                  if tuple(ours_sd[k].shape) != tuple(v.shape)}
    assert not mismatched


@pytest.mark.parametrize("name", SMALLEST)
def test_logits_match_timm(name, timm):
    spec = get_model_spec(name)
    torch.manual_seed(0)
    ref = timm.create_model(name, num_classes=spec.num_classes).eval()
    _randomize_batchnorm(ref)
    ours = create_model(name).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = _input(name)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", SMALLEST + MICRO)
def test_deploy_form_matches_training_form(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    _randomize_batchnorm(model)
    fused = deploy(model)
    x = _input(name)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert out.shape == (2, get_model_spec(name).num_classes)


def test_every_family_has_a_micro_variant():
    families = {get_model_spec(n).family for n in TIMM_NAMES}
    assert {get_model_spec(n).family for n in MICRO} == families


def _randomize_batchnorm(model: torch.nn.Module) -> None:
    """Fresh BN has mean 0 / var 1, which makes BN folding trivially exact; use real-looking stats."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_checkpoint_of_same_architecture_round_trips(tmp_path, suffix):
    """A checkpoint saved from a zoo model loads through --weights' loader and gives the same logits."""
    from safetensors.torch import save_file
    from edgevit.models import load_weights
    from edgevit.models import apply_synthetic_weights

    source = apply_synthetic_weights(create_model("shvit_s1"), seed=7).eval()
    path = tmp_path / f"shvit_s1{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save({"model": source.state_dict()}, path)
    target = create_model("shvit_s1").eval()
    load_weights(target, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))
