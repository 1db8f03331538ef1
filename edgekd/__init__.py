"""edgekd: train multi-exit TSKD students, compile them into bundles, and run them on edge devices.

Two wings over one torch-free core; the folders say which is which:

* ``edgekd.core`` — the contract both wings share (InputSpec, preprocessing, images and labelled data, vote, early
  exit, the bundle manifest, atomic writes, errors). Imports neither wing.
* ``edgekd.training`` — the torch wing (needs ``edgekd[train]``): data, models, distill, the training loop,
  checkpoints, evaluation, export to a bundle.
* ``edgekd.device`` — the device wing: runners, the graph chain, ``build`` (compiler), ``run`` (runtime),
  ``profile``. Never imports torch or the training wing (import-linter contracts in pyproject.toml).
* ``edgekd.cli`` and ``edgekd.quickstart`` sit on top of both.

The front door for a Python user is the few names below, loaded on first use (PEP 562), so that ``import edgekd``
alone loads neither wing (and never torch): ``train(TrainConfig(...))``, ``export(checkpoint, out)``,
``build(bundle, precision=...)``, ``Pipeline.from_bundle(path)``, ``profile(bundle)``. Each is the wing's own
function or class under a short name; its module documents it.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Tuple

__version__ = "0.2.0"

#: name → (module, attribute) of each entry point; imported by name in :func:`__getattr__`, not by an import
#: statement, so the package's root stays out of the wings' import graph (they read ``__version__`` from it).
_ENTRY_POINTS: Dict[str, Tuple[str, str]] = {
    "train": ("edgekd.training.loop", "train"),
    "TrainConfig": ("edgekd.training.config", "TrainConfig"),
    "export": ("edgekd.training.export", "export_bundle"),
    "build": ("edgekd.device.compiler.builder", "build_bundle"),
    "Pipeline": ("edgekd.device.runtime.pipeline", "Pipeline"),
    "profile": ("edgekd.device.profile.profiler", "profile_bundle"),
}
__all__ = ["__version__", *_ENTRY_POINTS]


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        module, attribute = _ENTRY_POINTS[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # found once; later lookups do not come here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted([*globals(), *_ENTRY_POINTS])
