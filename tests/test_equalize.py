"""``equalize-stream``: per-channel equalisation of SHViT's un-normalised residual stream (exact in fp32)."""
from __future__ import annotations

import copy

import pytest
import torch
from randomize import randomize

from edgevit.models import create_model, deploy
from edgevit.quantization import QuantRecipe
from edgevit.quantization.equalize import equalize_streams, stream_ranges


def _spread(r: torch.Tensor) -> float:
    return float(r.max() / r.median())


@pytest.mark.unit
def test_stream_equalisation_is_exact_in_fp32_and_narrows_the_channel_spread():
    torch.manual_seed(0)
    model = randomize(create_model("shvit_micro", num_classes=10).eval())
    deployed = deploy(model)
    with torch.no_grad():  # one outlier channel in the stream stage 2's blocks read (as trained weights have)
        deployed.stages[2].downsample[2].conv3.weight[5] *= 50.0
        deployed.stages[2].downsample[2].conv3.bias[5] *= 50.0
    x = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    segments = deployed.residual_streams()
    before = stream_ranges(deployed, x)
    assert set(before) == {s["name"] for s in segments} and len(segments) == 12

    equalized = copy.deepcopy(deployed)
    done = equalize_streams(equalized, x)
    assert set(done) == set(before)  # every segment passed its own exactness check, tied ones included
    with torch.no_grad():
        reference, out = deployed(x), equalized(x)
    assert (out - reference).abs().max() <= 1e-4 * reference.abs().max()
    assert torch.equal(out.argmax(1), reference.argmax(1))

    after = stream_ranges(equalized, x)
    worst = "stages.2.downsample.2.conv3"  # the segment the patch merging's projection writes
    assert _spread(before[worst]) > 5
    # alpha = 0.75 (untied): the widest channel keeps (max / median) ** 0.25 of its spread
    assert _spread(after[worst]) < _spread(before[worst]) ** 0.25 * 1.01
    untied = [s["name"] for s in segments if not s["tied"]]
    assert all(_spread(after[n]) < _spread(before[n]) ** 0.25 * 1.01 for n in untied)
    # The attention's GroupNorm reads channels [0, pdim) together: they share one scale.
    tied = next(s for s in segments if s["tied"])
    a, b = tied["tied"][0]
    ratio = before[tied["name"]][a:b] / after[tied["name"]][a:b]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)


@pytest.mark.unit
def test_stream_equalisation_is_a_default_step_and_leaves_other_forms_alone():
    assert QuantRecipe().equalize_stream and QuantRecipe.from_steps(["equalize-stream"]).equalize_stream
    assert not QuantRecipe.from_steps(["bias-correction"]).equalize_stream
    assert QuantRecipe().describe()["vit_aware"]["equalize_stream"]
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(0)
    training_form = randomize(create_model("shvit_micro", num_classes=10).eval())  # Conv2dNorm, not folded convs
    state = copy.deepcopy(training_form.state_dict())
    assert equalize_streams(training_form, x) == {}
    assert all(torch.equal(v, training_form.state_dict()[k]) for k, v in state.items())
    other = deploy(create_model("tiny_vit_micro"))  # no residual_streams(): nothing to do
    assert equalize_streams(other, x) == {}
