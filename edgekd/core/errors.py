"""User-facing errors.

Anything a user can cause (a bad path, a malformed file, an impossible option) raises :class:`EdgekdError` with a
one-line message. The CLI turns it into ``error: <message>`` and a non-zero exit status instead of a traceback.
"""

from __future__ import annotations


class EdgekdError(Exception):
    """An expected failure with a message meant for the user (one line, names the offending file or option)."""


class DataError(EdgekdError):
    """The data a user pointed at is missing, malformed or inconsistent."""


class CheckpointError(EdgekdError):
    """A checkpoint cannot be read or does not describe an edgekd model."""


class ConfigError(EdgekdError):
    """An option, config file or ``--set`` override is invalid."""


class DestinationError(EdgekdError):
    """An output cannot be written where asked: it cannot be written at all, it exists (and may not be replaced), is
    not edgekd's to replace, holds an input, or another edgekd process is writing it."""
