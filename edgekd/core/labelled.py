"""The one reader of "a folder of images or an npz": training data, ``build --calib-data`` and ``profile --data``.

Folders
    A class-per-folder tree ``ROOT/<class>/**/<image>`` (ImageFolder style) or, unlabelled, any folder of images.
    One listing rule everywhere: recursive (symlinked folders followed, each real folder once), hidden files and
    folders (leading ``.``) skipped, only regular files (a FIFO named `x.png` is never opened) with
    :func:`~edgekd.core.images.is_image_file` names, paths sorted as strings.
    Files are decoded by :func:`~edgekd.core.images.read_image` as stored (gray, BGR or BGRA), then brought from
    OpenCV's BGR order to the spec's channels.
npz archives
    One path, a glob (expanded in sorted order) or a comma-separated list of either; parts are concatenated in order.
    Images sit under one of the keys of :data:`LABEL_KEYS`, their labels under the paired key, class names under
    ``classes``. Images: uint8 (or integers in 0..255, or floats in [0, 1]), shaped (N, H, W), (N, H, W, C) or
    (N, C, H, W) with C in 1, 3, 4, in RGB(A) order. Labels: one integer per image, shaped (N,), (N, 1) or (1, N)
    (integer-valued floats are accepted), each in 0..K-1.

Everything ends as (N, H, W, C) uint8 at an :class:`InputSpec`'s size through the runtime's own
:func:`~edgekd.core.preprocess.to_spec_channels` and :func:`~edgekd.core.preprocess.resize_to_spec` (normalisation
happens where images are fed). Every problem is a one-line :class:`DataError` naming the file (and the key).
Torch-free (core): numpy, OpenCV and the core only.
"""

from __future__ import annotations

import glob
import os
import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.core.errors import DataError
from edgekd.core.images import is_image_file, read_image
from edgekd.core.npz import npz_problem
from edgekd.core.preprocess import resize_to_spec, to_spec_channels
from edgekd.core.spec import InputSpec

LABEL_KEYS: dict[str, str] = {"images": "labels", "x": "y", "x_train": "y_train", "x_test": "y_test"}
"""The accepted npz image keys, each with the key of its labels."""
EVAL_KEYS = ("images", "x_test", "x", "x_train")  # labelled evaluation data: held-out images first
TRAIN_KEYS = ("images", "x_train", "x_test", "x")  # unlabelled calibration data: training images first
_GLOB_CHARS = frozenset("*?[")
#: What numpy and zipfile raise for a damaged archive: besides the usual, a mangled .npy header reaches numpy's
#: header parser as a tokenize.TokenError or SyntaxError (found by scripts/harness/fuzz_loaders.py), and a header
#: claiming an absurd shape a MemoryError. Caught only around the reads of one file, each becomes a DataError naming
#: it.
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError,
               tokenize.TokenError, SyntaxError, MemoryError, TypeError)


def _one_line(message: str) -> str:
    return " ".join(message.split())


# -- folders ------------------------------------------------------------------------------------------------------
@dataclass
class FileList:
    """Image paths with their labels (index into a class list)."""

    paths: list[str] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (N,) int64

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray) -> FileList:
        """The entries at ``indices``, in that order."""
        return FileList([self.paths[i] for i in indices], self.labels[indices])


def _inode(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` points to, or None when it cannot be reached (a dangling link, a loop)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk_images(folder: str | os.PathLike, seen_dirs: set, seen_files: dict, owner: str) -> list[str]:
    """The image files under ``folder`` (see :func:`list_images`), each real folder entered once (``seen_dirs``) and
    each real file listed once (``seen_files``: (device, inode) → owner and path of its first listing). Walked depth-first in
    sorted order, so which of two links to one file is listed does not depend on the file system's order."""
    found: list[str] = []
    key = _inode(folder)
    if key is None or key in seen_dirs:
        return found
    seen_dirs.add(key)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot list {folder} ({exc.strerror or exc})") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()  # follows links
        except OSError:
            is_dir = False
        if is_dir:
            found += _walk_images(entry.path, seen_dirs, seen_files, owner)
        elif is_image_file(entry.name):
            try:
                regular = entry.is_file()  # follows links; a FIFO or a device named *.png is no image (never opened)
            except OSError:
                regular = False
            file_key = _inode(entry.path) if regular else None
            if file_key is None:
                continue  # a dangling link or a link loop: no image there
            first = seen_files.get(file_key)
            if first is None:
                seen_files[file_key] = (owner, entry.path)
                found.append(entry.path)
            elif first[0] != owner:
                raise DataError(f"{first[1]} and {entry.path} are one image in two class folders ({first[0]}, "
                                f"{owner}): a link between them? keep each image in one class")
    return found


def list_images(folder: str | os.PathLike) -> list[str]:
    """Sorted image files under ``folder`` by the listing rule above (recursive, hidden entries skipped). Symlinked
    folders are followed, each real folder once (a link loop is entered once); a file reached by several links is
    listed once."""
    return sorted(_walk_images(folder, set(), {}, os.fspath(folder)))


def list_class_tree(root: str | os.PathLike, classes: Sequence[str] | None = None, *,
                    known_as: str = "among the given classes", empty_ok: bool = False) -> tuple[list[str], FileList]:
    """List ``root/<class>/**/<image>``: (class names, files labelled by index into them).

    Without ``classes`` the visible sub-folders, sorted, are the classes. With ``classes`` (train classes, a bundle's
    class names) every sub-folder must be one of them (``known_as`` words the error) and labels index ``classes``.
    A class folder without images is an error naming it unless ``empty_ok``; no image at all always is.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise DataError(f"no class sub-folders in {root} (expected {root}/<class name>/<images>)")
    classes = list(names if classes is None else classes)
    index = {c: i for i, c in enumerate(classes)}
    unknown = [str(root / n) for n in names if n not in index]
    if unknown:
        shown = ", ".join(classes[:10]) + (", …" if len(classes) > 10 else "")
        raise DataError(f"class folder(s) {', '.join(unknown[:5])} are not {known_as} ({shown})")
    paths: list[str] = []
    labels: list[int] = []
    # One walk over the whole tree: the root and every class folder count as entered, so a link from one class
    # folder to another (or to the root: a loop) is never walked into, and an image reachable from two class
    # folders is an error instead of an image counted twice under two labels.
    seen_dirs = {k for k in (_inode(root), *(_inode(root / n) for n in names)) if k is not None}
    seen_files: dict = {}
    for name in names:
        class_dir = root / name
        key = _inode(class_dir)
        seen_dirs.discard(key)
        found = sorted(_walk_images(class_dir, seen_dirs, seen_files, str(class_dir)))
        seen_dirs.add(key)
        if not found and not empty_ok:
            raise DataError(f"class folder has no images: {root / name}")
        paths += found
        labels += [index[name]] * len(found)
    if not paths:
        raise DataError(f"no images found under {root}")
    return classes, FileList(paths, np.asarray(labels, dtype=np.int64))


def decode_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    """One image file as (H0, W0, channels) uint8 at its own size: decoded as stored, BGR(A) → RGB or gray."""
    return to_spec_channels(read_image(path), channels, bgr=True)


def _read_at_spec(path: str | os.PathLike, spec: InputSpec) -> np.ndarray:
    """One image file as (H, W, C) uint8 at spec size."""
    return resize_to_spec(decode_image(path, spec.channels), spec)


def fit_images(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(N, H0, W0, C0) uint8 RGB(A) or gray → (N, H, W, C) uint8: ``resize_to_spec(to_spec_channels(img))`` each."""
    n, h0, w0, c0 = images.shape
    if n == 0:
        return np.zeros((0, spec.height, spec.width, spec.channels), dtype=np.uint8)
    # Colour conversion is per pixel, so converting the stacked (N*H0, W0, C0) image equals converting each image.
    conv = to_spec_channels(images.reshape(n * h0, w0, c0), spec.channels).reshape(n, h0, w0, spec.channels)
    if spec.resize == "stretch" and (h0, w0) == (spec.height, spec.width):
        return np.ascontiguousarray(conv)
    out = np.empty((n, spec.height, spec.width, spec.channels), dtype=np.uint8)  # (N, H, W, C)
    for i in range(n):
        out[i] = resize_to_spec(conv[i], spec)
    return out


# -- npz archives -------------------------------------------------------------------------------------------------
def is_npz_source(source: str | os.PathLike) -> bool:
    """Whether ``source`` names npz archives: an existing ``.npz`` file, a glob, or a comma-separated list."""
    text = os.fspath(source)
    if "," in text or _GLOB_CHARS & set(text):
        return True
    return text.lower().endswith(".npz") and Path(text).is_file()


def npz_paths(source: str | os.PathLike) -> list[str]:
    """Expand a path, a glob or a comma-separated list of either into absolute file paths, in order."""
    text = os.fspath(source)
    paths: list[str] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if Path(item).is_file():  # taken literally even if its name holds glob characters
            paths.append(item)
        elif _GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise DataError(f"no files match {item}")
            paths += matches
        else:
            raise DataError(f"data path not found: {item}")
    if not paths:
        raise DataError(f"no npz files in {text!r}")
    return [str(Path(p).resolve()) for p in paths]


def _open_npz(path: str) -> np.lib.npyio.NpzFile:
    problem = npz_problem(path)  # before inflating anything: a zip bomb would get the process OOM-killed
    if problem:
        raise DataError(f"cannot read npz file: {path} ({problem})")
    try:
        z = np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as exc:
        raise DataError(_one_line(f"cannot read npz file: {path} ({exc})")) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"cannot read npz file: {path} (a single .npy array, not an .npz archive)")
    return z


def _array(z: np.lib.npyio.NpzFile, path: str, key: str) -> np.ndarray:
    try:
        return np.asarray(z[key])
    except _NPZ_ERRORS as exc:
        raise DataError(_one_line(f"cannot read {path}: {key} ({exc})")) from None


def _pick_key(files: list[str], keys: Sequence[str], labelled: bool, path: str) -> str:
    """The first of ``keys`` present in the archive (with its label key when ``labelled``)."""
    for key in keys:
        if key in files and (not labelled or LABEL_KEYS[key] in files):
            return key
    need = f"'{keys[0]}' and '{LABEL_KEYS[keys[0]]}' arrays" if labelled else f"an '{keys[0]}' array"
    others = [f"{k}/{LABEL_KEYS[k]}" if labelled else k for k in keys[1:]]
    alternatives = f"or {', '.join(others)}; " if others else ""
    raise DataError(f"{path}: needs {need} ({alternatives}has {', '.join(sorted(files)) or 'none'})")


def _as_images(x: np.ndarray, path: str, key: str, limit: int | None) -> np.ndarray:
    """An accepted image array → its first ``limit`` images as (N, H, W, C) uint8, C in (1, 3, 4)."""
    if x.size == 0 and x.ndim not in (3, 4) and (x.ndim < 2 or x.shape[0] == 0):
        return np.zeros((0, 1, 1, 1), dtype=np.uint8)  # an empty placeholder, e.g. "no test split"
    if x.ndim == 3:
        x = x[..., None]  # (N, H, W) → (N, H, W, 1)
    if x.ndim != 4:
        raise DataError(f"{path}: {key} must be (N, H, W), (N, H, W, C) or (N, C, H, W) images, got {x.shape}")
    if x.shape[3] not in (1, 3, 4) and x.shape[1] in (1, 3, 4):
        x = x.transpose(0, 2, 3, 1)  # (N, C, H, W) → (N, H, W, C)
    if x.shape[3] not in (1, 3, 4):
        raise DataError(f"{path}: {key} must have 1, 3 or 4 channels, got shape {x.shape}")
    if len(x) and (x.shape[1] == 0 or x.shape[2] == 0):
        raise DataError(f"{path}: {key} holds images of no pixels, shape {x.shape}")
    x = x[:limit]
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "iuf":
        raise DataError(f"{path}: {key} must be uint8 (or float in [0, 1]), got {x.dtype}")
    if x.size == 0:
        return x.astype(np.uint8)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        i = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])
        raise DataError(f"{path}: {key} holds NaN or infinite pixel values (first in image {i}); images must be "
                        "uint8 (or float in [0, 1])")
    lo, hi = float(x.min()), float(x.max())
    if x.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return np.round(x * 255.0).astype(np.uint8)
    if x.dtype.kind in "iu" and lo >= 0 and hi <= 255:
        return x.astype(np.uint8)
    raise DataError(f"{path}: {key} must be uint8 (or float in [0, 1]), got {x.dtype} values in [{lo:g}, {hi:g}]")


def _as_labels(y: np.ndarray, n_images: int, num_classes: int, path: str, key: str, image_key: str) -> np.ndarray:
    """Check one integer label per image, each in 0..num_classes-1 → (N,) int64."""
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)  # (N, 1) or (1, N) → (N,)
    if y.ndim != 1:
        raise DataError(f"{path}: {key} must be 1-D (one label per image), got shape {y.shape}")
    if len(y) != n_images:
        raise DataError(f"{path}: {key} has {len(y)} labels but {image_key} has {n_images} images "
                        "(need one integer label per image)")
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.all(y == np.round(y))):
        raise DataError(f"{path}: {key} must hold integer labels, got {y.dtype}")
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: {key}[{i}] = {y[i]} is outside the {num_classes} classes "
                        f"(labels must lie in 0..{num_classes - 1})")
    return y.astype(np.int64)


def _concat(arrays: list[np.ndarray], paths: list[str]) -> np.ndarray:
    """Concatenate the non-empty (N, H, W, C) arrays of several parts; differing image shapes are an error."""
    full = [a for a in arrays if len(a)] or arrays[:1]
    shapes = {a.shape[1:] for a in full if len(a)}
    if len(shapes) > 1:
        raise DataError(f"image shapes differ between parts {', '.join(paths)}: {sorted(shapes)}")
    return np.concatenate(full) if len(full) > 1 else full[0]


def _read_parts(paths: list[str], keys: Sequence[str], num_classes: int | None,
                limit: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (N, H, W, C) uint8 of the first of ``keys`` in each part, concatenated, with (N,) int64 labels when
    ``num_classes`` is given (else None). ``limit``: at most the first ``limit`` images; later parts are not read."""
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    n = 0
    for path in paths:
        if limit is not None and n >= limit:
            break
        take = None if limit is None else limit - n
        with _open_npz(path) as z:
            key = _pick_key(z.files, keys, num_classes is not None, path)
            x = _array(z, path, key)
            images.append(_as_images(x, path, key, take))
            if num_classes is not None:
                y = _array(z, path, LABEL_KEYS[key])
                labels.append(_as_labels(y, len(x), num_classes, path, LABEL_KEYS[key], key)[:take])
        n += len(images[-1])
    return _concat(images, paths), (np.concatenate(labels) if num_classes is not None else None)


def read_npz(paths: list[str], keys: Sequence[str], *, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Labelled images from archive parts: in each part the first of ``keys`` held together with its label key.

    Returns (N, H, W, C) uint8 RGB(A)/gray images at their stored size and (N,) int64 labels in 0..num_classes-1.
    """
    images, labels = _read_parts(paths, keys, num_classes)
    assert labels is not None
    return images, labels


def read_npz_classes(paths: list[str]) -> list[str]:
    """The class names every part holds under ``classes`` (at least 2, identical in every part)."""
    first: list[str] = []
    for path in paths:
        with _open_npz(path) as z:
            if "classes" not in z.files:
                raise DataError(f"{path}: needs a 'classes' array (has {', '.join(sorted(z.files)) or 'none'})")
            raw = _array(z, path, "classes")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in raw.reshape(-1)]
        if len(classes) < 2:
            raise DataError(f"{path}: 'classes' must list at least 2 class names, got {len(classes)}")
        if not first:
            first = classes
        elif classes != first:
            raise DataError(f"{path}: classes {classes} differ from {paths[0]}: {first}")
    return first


# -- a folder or an npz, at spec size -----------------------------------------------------------------------------
def _source_kind(source: str | os.PathLike, option: str, folder: str) -> str:
    """"folder" or "npz"; anything else is an error worded for ``option``."""
    if Path(source).is_dir():
        return "folder"
    if is_npz_source(source):
        return "npz"
    raise DataError(f"{option} must be {folder} or .npz file(s): {source}")


def _subset(n: int, limit: int | None) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` items, in order: all of them, or a fixed-seed (0) random subset."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}")
    return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))


def load_labelled(source: str | os.PathLike, spec: InputSpec, *, limit: int | None = None,
                  option: str = "data") -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Labelled images for a bundle: a class-per-folder tree whose folder names are ``spec.class_names`` (empty
    class folders allowed), or npz archive(s) holding images/labels, x_test/y_test, x/y or x_train/y_train.

    Returns (N, H, W, C) uint8 images at spec size, (N,) int64 labels indexing ``spec.class_names`` and a record
    ``{"source": "folder" | "npz", "path", "n"}``. ``limit``: at most that many, a fixed-seed subset kept in order.
    ``option`` names the argument in the error for a path that is neither.
    """
    kind = _source_kind(source, option, "a class-per-folder image directory")
    if kind == "folder":
        _, files = list_class_tree(source, spec.class_names, known_as="classes of this bundle", empty_ok=True)
        keep = _subset(len(files), limit)
        images = np.stack([_read_at_spec(files.paths[i], spec) for i in keep])  # (N, H, W, C)
        labels = files.labels[keep]
    else:
        raw, labels = read_npz(npz_paths(source), EVAL_KEYS, num_classes=spec.num_classes)
        if len(raw) == 0:
            raise DataError(f"no images in {source}")
        keep = _subset(len(raw), limit)
        images, labels = fit_images(raw[keep], spec), labels[keep]
    return images, labels, {"source": kind, "path": str(Path(source)), "n": int(labels.size)}


def has_labels(source: str | os.PathLike, option: str = "data") -> bool:
    """Whether ``source`` carries labels: a folder with subfolders (a class-per-folder tree), or npz archive(s)
    with a label array beside the images (``LABEL_KEYS``). A folder of images and nothing else (what ``edgekd run
    --record-frames`` writes) or an archive of images alone does not."""
    if _source_kind(source, option, "a directory of images") == "folder":
        try:
            with os.scandir(source) as entries:
                return any(entry.is_dir() for entry in entries)
        except OSError as exc:
            raise DataError(_one_line(f"cannot read {option} {source}: {exc}")) from None
    paths = npz_paths(source)
    with _open_npz(paths[0]) as z:
        files = list(z.files)
    return any(key in files and LABEL_KEYS[key] in files for key in EVAL_KEYS)


def load_images(source: str | os.PathLike, spec: InputSpec, *, max_images: int | None = None,
                option: str = "data") -> np.ndarray:
    """Unlabelled images (e.g. calibration data): every image under a folder (recursive), or npz archive(s)
    holding images, x_train, x_test or x. The first ``max_images`` (sorted paths, archive order) at spec size:
    (N, H, W, C) uint8. ``option`` names the argument in the error for a path that is neither.
    """
    if _source_kind(source, option, "a directory of images") == "folder":
        files = list_images(source)[:max_images]
        if not files:
            raise DataError(f"no images found under {source}")
        return np.stack([_read_at_spec(f, spec) for f in files])  # (N, H, W, C)
    raw, _ = _read_parts(npz_paths(source), TRAIN_KEYS, None, max_images)
    if len(raw) == 0:
        raise DataError(f"no images in {source}")
    return fit_images(raw, spec)
