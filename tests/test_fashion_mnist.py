"""Fashion-MNIST from Debian's dataset-fashion-mnist: the idx reader, the CLI that writes it as labelled
folders, and a clear error when the files are not there."""
from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

from edgevit.cli import main
from edgevit.data import FASHION_MNIST_CLASSES, Preprocess, fashion_mnist, load_labelled_folder
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
