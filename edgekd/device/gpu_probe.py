"""``python -m edgekd.device.gpu_probe``: what TensorRT and CUDA say on this machine, as one JSON line on stdout.

``edgekd doctor`` runs this module in a child process of the same Python (:func:`edgekd.device.doctor.probe_gpu`),
never in its own: a broken TensorRT or CUDA install can abort or hang the interpreter on import, on loading
libcudart or on creating a builder, and the doctor must still answer. It asks the modules that own those imports:
:func:`edgekd.device.tensorrt.loader.tensorrt_available` (which imports tensorrt and asks the CUDA layer for
devices; the module object is then read from ``sys.modules``), a TensorRT builder for the DLA cores, and
:func:`edgekd.device.cuda.status`. Every step is guarded; what fails is a field of the report, never a traceback.

Python 3.8 syntax (JetPack 5.1).
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any, Dict


def _error(exc: BaseException) -> str:
    """``TypeName: first line of the message``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return type(exc).__name__ + (": " + lines[0] if lines else "")


def _tensorrt_facts(out: Dict[str, Any]) -> None:
    """TensorRT's version, where it was imported from, whether it can build here and the builder's DLA cores."""
    try:
        from edgekd.device.tensorrt import loader
    except Exception as exc:  # noqa: BLE001 - an edgekd that cannot import is the one fact to report
        out["fatal"] = "edgekd.device.tensorrt.loader: " + _error(exc)
        return
    try:
        ok, why = loader.tensorrt_available()
        out["trt_usable"], out["trt_reason"] = bool(ok), (None if ok else str(why))
    except Exception as exc:  # noqa: BLE001
        out["trt_usable"], out["trt_reason"] = False, _error(exc)
    trt = sys.modules.get("tensorrt")
    if trt is None and not out["trt_usable"]:
        # tensorrt_available() says "not installed" for any ImportError; the real one (e.g. no libnvinfer) helps
        try:
            trt = importlib.import_module("tensorrt")
        except Exception as exc:  # noqa: BLE001
            out["trt_import_error"] = _error(exc)
    if trt is None:
        return
    out["trt_version"] = str(getattr(trt, "__version__", "unknown"))
    out["trt_location"] = str(getattr(trt, "__file__", "") or "")
    if out["trt_usable"]:
        try:
            builder = loader.create_builder(trt, loader.tensorrt_logger(trt, lambda text: None))  # the one logger
            out["dla_cores"] = int(builder.num_DLA_cores)
            for key in ("platform_has_fast_fp16", "platform_has_fast_int8"):
                if hasattr(builder, key):
                    out[key] = bool(getattr(builder, key))
        except Exception as exc:  # noqa: BLE001
            out["builder_error"] = _error(exc)


def _cuda_facts(out: Dict[str, Any]) -> None:
    """edgekd's CUDA layer (the system's libcudart through ctypes), the one the TensorRT runner uses."""
    try:
        from edgekd.device import cuda

        state = cuda.status()
        out["cuda_ok"], out["cuda_found"], out["cuda_detail"] = bool(state.ok), bool(state.found), str(state.detail)
        out["cuda_binding"] = state.binding + (" (" + state.source + ")" if state.source else "")
        out["cuda_driver"], out["cuda_runtime"], out["cuda_devices"] = state.driver, state.runtime, state.devices
        out["gpu"] = state.device_name or None
        if state.compute_capability:
            out["sm"] = "%d.%d" % tuple(state.compute_capability)
    except Exception as exc:  # noqa: BLE001
        out["cuda_error"] = "edgekd.device.cuda: " + _error(exc)


def probe() -> Dict[str, Any]:
    """The facts, as :func:`edgekd.device.doctor.probe_gpu` reads them (``fatal`` when edgekd itself fails)."""
    out: Dict[str, Any] = {}
    _tensorrt_facts(out)
    if "fatal" not in out:
        _cuda_facts(out)
    return out


def main() -> None:
    print(json.dumps(probe()))


if __name__ == "__main__":
    main()
