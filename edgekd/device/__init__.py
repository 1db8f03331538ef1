"""The device wing: build, run and profile bundles with numpy, onnx, onnxruntime, OpenCV and (on Jetson)
TensorRT — never torch, never the training wing (an import-linter contract in ``make test`` enforces it).

* ``runners``: one :class:`~edgekd.device.runners.Runner` interface over ONNX Runtime and TensorRT.
* ``chain``: the one graph chain: a bundle's segment graphs run one after another through runners.
* ``compiler``: ``edgekd build``: an exported bundle → graphs/engines for one precision and device target.
* ``runtime``: ``edgekd run``: frame sources, the inference pipeline, the frame loop.
* ``profile``: ``edgekd profile``: latency, accuracy, energy and the early-exit trade-off per bundle.
"""
