"""Model registry: names -> keyword-only builders returning a MultiExitNet.

Builders have the signature ``builder(*, num_classes, in_chans=3, input_size=(32, 32), exits=None,
head_width=None)``. ``create_model`` also accepts ``"torchvision:NAME"`` for single-exit torchvision teachers
(see :mod:`edgekd.training.models.teacher`). Every created model carries ``build_args = {"name": ..., "kwargs": {...}}``
(JSON-safe) so a checkpoint can rebuild it with ``create_model(args["name"], **args["kwargs"])``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable

from torch import nn

from edgekd.core.errors import ConfigError
from edgekd.training.models.teacher import freeze, load_state_dict_file, torchvision_builder

TORCHVISION_PREFIX = "torchvision:"

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering a keyword-only builder under ``name`` (names are unique)."""

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY or name.startswith(TORCHVISION_PREFIX):
            raise ValueError(f"model name {name!r} is already registered or reserved")
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Sorted names of the registered models (``torchvision:NAME`` teachers are not listed)."""
    return sorted(_REGISTRY)


def _json_safe(value: Any) -> Any:
    """Tuples become lists, recursively; anything JSON cannot hold is a ConfigError."""
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ConfigError(f"model option value {value!r} is not JSON-serialisable") from None
    return value


def _check_kwargs(name: str, builder: Builder, kwargs: dict[str, Any]) -> None:
    """Unknown or missing options are a one-line ConfigError instead of a TypeError."""
    params = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"model {name!r} does not take option(s) {unknown}; it takes {sorted(params)}")
    missing = [p.name for p in params.values() if p.default is inspect.Parameter.empty and p.name not in kwargs]
    if missing:
        raise ConfigError(f"model {name!r} needs option(s) {missing}")


def _lookup(name: str) -> Builder:
    """The builder for ``name``; unknown names list what is available."""
    if not isinstance(name, str):
        raise ConfigError(f"model name must be a string, got {name!r}")
    if name.startswith(TORCHVISION_PREFIX):
        return torchvision_builder(name[len(TORCHVISION_PREFIX):])
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())} "
                          f"(or {TORCHVISION_PREFIX}NAME for a torchvision teacher)")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with keyword options and attach ``build_args`` for rebuilding it."""
    builder = _lookup(name)
    _check_kwargs(name, builder, kwargs)
    if isinstance(kwargs.get("input_size"), list):
        kwargs["input_size"] = tuple(kwargs["input_size"])
    model = builder(**kwargs)
    saved = dict(kwargs, num_classes=model.num_classes, in_chans=model.in_chans, input_size=model.input_size)
    if hasattr(model, "exit_info"):
        saved["exits"] = [e.stage for e in model.exit_info]
    model.build_args = {"name": name, "kwargs": _json_safe(saved)}
    return model


def build_teacher(name: str, *, num_classes: int, in_chans: int, input_size: tuple[int, int],
                  weights: str | Path | None = None) -> nn.Module:
    """Registered model or ``torchvision:NAME``, optionally loaded from a plain state_dict file, then frozen."""
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans, "input_size": input_size}
    model = create_model(name, **kwargs)
    if weights is not None:
        load_state_dict_file(model, weights)
    return freeze(model)
