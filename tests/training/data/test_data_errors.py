"""Bad data: every case is a DataError whose single-line message names the file; skip_bad skips and reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.core.errors import DataError
from edgekd.training.data import load_data


def _raises(match_path, *args, **kwargs) -> str:
    """Call load_data expecting a DataError that names ``match_path`` on a single line; return the message."""
    with pytest.raises(DataError) as info:
        load_data(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert str(match_path) in message, message
    return message


def test_missing_paths(tmp_path: Path):
    _raises(tmp_path / "nope", str(tmp_path / "nope"))
    _raises(tmp_path / "nope.npz", str(tmp_path / "nope.npz"))
    _raises(tmp_path / "x*.npz", str(tmp_path / "x*.npz"))
    _raises(tmp_path / "gone", "folder", root=str(tmp_path / "gone"))
    with pytest.raises(DataError, match="unknown data source"):
        load_data("mnist")


def test_empty_class_folder(split_folder: Path):
    (split_folder / "train" / "dog").mkdir()
    _raises(split_folder / "train" / "dog", str(split_folder), image_size=16)


def test_empty_test_class_folder(split_folder: Path):
    (split_folder / "val" / "ant").joinpath("img00.png").unlink()
    (split_folder / "val" / "ant").joinpath("img01.png").unlink()
    _raises(split_folder / "val" / "ant", str(split_folder), image_size=16)


def test_test_class_not_in_train(split_folder: Path, image_writer):
    image_writer(split_folder / "val" / "zebra" / "z.png", np.random.default_rng(0), 10, 10, False)
    msg = _raises(split_folder / "val" / "zebra", str(split_folder), image_size=16)
    assert "train classes" in msg


def test_unreadable_image_raises_or_is_skipped(split_folder: Path):
    bad = split_folder / "train" / "bee" / "x.png"
    bad.write_bytes(b"this is not a png at all" * 10)
    msg = _raises(bad, str(split_folder), image_size=16)
    assert msg.startswith("cannot read image:")
    data = load_data(str(split_folder), image_size=16, skip_bad=True)
    assert data.skipped == [str(bad)]
    all_paths = data.train.paths + data.val.paths + data.test.paths
    assert str(bad) not in all_paths and len(all_paths) == 24


def test_unreadable_test_image(split_folder: Path):
    bad = split_folder / "val" / "cat" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    _raises(bad, str(split_folder), image_size=16)
    assert load_data(str(split_folder), image_size=16, skip_bad=True).skipped == [str(bad)]


def test_file_broken_after_loading_raises_data_error_in_getitem(single_tree: Path):
    data = load_data(str(single_tree), image_size=16)
    victim = Path(data.val.paths[0])
    victim.write_bytes(b"")
    with pytest.raises(DataError, match=f"cannot read image: {victim}"):
        data.val[0]
    victim.unlink()
    with pytest.raises(DataError, match=str(victim)):
        data.val.raw(0)


def test_npz_label_outside_classes(npz, arrays):
    content = arrays(20, 5, seed=0)
    content["y_train"][7] = 3  # only 3 classes
    content["y_train"][9] = 5
    path = npz("bad_label.npz", content)
    msg = _raises(path, str(path))
    assert "y_train[7]" in msg


def test_npz_missing_key(npz, arrays):
    content = arrays(20, 5, seed=0)
    del content["x_test"]
    path = npz("no_key.npz", content)
    msg = _raises(path, str(path))
    assert "x_test" in msg


def test_npz_length_mismatch(npz, arrays):
    content = arrays(20, 5, seed=0)
    content["y_train"] = content["y_train"][:-1]
    path = npz("short.npz", content)
    assert "y_train" in _raises(path, str(path))


def test_npz_part_with_bad_label_is_named(tmp_path: Path, npz, arrays):
    npz("p.part0.npz", arrays(10, 0, seed=1))
    bad = arrays(10, 3, seed=2)
    bad["y_test"][2] = 99
    path = npz("p.part1.npz", bad)
    assert "y_test[2]" in _raises(path, str(tmp_path / "p.part*.npz"))


def test_not_an_npz(tmp_path: Path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"nope")
    _raises(path, str(path))


def test_cifar_missing_without_download(tmp_path: Path):
    msg = _raises(tmp_path, "cifar10", root=str(tmp_path))
    assert "--download" in msg and "--data-root" in msg
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or created
