"""Reading torch files safely: ``torch.load(weights_only=True)`` onto the CPU, with one-line errors.

Checkpoints (:mod:`edgekd.training.checkpoint`) and teacher state_dicts (:mod:`edgekd.training.models.teacher`)
both load through here, so no pickle payload is ever executed and a bad file is one line naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def safe_torch_load(path: str | Path, error: type[Exception], what: str) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU; a missing or unreadable file is a one-line ``error``."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        text = str(exc)
        if "weights_only" in text or "Unpickl" in text:
            reason = "not a torch file, corrupt, or holds objects that are unsafe to load"
        else:
            reason = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise error(f"cannot read {what} {path}: {reason}") from None

