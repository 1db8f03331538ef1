"""Everything edgekd does with TensorRT, in one package (shaped like Polygraphy's ``backend/trt``), and the only
place ``tensorrt`` is imported (import-linter's ``gpu-imports`` contract):

* :mod:`~edgekd.device.tensorrt.versions`: the supported releases and the one version gate; DLA rules per release.
* :mod:`~edgekd.device.tensorrt.parser_rules`: what each release's ONNX parser would misread in a graph.
* :mod:`~edgekd.device.tensorrt.loader`: importing TensorRT (gated), the process's one logger, Builder and Runtime.
* :mod:`~edgekd.device.tensorrt.settings`: what to ask TensorRT for (flags, typing, profile batches, graph facts).
* :mod:`~edgekd.device.tensorrt.engine_cache`: engine names, staleness sidecars, engine and timing caches.
* :mod:`~edgekd.device.tensorrt.calibrator`: the entropy calibrator (int8 on a DLA core before TensorRT 11).
* :mod:`~edgekd.device.tensorrt.build`: ``build_engine`` in short steps.
* :mod:`~edgekd.device.tensorrt.runner`: ``TensorRTRunner``, the runner registry's ``tensorrt`` backend.

Importing the package (or any of its modules) imports no ``tensorrt``: it is imported inside the functions that use
it, so every rule here is tested on machines without TensorRT.
"""
