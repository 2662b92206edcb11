"""Fashion-MNIST from Debian's dataset-fashion-mnist: the idx reader, the CLI that writes it as labelled
folders, and a clear error when the files are not there."""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevit.cli import main
from edgevit.data import FASHION_MNIST_CLASSES, Preprocess, fashion_mnist, load_image_folder, load_labelled_folder
from edgevit.data.datasets import FASHION_MNIST_DIR
from edgevit.errors import EdgevitError

pytestmark = pytest.mark.unit

INSTALLED = (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()
needs_package = pytest.mark.skipif(not INSTALLED and not os.environ.get("CI"),
                                   reason="needs Debian's dataset-fashion-mnist: apt-get install dataset-fashion-mnist "
                                          "(CI installs it, and there a missing package fails instead)")


@needs_package
def test_the_test_split_is_the_original_10000_images_in_ten_balanced_classes():
    images, labels, classes = fashion_mnist("test", size=28)
    assert images.shape == (10000, 28, 28, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10 and classes == FASHION_MNIST_CLASSES
    assert (images[..., 0] == images[..., 2]).all() and 0 < images.mean() < 255  # greyscale, not blank


@needs_package
def test_cli_writes_folders_that_eval_and_calib_read(tmp_path, capsys):
    out = tmp_path / "fm"
    assert main(["dataset", "fashion-mnist", "-o", str(out), "--size", "64", "--limit", "50", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 50 and sum(summary["classes"].values()) == 50
    labelled = load_labelled_folder(out, Preprocess(64, 64, (0.5,) * 3, (0.5,) * 3, crop_pct=1.0))
    assert labelled.classes == FASHION_MNIST_CLASSES and len(labelled) == 50
    assert labelled.inputs.shape == (50, 3, 64, 64) and len(set(labelled.labels.tolist())) == 10
    assert main(["dataset", "fashion-mnist", "-o", str(out)]) == 2  # never over an existing folder


def test_missing_or_damaged_files_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEVIT_FASHION_MNIST", str(tmp_path))
    with pytest.raises(EdgevitError) as e:
        fashion_mnist("test")
    assert str(tmp_path) in str(e.value) and "dataset-fashion-mnist" in str(e.value)  # where it looked, the package
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:  # header says 3 images, holds 2
        f.write(b"\x00\x00\x08\x03" + (3).to_bytes(4, "big") + (2).to_bytes(4, "big") * 2 + bytes(8))
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes(3))
    with pytest.raises(EdgevitError) as e:
        fashion_mnist("test")
    assert "t10k-images-idx3-ubyte.gz" in str(e.value)  # the damaged file
    with pytest.raises(EdgevitError) as e:
        fashion_mnist("val")
    assert "'val'" in str(e.value) and "'train'" in str(e.value) and "'test'" in str(e.value)


@pytest.fixture(scope="module")
def bench():
    """tools/bench_accuracy.py as a module (not run; the sys.path entries it adds are undone)."""
    saved = list(sys.path)
    path = Path(__file__).resolve().parents[1] / "tools" / "bench_accuracy.py"
    spec = importlib.util.spec_from_file_location("edgevit_tool_bench_accuracy_fm", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


@needs_package
@pytest.mark.parametrize("crop_pct", [1.0, 0.875, 0.9])  # the micro variants; shvit_s1; mobilevit_xxs
def test_bench_calibration_images_reach_compile_exactly_as_the_bench_scores_them(tmp_path, bench, crop_pct):
    """bench_accuracy hands its Fashion-MNIST calibration images to `edgevit compile --calib` as files, and
    compile preprocesses them with the model's crop (resize to floor(64 / crop_pct), centre crop 64): the
    padded canvas the bench writes must come back as exactly the 64 px inputs every other column sees."""
    images, _, _ = fashion_mnist("test", size=64, limit=6)
    folder = bench.write_calibration_folder(tmp_path / "calib", images, crop_pct)
    pre = Preprocess(64, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop_pct, "bicubic")
    loaded = load_image_folder(folder, pre, 6).inputs
    expected = pre.normalise(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    assert loaded.shape == (6, 3, 64, 64) and torch.equal(loaded, expected)


def test_bench_standard_errors(bench):
    """The SE of a top-1 (sqrt(p(1-p)/n)) and of a paired difference (only the discordant images count)."""
    assert bench.standard_error(87.0, 10000) == pytest.approx(0.3363, abs=1e-4)
    a = np.array([True] * 90 + [False] * 10)
    b = a.copy()
    b[:4] = False  # 4 images only a gets right, 1 only b: diff 3 points, SE sqrt(5 - 9 / 100) / 100
    b[95] = True
    assert bench.paired_standard_error(a, b) == pytest.approx(100 * np.sqrt(5 - 9 / 100) / 100)
    assert bench.paired_standard_error(a, a) == 0.0  # identical predictions: no uncertainty in the difference


def test_bench_weight_cache_name_carries_a_non_default_lr(bench, tmp_path):
    """A model trained at another peak lr (tiny_vit_5m_224's table entry, or --lr) caches under its own name,
    so weights trained at another lr are never reused; default-lr names stay those earlier runs cached."""
    assert bench.train_lr("shvit_micro") == bench.DEFAULT_LR
    assert bench.train_lr("tiny_vit_5m_224") == 5e-4 and bench.train_lr("tiny_vit_5m_224", 1e-3) == 1e-3
    default = bench.weights_path(tmp_path, "shvit_micro", "fashion-mnist", 10000, 4)
    assert default.name == "shvit_micro-fashion-mnist-n10000-e4.safetensors"
    assert bench.weights_path(tmp_path, "shvit_micro", "fashion-mnist", 10000, 4, bench.DEFAULT_LR) == default
    lower = bench.weights_path(tmp_path, "tiny_vit_5m_224", "fashion-mnist", 10000, 4, 5e-4)
    assert lower.name == "tiny_vit_5m_224-fashion-mnist-n10000-e4-lr0.0005.safetensors"
