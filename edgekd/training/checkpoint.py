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

import io
import os
import platform
from pathlib import Path
from typing import Any

import torch

from edgekd import __version__
from edgekd.core.atomic import atomic_write
from edgekd.core.errors import CheckpointError, EdgekdError
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
    buffer = io.BytesIO()  # serialized first: torch's own writer turns a failed write (a full disk) into a
    torch.save(payload, buffer)  # RuntimeError ("unexpected pos"); written here, it is the OSError naming the file
    try:
        atomic_write(path, lambda f: f.write(buffer.getbuffer()))
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
        raise


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
    _check_values(path, ckpt)
    try:
        InputSpec.from_dict(ckpt["input_spec"])  # validates
    except EdgekdError as exc:
        raise CheckpointError(f"{path}: input_spec: {exc}") from None
    return ckpt


def _check_values(path: Path, ckpt: dict[str, Any]) -> None:
    """The values everything downstream indexes into have the types it expects: ``model`` a mapping with a string
    ``name`` and a ``kwargs`` mapping, ``state_dict`` a mapping of tensors, ``exit_info``/``class_names`` lists,
    ``input_spec``/``metrics``/``method``/``split``/``versions`` mappings. A file that passes ``weights_only``
    loading but holds anything else is a one-line :class:`CheckpointError`, not a TypeError later."""
    model = ckpt["model"]
    if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not isinstance(model.get("kwargs"), dict):
        raise CheckpointError(f"{path}: 'model' must be a mapping with a string 'name' and a 'kwargs' mapping, got "
                              f"{type(model).__name__}")
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: 'state_dict' must map parameter names to tensors")
    for key, typ in (("exit_info", list), ("class_names", list), ("input_spec", dict), ("metrics", dict),
                     ("method", dict), ("split", dict), ("versions", dict)):
        if not isinstance(ckpt[key], typ):
            raise CheckpointError(f"{path}: {key!r} must be a {typ.__name__}, got {type(ckpt[key]).__name__}")


def model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the architecture from the registry and load the weights (strict)."""
    args = ckpt["model"]
    try:
        model = create_model(args["name"], **args["kwargs"])
    except (TypeError, ValueError) as exc:  # kwargs the architecture does not take, or values it cannot use
        raise CheckpointError(f"the checkpoint's model {args['name']} cannot be built from its kwargs: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not fit model {args['name']}: {str(exc).splitlines()[0]}") from None
    return model


def spec_from_checkpoint(ckpt: dict[str, Any]) -> InputSpec:
    return InputSpec.from_dict(ckpt["input_spec"])
