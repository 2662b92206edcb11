"""MobileViT v1/v2 specifics (the generic checks are in test_model_conformance.py): the resize written as matrix
products, the ml-cvnets checkpoint layout, the v2 deploy form's attention rewrite, and v2 converting to LiteRT
in one XNNPACK partition (timm's module fails to convert)."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from randomize import randomize

from edgevit.models import create_model, deploy, get_family_spec
from edgevit.models.layers.resize import bilinear_resize
from edgevit.models.mobilevit_v2 import FusedLinearSelfAttention, LinearSelfAttention


@pytest.mark.unit
@pytest.mark.parametrize("align_corners", [False, True])  # v1 resizes with False, v2 with True
@pytest.mark.parametrize("size_in,size_out", [((7, 13), (8, 14)), ((3, 3), (4, 4)), ((25, 6), (26, 6))])
def test_bilinear_resize_as_matrices_equals_interpolate(size_in, size_out, align_corners):
    x = torch.randn(2, 5, *size_in, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(x, size=size_out, mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close(bilinear_resize(x, size_out, align_corners), expected, rtol=0, atol=1e-5)


# ml-cvnets names -> timm names, written out by hand from apple/ml-cvnets (cvnets/models/classification/
# mobilevit*.py, cvnets/modules/{mobilevit_block,transformer}.py): the inverse of what the filter does.
_TO_ORIGINAL = [
    (r"^stem\.(conv|bn)\.", lambda m: f"conv_1.block.{'norm' if m[1] == 'bn' else 'conv'}."),
    (r"^final_conv\.(conv|bn)\.", lambda m: f"conv_1x1_exp.block.{'norm' if m[1] == 'bn' else 'conv'}."),
    (r"^head\.fc\.", lambda m: "classifier.fc."),
    (r"^stages\.(\d)\.(\d+)\.(conv1_1x1|conv2_kxk|conv3_1x1)\.(conv|bn)\.",
     lambda m: f"layer_{int(m[1]) + 1}.{m[2]}.block."
               f"{ {'conv1_1x1': 'exp_1x1', 'conv2_kxk': 'conv_3x3', 'conv3_1x1': 'red_1x1'}[m[3]] }"
               f".block.{'norm' if m[4] == 'bn' else 'conv'}."),
]


def _original_layout(sd: dict, v2: bool, depths: dict[int, int]) -> dict:
    """Our (timm) state dict renamed to the ml-cvnets layout."""
    out = {}
    for key, value in sd.items():
        new = key
        for pattern, repl in _TO_ORIGINAL:
            if re.match(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        m = re.match(r"^stages\.(\d)\.(\d+)\.(.*)$", key)
        if new == key and m:
            layer, idx, rest = f"layer_{int(m[1]) + 1}", m[2], m[3]
            conv = lambda r: r.replace("conv.", "block.conv.", 1).replace("bn.", "block.norm.", 1)  # noqa: E731
            if rest.startswith("conv_kxk."):
                rest = ("local_rep.0." if v2 else "local_rep.conv_3x3.") + conv(rest[len("conv_kxk."):])
            elif rest.startswith("conv_1x1."):
                rest = ("local_rep.1." if v2 else "local_rep.conv_1x1.") + "block.conv." + rest[len("conv_1x1."):]
            elif rest.startswith("norm."):
                rest = f"global_rep.{depths[int(m[1])]}." + rest[len("norm."):]
            elif rest.startswith("conv_proj."):
                rest = "conv_proj." + conv(rest[len("conv_proj."):])
            elif rest.startswith("conv_fusion."):
                rest = "fusion." + conv(rest[len("conv_fusion."):])
            elif rest.startswith("transformer."):
                _, i, tail = rest.split(".", 2)
                table = ({"norm1.": "pre_norm_attn.0.", "attn.qkv_proj.": "pre_norm_attn.1.qkv_proj.block.conv.",
                          "attn.out_proj.": "pre_norm_attn.1.out_proj.block.conv.", "norm2.": "pre_norm_ffn.0.",
                          "mlp.fc1.": "pre_norm_ffn.1.block.conv.", "mlp.fc2.": "pre_norm_ffn.3.block.conv."} if v2 else
                         {"norm1.": "pre_norm_mha.0.", "attn.qkv.": "pre_norm_mha.1.qkv_proj.",
                          "attn.proj.": "pre_norm_mha.1.out_proj.", "norm2.": "pre_norm_ffn.0.",
                          "mlp.fc1.": "pre_norm_ffn.1.", "mlp.fc2.": "pre_norm_ffn.4."})
                prefix = next(p for p in table if tail.startswith(p))
                rest = f"global_rep.{i}.{table[prefix]}{tail[len(prefix):]}"
            new = f"{layer}.{idx}.{rest}"
        out[new] = value
    return out


@pytest.mark.unit
@pytest.mark.parametrize("name,v2,depths", [("mobilevit_micro", False, {2: 1, 3: 2, 4: 1}),
                                            ("mobilevitv2_micro", True, {2: 1, 3: 2, 4: 1})])
def test_checkpoint_filter_converts_the_ml_cvnets_layout(name, v2, depths):
    source = randomize(create_model(name)).eval()
    original = _original_layout(source.state_dict(), v2, depths)
    assert not any(k.startswith(("stages.", "stem.", "head.")) for k in original)  # really renamed
    # Spot checks against names as ml-cvnets writes them.
    if v2:
        assert "layer_3.1.global_rep.0.pre_norm_attn.1.qkv_proj.block.conv.weight" in original
        assert "layer_4.1.global_rep.2.weight" in original  # the norm after 2 layers
    else:
        assert "layer_3.1.global_rep.0.pre_norm_mha.1.qkv_proj.weight" in original
        assert "layer_3.1.fusion.block.norm.running_var" in original
    target = create_model(name).eval()
    family = "mobilevit_v2" if v2 else "mobilevit"
    converted = get_family_spec(family).checkpoint_filter({"model": original}, target)
    target.load_state_dict(converted, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


@pytest.mark.unit
@pytest.mark.parametrize("patches", [1, 9])  # one patch: the softmax is 1 and the deploy form skips it
def test_v2_attention_rewrite_is_exact(patches):
    attn = randomize(LinearSelfAttention(16)).eval()
    fused = attn.fuse()
    assert isinstance(fused, FusedLinearSelfAttention)
    x = torch.randn(2, 16, 4, patches)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), attn(x), rtol=1e-5, atol=1e-6)


@pytest.mark.integration
@pytest.mark.slow  # ~40 s on a loaded 2-core machine: the conversion
def test_v2_converts_to_litert_in_one_partition():
    """timm's v2 module fails LiteRT conversion (a broadcasting tfl.mul); the deploy form converts, runs in the
    LiteRT interpreter with every op in one XNNPACK partition, and matches the eager model."""
    from edgevit.backends import get_backend
    from edgevit.progress import SilentProgress

    model = randomize(create_model("mobilevitv2_micro")).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    backend = get_backend("litert")
    lowered = backend.lower(deploy(model), x, "fp32", None, SilentProgress())
    ops = lowered.ops.as_dict()
    assert ops["delegate_calls"] == 1 and ops["non_delegated_ops"] == 0, ops
    with torch.no_grad():
        torch.testing.assert_close(backend.load(lowered.data)(x), model(x), rtol=1e-4, atol=1e-4)
