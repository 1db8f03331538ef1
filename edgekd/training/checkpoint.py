"""Self-describing checkpoints: written atomically, read with ``torch.load(weights_only=True)`` and validated.

A checkpoint holds only tensors and plain Python values, so it loads without unpickling arbitrary code:

* ``format``/``format_version``; ``model`` (registry name and builder kwargs); ``exit_info``; ``input_spec``;
  ``class_names``; ``method`` (name and hyper-parameters); ``teacher`` (what taught it); ``split`` (seed, fraction,
  validation indices and their sha256); ``data`` (how to reload the same data); ``metrics`` (per exit and per vote
  rule); ``versions``; ``state_dict``.
* ``last.pt`` also carries ``train_state`` (optimizer, scheduler, epoch, RNG states, the run's config) for
  ``--resume``.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from edgekd import __version__
from edgekd.core.atomic import atomic_write
from edgekd.core.errors import CheckpointError
from edgekd.core.spec import InputSpec
from edgekd.training.models import create_model
from edgekd.training.weights import safe_torch_load

FORMAT = "edgekd-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "exit_info", "input_spec", "class_names", "method", "split", "metrics", "versions",
                 "state_dict")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the weights (recorded in every checkpoint)."""
    import numpy
    import torchvision

    return {"edgekd": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "numpy": str(numpy.__version__), "python": platform.python_version()}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format keys) atomically: a crash never leaves a truncated checkpoint behind."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint onto the CPU; any problem is a one-line :class:`CheckpointError`."""
    path = Path(path)
    ckpt = safe_torch_load(path, CheckpointError, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an edgekd checkpoint")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {ckpt.get('format_version')}, "
                              f"this edgekd reads version {FORMAT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks keys {missing}")
    InputSpec.from_dict(ckpt["input_spec"])  # validates
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the architecture from the registry and load the weights (strict)."""
    args = ckpt["model"]
    model = create_model(args["name"], **args["kwargs"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not fit model {args['name']}: {str(exc).splitlines()[0]}") from None
    return model


def spec_from_checkpoint(ckpt: dict[str, Any]) -> InputSpec:
    return InputSpec.from_dict(ckpt["input_spec"])
