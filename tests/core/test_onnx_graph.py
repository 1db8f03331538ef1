"""core/onnx_graph.py, the one reader of ONNX graph files (issue 22): what it finds (external data in functions,
sparse initializers and subgraphs; declared shapes) and how it refuses what is not a graph (one line, named)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, external_data_helper, helper, numpy_helper

from edgekd.core.errors import EdgekdError
from edgekd.core.onnx_graph import MAX_GRAPH_BYTES, OnnxFormatError, external_data_locations, graph_io, read_graph

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bundle-abf6d4b"


def _identity_model(**graph_kwargs) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], **graph_kwargs)
    return helper.make_model(graph)


def test_declared_inputs_and_outputs_with_symbolic_and_missing_shapes(tmp_path):
    onnx.save_model(_identity_model(), str(tmp_path / "g.onnx"))
    assert graph_io(tmp_path / "g.onnx") == ({"x": [None, 3, 8, 8]}, {"y": None})


def test_the_fixture_graphs_are_read_whole_and_without_weights(tmp_path):
    full = FIXTURE / "full.onnx"
    inputs, outputs = graph_io(full)
    assert list(inputs) == ["image"] and "logits0" in outputs
    assert read_graph(full, weights=False).graph.node  # a real graph, not an empty message


def _external(tensor: onnx.TensorProto, location: str) -> onnx.TensorProto:
    """``tensor`` marked as stored in ``location`` (the saver externalises only initializers and node attributes)."""
    external_data_helper.set_external_data(tensor, location)
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    return tensor


def test_external_data_of_sparse_initializers_and_functions_is_found(tmp_path):
    values = _external(numpy_helper.from_array(np.ones((64,), np.float32), "sv"), "sparse.bin")
    indices = numpy_helper.from_array(np.arange(64, dtype=np.int64), "si")
    model = _identity_model(sparse_initializer=[helper.make_sparse_tensor(values, indices, [128])])
    value = _external(numpy_helper.from_array(np.ones((64,), np.float32)), "function.bin")
    model.functions.append(helper.make_function("local", "f", [], ["c"],
                                                [helper.make_node("Constant", [], ["c"], value=value)],
                                                [helper.make_opsetid("", 17)]))
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    assert external_data_locations(tmp_path / "m.onnx") == ["sparse.bin", "function.bin"]


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    key, length, out = (number << 3) | 2, len(payload), bytearray()
    for value in (key, length):
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload


def test_subgraphs_nested_past_protobufs_depth_are_one_line(tmp_path):
    """A graph whose If bodies nest 300 deep (GraphProto.node=1, NodeProto.attribute=5, AttributeProto.g=6,
    ModelProto.graph=7): refused by the parser's depth limit as a format error, never a RecursionError."""
    graph = b""
    for _ in range(300):
        graph = _field(1, _field(5, _field(6, graph)))
    (tmp_path / "deep.onnx").write_bytes(_field(7, graph))
    for read in (graph_io, external_data_locations):
        with pytest.raises(OnnxFormatError, match="deep.onnx is not a readable ONNX graph"):
            read(tmp_path / "deep.onnx")


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b"\xff\xff\xff", "not a readable ONNX graph"),
                                              (b'{"graph": {}}', "not a readable ONNX graph")])
def test_what_is_not_a_graph_is_refused_by_name_whatever_its_extension(tmp_path, content, message):
    for name in ("x.onnx", "x.json", "x.txt"):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(OnnxFormatError, match=message) as info:
            graph_io(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)
        assert isinstance(info.value, EdgekdError)


def test_a_file_too_large_for_protobuf_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.onnx"
    with open(big, "wb") as f:  # sparse: no disk used, and nothing may read it all
        f.truncate(MAX_GRAPH_BYTES + 1)
    with pytest.raises(OnnxFormatError, match="2 GiB"):
        read_graph(big, weights=False)


def test_a_missing_graph_is_the_operating_systems_error_and_missing_weights_one_line(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_graph(tmp_path / "absent.onnx")
    w = numpy_helper.from_array(np.ones((64,), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])], initializer=[w])
    onnx.save_model(helper.make_model(graph), str(tmp_path / "w.onnx"), save_as_external_data=True,
                    location="w.bin", size_threshold=0)
    os.unlink(tmp_path / "w.bin")
    assert external_data_locations(tmp_path / "w.onnx") == ["w.bin"]  # read without its weights: fine
    with pytest.raises(OnnxFormatError, match="w.onnx is not a readable ONNX graph .*w.bin"):
        read_graph(tmp_path / "w.onnx")
