"""edgekd.device.profile.data: labelled images for --data from an ImageFolder tree or an npz, at the bundle's input size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgekd.core.errors import DataError
from edgekd.core.spec import InputSpec
from edgekd.device.profile.data import load_labelled

SPEC = InputSpec(height=8, width=12, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                 class_names=("cat", "dog", "fox"))


def _images(n: int, h: int = 16, w: int = 24) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def test_npz_images_resized_to_the_spec_and_labels_kept(tmp_path):
    images, labels = _images(5), np.array([0, 2, 1, 1, 0])
    np.savez(tmp_path / "d.npz", x_test=images, y_test=labels.reshape(-1, 1))  # the CIFAR-style key names work
    got, y, info = load_labelled(tmp_path / "d.npz", SPEC)
    assert got.shape == (5, 8, 12, 3) and got.dtype == np.uint8
    assert y.tolist() == labels.tolist() and info == {"source": "npz", "path": str(tmp_path / "d.npz"), "n": 5}
    expected = cv2.resize(images[3], (12, 8), interpolation=cv2.INTER_AREA)  # RGB in, RGB out: no colour swap
    assert np.array_equal(got[3], expected)


def test_folder_maps_subfolders_to_class_names_and_reads_bgr(tmp_path):
    images = _images(4, 8, 12)
    for j, name in enumerate(["fox", "cat", "fox", "dog"]):
        (tmp_path / name).mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / name / f"{j}.png"), cv2.cvtColor(images[j], cv2.COLOR_RGB2BGR))
    got, y, info = load_labelled(tmp_path, SPEC)
    assert info["source"] == "folder" and info["n"] == 4
    assert y.tolist() == [0, 1, 2, 2]  # cat, dog, fox, fox: folders sorted, indices from the spec's class names
    assert np.array_equal(got[0], images[1]) and np.array_equal(got[1], images[3])  # back to RGB, same pixels


def test_limit_takes_a_fixed_subset(tmp_path):
    images, labels = _images(20), np.arange(20) % 3
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    a = load_labelled(tmp_path / "d.npz", SPEC, limit=7)
    b = load_labelled(tmp_path / "d.npz", SPEC, limit=7)
    assert len(a[1]) == 7 and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert load_labelled(tmp_path / "d.npz", SPEC, limit=100)[2]["n"] == 20


@pytest.mark.parametrize("write, message", [
    (lambda d: np.savez(d / "a.npz", images=np.zeros((2, 8, 8, 3), np.float32), labels=[0, 1]), "uint8"),
    (lambda d: np.savez(d / "a.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=[0]), "one integer label"),
    (lambda d: np.savez(d / "a.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=[0.5, 1.0]), "integer"),
    (lambda d: np.savez(d / "a.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=[0, 3]), "0..2"),
    (lambda d: (d / "a.npz").write_text("not a zip"), "cannot read"),
])
def test_bad_npz(tmp_path, write, message):
    write(tmp_path)
    with pytest.raises(DataError, match=message):
        load_labelled(tmp_path / "a.npz", SPEC)


def test_bad_folders(tmp_path):
    with pytest.raises(DataError, match="no class sub-folders"):
        load_labelled(tmp_path, SPEC)
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_labelled(tmp_path, SPEC)
    (tmp_path / "cat" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read image"):
        load_labelled(tmp_path, SPEC)
    (tmp_path / "wolf").mkdir()
    with pytest.raises(DataError, match="wolf"):
        load_labelled(tmp_path, SPEC)
