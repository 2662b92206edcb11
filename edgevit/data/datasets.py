"""Small labelled image sets made on this machine, for training and measuring accuracy offline.

- :func:`digits`: scikit-learn's bundled handwritten digits (1,797 8x8 greyscale images, 10 classes),
  upsampled to the model's resolution. Real images of a real task; nothing is downloaded.
- :func:`fashion_mnist`: Zalando's Fashion-MNIST (70,000 28x28 greyscale photos of clothes, 10 classes,
  10,000 of them the test split), read from the original idx files that Debian's ``dataset-fashion-mnist``
  package installs (``apt-get install dataset-fashion-mnist``; ``$EDGEVIT_FASHION_MNIST`` points elsewhere).
  Harder than digits: a small CNN reaches ~90 % where digits gives ~99 %.
- :func:`shapes`: a seeded, procedurally generated 10-class set (shapes over textured backgrounds),
  harder than digits, so quantization losses show.
- :func:`write_labelled_folder` writes any such set as ``ROOT/CLASS/NNNNN.png``, the layout
  ``edgevit eval --data`` and ``--calib`` read, so tests and benchmarks go through the same file path
  a user's data set does.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import EdgevitError

__all__ = ["digits", "fashion_mnist", "FASHION_MNIST_CLASSES", "shapes", "SHAPE_CLASSES", "write_labelled_folder",
           "split_indices"]


def digits(size: int = 64) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 (N, size, size, 3), labels int64 (N,), class names) from sklearn's digits."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise EdgevitError("The digits data set needs scikit-learn: pip install scikit-learn") from None
    bunch = load_digits()
    small = (bunch.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)  # (N, 8, 8), 0..16 -> 0..255
    images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
                       for im in small])
    return np.repeat(images[..., None], 3, axis=-1), bunch.target.astype(np.int64), [str(d) for d in range(10)]


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
# Label order is the data set's; the index prefix keeps a labelled folder's sorted order equal to it.
FASHION_MNIST_CLASSES = ["0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat", "5_sandal", "6_shirt",
                         "7_sneaker", "8_bag", "9_ankle_boot"]
_IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
              "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_idx(path: Path, dims: int) -> np.ndarray:
    """An idx file (LeCun's format: magic 0x0000 08 <dims>, big-endian sizes, then uint8 data)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 + 4 * dims or data[:3] != b"\x00\x00\x08" or data[3] != dims:
        raise EdgevitError(f"{path} is not a {dims}-D uint8 idx file (header {data[:4].hex()}); reinstall "
                           "dataset-fashion-mnist.")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise EdgevitError(f"{path} holds {body.size} bytes of data, its header says {shape}: the file is "
                           "truncated; reinstall dataset-fashion-mnist.")
    return body.reshape(shape)


def fashion_mnist(split: str = "test", size: int = 64, limit: int | None = None,
                  root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 (N, size, size, 3), labels int64 (N,), class names) of Fashion-MNIST's ``split``.

    ``limit`` takes an evenly spread subset (every k-th image) before upsampling, so a small limit is cheap
    and still covers every class. Images are upsampled bilinearly and repeated to 3 channels."""
    if split not in _IDX_FILES:
        raise EdgevitError(f"Fashion-MNIST has splits 'train' (60,000) and 'test' (10,000), not '{split}'.")
    folder = Path(root or os.environ.get("EDGEVIT_FASHION_MNIST") or FASHION_MNIST_DIR)
    paths = [folder / name for name in _IDX_FILES[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise EdgevitError(f"Fashion-MNIST's {split} files ({', '.join(missing)}) are not in {folder}. Install "
                           "them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or point "
                           "$EDGEVIT_FASHION_MNIST at a folder holding the original idx .gz files.")
    images, labels = _read_idx(paths[0], 3), _read_idx(paths[1], 1)
    if len(images) != len(labels):
        raise EdgevitError(f"{folder}: {len(images)} images but {len(labels)} labels; reinstall the package.")
    if limit is not None and limit < len(images):
        keep = np.linspace(0, len(images) - 1, num=max(1, limit)).round().astype(int)
        images, labels = images[keep], labels[keep]
    resized = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
                        for im in images])
    return np.repeat(resized[..., None], 3, axis=-1), labels.astype(np.int64), list(FASHION_MNIST_CLASSES)


def split_indices(labels: np.ndarray, test_fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified split: (train indices, test indices), every class in both."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = max(1, round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def write_labelled_folder(root: str | Path, images: np.ndarray, labels: np.ndarray,
                          classes: list[str]) -> Path:
    """Write ``root/<class>/<index>.png``; returns ``root``."""
    root = Path(root)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(root / classes[int(label)] / f"{i:05d}.png")
    return root


SHAPE_CLASSES = ["disc", "ring", "square", "square_outline", "triangle", "triangle_outline", "plus", "star",
                 "hexagon", "crescent"]


def _shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    corners = {"square": 4, "triangle": 3, "hexagon": 6}[kind.removesuffix("_outline")]
    return [(cx + r * np.cos(angle + 2 * np.pi * k / corners), cy + r * np.sin(angle + 2 * np.pi * k / corners))
            for k in range(corners)]


def _draw_shape(draw, kind: str, cx: float, cy: float, r: float, angle: float, fg, bg, width: int) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "disc":
        draw.ellipse(box, fill=fg)
    elif kind == "ring":
        draw.ellipse(box, outline=fg, width=width)
    elif kind == "crescent":
        draw.ellipse(box, fill=fg)
        dx, dy = 0.45 * r * np.cos(angle), 0.45 * r * np.sin(angle)
        draw.ellipse((cx - r + dx, cy - r + dy, cx + r + dx, cy + r + dy), fill=bg)
    elif kind in ("plus", "star"):
        arms = 4 if kind == "plus" else 5
        inner = 0.28 if kind == "plus" else 0.45
        points = [(cx + (r if k % 2 == 0 else inner * r) * np.cos(angle + np.pi * k / arms),
                   cy + (r if k % 2 == 0 else inner * r) * np.sin(angle + np.pi * k / arms)) for k in range(2 * arms)]
        draw.polygon(points, fill=fg)
    elif kind.endswith("_outline"):
        draw.polygon(_shape_polygon(kind, cx, cy, r, angle), outline=fg, width=width)
    else:
        draw.polygon(_shape_polygon(kind, cx, cy, r, angle), fill=fg)


def shapes(size: int = 64, per_class: int = 180, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A procedurally generated 10-class set, harder than digits: (images uint8 (N, size, size, 3), labels, classes).

    Each image is one shape (disc, ring, square, square outline, triangle, triangle outline, plus, star,
    hexagon, crescent) at a random position, size (25-45 % of the image), rotation and colour, over a
    textured background (1/f noise of random strength and tint) with pixel noise. Filled vs outline and
    hexagon vs disc differ only in fine structure, so low-bit quantization errors show. Seeded."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    scale = 4  # drawn at 4x and downsampled: anti-aliased edges
    big = size * scale
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    amplitude = 1.0 / np.maximum(np.sqrt(fx**2 + fy**2), 1.0 / size)
    images, labels = [], []
    for label in np.repeat(np.arange(len(SHAPE_CLASSES)), per_class):
        spectrum = (rng.standard_normal((size, size // 2 + 1)) + 1j * rng.standard_normal((size, size // 2 + 1)))
        texture = np.fft.irfft2(spectrum * amplitude, s=(size, size))
        texture = (texture - texture.min()) / (np.ptp(texture) + 1e-9)
        bg = rng.uniform(0, 255, 3)
        fg = (bg + rng.choice([-1, 1], 3) * rng.uniform(90, 160, 3)) % 256  # enough contrast, random hue
        canvas = Image.new("RGB", (big, big), tuple(int(v) for v in bg))
        r = rng.uniform(0.125, 0.225) * big
        cx, cy = rng.uniform(r, big - r, 2)
        _draw_shape(ImageDraw.Draw(canvas), SHAPE_CLASSES[label], cx, cy, r, rng.uniform(0, 2 * np.pi),
                    tuple(int(v) for v in fg), tuple(int(v) for v in bg), width=max(scale, int(0.18 * r)))
        image = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
        tint = rng.uniform(-1, 1, 3)
        image = image + rng.uniform(20, 70) * (texture[..., None] - 0.5) * (1 + 0.5 * tint)
        image = image + rng.normal(0, 6, image.shape)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), list(SHAPE_CLASSES)
