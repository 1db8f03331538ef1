"""Which files an ONNX graph loads besides itself: the ``location`` of every tensor stored as external data.

A bundle must hash every file its graphs load (a tampered weights file would otherwise run, with wrong outputs and
no warning), so the manifest lists them. Finding them needs only the protobuf wire format, not the ``onnx`` package:
the core stays torch- and onnx-free, and a 2 GB graph is walked through a memory map, its raw weights skipped by
length, never copied.

Walked: the model's graph and functions; in a graph its nodes, initializers and sparse initializers; in a node the
attributes' tensors and subgraphs (``If``/``Loop`` bodies), recursively. A tensor is external when it carries
``external_data`` entries; the ``location`` entry names the file, relative to the graph file's directory.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import Dict, Iterator, List, Optional, Tuple

from edgekd.core.errors import EdgekdError

#: message → {field number: message it holds}; fields not listed are skipped.
_MESSAGES: Dict[str, Dict[int, str]] = {
    "model": {7: "graph", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}
_MAX_DEPTH = 64  # nested subgraphs deeper than this are not a real model


class OnnxFormatError(EdgekdError):
    """The file is not a well-formed ONNX protobuf."""


def _varint(buf, pos: int, end: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise OnnxFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf, pos: int, end: int):
    """Yield (field number, wire type, value start, value end) of the message in ``buf[pos:end]``; a field that
    would run past ``end`` (a cut file: its hash may still match if it was recomputed) is a format error before
    anyone reads it."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            nxt = _varint(buf, pos, end)[1]
        elif wire == 1:
            nxt = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            nxt = pos + length
        elif wire == 5:
            nxt = pos + 4
        else:
            raise OnnxFormatError(f"unsupported wire type {wire}")
        if nxt > end:
            raise OnnxFormatError("field runs past the end of its message")
        yield number, wire, pos, nxt
        pos = nxt


def _walk(buf, kind: str, pos: int, end: int, found: List[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise OnnxFormatError("subgraphs nested too deep")
    if kind == "entry":  # StringStringEntryProto: key = 1, value = 2
        key = value = None
        for number, wire, start, stop in _fields(buf, pos, end):
            if wire == 2 and number == 1:
                key = bytes(buf[start:stop])
            elif wire == 2 and number == 2:
                value = bytes(buf[start:stop])
        if key == b"location" and value is not None:
            found.append(value.decode("utf-8", "replace"))
        return
    children = _MESSAGES[kind]
    for number, wire, start, stop in _fields(buf, pos, end):
        if wire == 2 and number in children:
            _walk(buf, children[number], start, stop, found, depth + 1)


@contextlib.contextmanager
def _mapped(path: str | os.PathLike) -> Iterator[Tuple[memoryview, int]]:
    """The ONNX file at ``path`` memory-mapped, as (view, size); a format error inside names the file."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise OnnxFormatError(f"{os.fspath(path)} is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                yield view, size
            except OnnxFormatError as exc:
                raise OnnxFormatError(f"{os.fspath(path)} is not a readable ONNX graph ({exc})") from None
            finally:
                view.release()


def external_data_locations(path: str | os.PathLike) -> List[str]:
    """The external-data ``location`` strings of the ONNX graph at ``path`` (relative to its directory), each once,
    in order of appearance; [] for a graph that keeps all its weights inside. Raises :class:`OnnxFormatError` for a
    file that is not an ONNX protobuf."""
    found: List[str] = []
    with _mapped(path) as (view, size):
        _walk(view, "model", 0, size, found, 0)
    return list(dict.fromkeys(found))


# -- the graph's declared inputs and outputs ------------------------------------------------------------------------
# ModelProto.graph = 7; GraphProto.input = 11, output = 12; ValueInfoProto.name = 1, type = 2; TypeProto.tensor_type
# = 1; TypeProto.Tensor.shape = 2; TensorShapeProto.dim = 1; Dimension.dim_value = 1 (a number), dim_param = 2 (a name).
Dims = Optional[List[Optional[int]]]  # None: no shape declared; a None dimension: symbolic or unknown


def _message(buf, pos: int, end: int, number: int):
    """(start, stop) of the last length-delimited field ``number`` of the message in ``buf[pos:end]``, or None."""
    found = None
    for n, wire, start, stop in _fields(buf, pos, end):
        if n == number and wire == 2:
            found = (start, stop)
    return found


def _value_info(buf, pos: int, end: int) -> Tuple[str, Dims]:
    name, dims = "", None
    for number, wire, start, stop in _fields(buf, pos, end):
        if number == 1 and wire == 2:
            name = bytes(buf[start:stop]).decode("utf-8", "replace")
        elif number == 2 and wire == 2:
            tensor = _message(buf, start, stop, 1)
            shape = _message(buf, *tensor, 2) if tensor else None
            if shape is not None:
                dims = []
                for n, w, s, e in _fields(buf, shape[0], shape[1]):
                    if n != 1 or w != 2:
                        continue
                    value = None
                    for dn, dw, ds, _de in _fields(buf, s, e):
                        if dn == 1 and dw == 0:
                            value = _varint(buf, ds, e)[0]
                    dims.append(value if value is not None and 0 < value < 1 << 62 else None)
    return name, dims


def graph_io(path: str | os.PathLike) -> Tuple[Dict[str, Dims], Dict[str, Dims]]:
    """The declared inputs and outputs of the ONNX graph at ``path``: ``({name: dims}, {name: dims})``, each dims a
    list with an int per fixed dimension and None per symbolic one (None for no declared shape). Read from the
    protobuf like :func:`external_data_locations` (weights skipped by length). Raises :class:`OnnxFormatError` for a
    file that is not an ONNX protobuf with a graph."""
    inputs: Dict[str, Dims] = {}
    outputs: Dict[str, Dims] = {}
    with _mapped(path) as (view, size):
        graph = _message(view, 0, size, 7)
        if graph is None:
            raise OnnxFormatError("no graph")
        for number, wire, start, stop in _fields(view, *graph):
            if wire == 2 and number in (11, 12):
                name, dims = _value_info(view, start, stop)
                (inputs if number == 11 else outputs)[name] = dims
    return inputs, outputs
