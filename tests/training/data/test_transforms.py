"""Train augmentation: torch-RNG determinism, shapes, pad-crop/flip semantics, no global numpy/python RNG use."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from edgekd.core.preprocess import normalize
from edgekd.core.spec import InputSpec
from edgekd.training.data import load_data
from edgekd.training.data.transforms import TrainAugment, random_hflip, random_pad_crop, rrc_box


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("aug") / "a.npz"
    np.savez(path, x_train=rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), y_train=np.arange(40) % 2,
             x_test=np.zeros((0, 16, 16, 3), np.uint8), y_test=np.zeros(0, np.int64), classes=np.array(["a", "b"]))
    return load_data(str(path))


def _items(ds, seed, n=8):
    torch.manual_seed(seed)
    return [ds[i][0].numpy() for i in range(n)]


def test_deterministic_under_torch_seed_and_differs_across_seeds(npz_data):
    a, b, c = _items(npz_data.train, 1), _items(npz_data.train, 1), _items(npz_data.train, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert all(x.shape == (3, 16, 16) and x.dtype == np.float32 for x in a)


def test_no_global_numpy_or_python_rng(npz_data):
    np.random.seed(123)
    random.seed(123)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    _items(npz_data.train, 5)
    assert np.array_equal(np.random.get_state()[1], np_state) and random.getstate() == py_state


def test_augment_false_gives_eval_transform(npz_data):
    plain = load_data(npz_data.source["paths"][0], augment=False)
    assert plain.train.augment is None
    for i in (0, 3, len(plain.train) - 1):
        assert np.array_equal(plain.train[i][0].numpy(), normalize(plain.train.raw(i), plain.spec))


def test_pad_crop_is_a_shift_with_zero_fill():
    image = np.arange(1, 8 * 8 + 1, dtype=np.uint8).reshape(8, 8, 1)
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out = random_pad_crop(image, 1, 1)
        assert out.shape == image.shape and out.dtype == np.uint8
        # Every non-zero pixel comes from the image shifted by the same offset.
        ys, xs = np.nonzero(out[:, :, 0])
        src = out[ys, xs, 0].astype(int) - 1  # flat positions in the original image
        shifts = {(int(s // 8 - y), int(s % 8 - x)) for s, y, x in zip(src, ys, xs)}
        assert len(shifts) == 1
        (sy, sx), = shifts
        assert abs(sy) <= 1 and abs(sx) <= 1
        assert (out[:, :, 0] == 0).sum() == 64 - (8 - abs(sy)) * (8 - abs(sx))
        seen.add((sy, sx))
    assert len(seen) > 4  # several offsets are drawn


def test_hflip_mirrors_and_keeps_shape():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(random_hflip(image, p=1.0), image[:, ::-1])
    assert random_hflip(image, p=0.0) is image
    torch.manual_seed(0)
    outs = [random_hflip(image) for _ in range(20)]
    assert all(o.shape == image.shape for o in outs)
    assert any(np.array_equal(o, image) for o in outs) and any(not np.array_equal(o, image) for o in outs)


def test_random_resized_crop_box_in_bounds_and_output_size():
    torch.manual_seed(0)
    for h, w in ((50, 80), (300, 40), (64, 64)):
        for _ in range(50):
            top, left, ch, cw = rrc_box(h, w)
            assert 0 <= top and 0 <= left and 0 < ch and 0 < cw and top + ch <= h and left + cw <= w
    spec = InputSpec(64, 64, 3, (0.5,) * 3, (0.25,) * 3, ("a", "b"), resize="center-crop", crop_ratio=0.875)
    aug = TrainAugment(spec, hflip=True)
    assert not aug.small
    image = np.random.default_rng(1).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    torch.manual_seed(3)
    a = aug(image)
    torch.manual_seed(3)
    assert a.shape == (64, 64, 3) and np.array_equal(a, aug(image))


def test_large_folder_training_items(split_folder):
    data = load_data(str(split_folder), image_size=64)
    assert data.spec.resize == "center-crop"
    first = _items(data.train, 0, n=len(data.train))
    assert all(x.shape == (3, 64, 64) for x in first)
    assert all(np.array_equal(x, y) for x, y in zip(first, _items(data.train, 0, n=len(data.train))))


def test_digits_do_not_flip_by_default():
    data = load_data("digits")
    assert data.train.augment is not None and data.train.augment.hflip is False
    assert load_data("digits", hflip=True).train.augment.hflip is True
    assert load_data("digits", augment=False).train.augment is None
