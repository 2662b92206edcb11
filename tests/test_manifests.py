"""Every manifest field describes the artifact that was written (issue: the manifest's class count).

Over the zoo's micro variants with a non-default class count (3): ``compile`` (and ``profile`` of what it
wrote) for each, and ``bench``, ``qat`` and ``eval`` on one; shapes and classes are checked against what
the artifact itself computes, never against registry defaults."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgevit.backends import get_backend
from edgevit.cli import main
from edgevit.data import write_labelled_folder
from edgevit.errors import CheckpointError
from edgevit.models import list_models, read_state_dict

pytestmark = [pytest.mark.filterwarnings("ignore")]

# One micro variant per head layout the manifest must describe (pooled classifier, distillation head, dense
# task maps); the other families' micro variants are checked in test_compile.py / test_model_conformance.py.
MICROS = ["m3vit_micro", "shvit_micro", "tiny_vit_micro"]
CLASSES = 3


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    """A labelled folder with three classes of 64x64 images (what someone fine-tuning would have)."""
    root = tmp_path_factory.mktemp("three")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(48, 64, 64, 3), dtype=np.uint8)  # qat judges exports on >= 32
    return write_labelled_folder(root / "data", images, np.arange(48) % CLASSES, ["cat", "dog", "owl"])


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", MICROS)
@pytest.mark.integration
@pytest.mark.slow
def test_compile_and_profile_manifests_match_the_artifact(name, tmp_path, capsys):
    assert set(MICROS) <= set(list_models())
    out = tmp_path / "out"
    assert main(["compile", name, "--device", "host", "--backend", "executorch", "--precision", "fp32",
                 "--num-classes", str(CLASSES), "--num-verify", "2", "-o", str(out), "--json"]) == 0
    manifest = _json(capsys)
    folder = out / f"{name}-host"
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    x = torch.zeros(manifest["inputs"][0]["shape"])
    y = get_backend("executorch").load(folder / manifest["artifact"]["file"])(x)
    assert manifest["model"]["num_classes"] == CLASSES == y.shape[1]
    assert manifest["outputs"][0]["shape"] == list(y.shape)

    assert main(["profile", str(folder), "--runs", "1", "--warmup", "0", "--json"]) == 0
    report = _json(capsys)
    assert report["artifact"]["input_shape"] == list(x.shape)
    assert report["artifact"]["sha256"] == manifest["artifact"]["sha256"]


@pytest.mark.integration
def test_eval_takes_the_classes_the_artifact_was_built_with(three_classes, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", "shvit_micro", "--device", "host", "--backend", "executorch", "--precision", "fp32",
                 "--num-classes", str(CLASSES), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "shvit_micro-host"), "--data", str(three_classes), "--json"]) == 0
    result = _json(capsys)
    assert result["data"]["classes"] == CLASSES and result["data"]["images"] == 48


@pytest.mark.integration
def test_bench_manifests_match_their_artifacts(tmp_path, capsys):
    assert main(["bench", "shvit_micro", "--device", "host", "--backend", "executorch", "--precision", "fp32",
                 "--num-classes", str(CLASSES), "--rounds", "5", "--no-memory", "-o", str(tmp_path), "--json"]) == 0
    report = _json(capsys)
    row = next(r for r in report["rows"] if r["backend"] == "executorch")
    manifest = json.loads((tmp_path / "shvit_micro-host" / "executorch-fp32" / "shvit_micro-host" /
                           "manifest.json").read_text())
    y = get_backend("executorch").load(row["artifact"])(torch.zeros(report["input_shape"]))
    assert manifest["model"]["num_classes"] == CLASSES == y.shape[1]
    assert manifest["outputs"][0]["shape"] == list(y.shape)


@pytest.mark.integration
@pytest.mark.slow
def test_qat_manifest_matches_its_exports(three_classes, tmp_path, capsys):
    import onnxruntime

    assert main(["qat", "shvit_micro", "--bits", "w8a8", "--data", str(three_classes), "--ptq-only",
                 "--num-classes", str(CLASSES), "-o", str(tmp_path), "--json"]) == 0
    manifest = _json(capsys)
    folder = tmp_path / "shvit_micro-w8a8"
    session = onnxruntime.InferenceSession(str(folder / "model.qcdq.onnx"))
    shape = manifest["inputs"][0]["shape"]
    (y,) = session.run(None, {session.get_inputs()[0].name: np.zeros(shape, np.float32)})
    assert manifest["model"]["num_classes"] == CLASSES == y.shape[1]
    assert manifest["data"]["train"]["classes"] == ["cat", "dog", "owl"]


@pytest.mark.unit
def test_a_folder_given_as_weights_says_it_is_a_folder(tmp_path, capsys):
    (tmp_path / "ckpt.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError) as error:
        read_state_dict(tmp_path)
    assert str(tmp_path / "ckpt.safetensors") in str(error.value)  # it points at what the folder holds
    assert main(["compile", "shvit_micro", "--device", "host", "--weights", str(tmp_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert str(tmp_path / "ckpt.safetensors") in err and "does not exist" not in err


@pytest.mark.unit
def test_a_file_given_as_a_folder_says_it_is_a_file(tmp_path, capsys):
    image = tmp_path / "one.png"
    image.write_bytes(b"not really")
    for args in (["compile", "shvit_micro", "--device", "host", "--calib", str(image)],
                 ["qat", "shvit_micro", "--bits", "w8a8", "--data", str(image)],
                 ["devices", "--profiles", str(image)]):
        assert main(args) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "is a file, not a folder" in err and "does not exist" not in err, args
