"""LiteRT backend: two families converted and run in the LiteRT interpreter, numerics vs fp32 eager."""
import json

import pytest
import torch

from edgevit.backends import get_backend
from edgevit.cli import main
from edgevit.compile import CompileOptions, compile_model
from edgevit.compile.metrics import compare_outputs
from edgevit.errors import EdgevitError
from edgevit.models._resolve import resolve_model


@pytest.mark.parametrize("name,precision,min_cosine", [
    ("shvit_s1", "fp32", 0.9999), ("shvit_s1", "int8", 0.98),
    ("efficientformerv2_s0", "fp16", 0.999), ("efficientformerv2_s0", "int8-dynamic", 0.98)])
def test_compile_to_tflite_and_run(tmp_path, name, precision, min_cosine):
    result = compile_model(CompileOptions(model=name, device="galaxy-s24", backend="litert", precision=precision,
                                          input_shape="1,3,64,64", num_calib=8, num_verify=4, output_root=tmp_path))
    m = result.manifest
    assert result.artifact.name == "model.tflite" and m["backend"]["name"] == "litert"
    assert m["verification"]["passed"] and m["verification"]["cosine"] >= min_cosine
    assert m["ops"]["delegated_ops"] > 20
    # Independent check: the file, in a fresh interpreter, against the fp32 eager model.
    model = resolve_model(name, (1, 3, 64, 64)).module
    run = get_backend("litert").load(result.artifact)
    x = torch.randn(3, 1, 3, 64, 64)
    with torch.no_grad():
        ref = torch.cat([model(xi) for xi in x])
    assert compare_outputs(ref, torch.cat([run(xi) for xi in x])).cosine >= min_cosine - 0.01
    if precision == "int8":  # fully quantized: a deployer needs the I/O quantization
        assert m["backend"]["io"]["input"]["dtype"] == "int8" and m["backend"]["io"]["input"]["scale"] > 0


def test_corrupt_tflite_is_named(tmp_path):
    path = tmp_path / "broken.tflite"
    path.write_bytes(b"TFL3" + b"\x00" * 60)
    with pytest.raises(EdgevitError) as e:
        get_backend("litert").load(path)
    assert str(path) in str(e.value) and "corrupt" in str(e.value)


def test_precision_the_backend_lacks(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["compile", "shvit_s1", "-d", "host", "--backend", "executorch", "--precision", "int8-dynamic"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Backend 'executorch' has no precision 'int8-dynamic'" in err


def test_auto_backend_follows_the_profile(tmp_path):
    # galaxy-s24 prefers LiteRT (Qualcomm publishes its S24 figures for TFLite).
    result = compile_model(CompileOptions(model="user_models:build_tiny", device="galaxy-s24", precision="fp32",
                                          input_shape="1,3,32,32", num_verify=2, output_root=tmp_path))
    assert result.manifest["backend"]["name"] == "litert" and result.artifact.suffix == ".tflite"
    assert json.loads((result.out_dir / "manifest.json").read_text())["backend"]["name"] == "litert"
