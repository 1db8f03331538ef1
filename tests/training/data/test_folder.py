"""ImageFolder sources: layouts, mixed gray/RGB rectangular images, exact eval transform."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from edgekd.core.preprocess import preprocess
from edgekd.training.data import load_data, reload_data


def _all_items_have_shape(ds, shape):
    return all(tuple(ds[i][0].shape) == shape for i in range(len(ds)))


def test_train_val_layout(split_folder: Path):
    data = load_data(str(split_folder), image_size=32)
    assert data.spec.class_names == ("ant", "bee", "cat")
    assert data.spec.shape == (3, 32, 32) and data.spec.resize == "stretch"
    assert len(data.train) + len(data.val) == 18 and len(data.test) == 6
    assert data.source["kind"] == "folder" and data.source["layout"] == "train/val"
    for ds in (data.train, data.val, data.test):
        assert _all_items_have_shape(ds, (3, 32, 32))
    assert np.bincount(data.test.labels).tolist() == [2, 2, 2]
    # labels follow the folder names
    for i in range(len(data.test)):
        assert Path(data.test.paths[i]).parent.name == data.spec.class_names[data.test.labels[i]]
    assert data.source["hflip"] is True


def test_default_size_is_center_crop_224(split_folder: Path):
    data = load_data("folder", root=str(split_folder))
    spec = data.spec
    assert spec.shape == (3, 224, 224) and spec.resize == "center-crop" and spec.crop_ratio == 0.875
    torch.manual_seed(0)
    assert tuple(data.train[0][0].shape) == (3, 224, 224)  # random-resized-crop of the original
    assert data.val.raw(0).shape == (224, 224, 3)


def test_eval_is_core_preprocess_on_the_decoded_file(split_folder: Path):
    for size, channels in ((32, 3), (80, 3), ((20, 28), 1)):
        data = load_data(str(split_folder), image_size=size, channels=channels)
        for ds in (data.val, data.test):
            for i in range(len(ds)):
                expected = preprocess(cv2.imread(ds.paths[i]), data.spec, bgr=True)
                assert np.array_equal(ds[i][0].numpy(), expected)


def test_single_tree_is_split_into_train_and_test(single_tree: Path):
    data = load_data(str(single_tree), image_size=24, seed=3)
    assert data.spec.class_names == ("a", "b")
    assert data.source["layout"] == "single"
    assert len(data.test) == 4 and np.bincount(data.test.labels).tolist() == [2, 2]
    paths = [set(ds.paths) for ds in (data.train, data.val, data.test)]
    assert sum(len(p) for p in paths) == 20 and len(set.union(*paths)) == 20
    assert _all_items_have_shape(data.test, (3, 24, 24)) and _all_items_have_shape(data.train, (3, 24, 24))
    again = load_data(str(single_tree), image_size=24, seed=3)
    assert again.test.paths == data.test.paths and again.val.paths == data.val.paths


def test_gray_spec_and_stats_estimate(single_tree: Path):
    data = load_data(str(single_tree), image_size=16, channels=1, augment=False)
    assert data.spec.shape == (1, 16, 16) and data.spec.color_order == "gray"
    raw = np.stack([data.train.raw(i) for i in range(len(data.train))]).astype(np.float64) / 255
    # fewer than 512 train images: the "estimate" is exact
    assert abs(data.spec.mean[0] - raw.mean()) < 1e-9
    assert abs(data.spec.std[0] - raw.std()) < 1e-9


def test_reload_from_source_record(split_folder: Path):
    data = load_data(str(split_folder), image_size=32, seed=2)
    again = reload_data(data.source)
    assert again.spec == data.spec and again.split.sha256() == data.split.sha256()
    assert again.val.paths == data.val.paths
