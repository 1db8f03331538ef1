"""edgekd.core.images: the one image decoder and extension list every reader shares."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgekd.core.errors import DataError
from edgekd.core.images import is_image_file, read_image


def test_is_image_file():
    assert is_image_file("a/b/C.JPG") and is_image_file("x.png") and is_image_file("x.pnm")
    assert not is_image_file("clip.mp4") and not is_image_file("notes.txt") and not is_image_file("png")


def test_reads_as_stored_and_non_ascii_paths(tmp_path):
    bgra = np.dstack([np.full((4, 5, 3), (10, 20, 30), np.uint8), np.full((4, 5), 200, np.uint8)])
    path = tmp_path / "bild-ä.png"
    ok, buf = cv2.imencode(".png", bgra)
    path.write_bytes(buf.tobytes())
    got = read_image(path)
    assert got.shape == (4, 5, 4) and np.array_equal(got, bgra)
    assert read_image(path, cv2.IMREAD_COLOR).shape == (4, 5, 3)


def test_sixteen_bit_is_scaled_to_uint8(tmp_path):
    img = np.array([[0, 65535], [32768, 257]], np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), img)
    got = read_image(tmp_path / "d.png")
    assert got.dtype == np.uint8 and got.tolist() == [[0, 255], [128, 1]]


def test_unreadable_files_are_data_errors(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("bad.jpg", "empty.png", "missing.png"):
        with pytest.raises(DataError, match="cannot read image"):
            read_image(tmp_path / name)


def test_a_fifo_named_like_an_image_is_refused_and_never_listed(tmp_path):
    """Issue 24, item 12: np.fromfile blocked for ever opening a FIFO named *.png (no writer ever comes)."""
    import os
    import threading

    from edgekd.core.errors import DataError
    from edgekd.core.images import read_image
    from edgekd.core.labelled import list_images

    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    outcome = []

    def read() -> None:
        try:
            read_image(fifo)
        except DataError as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert outcome and "not a regular file" in outcome[0], "read_image blocked on a FIFO"
    assert list_images(tmp_path) == []
