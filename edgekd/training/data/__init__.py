"""Training data for edgekd: sources (digits, CIFAR, .npz parts, image folders) → datasets + :class:`InputSpec`.

The evaluation transform of every dataset is exactly :func:`edgekd.core.preprocess.preprocess`, the transform the
runtime applies to camera frames; train augmentation draws randomness only from torch's global RNG.
"""

from __future__ import annotations

from edgekd.training.data.datasets import ArrayDataset, FileDataset, SpecDataset
from edgekd.training.data.loader import LoadedData, load_data, reload_data, val_arrays
from edgekd.training.data.split import SplitInfo

__all__ = ["ArrayDataset", "FileDataset", "LoadedData", "SpecDataset", "SplitInfo", "load_data", "reload_data",
           "val_arrays"]
