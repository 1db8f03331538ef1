"""digits source: shapes, spec statistics, split sizes, exact eval transform."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.core.preprocess import preprocess
from edgekd.training.data import load_data, val_arrays
from edgekd.training.data.sources import load_digits_arrays


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def test_digits_shapes_and_sizes(digits):
    spec = digits.spec
    assert spec.shape == (1, 32, 32) and spec.channels == 1 and spec.color_order == "gray"
    assert spec.class_names == tuple(str(i) for i in range(10))
    assert spec.resize == "stretch"
    assert len(digits.test) == 359  # round(0.2 * 1797)
    assert len(digits.train) + len(digits.val) == 1797 - 359 == digits.split.n_train_total
    assert len(digits.val) == round(0.1 * 1438)
    x, y = digits.train[0]
    assert tuple(x.shape) == (1, 32, 32) and str(x.dtype) == "torch.float32"
    assert 0 <= int(y) < 10
    assert digits.train.raw(0).shape == (32, 32, 1) and digits.train.raw(0).dtype == np.uint8
    assert digits.train.labels.dtype == np.int64
    assert set(np.unique(digits.test.labels)) == set(range(10))
    assert digits.source["kind"] == "digits" and digits.source["hflip"] is False
    assert digits.skipped == []


def test_digits_spec_stats_match_train_part(digits):
    raw = np.stack([digits.train.raw(i) for i in range(len(digits.train))]).astype(np.float64) / 255.0
    assert digits.spec.mean[0] == pytest.approx(raw.mean(), abs=1e-9)
    assert digits.spec.std[0] == pytest.approx(raw.std(), abs=1e-9)
    # Normalised train images (without augmentation) have mean 0 / std 1.
    plain = load_data("digits", augment=False)
    xs = np.stack([plain.train[i][0].numpy() for i in range(len(plain.train))])
    assert abs(xs.mean()) < 1e-3 and xs.std() == pytest.approx(1.0, abs=1e-3)


def test_digits_eval_is_core_preprocess(digits):
    pool, test_pool = load_digits_arrays()
    for k in (0, 5, len(digits.val) - 1):
        original = pool.images[digits.split.val_indices[k]]  # (8, 8, 1) uint8
        assert np.array_equal(digits.val[k][0].numpy(), preprocess(original, digits.spec))
        assert digits.val[k][1] == pool.labels[digits.split.val_indices[k]]
    assert np.array_equal(digits.test[3][0].numpy(), preprocess(test_pool.images[3], digits.spec))
    x, y = val_arrays(digits, limit=4)
    assert x.shape == (4, 1, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(x[2], digits.val[2][0].numpy())
    assert np.array_equal(y, digits.val.labels[:4])
    full_x, full_y = val_arrays(digits)
    assert len(full_x) == len(full_y) == len(digits.val)


def test_digits_custom_size_and_channels():
    data = load_data("digits", image_size=(16, 24), channels=3)
    assert data.spec.shape == (3, 16, 24)
    assert tuple(data.train[0][0].shape) == (3, 16, 24)
    assert data.val.raw(0).shape == (16, 24, 3)
