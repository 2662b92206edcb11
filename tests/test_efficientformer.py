"""EfficientFormer / EfficientFormerV2 specifics: original-checkpoint conversion, distillation heads,
deploy-time folds with non-trivial parameters, and a gather-free exported graph.

Small ``img_size`` models keep these fast. What every family must pass (timm keys and logits, the deploy form
of every variant, the export graph, the meta-device forward, the checkpoint filter on timm's layout) is in
test_model_conformance.py.
"""
from __future__ import annotations

import itertools

import pytest
import torch
from randomize import randomize
from torch import nn

from edgevit.models import create_model, deploy
from edgevit.models import efficientformer as ef1
from edgevit.models import efficientformer_v2 as ef2
from edgevit.models.layers import attention_bias_index

SMALL = 64  # 2x2 tokens at the last stage: every code path, a fraction of the cost


def _image(size: int = SMALL, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------------
# Relative-position index
# ---------------------------------------------------------------------------------------------------

def _enumerated_offsets(resolution: int, query_stride: int) -> torch.Tensor:
    """The original repo's scheme: number offsets in order of first appearance."""
    keys = list(itertools.product(range(resolution), range(resolution)))
    queries = [(y, x) for y, x in keys if y % query_stride == 0 and x % query_stride == 0]
    slots: dict[tuple[int, int], int] = {}
    rows = []
    for qy, qx in queries:
        rows.append([slots.setdefault((abs(qy - ky), abs(qx - kx)), len(slots)) for ky, kx in keys])
    return torch.tensor(rows)


@pytest.mark.parametrize("resolution,query_stride", [(7, 1), (14, 2), (4, 2)])
@pytest.mark.unit
def test_attention_bias_index_matches_first_appearance_numbering(resolution, query_stride):
    ours = attention_bias_index((resolution, resolution), query_stride)
    torch.testing.assert_close(ours, _enumerated_offsets(resolution, query_stride))


# ---------------------------------------------------------------------------------------------------
# Original-repo checkpoints
# ---------------------------------------------------------------------------------------------------

# Original key -> timm key, one per conversion rule. Stages are found by counting the downsampling
# embeddings in the dict, so each list names at least one key of every embedding (as any real
# checkpoint does).
V1_PAIRS = {  # efficientformer_l1 layout
    "patch_embed.0.weight": "stem.conv1.weight",
    "patch_embed.1.running_var": "stem.norm1.running_var",
    "patch_embed.3.bias": "stem.conv2.bias",
    "patch_embed.4.weight": "stem.norm2.weight",
    "network.0.2.mlp.norm1.bias": "stages.0.blocks.2.mlp.norm1.bias",
    "network.0.1.layer_scale_1": "stages.0.blocks.1.ls1.gamma",
    "network.1.proj.weight": "stages.1.downsample.conv.weight",
    "network.1.norm.running_mean": "stages.1.downsample.norm.running_mean",
    "network.3.norm.bias": "stages.2.downsample.norm.bias",
    "network.4.5.mlp.fc2.weight": "stages.2.blocks.5.mlp.fc2.weight",
    "network.5.proj.bias": "stages.3.downsample.conv.bias",
    "network.6.4.token_mixer.attention_bias_idxs": "stages.3.blocks.4.token_mixer.attention_bias_idxs",
    "network.6.4.layer_scale_2": "stages.3.blocks.4.ls2.gamma",
    "dist_head.weight": "head_dist.weight",
    "norm.weight": "norm.weight",
}

V2_PAIRS = {  # efficientformerv2_s0 layout
    "patch_embed.0.weight": "stem.conv1.conv.weight",
    "patch_embed.1.running_mean": "stem.conv1.bn.running_mean",
    "patch_embed.3.weight": "stem.conv2.conv.weight",
    "patch_embed.4.bias": "stem.conv2.bn.bias",
    "network.0.1.mlp.fc1.weight": "stages.0.blocks.1.mlp.fc1.conv.weight",
    "network.0.1.mlp.norm1.weight": "stages.0.blocks.1.mlp.fc1.bn.weight",
    "network.0.1.mlp.mid.weight": "stages.0.blocks.1.mlp.mid.conv.weight",
    "network.0.1.mlp.mid_norm.running_var": "stages.0.blocks.1.mlp.mid.bn.running_var",
    "network.0.1.mlp.fc2.bias": "stages.0.blocks.1.mlp.fc2.conv.bias",
    "network.0.1.mlp.norm2.bias": "stages.0.blocks.1.mlp.fc2.bn.bias",
    "network.1.proj.weight": "stages.1.downsample.conv.conv.weight",
    "network.1.norm.weight": "stages.1.downsample.conv.bn.weight",
    "network.3.proj.bias": "stages.2.downsample.conv.conv.bias",
    "network.4.5.layer_scale_1": "stages.2.blocks.5.ls1.gamma",
    "network.4.5.token_mixer.stride_conv.0.weight": "stages.2.blocks.5.token_mixer.stride_conv.conv.weight",
    "network.4.5.token_mixer.stride_conv.1.weight": "stages.2.blocks.5.token_mixer.stride_conv.bn.weight",
    "network.4.5.token_mixer.q.0.weight": "stages.2.blocks.5.token_mixer.q.conv.weight",
    "network.4.5.token_mixer.v_local.1.bias": "stages.2.blocks.5.token_mixer.v_local.bn.bias",
    "network.4.5.token_mixer.talking_head1.weight": "stages.2.blocks.5.token_mixer.talking_head1.weight",
    "network.4.5.token_mixer.proj.1.weight": "stages.2.blocks.5.token_mixer.proj.conv.weight",
    "network.4.5.token_mixer.proj.2.running_mean": "stages.2.blocks.5.token_mixer.proj.bn.running_mean",
    "network.4.5.token_mixer.attention_biases": "stages.2.blocks.5.token_mixer.attention_biases",
    "network.5.conv.weight": "stages.3.downsample.conv.conv.weight",
    "network.5.bn.bias": "stages.3.downsample.conv.bn.bias",
    "network.5.attn.q.local.0.weight": "stages.3.downsample.attn.q.local.weight",
    "network.5.attn.q.proj.0.weight": "stages.3.downsample.attn.q.proj.conv.weight",
    "network.5.attn.q.proj.1.running_var": "stages.3.downsample.attn.q.proj.bn.running_var",
    "network.5.attn.k.1.weight": "stages.3.downsample.attn.k.bn.weight",
    "network.5.attn.proj.2.bias": "stages.3.downsample.attn.proj.bn.bias",
    "network.5.attn.attention_biases": "stages.3.downsample.attn.attention_biases",
    "network.6.3.layer_scale_2": "stages.3.blocks.3.ls2.gamma",
    "dist_head.bias": "head_dist.bias",
}


def _original_dict(pairs: dict[str, str], model: nn.Module) -> dict[str, torch.Tensor]:
    # Tensors shaped like the target; layer scales are stored (C, 1, 1) by the original V2 code.
    target = model.state_dict()
    out = {}
    for orig, ours in pairs.items():
        value = torch.randn(target[ours].shape) if target[ours].is_floating_point() else target[ours].clone()
        if orig.endswith(("layer_scale_1", "layer_scale_2")) and model.__class__.__name__.endswith("V2"):
            value = value.reshape(-1, 1, 1)
        out[orig] = value
    return out


@pytest.mark.parametrize("module,name,pairs", [(ef1, "efficientformer_l1", V1_PAIRS),
                                                (ef2, "efficientformerv2_s0", V2_PAIRS)])
@pytest.mark.unit
def test_checkpoint_filter_maps_original_keys(module, name, pairs):
    model = create_model(name)
    original = _original_dict(pairs, model)
    converted = module.checkpoint_filter_fn(original, model)
    assert sorted(converted) == sorted(pairs.values())
    target = model.state_dict()
    for orig, ours in pairs.items():
        assert converted[ours].shape == target[ours].shape, ours
        assert torch.equal(converted[ours].flatten(), original[orig].flatten()), ours


@pytest.mark.unit
def test_checkpoint_filter_v2_drops_stored_bias_index():
    model = create_model("efficientformerv2_s0")
    original = _original_dict(V2_PAIRS, model)
    original["network.4.5.token_mixer.attention_bias_idxs"] = torch.zeros(49, 49, dtype=torch.long)
    assert "attention_bias_idxs" not in " ".join(ef2.checkpoint_filter_fn(original, model))


# ---------------------------------------------------------------------------------------------------
# Distillation heads
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["efficientformer_l1", "efficientformerv2_s0"])
@pytest.mark.unit
def test_distillation_heads_average_in_eval_and_split_in_distilled_training(name):
    model = randomize(create_model(name, img_size=SMALL, num_classes=10))
    with torch.no_grad():
        nn.init.normal_(model.head_dist.weight)  # make the two heads clearly different
    x = _image()
    model.eval()
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        expected = (model.head(pooled) + model.head_dist(pooled)) / 2
        torch.testing.assert_close(model(x), expected)

        model.train()
        for m in model.modules():  # keep BN statistics fixed so the two passes are comparable
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        assert isinstance(model(x), torch.Tensor)  # plain training: still the average
        model.set_distilled_training(True)
        logits, logits_dist = model(x)
        torch.testing.assert_close((logits + logits_dist) / 2, expected)

        model.eval()  # eval ignores the distillation flag
        torch.testing.assert_close(model(x), expected)

        fused = deploy(model)
        assert fused.head_dist is None and isinstance(fused.head, nn.Linear)
        torch.testing.assert_close(fused(x), expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# Deploy form
# ---------------------------------------------------------------------------------------------------

# The default configurations (l1, l3, l7 with its all-attention last stage, s0...) are in test_model_conformance.py.
@pytest.mark.parametrize("name,kwargs", [
    ("efficientformerv2_s0", {"img_size": (64, 96)}),  # non-square grids and bias tables
    ("efficientformerv2_s0", {"num_classes": 0}),  # no classifier: final BN becomes a 1x1 conv
    ("efficientformerv2_s0", {"distillation": False}),
])
@pytest.mark.unit
def test_deploy_matches_with_nontrivial_parameters(name, kwargs):
    kwargs = {"img_size": SMALL, **kwargs}
    model = randomize(create_model(name, **kwargs)).eval()
    size = kwargs["img_size"]
    x = torch.randn(2, 3, *((size, size) if isinstance(size, int) else size))
    fused = deploy(model)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)) for m in fused.modules())
    assert not [n for n, _ in fused.named_parameters() if n.endswith(("attention_biases", ".gamma"))]
    with torch.no_grad():  # deploying a deployed model changes nothing
        torch.testing.assert_close(deploy(fused)(x), fused(x))


@pytest.mark.unit
def test_local_global_query_fold_is_exact_for_odd_and_even_maps():
    query = ef2.LocalGlobalQuery(8, 16).eval()
    randomize(query)
    fused = deploy(query)
    assert fused.pool is None
    for size in (7, 8):
        x = torch.randn(1, 8, size, size)
        with torch.no_grad():
            torch.testing.assert_close(fused(x), query(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["efficientformer_l1", pytest.param("efficientformerv2_s0", marks=pytest.mark.slow)])
@pytest.mark.integration
def test_deployed_export_has_no_gather_or_batchnorm(name):
    model = randomize(create_model(name, img_size=SMALL)).eval()
    x = _image(batch=1)
    for form in (model, deploy(model)):
        exported = torch.export.export(form, (x,))
        with torch.no_grad():
            torch.testing.assert_close(exported.module()(x), form(x))
    ops = {str(n.target) for n in exported.run_decompositions().graph.nodes if n.op == "call_function"}
    assert not [op for op in ops if "index" in op or "gather" in op or "batch_norm" in op], ops
    # Ops XNNPACK would leave out, each splitting the delegate: attention uses 3-D bmm (a 4-D matmul
    # exports with expand) and slices qkv (rather than split); LayerNorm is standardise + folded affine.
    assert not [op for op in ops if "split" in op or "layer_norm" in op], ops
    # The judge of "delegatable" is XNNPACK's partitioner itself: one delegate, nothing left outside.
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from edgevit.backends.executorch.lowering import summarize_ops
    # Without the IR-validity re-check after every pass, as `edgevit compile` lowers (same partition).
    summary = summarize_ops(to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()],
                                                        compile_config=EdgeCompileConfig(_check_ir_validity=False))
                            .exported_program())
    assert summary.delegate_calls == 1 and not summary.non_delegated, summary.as_dict()
