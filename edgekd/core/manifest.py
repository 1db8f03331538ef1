"""The bundle manifest: the contract between the workstation and the device.

A bundle is a directory holding ONNX graphs (or compiled engines), data files and ``manifest.json``. The runtime
reads only the manifest: input spec, class names, exits, vote rule, thresholds, precision, backend, and every
file with its sha256. :func:`load_manifest` validates all of it and refuses paths that leave the bundle. In
memory a manifest is the frozen :class:`Manifest` of the records in :mod:`edgekd.core.manifest_records`, read by
:meth:`Manifest.from_json` and written by :meth:`Manifest.to_json`.

Two kinds of graph: the *full* graph, and one *segment* graph per exit (segment ``i`` is the part of the network
from exit ``i - 1`` to exit ``i``, its head included; chaining them reproduces the full graph). The manifest lists
the segment graphs under ``graphs.stages`` — the key of schema version 1, kept so that every bundle and every
deployed edgekd keep reading each other; in edgekd's code and docs a *stage* is always a backbone stage
(``exits[i].stage``: the backbone stage exit ``i`` follows) and the graph between two exits a *segment*.

Tensor names are fixed: the full graph takes ``image`` (N, C, H, W) and returns ``logits{i}``, ``conf{i}`` for
every exit plus ``vote`` (the default vote rule's probabilities); segment ``i`` takes ``image`` (i = 0) or
``feat{i-1}`` and returns ``feat{i}`` (all but the last), ``logits{i}`` and ``conf{i}``. A bundle built for ONNX
Runtime may also list ``graphs.early_exit``: the segments joined into one graph that exits early inside the call
(``edgekd.device.compiler.early_exit_graph``), taking ``image`` (one image) and ``thresholds`` (one per exit) and
returning ``logits``, ``exit`` and ``conf`` of the exit that answered (:data:`EARLY_EXIT_INPUTS`,
:data:`EARLY_EXIT_OUTPUTS`). Bundles without it run early exit on the segment chain.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ContextManager, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from edgekd.core.atomic import atomic_write_json
from edgekd.core.destination import Wording, atomic_directory, check_destination, restore_interrupted
from edgekd.core.errors import EdgekdError
from edgekd.core.manifest_records import (
    BuildRecord,
    ExitInfo,
    FileEntry,
    GraphEntry,
    Graphs,
    ManifestError,
    VoteRecord,
    finite,
    short,
)
from edgekd.core.npz import npz_problem
from edgekd.core.onnx_graph import OnnxFormatError, external_data_locations, graph_io
from edgekd.core.spec import InputSpec

SCHEMA_VERSION = 1
KIND = "edgekd-bundle"
MANIFEST_NAME = "manifest.json"
PRECISIONS = ("fp32", "fp16", "int8")
#: What runs a built bundle's graphs: the runner backends (``edgekd.device.runners``), device targets and Q/DQ forms.
RUNNER_BACKENDS = ("onnxruntime", "tensorrt")
BACKENDS = ("onnx", *RUNNER_BACKENDS)  # a manifest's backend; "onnx": exported, not built yet (runs on onnxruntime)

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int, "kind": str, "name": str, "input_spec": dict, "class_names": list, "exits": list,
    "vote": dict, "thresholds": list, "precision": str, "backend": str, "graphs": dict, "files": dict,
    "versions": dict,
}
MAX_MANIFEST_BYTES = 64 << 20  # a manifest is kilobytes; anything this large is not one
MAX_JSON_DEPTH = 32  # a manifest nests 5 levels; deeper JSON is refused before anything walks it
#: The one-call early-exit graph's inputs and outputs (``graphs.early_exit``, optional).
EARLY_EXIT_INPUTS = ("image", "thresholds")
EARLY_EXIT_OUTPUTS = ("logits", "exit", "conf")
#: The data files of a bundle read as arrays: key → (labelled, what the file holds).
NPZ_FILES = {"val_sample": True, "calib": False}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def segment_input_name(i: int) -> str:
    """The input tensor of segment ``i``: the image for the first, the previous segment's feature map after."""
    return "image" if i == 0 else f"feat{i - 1}"


def segment_output_names(i: int, n_exits: int) -> list[str]:
    """The outputs of segment ``i``: ``feat{i}`` (for the next segment; not the last), ``logits{i}``, ``conf{i}``."""
    names = [f"logits{i}", f"conf{i}"]
    return ([f"feat{i}"] + names) if i < n_exits - 1 else names


def full_output_names(n_exits: int) -> list[str]:
    return [name for i in range(n_exits) for name in (f"logits{i}", f"conf{i}")] + ["vote"]


#: The top-level keys :class:`Manifest` reads besides :data:`REQUIRED` (``build``: a built bundle's; the rest export's).
OPTIONAL_KEYS = ("build", "parity", "split", "source")


@dataclass(frozen=True)
class Manifest:
    """A validated manifest and the directory it lives in: ``manifest.json``'s records, read by :meth:`from_json`
    (every check, one-line errors) and written back by :meth:`to_json` (the same JSON). Export makes one; build and
    ``profile --write-thresholds`` derive theirs from it with :func:`dataclasses.replace`.

    ``class_names`` is the input spec's; ``schema_version`` and ``kind`` are this module's constants. ``parity``,
    ``split`` and ``source`` are export's records as it wrote them (None: not recorded); ``extra`` keeps top-level
    keys this edgekd does not know, written back unchanged."""

    name: str
    spec: InputSpec
    exits: List[ExitInfo]
    vote: VoteRecord
    thresholds: List[float]  # per exit, the confidence at which it answers; the last one's always answers
    precision: str
    backend: str
    graphs: Graphs
    files: Dict[str, FileEntry]  # the data files ("calib", "val_sample"; a TensorRT build's "onnx_<graph>")
    versions: Dict[str, Any]
    root: Path
    build: Optional[BuildRecord] = None
    parity: Optional[Dict[str, Any]] = None
    split: Optional[Dict[str, Any]] = None
    source: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict, hash=False)

    # ------------------------------------------------------------------------------------------- reading, writing

    @classmethod
    def from_json(cls, data: Any, root: Union[str, Path], *, verify_hashes: bool = True,
                  read_data: bool = True) -> Manifest:
        """Check version, keys, types, values, paths and hashes; raise :class:`ManifestError` naming the first fault.
        With ``read_data`` false the data archives (``calib.npz``, ``val_sample.npz``) are hashed but not read: a
        reader that uses neither (``run``) never inflates them."""
        root = Path(root)
        try:
            manifest = cls._records(data, root)
        except ManifestError as exc:  # the records name the field; the path of the manifest goes in front
            raise _fail(root, str(exc)) from None
        _check_files(manifest, verify_hashes)
        _check_graph_shapes(manifest)
        for key, labelled in NPZ_FILES.items():
            entry = manifest.files.get(key)
            if read_data and entry is not None:
                read_bundle_npz(root / entry.path, manifest.spec, labelled=labelled, where=f"files.{key}",
                                digest=entry.sha256 if verify_hashes else None)
        return manifest

    @classmethod
    def _records(cls, data: Any, root: Path) -> Manifest:
        """The records of ``data``, each field checked (no file is read); errors without the manifest's path."""
        if not isinstance(data, dict):
            raise ManifestError("must hold a JSON object")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ManifestError(f"unknown schema_version {data.get('schema_version')!r} (this edgekd reads "
                                f"{SCHEMA_VERSION})")
        for key, typ in REQUIRED.items():
            if key not in data:
                raise ManifestError(f"missing key {key!r}")
            if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
                raise ManifestError(f"{key!r} must be {getattr(typ, '__name__', typ)}, got "
                                    f"{type(data[key]).__name__}")
        if data["kind"] != KIND:
            raise ManifestError(f"kind must be {KIND!r}")
        build = BuildRecord.from_json(data["build"]) if data.get("build") is not None else None
        try:
            spec = InputSpec.from_dict(data["input_spec"])
        except EdgekdError as exc:
            raise ManifestError(f"input_spec: {exc}") from None
        if list(spec.class_names) != data["class_names"]:
            raise ManifestError("class_names differ from input_spec.class_names")
        if not data["exits"]:
            raise ManifestError("exits must not be empty")
        exits = [ExitInfo.from_json(e, i) for i, e in enumerate(data["exits"])]
        n = len(exits)
        th = data["thresholds"]
        if len(th) != n or not all(finite(t) and t >= 0 for t in th):
            raise ManifestError(f"thresholds must be {n} finite non-negative numbers")
        vote = VoteRecord.from_json(data["vote"], n)
        if data["precision"] not in PRECISIONS:
            raise ManifestError(f"precision must be one of {PRECISIONS}")
        if data["backend"] not in BACKENDS:
            raise ManifestError(f"backend must be one of {BACKENDS}")
        graphs = Graphs.from_json(data["graphs"], n)
        files = {key: FileEntry.from_json(entry, f"files.{key}") for key, entry in data["files"].items()}
        known = (*REQUIRED, *OPTIONAL_KEYS)
        return cls(name=data["name"], spec=spec, exits=exits, vote=vote, thresholds=[float(t) for t in th],
                   precision=data["precision"], backend=data["backend"], graphs=graphs, files=files,
                   versions=copy.deepcopy(data["versions"]), root=root, build=build,
                   **{key: copy.deepcopy(data.get(key)) for key in ("parity", "split", "source")},
                   extra={k: copy.deepcopy(v) for k, v in data.items() if k not in known})

    def to_json(self) -> Dict[str, Any]:
        """``manifest.json``'s JSON: the keys, nesting and value types every edgekd since schema 1 reads."""
        out: Dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "kind": KIND, "name": self.name, "input_spec": self.spec.to_dict(),
            "class_names": list(self.spec.class_names), "exits": [e.to_json() for e in self.exits],
            "vote": self.vote.to_json(), "thresholds": [float(t) for t in self.thresholds],
            "precision": self.precision, "backend": self.backend, "graphs": self.graphs.to_json(),
            "files": {key: entry.to_json() for key, entry in self.files.items()},
        }
        for key in ("parity", "split", "source"):
            if getattr(self, key) is not None:
                out[key] = copy.deepcopy(getattr(self, key))
        out["versions"] = copy.deepcopy(self.versions)
        if self.build is not None:
            out["build"] = self.build.to_json()
        out.update(copy.deepcopy(self.extra))
        return out

    # ------------------------------------------------------------------------------------------------ reading

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    @property
    def vote_rule(self) -> str:
        return self.vote.rule

    @property
    def full_answer(self) -> str:
        """What ``--mode full-vote`` answers with: ``deepest`` (the deepest exit) or ``vote`` (:attr:`vote_rule`);
        bundles written before export chose it by a paired test answer with the vote."""
        return self.vote.full_answer

    @property
    def vote_weights(self) -> Optional[List[float]]:
        return self.vote.weights

    @property
    def runner_backend(self) -> str:
        """The runner that executes this bundle's graphs: an exported bundle's plain ONNX runs on ONNX Runtime."""
        return "onnxruntime" if self.backend == "onnx" else self.backend

    @property
    def certificate_record(self) -> Optional[Dict[str, Any]]:
        """The record of the thresholds (``build.thresholds``, :func:`edgekd.core.certify.manifest_record`) as
        stored, or None; :func:`edgekd.core.certify.stored_certificate` reads it (a damaged one: no certificate)."""
        return self.build.thresholds if self.build is not None else None

    def segment_input_shape(self, i: int) -> Tuple[int, ...]:
        """(C, H, W) of segment ``i``'s input (:func:`segment_input_name`): the image, or the previous exit's
        ``feat_shape``."""
        return tuple(self.spec.shape) if i == 0 else tuple(self.exits[i - 1].feat_shape)

    def full_graph(self) -> Path:
        return self.root / self.graphs.full.path

    def segment_graph(self, i: int) -> Path:
        """Segment ``i``'s graph or engine (listed under ``graphs.stages``, see the module docstring)."""
        return self.root / self.graphs.segments[i].path

    def early_exit_graph(self) -> Optional[Path]:
        """The one-call early-exit graph (``graphs.early_exit``), or None: the bundle exits early on the chain."""
        entry = self.graphs.early_exit
        return self.root / entry.path if entry else None

    def file(self, key: str) -> Path:
        if key not in self.files:
            raise ManifestError(f"{self.root}: the bundle has no {key!r} file")
        return self.root / self.files[key].path

    def val_sample(self) -> Tuple[np.ndarray, np.ndarray]:
        """The validation sample: (N, H, W, C) uint8 images and (N,) labels, checked (:func:`read_bundle_npz`)."""
        images, labels = read_bundle_npz(self.file("val_sample"), self.spec, labelled=True, where="files.val_sample")
        assert labels is not None
        return images, labels

    def calib_images(self) -> np.ndarray:
        """The calibration images: (M, H, W, C) uint8, checked (:func:`read_bundle_npz`)."""
        return read_bundle_npz(self.file("calib"), self.spec, labelled=False, where="files.calib")[0]

    def paths(self) -> List[Path]:
        """Every file of the bundle edgekd reads: manifest.json, the graphs, what they load, the data files."""
        entries: List[FileEntry] = [*self.graphs.entries().values(), *self.files.values()]
        rels = [e.path for e in entries] + [x.path for e in entries for x in e.loads()]
        return [self.root / MANIFEST_NAME] + [self.root / r for r in dict.fromkeys(rels)]


def _fail(root: Path, message: str) -> ManifestError:
    return ManifestError(f"{root / MANIFEST_NAME}: {message}")


def _check_path(root: Path, rel: Any, where: str) -> Path:
    """A manifest path must be relative and stay inside the bundle directory (no '..', no absolute, no links out)."""
    if not isinstance(rel, str) or not rel:
        raise _fail(root, f"{where}: path must be a non-empty string")
    if "\0" in rel:
        raise _fail(root, f"{where}: path {rel!r} holds a NUL byte")
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise _fail(root, f"{where}: path {rel!r} leaves the bundle directory")
    try:
        full = (root / p).resolve()
        base = root.resolve()
    except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13)
        raise _fail(root, f"{where}: path {rel!r} cannot be resolved (a link loop?)") from None
    if full != base and base not in full.parents:  # (Path.is_relative_to needs Python 3.9; JetPack 5.1 has 3.8)
        raise _fail(root, f"{where}: path {rel!r} leaves the bundle directory")
    return full


def _check_file(root: Path, entry: FileEntry, where: str, verify_hashes: bool) -> None:
    """The file of ``entry`` lies in the bundle, exists, matches its hash; so do the files its graph loads."""
    full = _check_path(root, entry.path, where)
    if not full.is_file():
        raise _fail(root, f"{where}: file {entry.path} is missing")
    try:
        if verify_hashes and sha256_file(full) != entry.sha256:
            raise _fail(root, f"{where}: {entry.path} does not match its sha256 (corrupted or edited)")
        _check_external_data(root, entry, full, where, verify_hashes)
    except OSError as exc:
        raise _fail(root, f"{where}: cannot read {entry.path} ({exc.strerror or exc})") from None


def _external_paths(rel: str, full: Path) -> List[str]:
    """The bundle-relative paths of the files the ONNX graph ``rel`` loads (its external data); [] for other files."""
    if not rel.endswith(".onnx"):
        return []
    parent = PurePosixPath(rel).parent
    return [os.path.normpath(str(parent / loc)).replace(os.sep, "/") for loc in external_data_locations(full)]


def _check_external_data(root: Path, entry: FileEntry, full: Path, where: str, verify_hashes: bool) -> None:
    """A graph's external-data files are hashed like the graph (``external_data``: path and sha256 each), and with
    ``verify_hashes`` every file the graph loads must be one of them: a weights file nobody hashed is refused."""
    listed = entry.loads()
    for j, sub in enumerate(listed):
        _check_file(root, sub, f"{where}.external_data[{j}]", verify_hashes)
    if not verify_hashes:
        return
    try:
        loaded = _external_paths(entry.path, full)
    except OnnxFormatError as exc:
        raise _fail(root, f"{where}: {exc}") from None
    hashed = {os.path.normpath(sub.path).replace(os.sep, "/") for sub in listed}
    for rel in loaded:
        _check_path(root, rel, f"{where}: external data")
        if rel not in hashed:
            raise _fail(root, f"{where}: {entry.path} loads {rel}, which the manifest does not hash "
                              "(re-export or rebuild the bundle)")


def _check_files(m: Manifest, verify_hashes: bool) -> None:
    """Every graph and data file the manifest lists (:func:`_check_file`)."""
    for where, entry in m.graphs.entries().items():
        _check_file(m.root, entry, where, verify_hashes)
    for key, entry in m.files.items():
        _check_file(m.root, entry, f"files.{key}", verify_hashes)


def _expected_io(m: Manifest) -> Dict[str, Tuple[Dict[str, list], Dict[str, list]]]:
    """What each graph must declare, by manifest key: ({input: dims}, {output: dims}), the batch dimension None."""
    k, n = m.spec.num_classes, m.num_exits

    def heads(i: int) -> Dict[str, list]:
        return {f"logits{i}": [None, k], f"conf{i}": [None]}

    full_out: Dict[str, list] = {}
    for i in range(n):
        full_out.update(heads(i))
    full_out["vote"] = [None, k]
    out = {"graphs.full": ({"image": [None, *m.spec.shape]}, full_out)}
    for i in range(n):
        outputs = heads(i) if i == n - 1 else {f"feat{i}": [None, *m.exits[i].feat_shape], **heads(i)}
        out[f"graphs.stages[{i}]"] = ({segment_input_name(i): [None, *m.segment_input_shape(i)]}, outputs)
    if m.graphs.early_exit is not None:
        one_image, thresholds = EARLY_EXIT_INPUTS
        logits, exit_, conf = EARLY_EXIT_OUTPUTS
        out["graphs.early_exit"] = ({one_image: [1, *m.spec.shape], thresholds: [n]},
                                    {logits: [1, k], exit_: [1], conf: [1]})
    return out


def _check_graph_shapes(m: Manifest) -> None:
    """Each ONNX graph declares the tensors the manifest promises, in shapes that agree with it: the input
    spec's channels and size, one ``logits{i}`` of the class count per exit (and no more exits than the manifest
    lists), each exit's ``feat_shape``. Dimensions a graph leaves symbolic are not compared. Compiled engines are
    checked by their runner when loaded."""
    root, entries, n = m.root, m.graphs.entries(), m.num_exits
    for where, (inputs, outputs) in _expected_io(m).items():
        rel = entries[where].path
        if not rel.endswith(".onnx"):
            continue
        try:
            declared_in, declared_out = graph_io(root / rel)
        except OnnxFormatError as exc:
            raise _fail(root, f"{where}: {exc}") from None
        except OSError as exc:
            raise _fail(root, f"{where}: cannot read {rel} ({exc.strerror or exc})") from None
        extra = sorted(name for name in declared_out if name.startswith("logits") and name[6:].isdigit()
                       and int(name[6:]) >= n)
        if extra:
            raise _fail(root, f"{where}: {rel} has outputs {', '.join(extra)} beyond the manifest's {n} exit(s)")
        for kind, expected, declared in (("input", inputs, declared_in), ("output", outputs, declared_out)):
            for name, dims in expected.items():
                if name not in declared:
                    raise _fail(root, f"{where}: {rel} has no {kind} {name!r} (the manifest lists {n} exit(s); "
                                      f"it declares {', '.join(declared) or 'none'})")
                have = declared[name]
                if have is None:
                    continue
                if len(have) != len(dims) or any(a is not None and b is not None and a != b
                                                 for a, b in zip(have, dims)):
                    shown = ["N" if d is None else d for d in have]
                    want = ["N" if d is None else d for d in dims]
                    raise _fail(root, f"{where}: {rel} declares {kind} {name!r} as {shown}, but the manifest "
                                      f"(input_spec, class_names, exits) says {want}")


#: What reading a damaged archive raises (:data:`edgekd.core.labelled._NPZ_ERRORS` explains each).
NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError,
              tokenize.TokenError, SyntaxError, MemoryError, TypeError)
_NPZ_CHECKED: Dict[Tuple[str, str], bool] = {}  # (path, sha256) of npz files already read whole in this process


def read_bundle_npz(path: str | Path, spec: InputSpec, *, labelled: bool, where: Optional[str] = None,
                    digest: Optional[str] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A bundle's image archive (``val_sample.npz``: ``images`` and ``labels``; ``calib.npz``: ``images``), read
    whole and checked: a zip of plain arrays (never pickled objects), (N, H, W, C) uint8 images at the spec's size
    with N >= 1, one integer label per image in 0..K-1. Anything else, a corrupt archive included (a bad CRC, a
    truncated member: the hash matches what was written, not that it is an npz), is a one-line
    :class:`ManifestError` naming the file. With ``digest`` (the file's verified sha256), a file this process
    already read whole is not read again (:func:`load_manifest` checks the archives every time it runs)."""
    path = Path(path)
    shown = where or path.name

    def bad(reason: str) -> ManifestError:
        return ManifestError(f"{path}: {reason} ({shown})")

    key = (str(path.resolve()), digest or "")
    if digest and _NPZ_CHECKED.get(key):
        return np.zeros((0, spec.height, spec.width, spec.channels), np.uint8), None
    problem = npz_problem(path)  # before inflating anything: a zip bomb would get the process OOM-killed
    if problem:
        raise bad(problem)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise bad("a single .npy array, not an .npz archive")
            need = ("images", "labels") if labelled else ("images",)
            missing = [k for k in need if k not in z.files]
            if missing:
                raise bad(f"needs arrays {list(need)}, has {sorted(z.files)}")
            images = z["images"]
            labels = z["labels"] if labelled else None
    except ManifestError:
        raise
    except NPZ_ERRORS as exc:
        raise bad(f"not a readable npz archive of plain arrays ({short(exc, 100)})") from None
    want = (spec.height, spec.width, spec.channels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != want or len(images) == 0:
        raise bad(f"images must be (N, {want[0]}, {want[1]}, {want[2]}) uint8 with N >= 1 (the input spec), got "
                  f"{images.shape} {images.dtype}")
    if labels is not None:
        if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
            raise bad(f"labels must be {len(images)} integers (one per image), got {labels.shape} {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
            raise bad(f"labels must lie in 0..{spec.num_classes - 1} (the class names), got "
                      f"{int(labels.min())}..{int(labels.max())}")
    if digest:
        _NPZ_CHECKED[key] = True
    return images, labels


def validate_manifest(data: Any, root: Path, *, verify_hashes: bool = True, read_data: bool = True) -> Manifest:
    """:meth:`Manifest.from_json`: ``data`` (a manifest's JSON) checked against the files under ``root``."""
    return Manifest.from_json(data, root, verify_hashes=verify_hashes, read_data=read_data)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_json(value: Any, where: str = "", depth: int = 0) -> None:
    """JSON a manifest can hold: nested at most :data:`MAX_JSON_DEPTH` deep, every float finite (Python's json reads
    ``1e400`` as infinity)."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'a value'} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_json(v, f"{where}.{k}" if where else str(k), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]", depth + 1)


def parse_manifest_text(text: str, path: Path) -> Any:
    """``manifest.json``'s text → JSON, or a one-line :class:`ManifestError`: invalid JSON, NaN/Infinity, non-finite
    numbers, nesting deeper than any manifest (which would otherwise exhaust the interpreter's recursion)."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
        _check_json(data)
    except RecursionError:
        raise ManifestError(f"{path}: not a manifest (JSON nested too deeply)") from None
    except ValueError as exc:  # json.JSONDecodeError is one
        raise ManifestError(f"{path}: not valid JSON for a manifest ({short(exc, 120)})") from None
    return data


def load_manifest(bundle: str | Path, *, verify_hashes: bool = True, read_data: bool = True) -> Manifest:
    """Read and validate ``bundle/manifest.json`` (``read_data``: see :func:`validate_manifest`)."""
    root = Path(bundle)
    path = root / MANIFEST_NAME
    if not root.is_dir() and not (restore_interrupted(root) and root.is_dir()):  # (a --force killed midway)
        raise ManifestError(f"bundle not found: {root}")
    if not path.is_file():
        raise ManifestError(f"{root} is not an edgekd bundle (no {MANIFEST_NAME})")
    if path.is_symlink():  # the graphs may not leave the bundle (_check_path); neither may the file that lists them
        target, base = path.resolve(), root.resolve()
        if base not in target.parents:
            raise ManifestError(f"{path}: a link to {target}, outside the bundle; a bundle's manifest.json must lie "
                                "in it")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: {path.stat().st_size} bytes, larger than any manifest")
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read {path} ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not valid JSON (not UTF-8 text)") from None
    return validate_manifest(parse_manifest_text(text, path), root, verify_hashes=verify_hashes,
                             read_data=read_data)


def file_entry(root: Path, rel: str) -> FileEntry:
    """The entry of ``rel``, a file already written under ``root``: its sha256; an ONNX graph that keeps weights in
    external files also gets ``external_data``: the same for each of them."""
    loaded = _external_paths(rel, root / rel)
    for x in loaded:
        if not (root / x).is_file():
            raise ManifestError(f"{root / rel} loads {x}, which is not in {root}")
    return FileEntry(rel, sha256_file(root / rel), [file_entry(root, x) for x in loaded] if loaded else None)


def graph_entry(root: Path, rel: str, inputs: Iterable[str], outputs: Iterable[str]) -> GraphEntry:
    """:func:`file_entry` of a graph or engine under ``root``, with the tensor names it takes and returns."""
    entry = file_entry(root, rel)
    return GraphEntry(entry.path, entry.sha256, entry.external_data, inputs=list(inputs), outputs=list(outputs))


def write_manifest(root: str | Path, manifest: Union[Manifest, Dict[str, Any]]) -> Manifest:
    """Validate ``manifest`` (the record, or its JSON) against the files in ``root`` and write ``manifest.json``
    atomically; returns the manifest as read back from that JSON, rooted at ``root``."""
    root = Path(root)
    data = manifest.to_json() if isinstance(manifest, Manifest) else manifest
    checked = Manifest.from_json(data, root)
    atomic_write_json(root / MANIFEST_NAME, data)
    return checked


def looks_like_bundle(path: str | Path) -> bool:
    """``path`` is a directory edgekd wrote as a bundle: its manifest.json is a JSON object of edgekd's kind (valid or
    not: a damaged bundle may still be replaced with --force)."""
    try:
        data = json.loads((Path(path) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == KIND


def check_bundle_destination(out: str | Path, *, force: bool, inputs: Iterable[Any] = (),
                             wording: Wording = Wording()) -> Path:
    """Fail early (:class:`edgekd.core.errors.DestinationError`) unless :func:`bundle_directory` may write ``out``."""
    return check_destination(out, overwrite=force, owned=looks_like_bundle, inputs=inputs, what="bundle",
                             wording=wording)


def bundle_directory(out: str | Path, *, force: bool, inputs: Iterable[Any] = (),
                     wording: Wording = Wording()) -> ContextManager[Path]:
    """:func:`edgekd.core.destination.atomic_directory` for a bundle: ``force`` replaces only an edgekd bundle, never
    one that holds any of ``inputs`` (the source bundle, checkpoint or calibration data) or the working directory;
    ``wording`` names ``out`` and ``force`` in the refusals."""
    return atomic_directory(out, overwrite=force, owned=looks_like_bundle, inputs=inputs, what="bundle",
                            wording=wording)
