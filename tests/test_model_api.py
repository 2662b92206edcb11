"""edgevit.models' public API: prepare_model, family specs (bridge module, checkpoint filter)."""
from __future__ import annotations

import pytest
import torch
from test_shvit import _to_original_layout  # timm layout -> ysj9909/SHViT layout

import edgevit.models as models
from edgevit.errors import CheckpointError, EdgevitError, UnknownNameError
from edgevit.models import (
    SYNTHETIC_WEIGHTS_NOTE,
    FamilySpec,
    apply_synthetic_weights,
    create_model,
    deploy,
    get_family_spec,
    get_model_spec,
    is_deployed,
    list_families,
    list_models,
    load_weights,
    prepare_model,
    register_model,
)
from edgevit.quantization import QuantRecipe

MICRO = {get_model_spec(n).family: n for n in list_models() if n.endswith("_micro")}


@pytest.mark.unit
def test_every_public_name_is_exported():
    for name in models.__all__:
        assert hasattr(models, name), name


@pytest.mark.unit
def test_prepare_model_builds_the_requested_head():
    prepared = prepare_model("shvit_micro", num_classes=3)
    assert prepared.num_classes == 3  # the built model's, not the registry's 10
    assert get_model_spec("shvit_micro").num_classes == 10
    assert prepared.input_shape == (1, 3, 64, 64) and prepared.example.shape == (1, 3, 64, 64)
    assert not prepared.example.any()
    assert prepared.family == "shvit" and prepared.spec is get_model_spec("shvit_micro")
    assert not prepared.reference.training and is_deployed(prepared.deployed)
    assert not is_deployed(prepared.reference)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = prepared.reference(x), prepared.deployed(x)
    assert ref.shape == (1, 3)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert prepared.preprocessing == {**get_model_spec("shvit_micro").preprocessing(), "input_size": [3, 64, 64]}
    assert prepared.weights == {"source": SYNTHETIC_WEIGHTS_NOTE.format(seed=0), "sha256": None}


@pytest.mark.unit
def test_prepare_model_input_shape_as_text_or_sequence():
    a = prepare_model("shvit_micro", input_shape="2,3,96,96")
    b = prepare_model("shvit_micro", input_shape=(2, 3, 96, 96))
    assert a.input_shape == b.input_shape == (2, 3, 96, 96)
    assert a.num_classes == 10 and a.preprocessing["input_size"] == [3, 96, 96]
    with pytest.raises(EdgevitError):
        prepare_model("shvit_micro", input_shape=(3, 96, 96))


@pytest.mark.unit
def test_prepare_model_user_module():
    prepared = prepare_model("user_models:build_tiny", input_shape=(2, 3, 32, 32))
    assert prepared.spec is None and prepared.family == "user" and prepared.num_classes == 10
    assert prepared.weights == {"source": "as built by user_models:build_tiny", "sha256": None}
    assert prepared.preprocessing["input_size"] == [3, 32, 32]
    with pytest.raises(EdgevitError):
        prepare_model("user_models:build_tiny")  # a user's module needs an input shape


@pytest.mark.unit
def test_prepare_model_with_weights(tmp_path):
    source = apply_synthetic_weights(create_model("shvit_micro", num_classes=3), seed=7).eval()
    path = tmp_path / "w.pth"
    torch.save({"model": source.state_dict()}, path)
    prepared = prepare_model("shvit_micro", num_classes=3, weights=path)
    assert prepared.weights["source"] == str(path) and len(prepared.weights["sha256"]) == 64
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(prepared.reference(x), source(x))
    with pytest.raises(CheckpointError):  # a 3-class checkpoint into the default 10-class head
        prepare_model("shvit_micro", weights=path)


@pytest.mark.unit
def test_every_family_has_a_spec():
    assert list_families() == sorted({get_model_spec(n).family for n in list_models()})
    assert set(MICRO) == set(list_families())
    for family in list_families():
        spec = get_family_spec(family)
        assert isinstance(spec, FamilySpec) and spec.name == family
        assert spec.bridge_module and callable(spec.checkpoint_filter) and spec.paper
    for name in list_models():
        assert get_model_spec(name).family_spec is get_family_spec(get_model_spec(name).family)


@pytest.mark.unit
def test_unknown_family_is_an_unknown_name():
    with pytest.raises(UnknownNameError) as e:
        get_family_spec("efficientformerv2")
    assert "efficientformer_v2" in e.value.close
    assert list_models("efficientformerv2") == []


@pytest.mark.unit
def test_a_model_needs_a_registered_family():
    with pytest.raises(ValueError):
        register_model("nobody_micro", family="no_such_family")(lambda **kw: torch.nn.Identity())
    with pytest.raises(UnknownNameError):
        get_model_spec("nobody_micro")


@pytest.mark.integration
@pytest.mark.parametrize("family", sorted(MICRO))
def test_bridge_module_is_found_in_the_exported_deploy_form(family):
    """The quantizer looks the bridge class up in the exported deploy form's module stack."""
    spec = get_model_spec(MICRO[family])
    bridge = spec.family_spec.bridge_module
    deployed = deploy(create_model(spec.name).eval())
    assert any(type(m).__name__ == bridge for m in deployed.modules())
    graph = torch.export.export(deployed, (torch.zeros(1, *spec.input_size),)).module().graph
    nodes = [n for n in graph.nodes if n.op == "call_function"]

    def kept(recipe: QuantRecipe) -> int:
        return sum(recipe.keeps_float(n) for n in nodes)

    recipe = QuantRecipe(float_norm=False, float_bridges=True, bridge_module=bridge)
    assert kept(recipe) > 0
    assert kept(QuantRecipe(float_norm=False, float_bridges=True)) == 0  # no bridge named: nothing kept
    assert kept(QuantRecipe(float_norm=False, float_bridges=False, bridge_module=bridge)) == 0


@pytest.mark.unit
def test_recipe_description_has_no_family_or_bridge():
    """Manifests' quantization block is the same whichever model the recipe was bound to."""
    assert QuantRecipe(bridge_module="FusedSHSA").describe() == QuantRecipe().describe()


@pytest.mark.unit
def test_original_checkpoint_layout_loads_through_the_family_filter(tmp_path):
    source = apply_synthetic_weights(create_model("shvit_micro"), seed=7).eval()
    original = _to_original_layout(source.state_dict())
    assert "blocks2.1.se.fc1.weight" in original  # really the original repository's layout
    path = tmp_path / "shvit_micro_original.pth"
    torch.save({"model": original}, path)
    x = torch.randn(2, 3, 64, 64)
    for family in (None, "shvit", get_family_spec("shvit")):  # inferred from the class, or named
        target = create_model("shvit_micro").eval()
        assert len(load_weights(target, path, family)) == 64
        with torch.no_grad():
            assert torch.equal(target(x), source(x))
    prepared = prepare_model("shvit_micro", weights=path)
    with torch.no_grad():
        assert torch.equal(prepared.reference(x), source(x))


@pytest.mark.unit
def test_user_module_gets_no_filter(tmp_path):
    from user_models import TinyConvNet

    source = TinyConvNet()
    path = tmp_path / "w.pth"
    torch.save({f"blocks1.{k}": v for k, v in source.state_dict().items()}, path)  # not its layout
    with pytest.raises(CheckpointError):
        load_weights(TinyConvNet(), path)
    with pytest.raises(UnknownNameError):
        load_weights(TinyConvNet(), path, family="no_such_family")
