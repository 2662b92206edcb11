"""Calibration images: nested folders of any Pillow format, the family's preprocessing, clear errors."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from edgevit.data import Preprocess, find_images, load_image_folder, synthetic_images
from edgevit.data.images import DataError

pytestmark = pytest.mark.unit

PRE = Preprocess(64, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop_pct=0.875)


def make_images(folder, n, size=(80, 60)):
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / f"class{i % 2}" / "deeper"
        sub.mkdir(parents=True, exist_ok=True)
        ext = ["png", "jpg", "bmp", "webp"][i % 4]
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(sub / f"img{i}.{ext}")
    return folder


def test_nested_folders_and_formats(tmp_path):
    make_images(tmp_path, 8)
    (tmp_path / "notes.txt").write_text("not an image")
    files = find_images(tmp_path)
    assert len(files) == 8 and {f.suffix for f in files} == {".png", ".jpg", ".bmp", ".webp"}
    cal = load_image_folder(tmp_path, PRE, 6)
    assert cal.inputs.shape == (6, 3, 64, 64)
    assert len(cal.files) == 6


def test_preprocess_matches_hand_computation():
    # A constant grey image: every pixel becomes (128/255 - mean) / std, whatever the resize does.
    image = Image.new("RGB", (100, 50), (128, 128, 128))
    x = PRE(image)
    expected = (128 / 255 - torch.tensor(PRE.mean)) / torch.tensor(PRE.std)
    torch.testing.assert_close(x[:, 10, 10], expected)
    assert PRE.describe()["resize_shorter_to"] == [73, 73]  # floor(64 / 0.875)


def test_errors(tmp_path):
    with pytest.raises(DataError) as e:
        find_images(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        find_images(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value)
    make_images(tmp_path / "few", 3)
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path / "few", PRE, 5)
    numbers = str(e.value).replace(str(tmp_path / "few"), "")
    assert re.search(r"\b3\b.*\b5\b", numbers)  # the images there, then the images asked for
    (tmp_path / "few" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path / "few", PRE, 4)
    assert "broken.png" in str(e.value)


def test_synthetic_fallback_is_seeded_and_pink():
    a = synthetic_images(PRE, 4, seed=0).inputs
    b = synthetic_images(PRE, 4, seed=0).inputs
    c = synthetic_images(PRE, 4, seed=1).inputs
    assert torch.equal(a, b) and not torch.equal(a, c)
    # 1/f images: low spatial frequencies carry far more energy than high ones.
    spec = torch.fft.rfft2(a).abs().mean(dim=(0, 1))
    assert spec[1:4, 1:4].mean() > 10 * spec[20:30, 20:30].mean()
