"""A small digits classifier (99 % top-1 after 6 epochs, ~5 s) for the PTQ / mixed-precision / eval tests,
trained once per session.

``DigitsNet`` is a conv stem and a two-layer MLP head (32x32 input, 10 classes). After training, hidden
unit 0 of the head is turned into a constant "massive activation" (value 4000, ignored by ``fc2``), the
phenomenon Sun et al. (arXiv:2402.17762) found in trained ViTs and tools/bench_ptq.py measured in a
trained SHViT micro (a last-stage channel ~70x wider than the median). One per-tensor int8 range for
that tensor then leaves the other 63 units no levels to speak of, so full int8 loses accuracy, the
sensitivity report puts fc1/fc2 first, and keeping them in fp32 gets the accuracy back.

``build_digits_net_concat`` is the same network with that hidden tensor split in two and concatenated
again: concatenation only moves int8 values, so it is not a layer mixed precision can leave in fp32,
and with the massive unit in it no ``--max-drop`` can be met.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

MASSIVE = 4000.0
SIZE = 32


class DigitsNet(nn.Module):
    def __init__(self, concat: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(1))  # 4x4 map: keeps layout
        self.fc1 = nn.Linear(32 * 16, 64)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)
        self.concat = concat

    def forward(self, x):
        hidden = self.act(self.fc1(self.features(x)))
        if self.concat:
            hidden = torch.cat([hidden[:, :32], hidden[:, 32:]], dim=1)
        return self.fc2(hidden)


def build_digits_net() -> nn.Module:
    return DigitsNet()


def build_digits_net_concat() -> nn.Module:
    return DigitsNet(concat=True)


@functools.cache
def trained_digits() -> dict:
    """Train once per test session; weights (plain and with the massive unit) and labelled folders in a
    temporary folder removed at exit."""
    import atexit
    import shutil
    import tempfile

    from safetensors.torch import save_file

    from edgevit.data import Preprocess, digits, split_indices, write_labelled_folder
    from edgevit.models import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from edgevit.training import train_classifier

    root = Path(tempfile.mkdtemp(prefix="edgevit-digits-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    images, labels, classes = digits(SIZE)
    train, test = split_indices(labels, 0.25, seed=0)
    pre = Preprocess(SIZE, SIZE, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, 1.0, "bilinear")
    x = pre.normalise(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    model = DigitsNet()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net trains faster on one thread than on two contended ones
    train_classifier(model, x[train], torch.from_numpy(labels[train]), epochs=6, lr=1e-2, batch_size=32,
                     augment=None)
    torch.set_num_threads(threads)
    clean = root / "digits_net_clean.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(clean))
    with torch.no_grad():
        model.fc1.weight[0] = 0.0  # hidden unit 0 becomes a constant "massive activation"...
        model.fc1.bias[0] = MASSIVE
        model.fc2.weight[:, 0] = 0.0  # ...that the classifier ignores
    weights = root / "digits_net.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    # Calibration: training images in their shuffled order (every class among the first 32).
    calib = write_labelled_folder(root / "calib", images[train[:64]], labels[train[:64]], classes)
    flat = root / "calib_flat"
    flat.mkdir()
    for path in sorted(calib.rglob("*.png")):
        path.rename(flat / path.name)
    test_dir = write_labelled_folder(root / "test", images[test], labels[test], classes)
    return {"weights": weights, "clean_weights": clean, "calib": flat, "test": test_dir, "model": model.eval(),
            "inputs": x[test], "labels": torch.from_numpy(labels[test]), "preprocess": pre}
