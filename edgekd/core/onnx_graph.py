"""The one reader of ONNX graph files: the model itself, the files it loads besides itself, and its declared inputs
and outputs.

Everything in edgekd that opens an ``.onnx`` file goes through :func:`read_graph` (the onnx package's own parser),
so a file that is not an ONNX graph fails the same way everywhere: one line, :class:`OnnxFormatError`, naming the
file. The manifest's validation reads graphs a user may have handed over from anywhere, so the reader refuses what
protobuf cannot hold (over 2 GiB) before reading a byte, and turns every parse failure into that one line.

* :func:`external_data_locations`: the ``location`` of every tensor stored as external data, relative to the
  graph's folder (the model's graph and functions; in a graph its initializers, sparse initializers and nodes; in a
  node its attributes' tensors and subgraphs, ``If``/``Loop`` bodies, recursively). A bundle must hash every file
  its graphs load: a tampered weights file would otherwise run, with wrong outputs and no warning.
* :func:`graph_io`: the declared inputs and outputs with their shapes, so the manifest can check them.

Both read the graph without its external weights (``load_external_data=False``). ``onnx`` is imported on first
use: importing the core stays light.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple

from edgekd.core.errors import EdgekdError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

#: protobuf cannot parse a message of 2 GiB or more; a larger ``.onnx`` file cannot be a graph.
MAX_GRAPH_BYTES = (1 << 31) - 1
Dims = Optional[List[Optional[int]]]  # None: no shape declared; a None dimension: symbolic or unknown


class OnnxFormatError(EdgekdError):
    """The file is not a well-formed ONNX graph."""


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


def read_graph(path: str | os.PathLike, *, weights: bool = True) -> onnx.ModelProto:
    """The ONNX model at ``path``; with ``weights`` its external data loaded too (from the graph's folder), without
    them only the graph and the weights stored inside it. Raises :class:`OnnxFormatError` (one line, naming the
    file) for a file that is empty, too large for protobuf or not an ONNX protobuf, and for external data that
    is missing; an ``OSError`` (the file missing or unreadable) is raised as is."""
    import onnx

    shown = os.fspath(path)
    size = os.stat(path).st_size
    if size == 0:
        raise OnnxFormatError(f"{shown} is empty")
    if size > MAX_GRAPH_BYTES:
        raise OnnxFormatError(f"{shown} is not a readable ONNX graph ({size} bytes: protobuf holds under 2 GiB)")
    try:
        return onnx.load(os.fspath(path), format="protobuf", load_external_data=weights)  # never by file extension
    except OSError:  # the file itself or a weights file it names: the operating system's own one line
        raise
    except Exception as exc:  # noqa: BLE001 - protobuf and onnx raise several types for a foreign or cut file
        raise OnnxFormatError(f"{shown} is not a readable ONNX graph ({_detail(exc)})") from None


def _tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor the model stores: initializers, sparse initializers and attribute tensors of the main graph, its
    functions and every subgraph (iteratively: nesting depth is bounded by protobuf's parser, not by our stack)."""
    graphs: List = [model.graph] if model.HasField("graph") else []
    node_lists = [list(f.node) for f in model.functions]
    while graphs or node_lists:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield sparse.values
                yield sparse.indices
            node_lists.append(list(graph.node))
            continue
        for node in node_lists.pop():
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices
                for sparse in attr.sparse_tensors:
                    yield sparse.values
                    yield sparse.indices
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)


def external_data_locations(path: str | os.PathLike) -> List[str]:
    """The external-data ``location`` strings of the ONNX graph at ``path`` (relative to its directory), each once,
    in order of appearance; [] for a graph that keeps all its weights inside. Raises :class:`OnnxFormatError` for a
    file that is not an ONNX graph."""
    found: List[str] = []
    for tensor in _tensors(read_graph(path, weights=False)):
        found.extend(entry.value for entry in tensor.external_data if entry.key == "location")
    return list(dict.fromkeys(found))


def _dims(value_info) -> Dims:
    kind = value_info.type
    if not kind.HasField("tensor_type") or not kind.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and 0 < d.dim_value < 1 << 62 else None
            for d in kind.tensor_type.shape.dim]


def graph_io(path: str | os.PathLike) -> Tuple[Dict[str, Dims], Dict[str, Dims]]:
    """The declared inputs and outputs of the ONNX graph at ``path``: ``({name: dims}, {name: dims})``, each dims a
    list with an int per fixed dimension and None per symbolic one (None for no declared shape). Raises
    :class:`OnnxFormatError` for a file that is not an ONNX graph, or one without a graph."""
    model = read_graph(path, weights=False)
    if not model.HasField("graph"):
        raise OnnxFormatError(f"{os.fspath(path)} is not a readable ONNX graph (no graph)")
    return ({v.name: _dims(v) for v in model.graph.input}, {v.name: _dims(v) for v in model.graph.output})
