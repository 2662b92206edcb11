"""Images -> model inputs, with each family's own preprocessing (timm's eval transform).

Preprocessing (what a deployer must replicate, written into every manifest): resize the shorter side
to ``floor(size / crop_pct)`` with the family's interpolation, center-crop ``size``, scale to [0, 1],
normalise with the family's mean/std.

Without real images, :func:`synthetic_images` makes the documented fallback: seeded 1/f ("pink")
noise colour images. Natural images have a power spectrum close to 1/f^2, so these exercise the
activation ranges far better than white noise; the manifest still marks the calibration as synthetic,
because nothing replaces images from the deployment domain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .._io import require_folder
from ..errors import EdgevitError

__all__ = ["Preprocess", "CalibrationSet", "find_images", "load_image_folder", "synthetic_images"]

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST}


class DataError(EdgevitError):
    """An image folder that cannot be used."""


@dataclass(frozen=True)
class Preprocess:
    """The eval transform of a model: resize, center crop, normalise."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 0.95
    interpolation: str = "bicubic"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        scale_h, scale_w = math.floor(self.height / self.crop_pct), math.floor(self.width / self.crop_pct)
        # Shorter side to the scaled size, keeping the aspect ratio (timm's Resize(int)).
        w, h = image.size
        if w <= h:
            new_w, new_h = scale_w, max(scale_w, round(h * scale_w / w))
        else:
            new_h, new_w = scale_h, max(scale_h, round(w * scale_h / h))
        image = image.resize((new_w, new_h), _RESAMPLE[self.interpolation])
        left, top = (new_w - self.width) // 2, (new_h - self.height) // 2
        image = image.crop((left, top, left + self.width, top + self.height))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std

    @classmethod
    def from_dict(cls, pre: dict) -> Preprocess:
        """From a ``preprocessing`` block (a model's, or a manifest's: what a deployer replicates)."""
        _, h, w = pre["input_size"]
        return cls(h, w, tuple(pre["mean"]), tuple(pre["std"]), pre["crop_pct"], pre["interpolation"])

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (N, 3, H, W) -> model inputs."""
        return (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)

    def describe(self) -> dict:
        return {"input_size": [3, self.height, self.width], "resize_shorter_to": [
            math.floor(self.height / self.crop_pct), math.floor(self.width / self.crop_pct)],
            "center_crop": [self.height, self.width], "interpolation": self.interpolation,
            "crop_pct": self.crop_pct, "scale": "1/255", "mean": list(self.mean), "std": list(self.std),
            "layout": "NCHW float32"}


@dataclass
class CalibrationSet:
    """Preprocessed inputs plus where they came from (recorded in the manifest)."""

    inputs: torch.Tensor  # (N, 3, H, W), normalised
    source: str           # a folder path, or "synthetic:pink-noise(seed=S)"
    files: list[str]

    def __len__(self) -> int:
        return self.inputs.shape[0]


def _image_suffixes() -> set[str]:
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


def find_images(folder: str | Path) -> list[Path]:
    """All image files under ``folder`` (nested), in a stable sorted order."""
    folder = require_folder(folder, "Image folder", "the images (any format Pillow reads, nested folders too)",
                            DataError)
    suffixes = _image_suffixes()
    try:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    except OSError as e:
        raise DataError(f"Image folder {folder} cannot be read: {e}.") from None
    if not files:
        common = sorted(s for s in suffixes if s in {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif"})
        raise DataError(f"Image folder {folder} contains no images (looked for {', '.join(common)}"
                        " and the other formats Pillow reads, in nested folders too).")
    return files


def load_image_folder(folder: str | Path, preprocess: Preprocess, count: int, skip: int = 0,
                      allow_fewer: bool = False) -> CalibrationSet:
    """The ``count`` images after the first ``skip`` (sorted order) of ``folder``, preprocessed."""
    files = find_images(folder)[skip:]
    if len(files) < count and not allow_fewer:
        raise DataError(f"Image folder {folder} has {len(files) + skip} images, but {count + skip} were "
                        f"asked for; add images or lower the count (--num-calib).")
    files = files[:count]
    tensors = []
    for path in files:
        try:
            with Image.open(path) as image:
                tensors.append(preprocess(image))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"Image {path} cannot be decoded ({e}); remove or replace it.") from None
    inputs = torch.stack(tensors) if tensors else torch.empty(0, 3, preprocess.height, preprocess.width)
    return CalibrationSet(inputs, str(Path(folder).expanduser()), [str(p) for p in files])


def synthetic_images(preprocess: Preprocess, count: int, seed: int = 0, alpha: float = 1.0) -> CalibrationSet:
    """Seeded colour images whose amplitude spectrum falls as 1/f^alpha (power 1/f^2 for alpha=1)."""
    g = torch.Generator().manual_seed(seed)
    h, w = preprocess.height, preprocess.width
    fy = torch.fft.fftfreq(h).view(h, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    amplitude = 1.0 / torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / max(h, w)) ** alpha
    spectrum = torch.randn(count, 3, h, w // 2 + 1, 2, generator=g)
    spectrum = torch.view_as_complex(spectrum) * amplitude
    images = torch.fft.irfft2(spectrum, s=(h, w))
    # Correlate the channels a little (real images are mostly luminance), then map to [0, 1].
    luminance = images.mean(dim=1, keepdim=True)
    images = 0.6 * luminance + 0.4 * images
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    hi = images.amax(dim=(1, 2, 3), keepdim=True)
    images = (images - lo) / (hi - lo)
    return CalibrationSet(preprocess.normalise(images), f"synthetic:pink-noise(seed={seed})", [])


@dataclass
class LabelledSet:
    """Preprocessed images with integer labels, from a folder of class subfolders (ImageNet layout)."""

    inputs: torch.Tensor   # (N, 3, H, W), normalised
    labels: torch.Tensor   # (N,) int64, index into ``classes``
    classes: list[str]     # subfolder names, sorted (the label order a model trained on them uses)
    source: str

    def __len__(self) -> int:
        return self.labels.shape[0]


def load_labelled_folder(folder: str | Path, preprocess: Preprocess, limit: int | None = None) -> LabelledSet:
    """``folder/CLASS/*.png`` -> inputs and labels; classes are the sorted subfolder names.

    ``limit`` takes an evenly spread subset (every k-th image), so a small limit still covers every class.
    """
    folder = require_folder(folder, "Labelled folder", "one subfolder of images per class", DataError)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"Labelled folder {folder} has no class subfolders: put each class's images in "
                        f"{folder}/<class name>/ (the ImageNet/ImageFolder layout).")
    items = []
    for index, name in enumerate(classes):
        try:
            items += [(path, index) for path in find_images(folder / name)]
        except DataError:
            continue  # an empty class folder is allowed; a folder with no images at all is not (below)
    if not items:
        raise DataError(f"Labelled folder {folder} has class subfolders ({', '.join(classes[:5])}...) but "
                        "no images in them.")
    if limit is not None and limit < len(items):
        step = len(items) / limit
        items = [items[int(i * step)] for i in range(limit)]
    tensors = []
    for path, _ in items:
        try:
            with Image.open(path) as image:
                tensors.append(preprocess(image))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"Image {path} cannot be decoded ({e}); remove or replace it.") from None
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    return LabelledSet(torch.stack(tensors), labels, classes, str(folder))
