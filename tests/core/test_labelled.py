"""edgekd.core.labelled: the one folder/npz reader behind training data, build --calib-data and profile --data.

Real files in tmp_path: PNG/JPEG trees written with OpenCV, npz archives and parts, and bad inputs that must fail
with a one-line DataError naming the file (and key).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekd.core.errors import DataError
from edgekd.core.labelled import (
    EVAL_KEYS,
    decode_image,
    fit_images,
    is_npz_source,
    list_class_tree,
    list_images,
    load_images,
    load_labelled,
    npz_paths,
    read_npz,
    read_npz_classes,
)
from edgekd.core.preprocess import resize_to_spec, to_spec_channels
from edgekd.core.spec import InputSpec
from tests.helpers import assert_no_heavy_imports

SPEC = InputSpec(height=8, width=12, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                 class_names=("cat", "dog", "fox"))
GRAY = InputSpec(height=6, width=6, channels=1, mean=(0.5,), std=(0.25,), class_names=("a", "b"))


def _images(n: int, h: int = 16, w: int = 24) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def _write(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB (or gray) uint8 image with OpenCV (BGR on disk); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _one_line_error(call, *names: object) -> str:
    """``call()`` must raise a one-line DataError mentioning every one of ``names``; returns the message."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for name in names:
        assert str(name) in message, message
    return message


# -- listing --------------------------------------------------------------------------------------------------------
def test_listing_is_recursive_sorted_and_skips_hidden_and_non_images(tmp_path):
    img = _images(1, 4, 4)[0]
    for rel in ["b.png", "a.jpg", "sub/deeper/c.PNG", ".hidden.png", ".cache/d.png", "notes.txt", "sub/e.jpeg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt"):
            (tmp_path / rel).write_text("x")
        else:
            _write(tmp_path / rel, img)
    got = [os.path.relpath(p, tmp_path) for p in list_images(tmp_path)]
    assert got == ["a.jpg", "b.png", "sub/deeper/c.PNG", "sub/e.jpeg"]


def test_listing_follows_symlinked_folders_once(tmp_path):
    _write(tmp_path / "real" / "x.png", _images(1, 4, 4)[0])
    os.symlink(tmp_path / "real", tmp_path / "real" / "loop")  # a cycle: must not recurse forever
    os.symlink(tmp_path / "real", tmp_path / "link")
    got = [os.path.relpath(p, tmp_path) for p in list_images(tmp_path)]
    assert got == ["link/x.png"]  # real/ is the folder link/ already listed: its images count once
    assert [os.path.relpath(p, tmp_path) for p in list_images(tmp_path / "real")] == ["real/x.png"]


def test_class_tree_labels_folders_in_sorted_order(tmp_path):
    img = _images(1, 4, 4)[0]
    for rel in ["dog/1.png", "cat/2.png", "cat/nested/1.jpg", ".trash/0.png", "fox/.x.png", "fox/y.png"]:
        _write(tmp_path / rel, img)
    classes, files = list_class_tree(tmp_path)
    assert classes == ["cat", "dog", "fox"]
    assert [os.path.relpath(p, tmp_path) for p in files.paths] == ["cat/2.png", "cat/nested/1.jpg", "dog/1.png",
                                                                    "fox/y.png"]
    assert files.labels.tolist() == [0, 0, 1, 2] and files.labels.dtype == np.int64
    sub = files.subset(np.array([3, 0]))
    assert len(sub) == 2 and sub.labels.tolist() == [2, 0] and sub.paths[1] == files.paths[0]
    # with a given class list, labels index it and folders may be a subset of it
    classes, files = list_class_tree(tmp_path, ["zebra", "fox", "dog", "cat"])
    assert classes == ["zebra", "fox", "dog", "cat"] and files.labels.tolist() == [3, 3, 2, 1]


def test_class_tree_errors(tmp_path):
    _one_line_error(lambda: list_class_tree(tmp_path / "nope"), tmp_path / "nope")
    assert "no class sub-folders" in _one_line_error(lambda: list_class_tree(tmp_path), tmp_path)
    (tmp_path / "cat").mkdir()
    _write(tmp_path / "dog" / "a.png", _images(1, 4, 4)[0])
    assert "no images" in _one_line_error(lambda: list_class_tree(tmp_path), tmp_path / "cat")
    assert len(list_class_tree(tmp_path, empty_ok=True)[1]) == 1  # empty class folders allowed on request
    (tmp_path / "dog" / "a.png").unlink()
    assert "no images found" in _one_line_error(lambda: list_class_tree(tmp_path, empty_ok=True), tmp_path)
    (tmp_path / "wolf").mkdir()
    msg = _one_line_error(lambda: list_class_tree(tmp_path, ["cat", "dog"], known_as="among the train classes"),
                          tmp_path / "wolf")
    assert "among the train classes" in msg and "(cat, dog)" in msg


# -- decoding and fitting ---------------------------------------------------------------------------------------------
def test_decode_is_as_stored_then_bgr_to_spec_channels(tmp_path):
    rgb = _images(1, 5, 7)[0]
    path = _write(tmp_path / "c.png", rgb)
    assert np.array_equal(decode_image(path, 3), rgb)
    assert np.array_equal(decode_image(path, 1), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None])
    gray = _write(tmp_path / "g.png", rgb[:, :, 0])
    assert np.array_equal(decode_image(gray, 3), np.repeat(rgb[:, :, :1], 3, axis=2))
    bgra = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), np.full((5, 7), 9, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    assert np.array_equal(decode_image(tmp_path / "a.png", 3), rgb)  # alpha dropped, back to RGB
    (tmp_path / "bad.png").write_bytes(b"garbage")
    assert _one_line_error(lambda: decode_image(tmp_path / "bad.png", 3), tmp_path / "bad.png").startswith(
        "cannot read image")


@pytest.mark.parametrize("spec", [SPEC, GRAY, InputSpec(height=16, width=24, channels=3, mean=(0, 0, 0),
                                                          std=(1, 1, 1), class_names=("a", "b"))])
def test_fit_images_is_the_runtime_transform_per_image(spec):
    images = _images(3)  # (3, 16, 24, 3) RGB
    got = fit_images(images, spec)
    assert got.shape == (3, spec.height, spec.width, spec.channels) and got.dtype == np.uint8
    for i in range(3):
        assert np.array_equal(got[i], resize_to_spec(to_spec_channels(images[i], spec.channels), spec))
    assert fit_images(images[:0], spec).shape == (0, spec.height, spec.width, spec.channels)


# -- npz ----------------------------------------------------------------------------------------------------------
def test_npz_sources_and_paths(tmp_path):
    for name in ["p1.npz", "p0.npz", "odd[1].npz"]:
        np.savez(tmp_path / name, images=np.zeros((1, 2, 2), np.uint8))
    assert is_npz_source(tmp_path / "p0.npz") and is_npz_source(f"{tmp_path}/p*.npz") and is_npz_source("a,b")
    assert not is_npz_source(tmp_path / "missing.npz") and not is_npz_source(tmp_path)
    assert npz_paths(f"{tmp_path}/p*.npz") == [str(tmp_path / "p0.npz"), str(tmp_path / "p1.npz")]
    assert npz_paths(f"{tmp_path / 'p1.npz'}, {tmp_path / 'p0.npz'}") == [str(tmp_path / "p1.npz"),
                                                                          str(tmp_path / "p0.npz")]
    assert npz_paths(tmp_path / "odd[1].npz") == [str(tmp_path / "odd[1].npz")]  # an existing name is literal
    assert "no files match" in _one_line_error(lambda: npz_paths(f"{tmp_path}/q*.npz"), f"{tmp_path}/q*.npz")
    assert "not found" in _one_line_error(lambda: npz_paths(tmp_path / "gone.npz"), tmp_path / "gone.npz")


def test_npz_conversions_to_channels_last_uint8(tmp_path):
    rgb = _images(4, 5, 6)  # (4, 5, 6, 3)
    cases = {"hwc": rgb, "chw": rgb.transpose(0, 3, 1, 2), "float": rgb / 255.0,
             "float32": rgb.astype(np.float32) / 255, "int64": rgb.astype(np.int64)}
    for name, x in cases.items():
        np.savez(tmp_path / f"{name}.npz", x=x, y=np.arange(4) % 2)
        images, labels = read_npz([str(tmp_path / f"{name}.npz")], EVAL_KEYS, num_classes=2)
        assert images.dtype == np.uint8 and np.array_equal(images, rgb), name
        assert labels.tolist() == [0, 1, 0, 1] and labels.dtype == np.int64
    np.savez(tmp_path / "gray.npz", x=rgb[..., 0], y=np.zeros((1, 4)))  # (N, H, W); labels (1, N), whole floats
    images, labels = read_npz([str(tmp_path / "gray.npz")], EVAL_KEYS, num_classes=2)
    assert images.shape == (4, 5, 6, 1) and np.array_equal(images[..., 0], rgb[..., 0])
    assert labels.tolist() == [0, 0, 0, 0]


def test_npz_key_preference_and_parts(tmp_path):
    a, b = _images(3, 4, 4), _images(5, 4, 4)[2:]
    np.savez(tmp_path / "both.npz", x_train=a, y_train=[0, 0, 0], x_test=b, y_test=[1, 1, 1], images=a)
    images, labels = read_npz([str(tmp_path / "both.npz")], EVAL_KEYS, num_classes=2)
    assert np.array_equal(images, b) and labels.tolist() == [1, 1, 1]  # images lacks labels: x_test is next
    assert np.array_equal(load_images(tmp_path / "both.npz", GRAY), fit_images(a, GRAY))  # unlabelled: 'images'
    np.savez(tmp_path / "t.part0.npz", x_train=a, y_train=[0, 1, 0])
    np.savez(tmp_path / "t.part1.npz", x_train=b, y_train=[1, 1, 0])
    images, labels = read_npz(npz_paths(f"{tmp_path}/t.part*.npz"), ("x_train",), num_classes=2)
    assert np.array_equal(images, np.concatenate([a, b])) and labels.tolist() == [0, 1, 0, 1, 1, 0]
    assert len(load_images(f"{tmp_path}/t.part*.npz", GRAY, max_images=4)) == 4


def test_npz_classes(tmp_path):
    np.savez(tmp_path / "a.npz", classes=np.array(["x", "y"]))
    np.savez(tmp_path / "b.npz", classes=np.array([b"x", b"y"]))
    np.savez(tmp_path / "c.npz", classes=np.array(["x", "z"]))
    np.savez(tmp_path / "d.npz", classes=np.array(["x"]))
    np.savez(tmp_path / "e.npz", other=np.zeros(1))
    paths = [str(tmp_path / f"{n}.npz") for n in "abcde"]
    assert read_npz_classes(paths[:2]) == ["x", "y"]
    assert "differ" in _one_line_error(lambda: read_npz_classes(paths[:3]), paths[2])
    assert "at least 2" in _one_line_error(lambda: read_npz_classes(paths[3:4]), paths[3])
    assert "'classes'" in _one_line_error(lambda: read_npz_classes(paths[4:]), paths[4])


@pytest.mark.parametrize("content, key", [
    ({"x_train": np.zeros((2, 8, 8, 2), np.uint8), "y_train": [0, 1]}, "x_train"),  # 2 channels
    ({"x_train": np.zeros((2, 8), np.uint8), "y_train": [0, 1]}, "x_train"),
    ({"x_train": np.full((2, 4, 4), 300, np.int32), "y_train": [0, 1]}, "x_train"),
    ({"x_train": np.full((2, 4, 4), np.nan), "y_train": [0, 1]}, "x_train"),
    ({"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": np.zeros((2, 2), np.int64)}, "y_train"),
    ({"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": ["a", "b"]}, "y_train"),
    ({"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": [0, -1]}, "y_train[1]"),
    ({"x_train": np.zeros((2, 4, 4), np.uint8)}, "y_train"),
])
def test_bad_npz_content_names_file_and_key(tmp_path, content, key):
    np.savez(tmp_path / "bad.npz", **content)
    _one_line_error(lambda: read_npz([str(tmp_path / "bad.npz")], ("x_train",), num_classes=2),
                    tmp_path / "bad.npz", key)


def test_unreadable_npz_files(tmp_path):
    (tmp_path / "text.npz").write_text("not a zip\nsecond line")
    np.save(tmp_path / "single.npy", np.zeros(3))
    os.rename(tmp_path / "single.npy", tmp_path / "single.npz")
    np.savez(tmp_path / "obj.npz", images=np.array([np.zeros(2), None], dtype=object), labels=[0, 1])
    for path in (tmp_path / "text.npz", tmp_path / "single.npz", tmp_path / "obj.npz"):
        assert "cannot read" in _one_line_error(lambda p=path: load_labelled(p, SPEC), path)
    np.savez(tmp_path / "p0.npz", x=_images(2, 4, 4), y=[0, 1])
    np.savez(tmp_path / "p1.npz", x=_images(2, 5, 5), y=[0, 1])
    assert "shapes differ" in _one_line_error(lambda: load_labelled(f"{tmp_path}/p*.npz", SPEC), tmp_path / "p1.npz")


# -- load_labelled (profile --data) --------------------------------------------------------------------------------
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


def test_folder_of_jpegs_with_an_empty_class_folder(tmp_path):
    images = _images(3, 8, 12)
    for j, name in enumerate(["dog", "dog", "cat"]):
        _write(tmp_path / name / f"{j}.jpg", images[j])
    (tmp_path / "fox").mkdir()  # no fox images in this evaluation set: fine
    got, y, _ = load_labelled(tmp_path, SPEC)
    assert y.tolist() == [0, 1, 1] and got.shape == (3, 8, 12, 3)
    decoded = cv2.cvtColor(cv2.imread(str(tmp_path / "cat" / "2.jpg")), cv2.COLOR_BGR2RGB)  # lossy: as decoded
    assert np.array_equal(got[0], decoded)


def test_limit_takes_a_fixed_subset(tmp_path):
    images, labels = _images(20), np.arange(20) % 3
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    a = load_labelled(tmp_path / "d.npz", SPEC, limit=7)
    b = load_labelled(tmp_path / "d.npz", SPEC, limit=7)
    assert len(a[1]) == 7 and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert load_labelled(tmp_path / "d.npz", SPEC, limit=100)[2]["n"] == 20
    keep = np.sort(np.random.default_rng(0).choice(20, size=7, replace=False))  # seed 0, kept in order
    assert np.array_equal(a[1], labels[keep]) and np.array_equal(a[0], fit_images(images[keep], SPEC))


def test_limit_subset_is_the_same_for_a_folder(tmp_path):
    images = _images(9, 8, 12)
    for j in range(9):
        _write(tmp_path / SPEC.class_names[j % 3] / f"{j}.png", images[j])
    full, labels, _ = load_labelled(tmp_path, SPEC)
    part, part_labels, info = load_labelled(tmp_path, SPEC, limit=4)
    keep = np.sort(np.random.default_rng(0).choice(9, size=4, replace=False))
    assert info["n"] == 4 and np.array_equal(part, full[keep]) and np.array_equal(part_labels, labels[keep])


@pytest.mark.parametrize("write, message", [
    (lambda d: np.savez(d / "a.npz", images=np.full((2, 8, 8, 3), 2.0, np.float32), labels=[0, 1]), "uint8"),
    (lambda d: np.savez(d / "a.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=[0]), "one integer label"),
    (lambda d: np.savez(d / "a.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=[0.5, 1.0]), "integer"),
    (lambda d: np.savez(d / "a.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=[0, 3]), "0..2"),
    (lambda d: (d / "a.npz").write_text("not a zip"), "cannot read"),
    (lambda d: np.savez(d / "a.npz", images=np.zeros((0, 8, 8, 3), np.uint8), labels=np.zeros(0, int)), "no images"),
    (lambda d: np.savez(d / "a.npz", images=np.zeros((2, 8, 8), np.uint8)), "'labels'"),
])
def test_bad_npz(tmp_path, write, message):
    write(tmp_path)
    with pytest.raises(DataError, match=message):
        load_labelled(tmp_path / "a.npz", SPEC)
    _one_line_error(lambda: load_labelled(tmp_path / "a.npz", SPEC), tmp_path / "a.npz")


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
    assert "not classes of this bundle" in _one_line_error(lambda: load_labelled(tmp_path, SPEC), tmp_path / "wolf")


def test_neither_a_folder_nor_npz_names_the_option(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    for path in (tmp_path / "missing.npz", tmp_path / "notes.txt"):
        msg = _one_line_error(lambda p=path: load_labelled(p, SPEC, option="--data"), path)
        assert msg.startswith("--data must be")
        msg = _one_line_error(lambda p=path: load_images(p, SPEC, option="--calib-data"), path)
        assert msg.startswith("--calib-data must be")


# -- load_images (build --calib-data) ------------------------------------------------------------------------------
def test_calibration_folder_is_recursive_sorted_and_capped(tmp_path):
    images = _images(5, 8, 12)
    for j, rel in enumerate(["b/2.png", "a/1.png", "0.png", "a/deep/3.jpg", ".hidden/4.png"]):
        _write(tmp_path / rel, images[j])
    got = load_images(tmp_path, SPEC)
    assert got.shape == (4, 8, 12, 3)  # the hidden folder is skipped
    assert np.array_equal(got[0], images[2]) and np.array_equal(got[1], images[1])  # 0.png, a/1.png, ...
    assert np.array_equal(load_images(tmp_path, SPEC, max_images=2), got[:2])
    assert load_images(tmp_path, GRAY).shape == (4, 6, 6, 1)


def test_calibration_npz_keys_and_cap(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", images=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8))
    got = load_images(tmp_path / "c.npz", SPEC, max_images=1024)
    assert got.shape == (40, 8, 12, 3)
    x = rng.integers(0, 255, (30, 3, 16, 24), dtype=np.uint8)  # (N, C, H, W) training archive
    np.savez(tmp_path / "t.npz", x_train=x, y_train=np.zeros(30, int), x_test=x[:2], y_test=[0, 0])
    got = load_images(tmp_path / "t.npz", SPEC, max_images=25)
    assert np.array_equal(got, fit_images(x[:25].transpose(0, 2, 3, 1), SPEC))


def test_bad_calibration_data(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no images" in _one_line_error(lambda: load_images(tmp_path / "empty", SPEC), tmp_path / "empty")
    np.savez(tmp_path / "k.npz", labels=[0, 1])
    assert "'images'" in _one_line_error(lambda: load_images(tmp_path / "k.npz", SPEC), tmp_path / "k.npz")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.jpg").write_bytes(b"\xff\xd8\xff garbage")
    _one_line_error(lambda: load_images(tmp_path / "junk", SPEC), tmp_path / "junk" / "x.jpg")


def test_the_reader_imports_nothing_heavy():
    assert_no_heavy_imports("import edgekd.core.labelled")
