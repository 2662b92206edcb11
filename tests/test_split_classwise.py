"""Class-wise split (ED-ViT): the partition of the classes by device speed, sub-models with an "other" class and a
fusion MLP trained on Fashion-MNIST, their artifacts verified, a fan-out run on two real `edgevit worker`
processes on loopback equal to the fused artifacts run in process, and bad input refused with exit 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgevit.cli import main
from edgevit.data import Preprocess, fashion_mnist, write_labelled_folder
from edgevit.data.datasets import FASHION_MNIST_DIR
from edgevit.errors import EdgevitError
from edgevit.models import get_model_spec
from edgevit.split.classwise import (
    build_classwise,
    evaluate_classwise,
    fused_logits_local,
    load_classwise,
    partition_classes,
    plan_classwise,
    run_fanout,
    sub_targets,
    train_classwise,
)

MODEL = "efficientformer_micro"
INSTALLED = (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()
needs_fashion = pytest.mark.skipif(not INSTALLED and not os.environ.get("CI"),
                                   reason="needs Debian's dataset-fashion-mnist: apt-get install dataset-fashion-mnist")


def _labelled(num_classes: int, per_class: int = 3):
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return SimpleNamespace(classes=[f"c{i}" for i in range(num_classes)], labels=labels, source="test")


@pytest.mark.unit
def test_the_partition_covers_every_class_once_and_a_faster_device_takes_more():
    for classes, speeds in [(10, [1, 1]), (10, [19.2, 46.6]), (10, [1, 1, 1]), (3, [1, 100, 1]), (7, [5, 1, 2, 3])]:
        parts = partition_classes(classes, speeds)
        assert sorted(c for p in parts for c in p) == list(range(classes))     # each class exactly once
        assert all(p and p == list(range(p[0], p[-1] + 1)) for p in parts)      # contiguous, never empty
        for i in range(len(speeds)):
            for j in range(len(speeds)):
                if speeds[i] > speeds[j]:
                    assert len(parts[i]) >= len(parts[j])
    assert [len(p) for p in partition_classes(10, [19.2, 46.6])] == [3, 7]
    with pytest.raises(EdgevitError, match="2 class.*3 devices"):
        partition_classes(2, [1, 1, 1])


@pytest.mark.unit
def test_sub_model_targets_keep_its_classes_and_call_the_rest_other():
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    assert sub_targets(labels, [2, 3], 6).tolist() == [2, 2, 0, 1, 2, 2]


@pytest.mark.unit
def test_the_plan_balances_by_peak_and_names_bad_devices():
    plan = plan_classwise(MODEL, ["rpi5", "pixel8"], _labelled(10))
    rpi5, pixel8 = plan["devices"]
    assert len(pixel8["classes"]) > len(rpi5["classes"]) and rpi5["classes"] + pixel8["classes"] == plan["classes"]
    assert rpi5["ms_per_image"] > pixel8["ms_per_image"] and rpi5["outputs"] == len(rpi5["classes"]) + 1
    assert plan["plan_id"] == plan_classwise(MODEL, ["rpi5", "pixel8"], _labelled(10))["plan_id"]
    with pytest.raises(EdgevitError, match="Unknown device 'rpi6'.*rpi5"):
        plan_classwise(MODEL, ["rpi6", "pixel8"], _labelled(10))
    with pytest.raises(EdgevitError, match="no fp32 peak.*--speeds"):
        plan_classwise(MODEL, ["host", "pixel8"], _labelled(10))
    assert [len(d["classes"]) for d in
            plan_classwise(MODEL, ["host", "pixel8"], _labelled(10), speeds=[1, 4])["devices"]] == [2, 8]


@pytest.mark.unit
def test_cli_refuses_fewer_classes_than_devices_and_unknown_devices(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    data = write_labelled_folder(tmp_path / "two", images, np.array([0, 0, 1, 1]), ["a", "b"])
    out = tmp_path / "out"
    assert main(["split", "classwise", MODEL, "--devices", "rpi5,rpi5,pixel8", "--data", str(data),
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 class(es)" in err and "3 devices" in err
    assert main(["split", "classwise", MODEL, "--devices", "rpi5,nosuchboard", "--data", str(data),
                 "-o", str(out)]) == 2
    assert "Unknown device 'nosuchboard'" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Fashion-MNIST at 64 px: 600 training images (every class), 2 epochs, two devices (rpi5, pixel8); 1000
    held-out test images; fp32 artifacts built and verified."""
    spec = get_model_spec(MODEL)
    pre = Preprocess(64, 64, tuple(spec.mean), tuple(spec.std), spec.crop_pct, spec.interpolation)

    def load(split, limit):
        images, labels, classes = fashion_mnist(split, size=64, limit=limit)
        x = pre.normalise(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
        return x, torch.from_numpy(labels), classes

    x_train, y_train, classes = load("train", 600)
    x_test, y_test, _ = load("test", 1000)
    plan = plan_classwise(MODEL, ["rpi5", "pixel8"], SimpleNamespace(classes=classes, labels=y_train))
    models = train_classwise(plan, x_train, y_train, epochs=2)
    evaluation = evaluate_classwise(plan, models, x_test, y_test)
    out_dir, manifest = build_classwise(plan, models, tmp_path_factory.mktemp("cw"), x_train[:16], x_test[:8],
                                        evaluation)
    return SimpleNamespace(plan=plan, models=models, evaluation=evaluation, out_dir=out_dir, manifest=manifest,
                           x_test=x_test, y_test=y_test)


@needs_fashion
@pytest.mark.integration
@pytest.mark.slow
def test_fused_accuracy_is_reported_next_to_the_whole_model_and_well_above_chance(trained):
    ev = trained.evaluation
    print(json.dumps({k: ev[k] for k in ("whole_top1", "fused_top1", "chance_top1")}))
    assert ev["test_images"] == 1000 and ev["chance_top1"] == 10.0
    assert ev["fused_top1"] > 40 and ev["whole_top1"] > 40
    assert [s["classes"] for s in ev["sub_models"]] == [d["classes"] for d in trained.plan["devices"]]
    for s in ev["sub_models"]:
        assert 0 <= s["subset_top1"] <= 100 and s["params"] > 0 and 0.9 < s["macs_vs_whole"] < 1.1   # unpruned
    manifest, subs, fusion = load_classwise(trained.out_dir)
    assert manifest["evaluation"]["fused_top1"] == ev["fused_top1"] and len(subs) == 2
    assert manifest["verification"]["top1_agreement"] == 1.0


@pytest.fixture
def workers():
    procs, addresses = [], []
    for _ in range(2):
        procs.append(subprocess.Popen([sys.executable, "-m", "edgevit", "worker", "--listen", "127.0.0.1:0"],
                                      stdout=subprocess.PIPE, text=True))
    try:
        for p in procs:
            line = p.stdout.readline()            # blocks until the worker has bound its port
            assert line.startswith("edgevit worker listening on"), line
            addresses.append(line.split()[-1])
        yield addresses
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=60)


@needs_fashion
@pytest.mark.integration
@pytest.mark.slow
def test_a_fan_out_run_on_two_workers_matches_the_fused_model_in_process(trained, workers):
    _, subs, fusion = load_classwise(trained.out_dir)
    images = trained.x_test[:24]
    report = run_fanout("cw-test", subs, fusion, workers, images)
    local = fused_logits_local(subs, fusion, images)
    assert torch.equal(report.logits.argmax(1), local.argmax(1))
    assert torch.allclose(report.logits, local, atol=1e-5)
    eager = trained.models.fused_logits(images)
    assert torch.equal(report.logits.argmax(1), eager.argmax(1))
    used = [set(h[0] for h in r.handled_by) for r in report.sub_reports]
    assert all(len(u) == 1 for u in used) and used[0] != used[1]          # each sub-model on its own worker
    assert all(not r.failures for r in report.sub_reports)
