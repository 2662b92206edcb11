"""Small labelled image sets made on this machine, for training and measuring accuracy offline.

- :func:`digits`: scikit-learn's bundled handwritten digits (1,797 8x8 greyscale images, 10 classes),
  upsampled to the model's resolution. Real images of a real task; nothing is downloaded.
- :func:`shapes`: a seeded, procedurally generated 10-class set (shapes over textured backgrounds),
  harder than digits, so quantization losses show.
- :func:`write_labelled_folder` writes any such set as ``ROOT/CLASS/NNNNN.png``, the layout
  ``edgevit eval --data`` and ``--calib`` read, so tests and benchmarks go through the same file path
  a user's data set does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import EdgevitError

__all__ = ["digits", "shapes", "SHAPE_CLASSES", "write_labelled_folder", "split_indices"]


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
