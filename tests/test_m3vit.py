"""M3ViT (multi-task MoE ViT; the model Edge-MoE runs on an FPGA): the facts the zoo, the deploy form and the phone
compiles depend on. What every model passes (deploy form vs training form, export, checkpoints) is in
test_model_conformance.py.

- size: m3vit_tiny is Edge-MoE's configuration, 17.99 M parameters (Edge-MoE: "about 17.9 M"), 0.78 G active MACs
  (top-2 of 16 experts); the meta-device count `edgevit models` prints agrees
- routing: the gate keeps exactly top_k experts per token, ties to the lower index, in the training form's
  ``top_k_gate`` and the deploy form's static-shape ``StaticTopKGate``; the sparse MoE equals the dense one
- tasks: ``model.task`` switches every gate and the head (by name or index); unknown ones are refused by name
- phones: the micro compiles to int8 ExecuTorch (one XNNPACK delegate, nothing outside) and LiteRT for pixel8
  and verifies; verification's top-1 on a dense map is per position over the class dim
"""
from __future__ import annotations

import pytest
import torch
from randomize import randomize

from edgevit.compile import CompileOptions, compile_model
from edgevit.compile.metrics import compare_outputs
from edgevit.models import count_params_and_macs, create_model, deploy
from edgevit.models.m3vit import DenseMoE, MoE, StaticTopKGate, count_active_macs, top_k_gate


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(model, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, *model.img_size, generator=torch.Generator().manual_seed(seed))


def _logits_with_ties(tokens: int, experts: int, seed: int = 0) -> torch.Tensor:
    """Random logits, a third of the rows on a coarse integer grid (many ties), one row all equal."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(tokens, experts, generator=g)
    logits[: tokens // 3] = torch.randint(-2, 3, (tokens // 3, experts), generator=g).float()
    logits[0] = 0.5
    return logits


def _reference_selection(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k by sorting (value descending, index ascending), one token at a time."""
    selected = torch.zeros_like(logits, dtype=torch.bool)
    for t, row in enumerate(logits.tolist()):
        for e in sorted(range(len(row)), key=lambda e: (-row[e], e))[:k]:
            selected[t, e] = True
    return selected


# ------------------------------------------------------------------------------------------------- size

@pytest.mark.unit
def test_tiny_has_edge_moe_parameter_count_and_active_macs():
    with torch.device("meta"):
        model = create_model("m3vit_tiny")
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6, 2) == 17.99
    active = count_active_macs(model)
    assert round(active / 1e9, 2) == 0.78
    # `edgevit models` counts the training form on the meta device, where the MoE takes its average routing
    # (top_k experts per token): the same count plus the task head.
    counted_params, counted_macs = count_params_and_macs("m3vit_tiny")
    head = model.grid[0] * model.grid[1] * model.embed_dim * model.num_classes
    assert (counted_params, counted_macs) == (params, active + head)


# ---------------------------------------------------------------------------------------------- routing

@pytest.mark.unit
@pytest.mark.parametrize("experts,k", [(4, 2), (16, 2), (5, 3), (8, 1)])
def test_gate_selects_exactly_top_k_with_ties_to_the_lower_index(experts, k):
    logits = _logits_with_ties(96, experts)
    expected = _reference_selection(logits, k)
    assert expected[0].tolist() == [e < k for e in range(experts)]  # all tied: the k lowest indices
    weights = top_k_gate(logits, k)
    static = StaticTopKGate(experts, k)(logits) / experts  # the deploy form returns E * weights
    for w in (weights, static):
        assert torch.equal(w > 0, expected)
        assert torch.equal((w > 0).sum(-1), torch.full((96,), k))
        torch.testing.assert_close(w.sum(-1), torch.ones(96))
    # the weights: softmax over the selected logits
    masked = logits.masked_fill(~expected, -torch.inf)
    torch.testing.assert_close(weights, torch.softmax(masked, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(static, weights, rtol=0, atol=1e-6)


@pytest.mark.unit
def test_sparse_moe_equals_the_dense_deploy_form():
    torch.manual_seed(0)
    moe = randomize(MoE(dim=32, hidden=24, num_experts=6, top_k=2, num_tasks=2)).eval()
    x = torch.randn(2, 9, 32)
    for task in (0, 1):
        moe.task = task
        dense = moe.fuse()
        assert isinstance(dense, DenseMoE)
        with torch.no_grad():
            torch.testing.assert_close(dense(x), moe(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ tasks

@pytest.mark.unit
def test_task_switch_changes_gates_and_head_and_refuses_unknown_names():
    model = randomize(create_model("m3vit_micro")).eval()
    x = _images(model)
    moes = [m for m in model.modules() if isinstance(m, MoE)]
    assert moes and model.task == 0
    with torch.no_grad():
        semseg = model(x)
        model.task = "depth"
        assert model.task == 1 and all(m.task == 1 for m in moes)
        depth = model(x)
        deployed = deploy(model)  # fixed to the task chosen when deployed
        torch.testing.assert_close(deployed(x), depth, rtol=1e-4, atol=1e-4)
        assert deployed.task_name == "depth"
        # the same gate logits under the other task's gate pick other experts for some token
        tokens = torch.randn(64, model.embed_dim, generator=torch.Generator().manual_seed(1))
        assert not torch.equal(moes[0].gate_weights(tokens) > 0,
                               top_k_gate(moes[0].gates[0](tokens), moes[0].top_k) > 0)
    assert semseg.shape == (2, 19, *model.grid) and depth.shape == (2, 1, *model.grid)
    model.task = 0
    with torch.no_grad():
        assert torch.equal(model(x), semseg)
    with pytest.raises(ValueError, match=r"unknown task 'normals'; this model has semseg, depth"):
        model.task = "normals"
    with pytest.raises(ValueError, match=r"task index 2 out of range"):
        model.task = 2
    assert model.task == 0
    assert create_model("m3vit_micro", task="depth").task == 1


# ------------------------------------------------------------------------------------------------ phones

@pytest.mark.unit
def test_verification_top1_on_a_dense_map_is_per_position():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 19, 2, 4, generator=g)
    out = ref.clone()
    out[0, :, 0, 0] = -ref[0, :, 0, 0]  # one position of 16 votes for another class
    a = compare_outputs(ref, out)
    assert a.top1_agreement == pytest.approx(15 / 16) and a.samples == 2
    logits = torch.randn(4, 10, generator=g)
    assert compare_outputs(logits, logits).top1_agreement == 1.0


@pytest.mark.integration
@pytest.mark.parametrize("backend", [pytest.param("executorch", marks=pytest.mark.slow), "litert"])  # ET: 17-25 s
def test_micro_compiles_to_int8_for_pixel8_and_verifies(tmp_path, backend):
    result = compile_model(CompileOptions(model="m3vit_micro", device="pixel8", backend=backend, precision="int8",
                                          num_calib=16, num_verify=4, output_root=tmp_path))
    m = result.manifest
    assert m["verification"]["passed"] and m["verification"]["cosine"] >= 0.98
    assert result.artifact.exists()
    ops = m["ops"]
    # routing as static-shape ops: one XNNPACK delegate, nothing outside (LiteRT int8: the standardisations,
    # their `var + eps` ADDs included, stay float inside it)
    assert ops["delegate_calls"] == 1 and ops["non_delegated_ops"] == 0, ops
