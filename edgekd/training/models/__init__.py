"""Multi-exit student networks, their registry, and teachers.

``create_model(name, num_classes=..., in_chans=..., input_size=..., exits=..., head_width=...)`` builds a
registered :class:`MultiExitNet` (see :func:`list_models`) or a ``torchvision:NAME`` single-exit teacher.
"""

from __future__ import annotations

from edgekd.training.models.multi_exit import ExitInfo, MultiExitNet, MultiExitOutput
from edgekd.training.models.registry import build_teacher, create_model, list_models, register_model
from edgekd.training.models.teacher import freeze, inference_teacher

# Importing the backbone modules registers their builders.
from edgekd.training.models import cifar_resnet as _cifar_resnet  # noqa: E402,F401  isort: skip
from edgekd.training.models import torchvision_nets as _torchvision_nets  # noqa: E402,F401  isort: skip

__all__ = [
    "ExitInfo",
    "MultiExitNet",
    "MultiExitOutput",
    "build_teacher",
    "create_model",
    "freeze",
    "inference_teacher",
    "list_models",
    "register_model",
]
