"""Seeded validation split and holdout split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekd.core.errors import ConfigError, DataError
from edgekd.training.data import load_data
from edgekd.training.data.split import carve_validation, holdout_split


def test_same_seed_same_indices_other_seed_differs():
    a, b, c = carve_validation(500, 0.1, 7), carve_validation(500, 0.1, 7), carve_validation(500, 0.1, 8)
    assert np.array_equal(a.val_indices, b.val_indices) and a.sha256() == b.sha256()
    assert not np.array_equal(a.val_indices, c.val_indices) and a.sha256() != c.sha256()
    assert len(a.val_indices) == 50 and a.val_indices.dtype == np.int64
    assert np.all(np.diff(a.val_indices) > 0)  # sorted, unique


def test_val_disjoint_from_train_and_covering_the_pool():
    s = carve_validation(101, 0.25, 3)
    train = s.train_indices()
    assert np.intersect1d(train, s.val_indices).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, s.val_indices])), np.arange(101))


def test_split_size_limits():
    assert len(carve_validation(10, 0.01, 0).val_indices) == 1  # at least one validation image
    assert len(carve_validation(10, 0.99, 0).train_indices()) == 1  # train keeps at least one
    with pytest.raises(ConfigError):
        carve_validation(10, 0.0, 0)
    with pytest.raises(ConfigError):
        carve_validation(10, 1.0, 0)
    with pytest.raises(DataError):
        carve_validation(1, 0.5, 0)


def test_to_dict_is_json_safe():
    s = carve_validation(20, 0.2, 1)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["val_indices"] == [int(i) for i in s.val_indices]
    assert d["sha256"] == s.sha256() and d["n_train_total"] == 20 and d["seed"] == 1


def test_load_data_split_reproducible():
    a, b, c = load_data("digits", seed=5), load_data("digits", seed=5), load_data("digits", seed=6)
    assert a.split.sha256() == b.split.sha256() != c.split.sha256()
    assert np.array_equal(a.val.labels, b.val.labels)
    assert np.array_equal(a.val.raw(0), b.val.raw(0))
    assert a.spec == b.spec
    assert np.intersect1d(a.train.indices, a.val.indices).size == 0
    assert np.array_equal(a.val.indices, a.split.val_indices)
    assert len(a.train) + len(a.val) == a.split.n_train_total


def test_holdout_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(3), [10, 5, 1])
    train, test = holdout_split(labels, 0.2, 0)
    assert np.intersect1d(train, test).size == 0 and len(train) + len(test) == 16
    assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 0]
    again = holdout_split(labels, 0.2, 0)[1]
    assert np.array_equal(test, again)
