"""The records of a bundle manifest, as frozen dataclasses: one exit, one file, the graphs, the vote, the build.

Each record is read by one ``from_json`` that checks its fields one by one and raises :class:`ManifestError` with a
one-line message naming the field (the manifest's path is prefixed by :meth:`edgekd.core.manifest.Manifest.from_json`),
and written by one ``to_json`` that gives back the JSON it was read from: the same keys, nesting and value types,
so a bundle this edgekd writes still loads on the last release, and keys this edgekd does not know (written by a
later one) are kept in ``extra`` and written back. Records are derived with :func:`dataclasses.replace`, never
edited. The file system is not touched here: :mod:`edgekd.core.manifest` checks paths, hashes and graph shapes.

Only what the device reads is typed field by field. The records whose contents only a person reads (export's
``parity``, ``split`` and ``source``; the build's calibration, verification, certificate, payoff and engine records)
are kept as the JSON objects their writers produce; their readers check them as they read (e.g.
:func:`edgekd.core.certify.stored_certificate`: a damaged certificate is no certificate, not an unreadable bundle).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from edgekd.core.errors import EdgekdError
from edgekd.core.vote import FULL_ANSWERS, VOTE_RULES

#: Bounds of a manifest's numbers: MACs stay exact as floats (costs are computed in float64), sizes stay sane.
MAX_MACS = 2 ** 53
MAX_DIM = 1 << 20
EXIT_KEYS = ("index", "stage", "channels", "reduction", "feat_shape", "macs")


class ManifestError(EdgekdError):
    """The manifest or a file it names is missing, malformed, or does not match its hash."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def finite(x: Any) -> bool:
    """A JSON number a float can hold (Python's json reads 10**400 as an int, which no float holds)."""
    if not _is_number(x):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def is_count(x: Any, low: int, high: int) -> bool:
    """An int (not a bool) in ``low..high``."""
    return isinstance(x, int) and not isinstance(x, bool) and low <= x <= high


def short(value: Any, limit: int = 60) -> str:
    """``value`` on one line, cut to ``limit`` characters (for error messages quoting what a file holds)."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "…"


def _extra(value: Dict[str, Any], known: Tuple[str, ...]) -> Dict[str, Any]:
    """The keys of ``value`` a record does not know, kept to be written back (a later edgekd's additions)."""
    return {k: copy.deepcopy(v) for k, v in value.items() if k not in known}


@dataclass(frozen=True)
class ExitInfo:
    """The declared structure of one exit (the manifest's ``exits[i]``; also a checkpoint's ``exit_info``).

    index: exit number, 0 = shallowest. stage: the backbone stage (0-based) this exit follows. channels: channels
    of ``feat{index}``, the feature map the segment passes on. reduction: spatial stride of ``feat{index}`` relative
    to the input (1, 2, 4, ... 32). feat_shape: (C, H, W) of ``feat{index}`` at the model's input size. macs:
    multiply-accumulates from the input through this exit's head. head_macs: MACs of the head alone (None: a
    manifest that does not record it).
    """

    index: int
    stage: int
    channels: int
    reduction: int
    feat_shape: Tuple[int, int, int]
    macs: int
    head_macs: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"index": self.index, "stage": self.stage, "channels": self.channels,
                               "reduction": self.reduction, "feat_shape": list(self.feat_shape), "macs": self.macs}
        if self.head_macs is not None:
            out["head_macs"] = self.head_macs
        out.update(copy.deepcopy(self.extra))
        return out

    @classmethod
    def from_json(cls, value: Any, index: int) -> ExitInfo:
        """Exit ``index``'s record: its keys, and each value's type and range."""
        where = f"exits[{index}]"
        if not isinstance(value, dict) or any(k not in value for k in EXIT_KEYS):
            raise ManifestError(f"{where} needs keys {list(EXIT_KEYS)}")
        if value["index"] != index or not is_count(value["index"], 0, MAX_DIM):
            raise ManifestError(f"{where}.index must be {index}, got {short(value['index'])}")
        for key in ("macs", "head_macs"):
            if key in value and not is_count(value[key], 0, MAX_MACS):
                raise ManifestError(f"{where}.{key} must be an integer in 0..2^53, got {short(value[key])}")
        for key, low in (("stage", 0), ("channels", 1), ("reduction", 1)):
            if not is_count(value[key], low, MAX_DIM):
                raise ManifestError(f"{where}.{key} must be an integer in {low}..{MAX_DIM}, got {short(value[key])}")
        shape = value["feat_shape"]
        if not isinstance(shape, list) or len(shape) != 3 or not all(is_count(d, 1, MAX_DIM) for d in shape):
            raise ManifestError(f"{where}.feat_shape must be 3 positive integers (C, H, W), got {short(shape)}")
        return cls(index=index, stage=value["stage"], channels=value["channels"], reduction=value["reduction"],
                   feat_shape=(shape[0], shape[1], shape[2]), macs=value["macs"], head_macs=value.get("head_macs"),
                   extra=_extra(value, (*EXIT_KEYS, "head_macs")))


_FILE_KEYS = ("path", "sha256", "external_data")


@dataclass(frozen=True)
class FileEntry:
    """A file of the bundle: its path (relative, inside the bundle), its sha256, and for an ONNX graph that keeps
    its weights in other files those files (``external_data``, None when the manifest lists none)."""

    path: str
    sha256: str
    external_data: Optional[List[FileEntry]] = None
    extra: Dict[str, Any] = field(default_factory=dict, hash=False)

    def _json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"path": self.path, "sha256": self.sha256}
        if self.external_data is not None:
            out["external_data"] = [x.to_json() for x in self.external_data]
        return out

    def to_json(self) -> Dict[str, Any]:
        out = self._json()
        out.update(copy.deepcopy(self.extra))
        return out

    @staticmethod
    def _fields(value: Any, where: str) -> Dict[str, Any]:
        """The checked fields of a file entry (shared with :class:`GraphEntry`)."""
        if not isinstance(value, dict) or "path" not in value or "sha256" not in value:
            raise ManifestError(f"{where}: needs 'path' and 'sha256'")
        rel = value["path"]
        if not isinstance(rel, str) or not rel:
            raise ManifestError(f"{where}: path must be a non-empty string")
        if "\0" in rel:
            raise ManifestError(f"{where}: path {rel!r} holds a NUL byte")
        listed = value.get("external_data")
        if listed is not None:
            if not isinstance(listed, list):
                raise ManifestError(f"{where}.external_data must be a list")
            listed = [FileEntry.from_json(sub, f"{where}.external_data[{j}]") for j, sub in enumerate(listed)]
        return {"path": rel, "sha256": value["sha256"], "external_data": listed}

    @classmethod
    def from_json(cls, value: Any, where: str) -> FileEntry:
        return cls(**cls._fields(value, where), extra=_extra(value, _FILE_KEYS))

    def loads(self) -> List[FileEntry]:
        """The files this entry's graph loads besides itself (its external data)."""
        return list(self.external_data or [])


_GRAPH_KEYS = (*_FILE_KEYS, "inputs", "outputs")


@dataclass(frozen=True)
class GraphEntry(FileEntry):
    """A graph or engine file, with the tensor names it takes and returns (None: a manifest that omits them)."""

    inputs: Optional[List[str]] = None
    outputs: Optional[List[str]] = None

    def to_json(self) -> Dict[str, Any]:
        out = self._json()
        for key in ("inputs", "outputs"):
            if getattr(self, key) is not None:
                out[key] = list(getattr(self, key))
        out.update(copy.deepcopy(self.extra))
        return out

    @classmethod
    def from_json(cls, value: Any, where: str) -> GraphEntry:
        fields = cls._fields(value, where)
        return cls(**fields, inputs=copy.deepcopy(value.get("inputs")), outputs=copy.deepcopy(value.get("outputs")),
                   extra=_extra(value, _GRAPH_KEYS))


@dataclass(frozen=True)
class Graphs:
    """The bundle's graphs: the full graph, one segment graph per exit (JSON key ``stages``, schema 1's), and the
    optional one-call early-exit graph."""

    full: GraphEntry
    segments: List[GraphEntry]
    early_exit: Optional[GraphEntry] = None
    extra: Dict[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"full": self.full.to_json(), "stages": [g.to_json() for g in self.segments]}
        if self.early_exit is not None:
            out["early_exit"] = self.early_exit.to_json()
        out.update(copy.deepcopy(self.extra))
        return out

    @classmethod
    def from_json(cls, value: Dict[str, Any], n_exits: int) -> Graphs:
        if "full" not in value or "stages" not in value:
            raise ManifestError("graphs needs 'full' and 'stages'")
        full = GraphEntry.from_json(value["full"], "graphs.full")
        segments = value["stages"]
        if not isinstance(segments, list) or len(segments) != n_exits:
            raise ManifestError(f"graphs.stages must list one segment graph per exit ({n_exits})")
        listed = [GraphEntry.from_json(entry, f"graphs.stages[{i}]") for i, entry in enumerate(segments)]
        early = GraphEntry.from_json(value["early_exit"], "graphs.early_exit") if "early_exit" in value else None
        return cls(full, listed, early, _extra(value, ("full", "stages", "early_exit")))

    def entries(self) -> Dict[str, GraphEntry]:
        """Every graph by where the manifest lists it (``graphs.full``, ``graphs.stages[i]``, ``graphs.early_exit``)."""
        out = {"graphs.full": self.full, **{f"graphs.stages[{i}]": g for i, g in enumerate(self.segments)}}
        if self.early_exit is not None:
            out["graphs.early_exit"] = self.early_exit
        return out


_VOTE_KEYS = ("rule", "weights", "in_graph", "answer")


@dataclass(frozen=True)
class VoteRecord:
    """The bundle's vote: the default rule, the weighted vote's weights (None: none), the rule the full graph's
    ``vote`` output computes (None: not recorded), and what ``--mode full-vote`` answers with (None: not recorded,
    bundles from before export chose it by a paired test, which answer with the vote)."""

    rule: str
    weights: Optional[List[float]] = None
    in_graph: Optional[str] = None
    answer: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"rule": self.rule, "weights": None if self.weights is None else list(self.weights)}
        for key in ("in_graph", "answer"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(copy.deepcopy(self.extra))
        return out

    @classmethod
    def from_json(cls, value: Dict[str, Any], n_exits: int) -> VoteRecord:
        if value.get("rule") not in VOTE_RULES:
            raise ManifestError(f"vote.rule must be one of {VOTE_RULES}")
        weights = value.get("weights")
        if weights is not None and (not isinstance(weights, list) or len(weights) != n_exits
                                    or not all(finite(w) and w >= 0 for w in weights)
                                    or not finite(sum(weights)) or not sum(weights) > 0):
            raise ManifestError(f"vote.weights must list {n_exits} finite non-negative numbers with a positive sum, "
                                f"got {short(weights)}")
        if value["rule"] == "weighted" and weights is None:
            raise ManifestError("vote.rule is weighted but vote.weights is missing")
        if value.get("in_graph") not in (None, *VOTE_RULES):
            raise ManifestError(f"vote.in_graph must be one of {VOTE_RULES}")
        if value.get("answer", "vote") not in FULL_ANSWERS:
            raise ManifestError(f"vote.answer must be one of {FULL_ANSWERS}")
        return cls(value["rule"], None if weights is None else list(weights), value.get("in_graph"),
                   value.get("answer"), _extra(value, _VOTE_KEYS))

    @property
    def full_answer(self) -> str:
        """``deepest`` or ``vote`` (see the class docstring)."""
        return self.answer or "vote"


_BUILD_KEYS = ("source", "target", "calibration", "verification", "thresholds", "segment_latency_ms", "early_exit",
               "engines")


@dataclass(frozen=True)
class BuildRecord:
    """The manifest's ``build``: what ``edgekd build`` did (``profile --write-thresholds`` replaces ``thresholds``).

    source: the exported bundle built from (``name``, ``manifest_sha256``). target: the device target's name.
    calibration: int8's calibration record (method, cache reuse, images, Q/DQ backend, weights, mixed precision;
    None for the float precisions). verification: the paired comparison against FP32
    (:func:`edgekd.device.compiler.verify.compare`) and ``max_drop_allowed``. thresholds: the certificate record
    of the thresholds (:func:`edgekd.core.certify.manifest_record`; read back with
    :func:`edgekd.core.certify.stored_certificate`). segment_latency_ms: quick batch-1 medians per segment.
    early_exit: whether early exit pays on the build's device (:func:`edgekd.device.profile.payoff.measure_payoff`).
    engines: per TensorRT engine, what its build found. None: not recorded. These are the JSON their writers
    produce; see the module docstring.
    """

    source: Optional[Dict[str, Any]] = None
    target: Optional[str] = None
    calibration: Optional[Dict[str, Any]] = None
    verification: Optional[Dict[str, Any]] = None
    thresholds: Optional[Dict[str, Any]] = None
    segment_latency_ms: Optional[List[float]] = None
    early_exit: Optional[Dict[str, Any]] = None
    engines: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> Dict[str, Any]:
        """Every recorded field; ``calibration`` also when None in a build's record (a float build writes null)."""
        out = {}
        for key in _BUILD_KEYS:
            value = getattr(self, key)
            if value is not None or (key == "calibration" and self.target is not None):
                out[key] = copy.deepcopy(value)
        out.update(copy.deepcopy(self.extra))
        return out

    @classmethod
    def from_json(cls, value: Any) -> BuildRecord:
        if not isinstance(value, dict):  # build and run read fields of it
            raise ManifestError(f"'build' must be an object, got {type(value).__name__}")
        return cls(**{k: copy.deepcopy(value.get(k)) for k in _BUILD_KEYS}, extra=_extra(value, _BUILD_KEYS))
