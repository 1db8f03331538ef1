"""``load_data``: one call from a source string to train/val/test datasets and the :class:`InputSpec`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from edgekd.core.labelled import FileList, fit_images
from edgekd.core.spec import InputSpec
from edgekd.training.data.datasets import ArrayDataset, FileDataset
from edgekd.training.data.sources import ArrayPool, RawSource, open_raw_source
from edgekd.training.data.specs import array_stats, check_channels, image_stats, parse_size, resize_policy
from edgekd.training.data.split import SplitInfo, carve_validation
from edgekd.training.data.transforms import TrainAugment

STATS_SAMPLE = 512  # image-folder mean/std are estimated on this many seeded train images


@dataclass
class LoadedData:
    """Everything training needs, plus how to reload it (``source``) and what was skipped."""

    spec: InputSpec
    train: Dataset
    val: Dataset
    test: Dataset | None
    split: SplitInfo
    source: dict[str, Any]
    skipped: list[str] = field(default_factory=list)


def _shared_pool(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(N, H0, W0, C0) uint8 → read-only (N, H, W, C) uint8 at spec size, shared by the train and val datasets."""
    out = fit_images(images, spec)
    out.flags.writeable = False
    return out


def _with_stats(spec: InputSpec, stats: tuple[tuple[float, ...], tuple[float, ...]]) -> InputSpec:
    """The spec with (mean, std) filled in (re-validated by InputSpec)."""
    return dataclasses.replace(spec, mean=stats[0], std=stats[1])


def _array_datasets(raw: RawSource, spec: InputSpec, split: SplitInfo,
                    hflip: bool | None) -> tuple[InputSpec, Dataset, Dataset, Dataset | None]:
    """In-memory sources: resize once to spec size, exact train-part stats, datasets sharing the pool."""
    assert isinstance(raw.train, ArrayPool)
    train_idx = split.train_indices()
    pool = _shared_pool(raw.train.images, spec)  # (N, H, W, C) uint8
    spec = _with_stats(spec, array_stats(pool, train_idx))
    aug = TrainAugment(spec, hflip) if hflip is not None else None
    train = ArrayDataset(pool, raw.train.labels, train_idx, spec, aug)
    val = ArrayDataset(pool, raw.train.labels, split.val_indices, spec)
    test = None
    if isinstance(raw.test, ArrayPool):
        test = ArrayDataset(_shared_pool(raw.test.images, spec), raw.test.labels, None, spec)
    return spec, train, val, test


def _file_datasets(raw: RawSource, spec: InputSpec, split: SplitInfo, seed: int,
                   hflip: bool | None) -> tuple[InputSpec, Dataset, Dataset, Dataset | None]:
    """Image folders: stats estimated on a seeded sample of the train part, lazily decoding datasets."""
    assert isinstance(raw.train, FileList)
    train_files, val_files = raw.train.subset(split.train_indices()), raw.train.subset(split.val_indices)
    sample = np.arange(len(train_files))
    if len(sample) > STATS_SAMPLE:
        sample = np.sort(np.random.default_rng(seed).choice(sample, STATS_SAMPLE, replace=False))
    probe = FileDataset(train_files.subset(sample).paths, train_files.labels[sample], spec)
    spec = _with_stats(spec, image_stats((probe.raw(i) for i in range(len(probe))), spec.channels))
    aug = TrainAugment(spec, hflip) if hflip is not None else None
    train = FileDataset(train_files.paths, train_files.labels, spec, aug)
    val = FileDataset(val_files.paths, val_files.labels, spec)
    test = FileDataset(raw.test.paths, raw.test.labels, spec) if isinstance(raw.test, FileList) else None
    return spec, train, val, test


def load_data(source: str = "digits", *, root: str | None = None, image_size: int | tuple[int, int] | None = None,
              channels: int | None = None, val_fraction: float = 0.1, seed: int = 0, download: bool = False,
              skip_bad: bool = False, augment: bool = True, hflip: bool | None = None,
              resize: str | None = None) -> LoadedData:
    """Load ``source`` (digits, cifar10, cifar100, an image folder, .npz file(s)) into train/val/test datasets.

    The validation set is carved from the train pool with ``seed``; mean/std are computed on the train part.
    ``hflip=None`` flips in augmentation except for digits. Nothing is downloaded unless ``download=True``.
    """
    raw = open_raw_source(source, root=root, download=download, seed=seed, skip_bad=skip_bad)
    height, width = parse_size(image_size, raw.size)
    channels = check_channels(raw.channels if channels is None else channels)
    policy, crop_ratio = resize_policy(height, width, resize, raw.kind == "folder")
    split = carve_validation(len(raw.train), val_fraction, seed)
    flip = raw.hflip if hflip is None else bool(hflip)
    spec = InputSpec(height=height, width=width, channels=channels, mean=(0.0,) * channels,
                     std=(1.0,) * channels, class_names=tuple(raw.classes), resize=policy, crop_ratio=crop_ratio)
    build_hflip = flip if augment else None
    if raw.in_memory:
        spec, train, val, test = _array_datasets(raw, spec, split, build_hflip)
    else:
        spec, train, val, test = _file_datasets(raw, spec, split, seed, build_hflip)
    record = {"kind": raw.kind, **raw.info, "image_size": [height, width], "channels": channels, "seed": int(seed),
              "val_fraction": float(val_fraction), "resize": policy, "crop_ratio": crop_ratio,
              "augment": bool(augment), "hflip": flip, "skip_bad": bool(skip_bad),
              "n_train": len(train), "n_val": len(val), "n_test": len(test) if test is not None else 0}
    return LoadedData(spec, train, val, test, split, record, list(raw.skipped))


def reload_data(source: dict[str, Any], **overrides: Any) -> LoadedData:
    """Load the same data again from a ``LoadedData.source`` record (e.g. from a checkpoint or manifest).

    ``overrides`` are :func:`load_data` keyword arguments that replace the recorded ones (e.g. ``download``).
    """
    kind = source["kind"]
    target = {"folder": source.get("path"), "npz": ",".join(source.get("paths", []))}.get(kind, kind)
    kwargs: dict[str, Any] = {
        "root": source.get("root"), "image_size": tuple(source["image_size"]), "channels": source["channels"],
        "val_fraction": source["val_fraction"], "seed": source["seed"], "skip_bad": source.get("skip_bad", False),
        "augment": source.get("augment", True), "hflip": source.get("hflip"), "resize": source.get("resize"),
    }
    kwargs.update(overrides)
    return load_data(target, **kwargs)


def val_arrays(data: LoadedData, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` (default all) validation items, eval-transformed: (N, C, H, W) float32, (N,) int64."""
    n = len(data.val) if limit is None else max(0, min(int(limit), len(data.val)))
    x = np.empty((n, *data.spec.shape), dtype=np.float32)
    for i in range(n):
        x[i] = data.val[i][0].numpy()
    return x, np.asarray(data.val.labels[:n], dtype=np.int64)
