"""Issue 14: image folders and archives as users really have them: symlink loops and links between class folders,
NaN pixels, corrupt compressed members; and the writes that must refuse early (a file in the way of a folder).
Each case is refused with a one-line :class:`DataError` / :class:`DestinationError` naming the file, or read right."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekd.core.errors import DataError
from edgekd.core.labelled import list_class_tree, list_images, load_images, read_npz


def _image(path: Path, value: int, shape=(8, 8, 3)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))


@pytest.fixture
def tree(tmp_path) -> Path:
    """root/cat/{0,1}.png, root/dog/{0,1}.png."""
    root = tmp_path / "root"
    for cls, base in (("cat", 10), ("dog", 100)):
        for i in range(2):
            _image(root / cls / f"{i}.png", base + i)
    return root


def test_a_symlink_loop_inside_a_class_folder_neither_multiplies_nor_mislabels(tree):
    os.symlink("..", str(tree / "cat" / "loop"))  # cat/loop → root: walks into dog/ and back into cat/
    os.symlink("../..", str(tree / "dog" / "up"))  # dog/up → above the root
    classes, files = list_class_tree(tree)
    assert classes == ["cat", "dog"]
    by_label = {c: sorted(Path(p).name for p, y in zip(files.paths, files.labels) if y == i)
                for i, c in enumerate(classes)}
    assert by_label == {"cat": ["0.png", "1.png"], "dog": ["0.png", "1.png"]}
    assert len(files) == 4
    for path, label in zip(files.paths, files.labels):  # every image is labelled by the class folder it lies in
        assert os.path.realpath(path).split(os.sep)[-2] == classes[label]


def test_a_link_from_one_class_folder_to_another_is_not_followed(tree):
    os.symlink(str(tree / "dog"), str(tree / "cat" / "more"))
    classes, files = list_class_tree(tree)
    assert len(files) == 4 and list(files.labels) == [0, 0, 1, 1]


def test_an_image_linked_into_two_classes_is_an_error_naming_both(tree):
    os.symlink(str(tree / "dog" / "0.png"), str(tree / "cat" / "dog0.png"))
    with pytest.raises(DataError, match=r"cat/dog0\.png and .*dog/0\.png are one image in two class folders"):
        list_class_tree(tree)


def test_an_unlabelled_folder_lists_each_real_image_once_through_links(tree):
    os.symlink(".", str(tree / "cat" / "self"))
    os.symlink(str(tree / "cat" / "0.png"), str(tree / "cat" / "alias.png"))
    assert [Path(p).name for p in list_images(tree / "cat")] == ["0.png", "1.png"]
    assert len(load_images(tree / "cat", _spec())) == 2


def _spec():
    from edgekd.core.spec import InputSpec

    return InputSpec(8, 8, 3, (0.5,) * 3, (0.25,) * 3, ("a", "b"))


def test_nan_pixels_in_an_npz_are_refused_naming_the_image(tmp_path):
    x = np.random.default_rng(0).random((6, 8, 8, 3)).astype(np.float32)
    x[4, 0, 0, 1] = np.inf
    np.savez(str(tmp_path / "d.npz"), x_train=x, y_train=np.zeros(6, np.int64))
    with pytest.raises(DataError, match=r"x_train holds NaN or infinite pixel values \(first in image 4\)"):
        read_npz([str(tmp_path / "d.npz")], ("x_train",), num_classes=2)


def test_a_corrupt_compressed_member_is_a_data_error(tmp_path):
    path = tmp_path / "d.npz"
    np.savez_compressed(str(path), images=np.random.default_rng(0).integers(0, 255, (30, 8, 8, 3), dtype=np.uint8))
    data = bytearray(path.read_bytes())
    for i in range(100, 600, 5):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=str(path)):
        load_images(path, _spec())


# -------------------------------------------------------------------------------------------- early refusals


def test_a_file_in_the_way_of_a_folder_is_a_one_line_refusal(tmp_path):
    from edgekd.core.atomic import PendingFile, atomic_write_text
    from edgekd.core.errors import DestinationError
    from edgekd.core.writable import check_writable, writable_problem

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert writable_problem(blocker / "sub" / "out.json") == f"{blocker} is not a directory"
    with pytest.raises(DestinationError, match="--jsonl .* is not a directory"):
        check_writable(blocker / "log.jsonl", "--jsonl")
    with pytest.raises(DestinationError, match="is not a directory"):
        atomic_write_text(blocker / "x.txt", "hello")  # was NotADirectoryError from mkdir
    with pytest.raises(DestinationError, match="is a directory; give a file name"):
        PendingFile(tmp_path)  # was an IsADirectoryError only when the run ended
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_jsonl_line_is_strict_json_even_for_a_nan_confidence(tmp_path):
    from types import SimpleNamespace

    from edgekd.device.runtime.app import record
    from edgekd.device.runtime.outputs import JsonlOutput

    frame = SimpleNamespace(index=0, timestamp=1.0)
    pred = SimpleNamespace(label=1, class_name="b", confidence=float("nan"), exit=0,
                           timings={"pre": 0.1, "network": 0.2, "post": 0.3})
    log = JsonlOutput(tmp_path / "log.jsonl")
    log.write(record(frame, pred, 1.0))
    log.close()

    def no_constants(name):
        raise ValueError(f"{name} in a JSONL line")

    line = json.loads((tmp_path / "log.jsonl").read_text(), parse_constant=no_constants)
    assert line["confidence"] is None


def test_a_mangled_array_header_is_a_data_error(tmp_path):
    """Found by scripts/harness/fuzz_loaders.py: a .npy header numpy's parser chokes on raises tokenize.TokenError,
    which escaped as a traceback. Built here as a well-formed zip (right CRCs) holding that header."""
    import io
    import zipfile

    from edgekd.core.manifest import ManifestError, read_bundle_npz

    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 8, 8, 3), np.uint8))
    npy = buf.getvalue()
    header_end = npy.index(b"}") + 1
    npy = npy[:header_end - 1] + b"}  16, 16, 1), }" + npy[header_end + 15:]  # same length: the data stays put
    path = tmp_path / "mangled.npz"
    with zipfile.ZipFile(str(path), "w") as z:
        z.writestr("images.npy", npy)
        z.writestr("labels.npy", npy)
    with pytest.raises(DataError, match="mangled.npz"):
        load_images(path, _spec())
    with pytest.raises(ManifestError, match="mangled.npz"):
        read_bundle_npz(path, _spec(), labelled=True)
