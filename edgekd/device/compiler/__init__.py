"""``edgekd build``: compile an exported bundle for a precision and a device target (device side, no torch).

``build_bundle``, ``BuildOptions`` and ``BuildError`` live in :mod:`edgekd.device.compiler.builder`; they are loaded
on first use (PEP 562), so that importing one light module of this package (e.g.
:mod:`~edgekd.device.compiler.targets` for ``edgekd targets``) does not load the builder and its dependencies.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BuildError", "BuildOptions", "build_bundle"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from edgekd.device.compiler import builder

        return getattr(builder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
