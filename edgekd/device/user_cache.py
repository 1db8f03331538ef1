"""Where edgekd keeps its per-user caches: one root, one folder per cache inside it.

A cache only saves time (calibration ranges, TensorRT engines), so it belongs to the user, not to whatever
directory a command happens to run from: ``$EDGEKD_CACHE`` when set (off/none/0/false/no/empty: no caches),
else ``$XDG_CACHE_HOME/edgekd`` (the XDG base-directory rule), else ``~/.cache/edgekd``. Each cache is a named
folder under that root (``calibration``, ``engines``); a cache's own variable (``$EDGEKD_ENGINE_CACHE``) still
overrides its folder alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

CACHE_ENV = "EDGEKD_CACHE"  # the root of every per-user cache, or off to keep none
XDG_CACHE_ENV = "XDG_CACHE_HOME"
#: Values of a cache variable that mean "keep no cache" (``$EDGEKD_CACHE``, ``--engine-cache``, …).
CACHE_OFF = ("", "0", "off", "none", "no", "false")
CALIBRATION = "calibration"  # the INT8 calibration ranges' folder under the root


def cache_off(value: str) -> bool:
    """Whether a cache variable's or option's value asks for no cache."""
    return value.strip().lower() in CACHE_OFF


def cache_root(environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """The per-user cache root (see the module docstring); None when ``$EDGEKD_CACHE`` turns caching off."""
    env = os.environ if environ is None else environ
    value = env.get(CACHE_ENV)
    if value is not None:
        return None if cache_off(value) else Path(value).expanduser()
    base = env.get(XDG_CACHE_ENV) or ""
    if not os.path.isabs(base):  # the XDG rule: a relative value is invalid and ignored
        base = str(Path("~").expanduser() / ".cache")
    return Path(base) / "edgekd"


def user_cache(name: str, environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """The per-user cache folder ``name`` (e.g. ``calibration``) under :func:`cache_root`, or None when off."""
    root = cache_root(environ)
    return None if root is None else root / name


def calibration_cache(environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """Where ``edgekd build`` keeps INT8 calibration ranges unless ``--cache-dir`` says otherwise."""
    return user_cache(CALIBRATION, environ)
