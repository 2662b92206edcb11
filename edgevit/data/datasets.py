"""Small labelled image sets made on this machine, for training and measuring accuracy offline.

- :func:`digits`: scikit-learn's bundled handwritten digits (1,797 8x8 greyscale images, 10 classes),
  upsampled to the model's resolution. Real images of a real task; nothing is downloaded.
- :func:`write_labelled_folder` writes any such set as ``ROOT/CLASS/NNNNN.png``, the layout
  ``edgevit eval --data`` and ``--calib`` read, so tests and benchmarks go through the same file path
  a user's data set does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import EdgevitError

__all__ = ["digits", "write_labelled_folder", "split_indices"]


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
