"""The training wing (needs ``edgekd[train]``: torch, torchvision, scikit-learn, onnxscript).

Everything that touches PyTorch lives here: data loading (``data``), multi-exit networks (``models``), the TSKD
objectives (``distill``), the training loop (``loop``), checkpoints, evaluation, and the export of a checkpoint
to a bundle (``export``). It imports the torch-free core; nothing outside this package imports it, except the
CLI's training commands and ``quickstart``, lazily.

This ``__init__`` imports nothing, so ``edgekd.training.config`` (torch-free) can be read by the CLI to validate
options before torch is loaded.
"""
