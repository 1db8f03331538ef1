"""npz sources: single file, multi-part (glob and list), gray/float input, exact stats and eval transform."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.core.preprocess import preprocess
from edgekd.training.data import load_data


def test_single_npz(npz, arrays):
    content = arrays(40, 10, seed=0)
    path = npz("one.npz", content)
    data = load_data(str(path), seed=1)
    assert data.spec.shape == (3, 12, 12) and data.spec.class_names == ("class0", "class1", "class2")
    assert len(data.val) == 4 and len(data.train) == 36 and len(data.test) == 10
    assert np.array_equal(data.val.labels, content["y_train"][data.split.val_indices])
    assert np.array_equal(data.test.labels, content["y_test"])
    assert np.array_equal(data.val.raw(1), content["x_train"][data.split.val_indices[1]])
    assert data.source["kind"] == "npz" and data.source["paths"] == [str(path.resolve())]
    # exact mean/std of the train part
    train = content["x_train"][data.split.train_indices()].astype(np.float64) / 255
    assert np.allclose(data.spec.mean, train.mean(axis=(0, 1, 2)), atol=1e-12)
    assert np.allclose(data.spec.std, train.std(axis=(0, 1, 2)), atol=1e-12)


def test_multi_part_concatenated_in_order(tmp_path, npz, arrays):
    p0, p1 = arrays(30, 0, seed=1), arrays(20, 8, seed=2)
    npz("set.part0.npz", p0)
    npz("set.part1.npz", p1)
    x_all = np.concatenate([p0["x_train"], p1["x_train"]])
    y_all = np.concatenate([p0["y_train"], p1["y_train"]])
    data = load_data(str(tmp_path / "set.part*.npz"), seed=4)
    assert data.split.n_train_total == 50 and len(data.test) == 8
    idx = data.split.val_indices
    assert np.array_equal(data.val.labels, y_all[idx])
    assert all(np.array_equal(data.val.raw(k), x_all[i]) for k, i in enumerate(idx))
    assert np.array_equal(data.test.labels, p1["y_test"])
    # an explicit comma-separated list keeps the given order
    rev = load_data(f"{tmp_path / 'set.part1.npz'},{tmp_path / 'set.part0.npz'}", seed=4)
    x_rev = np.concatenate([p1["x_train"], p0["x_train"]])
    assert np.array_equal(rev.val.raw(0), x_rev[rev.split.val_indices[0]])


def test_gray_npz_resized_and_eval_exact(npz, arrays):
    content = arrays(30, 6, seed=3, shape=(10, 14))
    data = load_data(str(npz("gray.npz", content)), image_size=20)
    assert data.spec.shape == (1, 20, 20) and data.spec.channels == 1
    for k in range(len(data.val)):
        original = content["x_train"][data.split.val_indices[k]]  # (10, 14) uint8
        assert np.array_equal(data.val[k][0].numpy(), preprocess(original, data.spec))
    assert np.array_equal(data.test[2][0].numpy(), preprocess(content["x_test"][2], data.spec))


def test_rgb_npz_as_gray_is_exact(npz, arrays):
    content = arrays(20, 4, seed=5)
    data = load_data(str(npz("rgb.npz", content)), channels=1, image_size=16)
    original = content["x_train"][data.split.val_indices[0]]
    assert np.array_equal(data.val[0][0].numpy(), preprocess(original, data.spec))


def test_float_images_in_unit_range_are_scaled(npz, arrays):
    content = arrays(20, 4, seed=6)
    as_float = dict(content, x_train=content["x_train"] / 255.0, x_test=content["x_test"].astype(np.float32) / 255)
    data = load_data(str(npz("f.npz", as_float)))
    assert np.array_equal(data.val.raw(0), content["x_train"][data.split.val_indices[0]])


@pytest.mark.parametrize("hflip", [None, False])
def test_hflip_default_on_for_npz(npz, arrays, hflip):
    data = load_data(str(npz("h.npz", arrays(20, 0, seed=7))), hflip=hflip)
    assert data.source["hflip"] is (hflip is None)
    assert data.test is None
