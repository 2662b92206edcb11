"""`edgevit eval`: an artifact's top-1/top-5 in its runtime on a labelled folder, and its bad inputs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from ptq_models import trained_digits
from safetensors.torch import save_file

from edgevit.backends import get_backend
from edgevit.cli import main
from edgevit.compile import CompileOptions, compile_model
from edgevit.data import Preprocess, digits, load_labelled_folder, write_labelled_folder
from edgevit.models import resolve_model
from edgevit.training import topk_accuracy

pytestmark = pytest.mark.integration

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _user_package_importable(monkeypatch):
    monkeypatch.chdir(TESTS)


@pytest.fixture(scope="module")
def net():
    return trained_digits()


@pytest.fixture(scope="module")
def artifact(net, tmp_path_factory):
    """The trained digits net, int8, compiled once for this module."""
    out = tmp_path_factory.mktemp("eval-out")
    return compile_model(CompileOptions(model="ptq_models:build_digits_net", device="host", backend="executorch",
                                        precision="int8", weights=net["clean_weights"], calib=net["calib"],
                                        input_shape="1,3,32,32", num_verify=4, output_root=out)).out_dir


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def test_eval_top1_equals_a_direct_run_of_the_artifact(capsys, net, artifact):
    code, out, err = _cli(capsys, "eval", artifact, "--data", net["test"], "--json")
    assert code == 0, err
    result = json.loads(out)
    # Directly: the folder read with the manifest's preprocessing, the .pte run image by image.
    manifest = json.loads((artifact / "manifest.json").read_text())
    pre = manifest["preprocessing"]
    data = load_labelled_folder(net["test"], Preprocess(32, 32, tuple(pre["mean"]), tuple(pre["std"]),
                                                        pre["crop_pct"], pre["interpolation"]))
    run = get_backend("executorch").load(artifact / "model.pte")
    logits = torch.cat([run(x[None]) for x in data.inputs])
    expected = topk_accuracy(logits, data.labels)
    assert result["top1"] == pytest.approx(expected["top1"], abs=1e-3) and result["top1"] > 95
    assert result["top5"] == pytest.approx(expected["top5"], abs=1e-3)
    assert result["data"] == {"source": str(net["test"]), "images": 450, "classes": 10, "limit": None}
    assert "not a zoo model" in result["fp32"]["skipped"]  # a user module: no fp32 rebuild
    written = json.loads((artifact / "eval-test.json").read_text())
    assert written == {k: v for k, v in result.items() if k != "written"}


def test_eval_limit_and_fp32_reference_for_a_zoo_model(tmp_path, capsys):
    """A zoo model with a weights file: eval rebuilds the fp32 eager model and reports the drop."""
    weights = tmp_path / "shvit_micro.safetensors"  # seeded trained-like statistics: no near-tied logits
    save_file({k: v.contiguous() for k, v in resolve_model("shvit_micro").module.state_dict().items()}, str(weights))
    images, labels, classes = digits(64)
    data = write_labelled_folder(tmp_path / "digits64", images[:60], labels[:60], classes)
    result = compile_model(CompileOptions(model="shvit_micro", device="host", backend="executorch", precision="fp32",
                                          weights=weights, num_verify=2, output_root=tmp_path / "out"))
    code, out, err = _cli(capsys, "eval", result.out_dir, "--data", data, "--limit", "20", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["data"]["images"] == 20 and r["precision"] == "fp32"
    # fp32 artifact vs fp32 eager: the same predictions, so the same top-1 and no drop.
    assert r["fp32"]["top1"] == r["top1"] and r["fp32"]["drop_points"] == 0 and r["fp32"]["top1_agreement"] == 100


def test_eval_table_output(capsys, net, artifact):
    code, out, err = _cli(capsys, "eval", artifact, "--data", net["test"], "--limit", "30")
    assert code == 0, err
    assert "artifact" in out and "top-1 %" in out and "eval-test.json" in out


# case: (arguments, what the message must name: the folder or file at fault, the counts that disagree).
BAD = {
    "not an artifact folder": (lambda tmp, net, art: ["eval", tmp, "--data", net["test"]],
                               lambda tmp, net, art: [str(tmp), "manifest.json"]),
    "labels without class subfolders": (lambda tmp, net, art: ["eval", art, "--data", net["calib"]],
                                        lambda tmp, net, art: [str(net["calib"])]),
    "class count differs": (lambda tmp, net, art: ["eval", art, "--data", tmp / "three"],
                            lambda tmp, net, art: [str(tmp / "three"), r"\b3\b", r"\b10\b"]),
    "data folder missing": (lambda tmp, net, art: ["eval", art, "--data", tmp / "nowhere"],
                            lambda tmp, net, art: [str(tmp / "nowhere")]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_eval_bad_input_is_one_clear_paragraph(tmp_path, capsys, net, artifact, case):
    images, labels, classes = digits(32)
    keep = labels < 3
    write_labelled_folder(tmp_path / "three", images[keep][:9], labels[keep][:9], classes[:3])
    before = sorted(p.name for p in artifact.iterdir())
    args, expected = BAD[case]
    code, out, err = _cli(capsys, *args(tmp_path, net, artifact))
    assert code == 2
    assert "Traceback" not in err and err.count("error:") == 1
    text = err[err.index("error:"):]
    for fragment in expected(tmp_path, net, artifact):
        if fragment.startswith("\\b"):  # a number, outside the paths
            assert re.search(fragment, text.replace(str(tmp_path), "")), (fragment, text)
        else:
            assert fragment in text, (fragment, text)
    assert sorted(p.name for p in artifact.iterdir()) == before  # nothing written on failure
