"""Every registered model passes the same checks; a family's own quirks live in test_<family>.py.

- registry: each family has a micro variant and a representative; the training form runs on the meta device
- state dict: keys and shapes equal timm 1.0.31's (every published model timm has; the others, e.g. M3ViT,
  are skipped by asking timm, not by a list); the family's checkpoint filter passes the model's own layout
  through unchanged (every model)
- logits equal timm's at the default resolution, and at 64 and 100 px where the model takes any size
  (one representative per family that timm has: a full-size forward is what costs)
- deploy form: equal to the training form within 1e-4 with non-trivial BatchNorm statistics, norm affines,
  layer scales, biases and bias tables; no BatchNorm, Dropout or bias-table parameter left; the training
  form untouched; deploying twice changes nothing (every model at 64 px, the representatives also at 224)
- torch.export at the static shape: the deploy form exports without the ops XNNPACK would leave out or
  gathers, and the exported program computes the training form's logits (every micro variant, one per
  family; those that take any size also at 96 px, where TinyViT's windows pad)

Outputs are (N, classes) logits, or dense maps (N, classes, H, W) (M3ViT's task heads); the default input
may be non-square (``input_size``), so a size here is an int (square) or (H, W).
- a model's own checkpoint round-trips through ``load_weights`` (every micro variant, .safetensors and .pth)
"""
from __future__ import annotations

import contextlib
import re

import pytest
import torch
from randomize import randomize
from torch import nn

from edgevit.models import (
    apply_synthetic_weights,
    create_model,
    deploy,
    get_model_spec,
    is_deployed,
    list_families,
    list_models,
    load_weights,
)

ALL = list_models()
# edgevit's own small variants (edgevit/models/micro.py, m3vit_micro): no timm counterpart to compare with.
MICRO = [n for n in ALL if n.endswith("_micro")]
# Published configurations; those timm has are compared with it (_timm_counterpart).
PUBLISHED = [n for n in ALL if n not in MICRO]
# Each family's smallest published variant: the full-size checks that cost run on these.
REPRESENTATIVE = {"efficientformer": "efficientformer_l1", "efficientformer_v2": "efficientformerv2_s0",
                  "tiny_vit": "tiny_vit_5m_224", "shvit": "shvit_s1", "m3vit": "m3vit_tiny",
                  "efficientvit_mit": "efficientvit_b0", "efficientvit_msra": "efficientvit_m0",
                  "fastvit": "fastvit_t8", "mobilenetv4": "mobilenetv4_hybrid_medium",
                  "mobilevit": "mobilevit_xxs", "mobilevit_v2": "mobilevitv2_050"}
SMALL = 64  # 2x2 tokens at the last stage: every code path, a fraction of the cost of 224

# In the exported deploy form: a gather, an unfolded norm, or a split / expand that XNNPACK does not take
# (attention uses 3-D bmm and slices; LayerNorm/GroupNorm are a standardisation with the affine folded).
UNWANTED_IN_EXPORT = ("index", "gather", "batch_norm", "layer_norm", "group_norm", "split", "expand",
                      "scaled_dot_product")
# ... and after the core ATen decompositions (expand appears there from broadcasting decompositions).
UNWANTED_DECOMPOSED = ("index", "gather", "batch_norm", "layer_norm", "group_norm", "split")
# Layer scales deploy cannot fold: EfficientFormer's pooling mixers have no weights before them.
KEPT_PARAMETERS = {"efficientformer": re.compile(r"\.blocks\.\d+\.ls1\.gamma$")}
# Families whose deploy form keeps its MLPs' p=0 Dropout modules (inert; they export to nothing). The others
# have none left.
KEEPS_INERT_DROPOUT = {"tiny_vit"}
# Families whose full-size models are compared in float64 (logits vs timm, deploy vs training form; their micro
# variants stay fp32). With randomize()'s weights, MobileNetV4-hybrid's un-normalised residual stream grows ~300x over
# its 40 blocks at 256 px and its attention turns near-argmax, so fp32 rounding alone moves logits by up to 1 % (timm's
# own SDPA and plain attention paths differ by 0.014 on logits of 112; at 100 px by 2e-4); in float64 ours equals timm
# to ~1e-11 and the deploy form equals the training form to ~1e-10.
FULL_SIZE_IN_FLOAT64 = {"mobilenetv4"}


@contextlib.contextmanager
def _checked_dtype(name: str):
    """float64 as the default dtype while building and running ``name``, when its family needs it."""
    before = torch.get_default_dtype()
    if _spec(name).family in FULL_SIZE_IN_FLOAT64 and name in PUBLISHED:
        torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models at 64 px gain nothing from a second thread, and on a shared machine two threads per process
    made these checks up to 50x slower (every op waits for both to be scheduled); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spec(name: str):
    return get_model_spec(name)


def _timm_counterpart(timm, name: str) -> None:
    """Skip a model timm does not have (a published architecture timm does not implement, such as M3ViT)."""
    if not timm.is_model(name):
        pytest.skip(f"{name}: no timm counterpart (timm {timm.__version__} has no model of that name)")


def _takes_any_size(name: str) -> bool:
    return not _spec(name).fixed_input_size


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def _native(name: str) -> tuple[int, int]:
    """The registered input's (H, W)."""
    return tuple(_spec(name).input_size[1:])


def _small(name: str) -> int | tuple[int, int]:
    """64 px, unless the model has resolution-sized tables and no builder keyword to resize them."""
    spec = _spec(name)
    return SMALL if _takes_any_size(name) or spec.img_size_kwarg else _native(name)


def _build(name: str, size: int | tuple[int, int]) -> nn.Module:
    """The model for ``size`` inputs (rebuilt for it when its tables depend on the resolution)."""
    spec = _spec(name)
    if spec.fixed_input_size and _hw(size) != _native(name):
        return create_model(name, **{spec.img_size_kwarg: size})
    return create_model(name)


def _images(size: int | tuple[int, int], batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *_hw(size), generator=torch.Generator().manual_seed(0))


def _call_functions(program: torch.export.ExportedProgram) -> set[str]:
    return {str(n.target) for n in program.graph.nodes if n.op == "call_function"}


# --------------------------------------------------------------------------------------------- registry

@pytest.mark.unit
def test_every_family_has_a_micro_variant_and_a_representative():
    families = set(list_families())
    assert {_spec(n).family for n in PUBLISHED} == families
    assert {_spec(n).family for n in MICRO} == families
    assert set(REPRESENTATIVE) == families
    assert all(_spec(name).family == family and name in PUBLISHED for family, name in REPRESENTATIVE.items())


@pytest.mark.unit
@pytest.mark.parametrize("name", ALL)
def test_training_form_runs_on_the_meta_device(name):
    """Complexity counting (`edgevit models`) runs the training form on the meta device."""
    spec = _spec(name)
    with torch.device("meta"):
        out = create_model(name).eval()(torch.empty(1, *spec.input_size))
    assert out.shape[:2] == (1, spec.num_classes)  # logits, or a dense (1, classes, H, W) map


# ------------------------------------------------------------------------------------------- state dict

@pytest.mark.unit
@pytest.mark.parametrize("name", PUBLISHED)
def test_state_dict_layout_matches_timm(name, timm):
    _timm_counterpart(timm, name)
    spec = _spec(name)
    with torch.device("meta"):
        ours = create_model(name)
        ref = timm.create_model(name, num_classes=spec.num_classes)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert sorted(ours_sd) == sorted(ref_sd)
    mismatched = {k: (tuple(ours_sd[k].shape), tuple(v.shape)) for k, v in ref_sd.items()
                  if tuple(ours_sd[k].shape) != tuple(v.shape)}
    assert not mismatched


@pytest.mark.unit
@pytest.mark.parametrize("name", ALL)
def test_family_checkpoint_filter_passes_the_own_layout_through(name):
    """`--weights` runs every checkpoint through the family's filter: a timm-layout one must come out as is."""
    with torch.device("meta"):
        model = create_model(name)
    state = model.state_dict()
    filter_fn = _spec(name).family_spec.checkpoint_filter  # None: the family has one layout, loaded as is
    converted = dict(state) if filter_fn is None else filter_fn(dict(state), model)
    assert converted.keys() == state.keys()
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in state.items()}
    model.load_state_dict(converted, strict=True)


# ------------------------------------------------------------------------------------------ timm logits

@pytest.mark.unit
@pytest.mark.parametrize("family", sorted(REPRESENTATIVE))
def test_logits_match_timm(family, timm):
    name = REPRESENTATIVE[family]
    _timm_counterpart(timm, name)
    spec = _spec(name)
    torch.manual_seed(0)
    ref = randomize(timm.create_model(name, num_classes=spec.num_classes)).eval()
    ours = create_model(name).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    # 64: TinyViT pads every window map; 100: maps that are not multiples of the window, nor of 2.
    sizes = [_native(name)] + ([64, 100] if _takes_any_size(name) else [])
    for size in sizes:
        with _checked_dtype(name):
            x = _images(size)
            dtype = torch.get_default_dtype()
            with torch.no_grad():
                torch.testing.assert_close(ours.to(dtype)(x), ref.to(dtype)(x), rtol=1e-4, atol=1e-4,
                                           msg=lambda m, size=size: f"{size} px: {m}")


# ------------------------------------------------------------------------------------------ deploy form

DEPLOY_CASES = ([(name, _small(name)) for name in ALL]
                + [(name, _native(name)) for name in REPRESENTATIVE.values()])


@pytest.mark.unit
@pytest.mark.parametrize("name,size", DEPLOY_CASES)
def test_deploy_form_matches_training_form(name, size):
    with _checked_dtype(name):
        _check_deploy_form(name, size)


def _check_deploy_form(name, size):
    spec = _spec(name)
    model = randomize(_build(name, size)).eval()
    x = _images(size)
    with torch.no_grad():
        ref = model(x)
    fused = deploy(model)
    assert is_deployed(fused) and not is_deployed(model)
    with torch.no_grad():
        out = fused(x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        assert out.shape[:2] == (2, spec.num_classes)
        assert torch.equal(model(x), ref)  # deploy works on a copy
        torch.testing.assert_close(deploy(fused)(x), out)  # deploying a deployed model changes nothing
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    dropouts = [m.p for m in fused.modules() if isinstance(m, nn.Dropout)]
    assert not dropouts or (spec.family in KEEPS_INERT_DROPOUT and set(dropouts) == {0.0}), dropouts
    kept = KEPT_PARAMETERS.get(spec.family)
    leftovers = [n for n, _ in fused.named_parameters() if n.endswith(("attention_biases", "gamma"))
                 and not (kept and kept.search(n))]
    assert not leftovers  # bias tables became precomputed buffers; layer scales folded into the weights


# --------------------------------------------------------------------------------------- torch.export

# One variant per family: what export takes is the family's block types, which its micro variant has (the
# full-size models are exported by the compile tests: test_compile.py, test_litert.py, test_efficientformer.py).
EXPORT_CASES = ([(name, _native(name)) for name in MICRO]
                + [(name, 96) for name in MICRO if _takes_any_size(name)])


@pytest.mark.integration
@pytest.mark.parametrize("name,size", EXPORT_CASES)
def test_deploy_form_exports_with_only_delegatable_ops(name, size):
    model = randomize(_build(name, size)).eval()
    x = _images(size, batch=1)
    exported = torch.export.export(deploy(model), (x,))
    ops = _call_functions(exported)
    assert not [op for op in ops if any(word in op for word in UNWANTED_IN_EXPORT)], ops
    decomposed = _call_functions(exported.run_decompositions())
    assert not [op for op in decomposed if any(word in op for word in UNWANTED_DECOMPOSED)], decomposed
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------- checkpoints

@pytest.mark.unit
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("name", MICRO)
def test_own_checkpoint_round_trips_through_load_weights(tmp_path, name, suffix):
    """A checkpoint saved from a zoo model loads through --weights' loader and gives the same logits."""
    from safetensors.torch import save_file

    source = apply_synthetic_weights(create_model(name), seed=7).eval()
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save({"model": source.state_dict()}, path)
    target = create_model(name).eval()
    assert len(load_weights(target, path)) == 64  # the file's sha256, for the manifest
    x = _images(_native(name), batch=1)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))
