"""Offline data sets, labelled folders and the small training loop the accuracy work stands on."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgevit.data import Preprocess, digits, load_labelled_folder, split_indices, write_labelled_folder
from edgevit.data.images import DataError
from edgevit.models import create_model
from edgevit.training import evaluate_logits, topk_accuracy, train_classifier


@pytest.mark.unit
def test_digits_split_is_stratified_and_disjoint():
    images, labels, classes = digits(32)
    assert images.shape == (1797, 32, 32, 3) and images.dtype == np.uint8 and classes == list("0123456789")
    train, test = split_indices(labels, 0.25, seed=0)
    assert not set(train) & set(test) and len(train) + len(test) == len(labels)
    assert set(labels[test]) == set(range(10))


@pytest.mark.unit
def test_labelled_folder_round_trip(tmp_path):
    images, labels, classes = digits(32)
    write_labelled_folder(tmp_path / "set", images[:40], labels[:40], classes)
    pre = Preprocess(32, 32, (0.5,) * 3, (0.5,) * 3, crop_pct=1.0, interpolation="bilinear")
    data = load_labelled_folder(tmp_path / "set", pre)
    assert data.classes == classes and len(data) == 40
    # Files are read class by class; the labels must follow the folder each image is in.
    assert sorted(data.labels.tolist()) == sorted(labels[:40].tolist())
    expected = pre.normalise(torch.from_numpy(images[0]).permute(2, 0, 1)[None].float() / 255)
    first = int(np.flatnonzero(labels[:40] == 0)[0])
    assert first == 0 and torch.allclose(data.inputs[0], expected[0], atol=1e-5)
    assert len(load_labelled_folder(tmp_path / "set", pre, limit=10)) == 10


@pytest.mark.unit
def test_labelled_folder_without_class_subfolders_is_explained(tmp_path):
    (tmp_path / "flat").mkdir()
    pre = Preprocess(32, 32, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(DataError) as e:
        load_labelled_folder(tmp_path / "flat", pre)
    assert str(tmp_path / "flat") in str(e.value)


@pytest.mark.integration
def test_a_micro_model_learns_digits():
    images, labels, _ = digits(64)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - 0.5) / 0.25
    y = torch.from_numpy(labels)
    train, test = split_indices(labels, 0.25)
    torch.manual_seed(0)
    model = create_model("efficientformer_micro")
    history = train_classifier(model, x[train], y[train], epochs=4)
    assert history[-1] < history[0] * 0.6
    acc = topk_accuracy(evaluate_logits(model, x[test], batch_size=256), y[test])
    assert acc["top1"] > 85.0 and acc["top5"] >= acc["top1"]
