"""EfficientViT-specific checks (MIT: ReLU linear attention; MSRA: cascaded group attention).

- the micro variants equal timm's own classes built with the same configuration (MSRA also at a size whose
  windows pad), so the small models the compile tests use are the real architectures
- original-repository checkpoints convert (mit-han-lab/efficientvit; microsoft/Cream incl. its distillation head)
- the deploy form's linear attention has no ones-column pad, and stays exact where its denominator is tiny
- the int8 float-by-rule: FamilySpec.float_modules resolves to the attention core's layers, which the recipe
  keeps float and lists in the manifest's fp32 layers

What every family must pass (timm keys and logits, deploy form, export graph) is in test_model_conformance.py.
"""
from __future__ import annotations

import re

import pytest
import torch
from randomize import randomize

from edgevit.models import create_model, deploy, get_family_spec, get_model_spec, load_weights
from edgevit.models import efficientvit_mit as mit
from edgevit.models import efficientvit_msra as msra
from edgevit.quantization import QuantRecipe


def _images(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------------- timm classes

@pytest.mark.unit
def test_mit_micro_equals_timm_class_with_the_same_config(timm):
    from timm.models.efficientvit_mit import EfficientVit as TimmEfficientVit

    torch.manual_seed(0)
    ref = randomize(TimmEfficientVit(widths=(8, 16, 24, 32, 48), depths=(1, 2, 1, 1, 1), head_dim=8,
                                     head_widths=(96, 128), num_classes=10)).eval()
    ours = create_model("efficientvit_mit_micro").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = _images(64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.unit
@pytest.mark.parametrize("size", [64, 80])  # 80: stage 1's 5x5 map pads to 6x6 for its 2x2 windows
def test_msra_micro_equals_timm_class_with_the_same_config(timm, size):
    from timm.models.efficientvit_msra import EfficientVitMsra as TimmEfficientVitMsra

    torch.manual_seed(0)
    ref = randomize(TimmEfficientVitMsra(img_size=size, embed_dim=(32, 64), key_dim=(8, 8), depth=(1, 1),
                                         num_heads=(2, 2), window_size=(2, 2), kernels=(5, 3), num_classes=10)).eval()
    ours = create_model("efficientvit_msra_micro", img_size=size).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = _images(size)
    with torch.no_grad():
        out = ours(x)
        torch.testing.assert_close(out, ref(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(deploy(ours)(x), out, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------- checkpoints

def _mit_to_original(key: str) -> str:
    """timm layout -> mit-han-lab/efficientvit (``backbone.*.op_list.*``, ClsHead ``head.op_list.*``)."""
    head = {"head.in_conv.": "head.op_list.0.", "head.classifier.0.": "head.op_list.2.linear.",
            "head.classifier.1.": "head.op_list.2.norm.", "head.classifier.4.": "head.op_list.3.linear."}
    for new, old in head.items():
        if key.startswith(new):
            return old + key[len(new):]
    if key.startswith("stem.in_conv."):
        return "backbone.input_stem.op_list.0." + key[len("stem.in_conv."):]
    m = re.match(r"^stem\.res(\d+)\.(.*)$", key)
    if m:
        return f"backbone.input_stem.op_list.{int(m.group(1)) + 1}.{m.group(2)}"
    return re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"backbone.stages.\1.op_list.\2.", key)


@pytest.mark.unit
def test_mit_original_checkpoint_converts(tmp_path):
    src = randomize(create_model("efficientvit_mit_micro")).eval()
    original = {_mit_to_original(k): v for k, v in src.state_dict().items()}
    assert {"backbone.input_stem.op_list.1.main.depth_conv.conv.weight",
            "backbone.stages.2.op_list.1.context_module.main.aggreg.0.1.weight",
            "head.op_list.2.norm.weight", "head.op_list.3.linear.bias"} <= set(original)
    path = tmp_path / "original.pth"
    torch.save({"state_dict": original}, path)  # the original repo wraps its weights like this
    dst = create_model("efficientvit_mit_micro").eval()
    load_weights(dst, path)
    x = _images(64)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def _msra_to_original(key: str) -> str:
    """timm layout -> microsoft/Cream EfficientViT: ``c``/``l`` children, indexed stem, flat ``blocks{1,2,3}``."""
    key = re.sub(r"\.conv\.(weight|bias|running_mean|running_var|num_batches_tracked)$", r".c.\1", key)
    key = re.sub(r"(\.bn)\.c\.", r"\1.", key)  # (never produced; guards the rename above)
    key = key.replace("head.linear.", "head.l.")
    m = re.match(r"^patch_embed\.conv(\d)\.(.*)$", key)
    if m:
        return f"patch_embed.{(int(m.group(1)) - 1) * 2}.{m.group(2)}"
    m = re.match(r"^stages\.(\d+)\.(downsample|blocks)\.(\w+)\.(.*)$", key)
    if m:
        stage, part, idx, rest = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        if part == "downsample":
            pos = {"res1": 0, "patchmerge": 1, "res2": 2}[idx]
        else:
            pos = int(idx) + (3 if stage else 0)
        return f"blocks{stage + 1}.{pos}.{rest}"
    return key


@pytest.mark.unit
def test_msra_original_checkpoint_with_distillation_head_converts(tmp_path):
    src = randomize(create_model("efficientvit_msra_micro")).eval()
    original = {_msra_to_original(k): v for k, v in src.state_dict().items()}
    assert {"patch_embed.6.c.weight", "blocks2.1.se.fc1.weight", "blocks2.3.mixer.m.attn.qkvs.0.c.weight",
            "blocks2.0.0.m.c.weight", "head.l.weight"} <= set(original)
    # The original trains with a DeiT-style second head; in eval the model predicts the mean of both.
    g = torch.Generator().manual_seed(3)
    dist = {k.replace("head.", "head_dist."): v + 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point()
            else v for k, v in original.items() if k.startswith("head.")}
    dist["head_dist.bn.running_var"] = dist["head_dist.bn.running_var"].abs() + 0.5
    original.update(dist)
    original["blocks1.0.mixer.m.attn.attention_bias_idxs"] = torch.zeros(4, 4, dtype=torch.long)
    path = tmp_path / "original.pth"
    torch.save({"model": original}, path)
    dst = create_model("efficientvit_msra_micro").eval()
    load_weights(dst, path)

    head_dist = msra.NormLinear(64, 10).eval()
    head_dist.load_state_dict({k[len("head_dist."):].replace("l.", "linear."): v for k, v in dist.items()})
    x = _images(64)
    with torch.no_grad():
        pooled = src.forward_features(x).mean((2, 3))
        expected = (src.head(pooled) + head_dist(pooled)) / 2
        torch.testing.assert_close(dst(x), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ linear attention

@pytest.mark.unit
def test_deploy_attention_has_no_pad_and_is_exact_with_tiny_denominators():
    """The ones-column becomes sum_n k (a mean times N): no pad of 1.0 in the graph, and the eps-guarded
    division still matches timm's form where ReLU zeroes most of q and k (denominators near eps)."""
    mla = mit.LiteMLA(16, 16, dim=8).eval()
    with torch.no_grad():
        mla.qkv.conv.weight.sub_(mla.qkv.conv.weight.abs().mean() * 1.5)  # mostly negative q, k -> ReLU zeroes
    fused = deploy(mla)
    assert isinstance(fused, mit.FusedLiteMLA) and isinstance(fused.attn, mit.ReluLinearAttention)
    x = torch.rand(2, 16, 5, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), mla(x), rtol=1e-4, atol=1e-4)
    ops = {str(n.target) for n in torch.export.export(fused, (x,)).graph.nodes if n.op == "call_function"}
    assert not [op for op in ops if "pad" in op or "full" in op or "matmul" in op], ops
    assert "aten.bmm.default" in ops and "aten.div.Tensor" in ops


# ------------------------------------------------------------------------------------------ float by rule

@pytest.fixture(scope="module")
def mit_micro_graph():
    model = deploy(create_model("efficientvit_mit_micro"))
    return torch.export.export(model, (torch.zeros(1, 3, 64, 64),)).graph


@pytest.mark.unit
def test_float_rule_resolves_to_the_attention_core_and_reaches_the_manifest(mit_micro_graph):
    family = get_family_spec(get_model_spec("efficientvit_mit_micro").family)
    assert family.float_modules == ("ReluLinearAttention",)
    recipe = QuantRecipe(fp32_layers=("stem.in_conv",)).for_family(family, mit_micro_graph)
    # One mul (x N) and one add (+ eps) per attention block: the layers of the core; two blocks in the micro.
    assert sorted(recipe.rule_fp32_layers) == sorted(f"stages.{s}.blocks.1.context_module.main.attn:{op}"
                                                     for s in (2, 3) for op in ("mul", "add"))
    assert recipe.bridge_module == "FusedLiteMLA"
    inside = [n for n in mit_micro_graph.nodes if n.op == "call_function"
              and any("ReluLinearAttention" in str(t) for _, t in (n.meta.get("nn_module_stack") or {}).values())]
    assert {str(n.target) for n in inside} >= {"aten.div.Tensor", "aten.bmm.default", "aten.relu.default"}
    assert all(recipe.keeps_float(n) for n in inside)  # the division and everything feeding it
    outside = [n for n in mit_micro_graph.nodes if n.op == "call_function" and n not in inside
               and str(n.target) == "aten.conv2d.default"]
    assert outside and not any(recipe.keeps_float(n) for n in outside if "in_conv" not in str(n.meta))
    described = recipe.describe()  # the manifest's quantization block
    assert described["fp32_layers"] == ["stem.in_conv", *recipe.rule_fp32_layers]
    assert described["float_by_family_rule"] == {"modules": ["ReluLinearAttention"],
                                                 "fp32_layers": list(recipe.rule_fp32_layers)}
    # A user's --fp32-layer search (mixed precision) replaces its own choices, never the rule.
    assert recipe.with_fp32_layers([]).rule_fp32_layers == recipe.rule_fp32_layers


@pytest.mark.unit
def test_families_without_a_float_rule_keep_nothing_float_by_rule(mit_micro_graph):
    recipe = QuantRecipe().for_family(get_family_spec("efficientvit_msra"), mit_micro_graph)
    assert recipe.rule_fp32_layers == () and "float_by_family_rule" not in recipe.describe()
    assert QuantRecipe().for_family(None, mit_micro_graph).bridge_module is None


# ------------------------------------------------------------------------------------------------ LiteRT

@pytest.mark.integration
@pytest.mark.slow
def test_msra_micro_int8_is_one_litert_partition():
    """Cascaded heads at batch 1 (a bmm with a bare transposed operand would become a FULLY_CONNECTED with
    run-time weights, left outside) and the projection's standalone ReLU: one XNNPACK partition in int8."""
    from edgevit.backends import get_backend
    from edgevit.compile.metrics import compare_outputs
    from edgevit.data import Preprocess, synthetic_images
    from edgevit.models import resolve_model
    from edgevit.progress import SilentProgress

    resolved = resolve_model("efficientvit_msra_micro", (1, 3, 64, 64))  # synthetic weights, as compile uses
    pre = Preprocess.from_dict(resolved.preprocessing)
    backend = get_backend("litert")
    lowered = backend.lower(deploy(resolved.module), torch.zeros(1, 3, 64, 64), "int8",
                            synthetic_images(pre, 8, seed=0).inputs, SilentProgress())
    ops = lowered.ops.as_dict()
    assert ops["delegate_calls"] == 1 and ops["non_delegated_ops"] == 0, ops["non_delegated"]
    inputs = synthetic_images(pre, 4, seed=1).inputs
    run = backend.load(lowered.data)
    with torch.no_grad():
        reference = torch.cat([resolved.module(x) for x in inputs.split(1)])
    assert compare_outputs(reference, torch.cat([run(x) for x in inputs.split(1)])).sqnr_db > 25
