"""PTQ recipe, ViT-aware steps, per-layer sensitivity and mixed precision, on a small trained model.

The model (tests/ptq_models.py) is trained on digits once per session; real PT2E calibration, real
XNNPACK lowering, and every accuracy number measured by running the .pte in the ExecuTorch runtime.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from ptq_models import trained_digits

from edgevit.backends import get_backend
from edgevit.cli import main
from edgevit.compile import CompileOptions, compile_model
from edgevit.compile.batched import run_batched
from edgevit.data import load_image_folder, synthetic_images
from edgevit.models import deploy, resolve_model
from edgevit.quantization import OBSERVERS, PercentileObserver, QuantRecipe, quantize_static
from edgevit.quantization.layers import module_types
from edgevit.quantization.reparam import RescaledStandardize, rescale_norms
from edgevit.training import topk_accuracy

TESTS = Path(__file__).parent
SHAPE = "1,3,32,32"


@pytest.fixture(autouse=True)
def _user_package_importable(monkeypatch):
    monkeypatch.chdir(TESTS)  # `ptq_models:...` resolves like a user's package in the cwd


@pytest.fixture(scope="module")
def net():
    return trained_digits()


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def _compile(tmp_path, net, weights="clean_weights", model="ptq_models:build_digits_net", **kw):
    return compile_model(CompileOptions(model=model, device="host", backend="executorch", precision="int8",
                                        weights=net[weights], calib=net["calib"], input_shape=SHAPE,
                                        num_verify=16, output_root=tmp_path, **kw))


def _artifact_top1(net, artifact: Path) -> float:
    logits = run_batched(get_backend("executorch").load(artifact), net["inputs"], 1)
    return topk_accuracy(logits, net["labels"], (1,))["top1"]


@pytest.mark.integration
@pytest.mark.slow
def test_every_observer_compiles_verifies_and_reaches_the_artifact(tmp_path, net):
    hashes = {}
    for observer in OBSERVERS:
        result = _compile(tmp_path / observer, net, observer=observer)
        m = result.manifest
        assert m["verification"]["passed"] and m["verification"]["sqnr_db"] > 15, observer
        assert m["quantization"]["observer"] == observer and m["quantization"]["calibration_count"] == 32
        assert m["quantization"]["vit_aware"] == QuantRecipe().describe()["vit_aware"]
        hashes[observer] = m["artifact"]["sha256"]
    assert len(set(hashes.values())) == len(OBSERVERS)  # each observer gave different int8 ranges


@pytest.mark.unit
def test_percentile_observer_clips_a_rare_outlier():
    values = torch.cat([torch.rand(100_000), torch.tensor([1000.0])])
    observer = PercentileObserver(percentile=99.99, dtype=torch.int8, quant_min=-128, quant_max=127)
    observer(values)
    scale, zero_point = observer.calculate_qparams()
    covered = float(scale) * (127 - int(zero_point))  # the largest value the range represents
    # The 1000 is clipped (min-max would cover it); the edge is within one of torchao's 2048 histogram
    # bins over [min, max] (0.49 here), the resolution the percentile is read at.
    assert 0.9 < covered < 1.0 + 1000 / 2048 + 0.01


@pytest.mark.unit
def test_small_weights_keep_int8_resolution_per_channel():
    """Weights with a small layer scale folded in (MobileNetV4-Hybrid's projections: max |w| ~ 1e-3) keep
    127 levels per channel; a 2**-12 scale floor (XNNPACK's activation eps) left them about 4."""
    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)) * torch.logspace(-4, -2, 8)[:, None]
    spec = QuantRecipe().quantization_config().weight  # the observer as PT2E builds it from the spec
    observer = spec.observer_or_fake_quant_ctr(dtype=spec.dtype, qscheme=spec.qscheme, quant_min=spec.quant_min,
                                               quant_max=spec.quant_max, ch_axis=spec.ch_axis)
    observer(weight)
    scale, zero_point = observer.calculate_qparams()
    assert torch.all(zero_point == 0)  # symmetric
    rounded = (weight / scale[:, None]).round().clamp(-127, 127) * scale[:, None]
    relative = (rounded - weight).abs().amax(1) / weight.abs().amax(1)
    assert torch.all(relative <= 0.5 / 127 * 1.001)  # half a step of the channel's own range


@pytest.mark.unit
def test_rescale_norms_is_exact_in_fp32_and_equalises_channel_widths():
    model = deploy(resolve_model("tiny_vit_micro").module)  # seeded trained-like statistics
    pre = resolve_model("tiny_vit_micro").preprocessing
    from edgevit.data import Preprocess
    x = synthetic_images(Preprocess(64, 64, tuple(pre["mean"]), tuple(pre["std"])), 16).inputs
    with torch.no_grad():
        before = model(x)
    rescaled = rescale_norms(model, x)
    assert len(rescaled) >= 5  # attention and MLP norms of every block, and the head's
    widths = {}

    def record(name):
        def hook(module, args, y):
            widths[name] = y.reshape(-1, y.shape[-1]).aminmax(dim=0)
        return hook
    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules()
             if isinstance(m, RescaledStandardize)]
    with torch.no_grad():
        after = model(x)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    for name, (lo, hi) in widths.items():
        width = hi - lo
        assert torch.allclose(width, width.mean().expand_as(width), rtol=1e-3, atol=1e-5), name


@pytest.mark.integration
def test_float_norm_keeps_norm_statistics_out_of_int8():
    model = deploy(resolve_model("tiny_vit_micro").module)
    x = torch.randn(16, 3, 64, 64)

    def quantized_in_norms(recipe):
        from edgevit.backends.executorch.quantizer import xnnpack_int8_quantizer
        graph, _ = quantize_static(model, torch.zeros(1, 3, 64, 64), recipe, xnnpack_int8_quantizer(recipe), x)
        arithmetic = {torch.ops.aten.mul.Tensor, torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor,
                      torch.ops.aten.rsqrt.default}
        # int8 tensors computed and used inside a norm: squares, variance + eps, rsqrt. (Its input, a
        # reshape of it and the row mean share the previous op's int8 grid either way; its output is the
        # next layer's int8 input either way.)
        def in_norm(node):
            return "Standardize" in module_types(node)

        return sum(1 for n in graph.graph.nodes if "quantize_per_tensor" in str(n.target)
                   and getattr(n.args[0], "target", None) in arithmetic and in_norm(n.args[0])
                   and any(in_norm(user) for dq in n.users for user in dq.users))

    assert quantized_in_norms(QuantRecipe(observer="minmax", float_norm=False)) > 0
    assert quantized_in_norms(QuantRecipe(observer="minmax", float_norm=True)) == 0


@pytest.mark.integration
def test_bias_correction_cuts_the_mean_error_and_leaves_the_float_model_alone(net):
    from edgevit.backends.executorch.quantizer import xnnpack_int8_quantizer
    from edgevit.models import load_weights
    model = resolve_model("ptq_models:build_digits_net", (1, 3, 32, 32)).module
    load_weights(model, net["clean_weights"])
    deployed = deploy(model)
    calib = load_image_folder(net["calib"], net["preprocess"], 32).inputs
    state = {k: v.clone() for k, v in deployed.state_dict().items()}
    with torch.no_grad():
        reference = deployed(calib)
    errors = {}
    for on in (False, True):  # the head too: the output's mean is what this measures
        recipe = QuantRecipe(observer="minmax", bias_correction=on, bias_correction_heads=True)
        graph, steps = quantize_static(deployed, torch.zeros(1, 3, 32, 32), recipe, xnnpack_int8_quantizer(recipe),
                                       calib)
        with torch.no_grad():
            errors[on] = (reference - graph(calib)).mean(0).abs().mean()
    assert steps["bias_corrected_layers"] == ["features.0", "features.2", "features.4", "fc1", "fc2"]
    assert errors[True] < errors[False] / 2
    assert all(torch.equal(v, deployed.state_dict()[k]) for k, v in state.items())  # not written through


class _Windowed(torch.nn.Module):
    """A linear over 2x2 windows, as TinyViT's attention runs: its batch axis holds windows, not images."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 16)
        with torch.no_grad():
            self.fc.bias.add_(3.0)  # a mean that a mis-weighted correction would visibly overshoot

    def forward(self, x):
        b, _, h, w = x.shape
        y = self.conv(x).reshape(b, 16, 2, h // 2, 2, w // 2).permute(0, 2, 4, 3, 5, 1)
        return self.fc(y.reshape(b * 4, (h // 2) * (w // 2), 16))


@pytest.mark.integration
def test_bias_correction_weights_windowed_layers_by_image():
    from edgevit.backends.executorch.quantizer import xnnpack_int8_quantizer
    model = _Windowed().eval()
    calib = torch.randn(12, 3, 8, 8)
    with torch.no_grad():
        reference = model(calib).mean((0, 1))
    means = {}
    for on in (False, True):  # fc is the head: corrected only on request
        recipe = QuantRecipe(observer="minmax", bias_correction=on, bias_correction_heads=True)
        graph, _ = quantize_static(model, torch.zeros(1, 3, 8, 8), recipe, xnnpack_int8_quantizer(recipe), calib)
        with torch.no_grad():
            means[on] = graph(calib).mean((0, 1))
    # Corrected on the calibration set itself, the mean output moves towards the float one; weighting the
    # float means by windows (4 per image) instead of images put them at 4x the bias and overshot by ~9.
    before, after = (means[False] - reference).abs().max(), (means[True] - reference).abs().max()
    assert after <= before and after < 1e-2, (before, after)


class _Relu6Head(torch.nn.Module):
    """conv -> relu6 -> conv -> pooled -> flatten -> linear head: EfficientNet-Lite's shape in miniature."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.conv2, self.fc = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 1), \
            torch.nn.Linear(8, 5)
        with torch.no_grad():
            self.conv.bias[0] = -40.0  # one channel far below 0: relu6 clips it, an unclamped range would not

    def forward(self, x):
        y = self.conv2(torch.nn.functional.relu6(self.conv(x)))
        return self.fc(y.mean((2, 3), keepdim=True).flatten(1))


@pytest.mark.integration
def test_bias_correction_leaves_the_head_alone_unless_asked():
    from edgevit.backends.executorch.quantizer import xnnpack_int8_quantizer
    model, calib = _Relu6Head().eval(), torch.randn(16, 3, 8, 8)
    ran, heads = {}, {}
    for steps in (["bias-correction"], ["bias-correction", "bias-correction-heads"]):
        recipe = QuantRecipe.from_steps(steps)
        graph, done = quantize_static(model, torch.zeros(1, 3, 8, 8), recipe, xnnpack_int8_quantizer(recipe), calib)
        ran[len(steps)], heads[len(steps)] = done["bias_corrected_layers"], recipe.describe()["vit_aware"]
    assert ran[1] == ["conv", "conv2"] and ran[2] == ["conv", "conv2", "fc"]  # the head through flatten + q/dq
    assert not heads[1]["bias_correction_heads"] and heads[2]["bias_correction_heads"]
    assert not QuantRecipe().bias_correction_heads


@pytest.mark.integration
def test_relu6_after_a_conv_is_quantized_after_the_clamp_only():
    """XNNPACK fuses the clamp into the conv (the conv's output takes the clamp's qparams); the PT2E graph
    must compute the same, not round the unclamped output to a scale the artifact never uses."""
    from edgevit.backends.executorch.quantizer import xnnpack_int8_quantizer
    model, calib = _Relu6Head().eval(), torch.randn(16, 3, 8, 8)
    recipe = QuantRecipe(bias_correction=False)
    graph, _ = quantize_static(model, torch.zeros(1, 3, 8, 8), recipe, xnnpack_int8_quantizer(recipe), calib)
    clamp = next(n for n in graph.graph.nodes if n.target == torch.ops.aten.relu6.default)
    assert clamp.args[0].target == torch.ops.aten.conv2d.default  # no quantize/dequantize between
    after = next(iter(clamp.users))
    assert "quantize_per_tensor" in str(after.target) and after.args[2] == -128  # observed on 0..6: zp at -128
    assert after.args[1] <= 6 / 255 * 1.001  # the clamped range (the conv alone reaches -40)


@pytest.mark.integration
def test_sensitivity_report_ranks_the_massive_activation_layers_first(tmp_path, capsys, net):
    code, out, err = _cli(capsys, "quant-report", "ptq_models:build_digits_net", "--weights", net["weights"],
                          "--calib", net["calib"], "--input-shape", SHAPE, "-o", tmp_path)
    assert code == 0, err
    folder = tmp_path / "ptq_models.build_digits_net-quant-report"
    report = json.loads((folder / "sensitivity.json").read_text())
    names = [row["name"] for row in report["layers"]]
    assert sorted(names) == ["fc1", "fc2", "features.0", "features.2", "features.4"]
    assert set(names[:2]) == {"fc1", "fc2"}  # the tensor with the massive unit: fc1's output, fc2's input
    sqnr = [row["sqnr_db"] for row in report["layers"]]
    assert sqnr == sorted(sqnr) and sqnr[0] < 10 < sqnr[-1]
    assert report["full_int8"]["sqnr_db"] < 10 and report["samples"] == 32
    assert (folder / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 5 and "fc" in rows[0]  # the table, most sensitive first


@pytest.mark.integration
def test_mixed_precision_meets_the_budget_with_the_fewest_fp32_layers(tmp_path, net):
    result = _compile(tmp_path, net, weights="weights", max_drop=1.0, eval_dir=net["test"])
    mp, q = result.manifest["mixed_precision"], result.manifest["quantization"]
    assert mp["metric"] == "top1_drop" and mp["eval_images"] == 450
    assert mp["drop_int8"] > 20  # full int8 cannot hold the massive unit
    assert mp["measured_drop"] <= 1.0
    assert mp["layers_fp32"] and set(mp["layers_fp32"]) <= {"fc1", "fc2"} and q["fp32_layers"] == mp["layers_fp32"]
    assert mp["latency_ms_int8"] > 0 and mp["latency_ms_mixed"] > 0
    # Independently: the written artifact, run fresh, within the budget of the fp32 model.
    with torch.no_grad():
        fp32 = topk_accuracy(net["model"](net["inputs"]), net["labels"], (1,))["top1"]
    assert fp32 - _artifact_top1(net, result.artifact) <= 1.0


@pytest.mark.integration
def test_unreachable_max_drop_says_the_best_reached(tmp_path, capsys, net):
    code, out, err = _cli(capsys, "compile", "ptq_models:build_digits_net_concat", "-d", "host", "--backend",
                          "executorch", "--precision", "int8", "--weights", net["weights"], "--calib", net["calib"],
                          "--input-shape", SHAPE, "--max-drop", "1", "--eval", net["test"], "-o", tmp_path / "out")
    assert code == 2
    text = err[err.index("error:"):]
    # The budget, the layers tried in fp32 (all 5 of the kinds it can leave float) and the best drop reached.
    assert "--max-drop 1" in text and re.search(r"\b5 layers\b", text) and re.search(r"\d+(\.\d+)? points", text), text
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# case: (arguments, what the message must name: the wrong value and the close right one, the options that
# clash, the folder at fault, the numbers that disagree), not its wording.
BAD_INPUTS = {
    "unknown observer": (["--observer", "histgram"], ["'histgram'", "histogram"]),
    "unknown ptq step": (["--ptq-steps", "float-norm,bias-corection"], ["'bias-corection'", "bias-correction"]),
    "recipe on fp32": (["--precision", "fp32", "--observer", "minmax"], ["--observer", "int8"]),
    "recipe on litert": (["--backend", "litert", "--max-drop", "1"], ["--max-drop", "litert"]),
    "eval without max-drop": (["--eval", "{test}"], ["--eval", "--max-drop"]),
    "eval without class folders": (["--max-drop", "1", "--eval", "{calib}"], ["{calib}"]),
    "unknown fp32 layer": (["--fp32-layer", "fc3"], ["'fc3'", "fc1"]),
    "calibration too small": (["--num-calib", "100"], ["{calib}", "64", "100", "--num-calib"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.integration
def test_bad_ptq_input_is_one_clear_paragraph(tmp_path, capsys, net, case):
    args, expected = BAD_INPUTS[case]
    args = [a.replace("{test}", str(net["test"])).replace("{calib}", str(net["calib"])) for a in args]
    base = ["compile", "ptq_models:build_digits_net", "-d", "host", "--weights", net["clean_weights"],
            "--calib", net["calib"], "--input-shape", SHAPE, "-o", tmp_path / "out"]
    if "--backend" not in args:
        base += ["--backend", "executorch"]
    if "--precision" not in args and "--backend" not in args:
        base += ["--precision", "int8"]
    code, out, err = _cli(capsys, *base, *args)
    assert code == 2, err
    assert "Traceback" not in err and err.count("error:") == 1
    text = err[err.index("error:"):]
    for fragment in expected:
        fragment = fragment.replace("{test}", str(net["test"])).replace("{calib}", str(net["calib"]))
        assert fragment in text, (fragment, text)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("manifest.json"))
