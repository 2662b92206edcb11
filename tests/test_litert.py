"""LiteRT backend: two families converted at 64x64 and run in the LiteRT interpreter, numerics vs fp32 eager;
the pipeline end to end; corrupt files, a precision the backend lacks, an op LiteRT cannot convert."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgevit.backends import get_backend
from edgevit.backends.litert import backend as litert_backend
from edgevit.backends.litert.runtime import delegation
from edgevit.cli import main
from edgevit.compile import CompileOptions, compile_model
from edgevit.compile.metrics import compare_outputs
from edgevit.data import Preprocess, synthetic_images
from edgevit.errors import EdgevitError, ExportError
from edgevit.models import deploy, resolve_model
from edgevit.progress import SilentProgress

SHAPE = (1, 3, 64, 64)
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8-dynamic": 0.98, "int8": 0.98}
# EfficientFormerV2's float conversion (shared by its four precisions) takes ~30 s: every one of them pays it
# when run alone, so all four are slow.
FAMILIES = ["shvit_s1", pytest.param("efficientformerv2_s0", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def family(request):
    """Per model: deploy form, its float .tflite (converted once), calibration and verification inputs."""
    cache = {}

    def get(name):
        if name not in cache:
            resolved = resolve_model(name, SHAPE)  # synthetic weights, as compile uses
            deployed = deploy(resolved.module)
            example = torch.zeros(SHAPE)
            float_model = litert_backend._convert(deployed, example)
            pre = Preprocess.from_dict(resolved.preprocessing)
            inputs = synthetic_images(pre, 4, seed=1).inputs
            with torch.no_grad():
                reference = torch.cat([resolved.module(x) for x in inputs.split(1)])
            cache[name] = (deployed, example, float_model, synthetic_images(pre, 8, seed=0).inputs, inputs,
                           reference)
        return cache[name]
    return get


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8-dynamic", "int8"])
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.integration
def test_every_precision_runs_in_litert(family, monkeypatch, name, precision):
    deployed, example, float_model, calibration, inputs, reference = family(name)
    # Conversion is deterministic: reuse the family's float .tflite so the file stays fast.
    monkeypatch.setattr(litert_backend, "_convert", lambda model, ex: float_model)
    backend = get_backend("litert")
    lowered = backend.lower(deployed, example, precision, calibration if precision == "int8" else None,
                            SilentProgress())
    run = backend.load(lowered.data)
    out = torch.cat([run(x) for x in inputs.split(1)])
    agreement = compare_outputs(reference, out)
    print(f"{name} {precision}: cosine {agreement.cosine:.6f}, SQNR {agreement.sqnr_db:.1f} dB, "
          f"{len(lowered.data) / 2**20:.2f} MB, {lowered.ops.delegate_calls} XNNPACK partition(s)")
    assert agreement.cosine > MIN_COSINE[precision]
    assert out.dtype == torch.float32 and out.shape == (4, 1000)
    assert lowered.details["io"]["input"]["dtype"] == lowered.details["io"]["output"]["dtype"] == "float32"
    ops = lowered.ops.as_dict()
    assert ops["delegated_ops"] + ops["non_delegated_ops"] == lowered.details["model_ops"]
    assert ops["delegate_calls"] == lowered.details["xnnpack_partitions"] >= 1
    assert ops["delegated_ops"] > 0.9 * lowered.details["model_ops"]  # XNNPACK takes (almost) everything
    if precision == "int8":
        assert ops["delegated"]["CONV_2D"] > 0 and ops["delegated"]["QUANTIZE"] > 0
        # int8 leaves outside the delegate only what fp32 does (SHViT-S1's attention FULLY_CONNECTEDs with
        # run-time weights): its norms' statistics (their `var + eps` ADD included) stay float inside it.
        fp32_ops, fp32_counts = delegation(float_model)
        assert ops["non_delegated"] == dict(fp32_ops.non_delegated)
        assert ops["delegate_calls"] == fp32_counts["xnnpack_partitions"]
        q = lowered.details["quantization"]
        assert q["observer"] in q["observer_choice"] and ("Standardize" in q["float_modules"]) == (name == "shvit_s1")
    if precision != "fp32":
        assert len(lowered.data) < 0.6 * len(float_model)


@pytest.mark.integration
def test_compile_end_to_end(tmp_path):
    """Through the pipeline: calibration, verification in the runtime, manifest, the written file."""
    result = compile_model(CompileOptions(model="shvit_s1", device="galaxy-s24", backend="litert", precision="int8",
                                          input_shape="1,3,64,64", num_calib=8, num_verify=4, output_root=tmp_path))
    m = result.manifest
    assert sorted(p.name for p in result.out_dir.iterdir()) == ["manifest.json", "model.tflite", "report.md"]
    assert json.loads((result.out_dir / "manifest.json").read_text()) == m
    assert m["backend"]["name"] == "litert" and m["backend"]["io"]["input"]["dtype"] == "float32"
    assert m["calibration"]["count"] == 8 and m["quantization"]["scheme"].startswith("ai-edge-quantizer static int8")
    assert m["quantization"]["calibration_count"] == 8 and m["quantization"]["vit_aware"]["float_norm_statistics"]
    assert m["verification"]["passed"] and m["verification"]["cosine"] > 0.98
    assert m["ops"]["delegate_calls"] >= 1 and m["ops"]["delegated_ops"] > 300
    assert set(m["tool_versions"]) >= {"litert-torch", "ai-edge-litert", "ai-edge-quantizer"}
    x = torch.randn(1, 3, 64, 64)
    assert get_backend("litert").load(result.artifact)(x).shape == (1, 1000)


@pytest.mark.unit
def test_int8_recipe_scopes_and_observers():
    """What ai-edge-quantizer does with the recipe's float scopes (it matches an op's output tensor names, each
    followed by ';'), and how the observers combine per-image calibration results."""
    import numpy as np
    from ai_edge_quantizer import recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    from edgevit.backends.litert.quantizer import merge_min_max, module_scope, static_int8_recipe, tensor_scope

    norm = "m.MobileViT/edgevit.models.layers.norm.Standardize_norm1;4"  # names as litert-torch writes them
    add = "m.FastVit/m.RepMixer_token_mixer;3"
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(static_int8_recipe([module_scope(["Standardize"]), tensor_scope([add])]))
    algorithm = {scope: manager.get_quantization_configs(op, scope + ";")[0] for op, scope in [
        (TFLOperationName.ADD, norm), (TFLOperationName.ADD, add), (TFLOperationName.ADD, add + "0"),
        (TFLOperationName.FULLY_CONNECTED, "m.MobileViT/torch.nn.modules.linear.Linear_qkv;3"),
        (TFLOperationName.ADD, "m.RescaledStandardize_norm;1")]}
    assert [a == AlgorithmName.NO_QUANTIZE for a in algorithm.values()] == [True, True, False, False, False]

    per_image = [{"t": {"min": np.array([-1.0]), "max": np.array([2.0])}, "w": {}},
                 {"t": {"min": np.array([-3.0]), "max": np.array([4.0])}, "w": {}}]
    minmax, mean = merge_min_max(per_image, "minmax"), merge_min_max(per_image, "mean-extremes")
    assert (minmax["t"]["min"], minmax["t"]["max"]) == (-3.0, 4.0) and minmax["w"] == {}
    assert (mean["t"]["min"], mean["t"]["max"]) == (-2.0, 3.0)


@pytest.mark.integration
def test_edgevit_observer_range_is_what_the_tflite_carries():
    """--observer percentile on LiteRT: the range edgevit's PercentileObserver (with the ExecuTorch recipe's int8
    activation spec) picks for a conv's output over the calibration images, observed in eager torch, is the
    int8 .tflite's scale and zero point for that tensor: one outlier pixel, which min-max would keep, is
    clipped (the scale is ~10x narrower)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgevit.quantization import QuantRecipe
    from edgevit.quantization.observers import PercentileObserver

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    calibration = torch.randn(6, 3, 32, 32)
    calibration[2, :, 3, 3] = 40.0
    lowered = get_backend("litert").lower(net, torch.zeros(1, 3, 32, 32), "int8", calibration, SilentProgress(),
                                          recipe=QuantRecipe(observer="percentile"))
    q = lowered.details["quantization"]
    assert q["observer"] == "percentile" and q["observer_choice"]["by"] == "--observer"

    expected = PercentileObserver(dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine,
                                  eps=2**-12)
    with torch.no_grad():
        relu = [net[:2](x) for x in calibration.split(1)]
    for y in relu:
        expected(y)
    scale, zero_point = (float(v) for v in expected.calculate_qparams())
    (carried,) = [d["quantization"] for d in Interpreter(model_content=lowered.data).get_tensor_details()
                  if "ReLU_1" in d["name"] and d["dtype"] == np.int8]
    assert carried[0] == pytest.approx(scale, rel=1e-3) and abs(carried[1] - zero_point) <= 1
    minmax_scale = max(float(y.max()) for y in relu) / 255
    assert carried[0] < 0.2 * minmax_scale


@pytest.mark.parametrize("content", [b"TFL3" + b"\x00" * 60, "half", b""])
@pytest.mark.integration
def test_corrupt_tflite_is_named(tmp_path, content):
    path = tmp_path / "broken.tflite"
    if content == "half":  # a real model, truncated
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
        data = litert_backend._convert(model, torch.zeros(1, 3, 8, 8))
        content = data[:len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(EdgevitError) as e:
        get_backend("litert").load(path)
    message = str(e.value)
    assert str(path) in message and "\n" not in message  # one paragraph that names the file


@pytest.mark.unit
def test_missing_file_is_named(tmp_path):
    with pytest.raises(EdgevitError) as e:
        get_backend("litert").load(tmp_path / "none.tflite")
    assert "none.tflite" in str(e.value)


@pytest.mark.unit
def test_precision_the_backend_lacks(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["compile", "shvit_s1", "-d", "host", "--backend", "executorch", "--precision", "int8-dynamic"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "'executorch'" in err and "'int8-dynamic'" in err
    assert "int8-dynamic" in get_backend("litert").precisions


class _InverseErf(nn.Module):
    """erfinv exports with torch.export but litert-torch has no lowering for it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.erfinv(self.conv(x).tanh() * 0.5)


@pytest.mark.integration
def test_op_litert_cannot_convert_is_named():
    with pytest.raises(ExportError) as e:
        get_backend("litert").lower(_InverseErf().eval(), torch.zeros(1, 3, 16, 16), "fp32", None, SilentProgress())
    message = str(e.value)
    assert "aten.erfinv" in message and f"{Path(__file__).name}:" in message  # the op, and where the model uses it


@pytest.mark.integration
def test_auto_backend_follows_the_profile(tmp_path):
    # galaxy-s24 prefers LiteRT (Qualcomm publishes its S24 figures for TFLite).
    result = compile_model(CompileOptions(model="user_models:build_tiny", device="galaxy-s24", precision="fp32",
                                          input_shape="1,3,32,32", num_verify=2, output_root=tmp_path))
    assert result.manifest["backend"]["name"] == "litert" and result.artifact.suffix == ".tflite"
    assert json.loads((result.out_dir / "manifest.json").read_text())["backend"]["name"] == "litert"
