"""``edgekd build``: compile an exported bundle for a precision and a backend (device side, no torch)."""

from edgekd.device.compiler.builder import BuildError, build_bundle

__all__ = ["BuildError", "build_bundle"]
