"""FP16 conversion of an ONNX graph, inputs and outputs kept float32 (device side, no torch).

Uses ONNX Runtime's ``onnxruntime.transformers.float16.convert_float_to_float16`` (the same code as
``onnxconverter_common.float16``, which is the fallback when an ORT build lacks the transformers tools). Ops in its
default block list stay float32 behind Cast nodes; with ``keep_io_types`` the graph's float32 inputs are cast to FP16
on entry and its outputs back to float32 on exit, under their original names.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from edgekd.core.errors import EdgekdError
from edgekd.core.onnx_graph import read_graph
from edgekd.device.compiler.quantize import graph_io, one_line, require_model, save_model_atomic


def _converter():
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        try:
            from onnxconverter_common.float16 import convert_float_to_float16
        except ImportError as e:
            raise EdgekdError("FP16 conversion needs onnxruntime's transformers tools or onnxconverter-common "
                              "(pip install onnxconverter-common)") from e
    return convert_float_to_float16


def convert_fp16(onnx_path: str | Path, out_path: str | Path, *, keep_io_types: bool = True) -> Path:
    """Write ``onnx_path`` with float32 weights and activations in FP16 to ``out_path`` (atomically)."""
    model = read_graph(require_model(onnx_path))
    before = graph_io(model)
    convert = _converter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            converted = convert(model, keep_io_types=keep_io_types)
    except EdgekdError:
        raise
    except Exception as e:  # noqa: BLE001 -- the converter asserts and raises assorted types on odd graphs
        raise EdgekdError(f"FP16 conversion of {onnx_path} failed: {one_line(e)}") from e
    if keep_io_types and graph_io(converted) != before:
        raise EdgekdError(f"FP16 conversion of {onnx_path} changed the graph inputs/outputs: "
                          f"{before} -> {graph_io(converted)}")
    out = Path(out_path)
    save_model_atomic(converted, out)
    return out

