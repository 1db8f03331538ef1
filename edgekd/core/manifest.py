"""The bundle manifest: the contract between the workstation and the device.

A bundle is a directory holding ONNX graphs (or compiled engines), data files and ``manifest.json``. The runtime
reads only the manifest: input spec, class names, exits, vote rule, thresholds, precision, backend, and every
file with its sha256. :func:`load_manifest` validates all of it and refuses paths that leave the bundle.

Two kinds of graph: the *full* graph, and one *segment* graph per exit (segment ``i`` is the part of the network
from exit ``i - 1`` to exit ``i``, its head included; chaining them reproduces the full graph). The manifest lists
the segment graphs under ``graphs.stages`` — the key of schema version 1, kept so that every bundle and every
deployed edgekd keep reading each other; in edgekd's code and docs a *stage* is always a backbone stage
(``exits[i].stage``: the backbone stage exit ``i`` follows) and the graph between two exits a *segment*.

Tensor names are fixed: the full graph takes ``image`` (N, C, H, W) and returns ``logits{i}``, ``conf{i}`` for
every exit plus ``vote`` (the default vote rule's probabilities); segment ``i`` takes ``image`` (i = 0) or
``feat{i-1}`` and returns ``feat{i}`` (all but the last), ``logits{i}`` and ``conf{i}``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.core.atomic import atomic_write_json
from edgekd.core.errors import EdgekdError
from edgekd.core.spec import InputSpec
from edgekd.core.vote import VOTE_RULES

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
EXIT_KEYS = ("index", "stage", "channels", "reduction", "feat_shape", "macs")


class ManifestError(EdgekdError):
    """The manifest or a file it names is missing, malformed, or does not match its hash."""


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


@dataclass
class Manifest:
    """A validated manifest and the directory it lives in."""

    data: dict[str, Any]
    root: Path

    @property
    def spec(self) -> InputSpec:
        return InputSpec.from_dict(self.data["input_spec"])

    @property
    def num_exits(self) -> int:
        return len(self.data["exits"])

    @property
    def exits(self) -> list[dict[str, Any]]:
        return self.data["exits"]

    @property
    def thresholds(self) -> list[float]:
        return [float(t) for t in self.data["thresholds"]]

    @property
    def vote_rule(self) -> str:
        return self.data["vote"]["rule"]

    @property
    def vote_weights(self) -> list[float] | None:
        return self.data["vote"].get("weights")

    @property
    def precision(self) -> str:
        return self.data["precision"]

    @property
    def backend(self) -> str:
        return self.data["backend"]

    @property
    def runner_backend(self) -> str:
        """The runner that executes this bundle's graphs: an exported bundle's plain ONNX runs on ONNX Runtime."""
        return "onnxruntime" if self.backend == "onnx" else self.backend

    def full_graph(self) -> Path:
        return self.root / self.data["graphs"]["full"]["path"]

    def segment_graph(self, i: int) -> Path:
        """Segment ``i``'s graph or engine (listed under ``graphs.stages``, see the module docstring)."""
        return self.root / self.data["graphs"]["stages"][i]["path"]

    def file(self, key: str) -> Path:
        if key not in self.data["files"]:
            raise ManifestError(f"{self.root}: the bundle has no {key!r} file")
        return self.root / self.data["files"][key]["path"]


def _fail(root: Path, message: str) -> ManifestError:
    return ManifestError(f"{root / MANIFEST_NAME}: {message}")


def _check_path(root: Path, rel: Any, where: str) -> Path:
    """A manifest path must be relative and stay inside the bundle directory (no '..', no absolute, no links out)."""
    if not isinstance(rel, str) or not rel:
        raise _fail(root, f"{where}: path must be a non-empty string")
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise _fail(root, f"{where}: path {rel!r} leaves the bundle directory")
    full = (root / p).resolve()
    base = root.resolve()
    if full != base and base not in full.parents:  # (Path.is_relative_to needs Python 3.9; JetPack 5.1 has 3.8)
        raise _fail(root, f"{where}: path {rel!r} leaves the bundle directory")
    return full


def _check_file_entry(root: Path, entry: Any, where: str, verify_hashes: bool) -> None:
    if not isinstance(entry, dict) or "path" not in entry or "sha256" not in entry:
        raise _fail(root, f"{where}: needs 'path' and 'sha256'")
    full = _check_path(root, entry["path"], where)
    if not full.is_file():
        raise _fail(root, f"{where}: file {entry['path']} is missing")
    if verify_hashes and sha256_file(full) != entry["sha256"]:
        raise _fail(root, f"{where}: {entry['path']} does not match its sha256 (corrupted or edited)")


def _check_graphs(root: Path, graphs: dict[str, Any], n_exits: int, verify_hashes: bool) -> None:
    if "full" not in graphs or "stages" not in graphs:
        raise _fail(root, "graphs needs 'full' and 'stages'")
    _check_file_entry(root, graphs["full"], "graphs.full", verify_hashes)
    segments = graphs["stages"]  # the segment graphs (schema 1's key)
    if not isinstance(segments, list) or len(segments) != n_exits:
        raise _fail(root, f"graphs.stages must list one segment graph per exit ({n_exits})")
    for i, entry in enumerate(segments):
        _check_file_entry(root, entry, f"graphs.stages[{i}]", verify_hashes)


def validate_manifest(data: Any, root: Path, *, verify_hashes: bool = True) -> Manifest:
    """Check version, keys, types, values, paths and hashes; raise :class:`ManifestError` naming the first fault."""
    if not isinstance(data, dict):
        raise _fail(root, "must hold a JSON object")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise _fail(root, f"unknown schema_version {data.get('schema_version')!r} (this edgekd reads {SCHEMA_VERSION})")
    for key, typ in REQUIRED.items():
        if key not in data:
            raise _fail(root, f"missing key {key!r}")
        if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
            raise _fail(root, f"{key!r} must be {getattr(typ, '__name__', typ)}, got {type(data[key]).__name__}")
    if data["kind"] != KIND:
        raise _fail(root, f"kind must be {KIND!r}")
    try:
        spec = InputSpec.from_dict(data["input_spec"])
    except EdgekdError as exc:
        raise _fail(root, f"input_spec: {exc}") from None
    if list(spec.class_names) != data["class_names"]:
        raise _fail(root, "class_names differ from input_spec.class_names")
    exits = data["exits"]
    if not exits:
        raise _fail(root, "exits must not be empty")
    for i, e in enumerate(exits):
        if not isinstance(e, dict) or any(k not in e for k in EXIT_KEYS):
            raise _fail(root, f"exits[{i}] needs keys {list(EXIT_KEYS)}")
        if e["index"] != i or not isinstance(e["macs"], int) or e["macs"] < 0:
            raise _fail(root, f"exits[{i}] has a wrong index or macs")
    n = len(exits)
    th = data["thresholds"]
    if len(th) != n or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                               and t >= 0 for t in th):
        raise _fail(root, f"thresholds must be {n} finite non-negative numbers")
    vote = data["vote"]
    if vote.get("rule") not in VOTE_RULES:
        raise _fail(root, f"vote.rule must be one of {VOTE_RULES}")
    weights = vote.get("weights")
    if weights is not None and (not isinstance(weights, list) or len(weights) != n):
        raise _fail(root, f"vote.weights must list {n} numbers")
    if data["precision"] not in PRECISIONS:
        raise _fail(root, f"precision must be one of {PRECISIONS}")
    if data["backend"] not in BACKENDS:
        raise _fail(root, f"backend must be one of {BACKENDS}")
    _check_graphs(root, data["graphs"], n, verify_hashes)
    for key, entry in data["files"].items():
        _check_file_entry(root, entry, f"files.{key}", verify_hashes)
    return Manifest(data, root)


def load_manifest(bundle: str | Path, *, verify_hashes: bool = True) -> Manifest:
    """Read and validate ``bundle/manifest.json``."""
    root = Path(bundle)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ManifestError(f"bundle not found: {root}")
    if not path.is_file():
        raise ManifestError(f"{root} is not an edgekd bundle (no {MANIFEST_NAME})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    return validate_manifest(data, root, verify_hashes=verify_hashes)


def file_entry(root: Path, rel: str) -> dict[str, str]:
    """``{"path": rel, "sha256": …}`` for a file already written under ``root``."""
    return {"path": rel, "sha256": sha256_file(root / rel)}


def write_manifest(root: str | Path, data: dict[str, Any]) -> Manifest:
    """Validate ``data`` against the files in ``root`` and write ``manifest.json`` atomically."""
    root = Path(root)
    manifest = validate_manifest(data, root)
    atomic_write_json(root / MANIFEST_NAME, data)
    return manifest
