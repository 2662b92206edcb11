"""--weights: every container format loads; every way of being wrong names the file and the keys."""
import pytest
import torch
from safetensors.torch import save_file
from user_models import TinyConvNet

from edgevit.errors import CheckpointError
from edgevit.models import load_weights, read_state_dict

pytestmark = pytest.mark.unit


@pytest.fixture
def source():
    model = TinyConvNet()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "bin", "wrapped-state_dict", "wrapped-model", "ddp"])
def test_formats_load_and_give_identical_outputs(tmp_path, source, fmt):
    sd = source.state_dict()
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        obj = {"pth": sd, "bin": sd, "wrapped-state_dict": {"state_dict": sd, "epoch": 3},
               "wrapped-model": {"model": sd}, "ddp": {f"module.{k}": v for k, v in sd.items()}}[fmt]
        path = tmp_path / ("w.bin" if fmt == "bin" else "w.pth")
        torch.save(obj, path)
    target = TinyConvNet()
    sha = load_weights(target, path)
    assert len(sha) == 64
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(target.eval()(x), source.eval()(x))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as e:
        read_state_dict(tmp_path / "nope.pth")
    assert str(tmp_path / "nope.pth") in str(e.value)


def test_corrupt_file_is_named(tmp_path, source):
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:100])  # truncated download
    with pytest.raises(CheckpointError) as e:
        read_state_dict(path)
    assert str(path) in str(e.value)
    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError) as e:
        read_state_dict(bad)
    assert str(bad) in str(e.value)


def test_mismatched_keys_are_all_named(tmp_path, source):
    sd = dict(source.state_dict())
    del sd["head.bias"]                                  # missing
    sd["extra.weight"] = torch.zeros(1)                  # unexpected
    sd["head.weight"] = torch.zeros(5, 32)               # mis-shaped (another --num-classes)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        load_weights(TinyConvNet(), path)
    msg = str(e.value)
    assert str(path) in msg
    assert "head.bias" in msg  # missing
    assert "extra.weight" in msg  # unexpected
    assert "head.weight" in msg and "(5, 32)" in msg and "(10, 32)" in msg  # mis-shaped: the file's, the model's


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError) as e:
        read_state_dict(path)
    assert str(path) in str(e.value)
