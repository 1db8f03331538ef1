"""Whether a path can be written at all, asked before a command's work so that a long run never ends unable to
write its result: a regular file where a folder of the path must be, a read-only or permission-denied folder, a
directory where a file must go. Each refusal is one line (:class:`~edgekd.core.errors.DestinationError`) whose
wording the caller supplies (the option it names)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

from edgekd.core.errors import DestinationError


def absolute(path: str | os.PathLike) -> Path:
    """``path`` made absolute without resolving its last component (a link stays a link), ``.``/``..`` removed."""
    return Path(os.path.abspath(os.fspath(path)))


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (anything: a file, a directory, a link)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def _why_not_writable(folder: Path) -> Optional[str]:
    """Why this process cannot create entries in the existing directory ``folder``, or None when it can."""
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    with contextlib.suppress(OSError, AttributeError):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only file system"
    return f"permission denied in {folder}"


def writable_problem(path: str | os.PathLike, *, directory: bool = False) -> Optional[str]:
    """Why ``path`` cannot be written as a new (or replacement) file, or a directory with ``directory``; None when
    nothing stands in the way that can be seen before writing: a regular file where a folder of the path must be
    (``/etc/passwd/x``), a read-only or permission-denied folder, a directory where a file must go (or a file where
    a directory must, for ``directory``). Folders that do not exist yet would be created, so their nearest existing
    ancestor is what must be writable. Checked before a command's work, so that a long run never ends unable to
    write its result; the write itself still reports what it meets, as one line."""
    path = absolute(path)
    if os.path.isdir(path) and not directory:
        return f"{path} is a directory; give a file name"
    if os.path.lexists(path) and not os.path.isdir(path) and directory:
        return None  # an existing file where a directory goes: the destination's rules (check_destination) say why
    base = _nearest_existing(path.parent)
    if not os.path.isdir(base):
        return f"{base} is not a directory"
    problem = _why_not_writable(base)
    if problem is None and directory and os.path.isdir(path) and not os.path.islink(path):
        problem = _why_not_writable(path)  # written into (a run's folder), or emptied when replaced
    if problem is None and not directory and os.path.isfile(path) and not os.access(path, os.W_OK):
        problem = f"{path} is read-only (its permissions or attributes forbid writing it); it is not replaced"
    return problem


def check_writable(path: Optional[str | os.PathLike], option: str, *, directory: bool = False) -> None:
    """Raise a one-line :class:`DestinationError` naming ``option`` when :func:`writable_problem` finds one (None:
    the option was not given)."""
    if path is None:
        return
    problem = writable_problem(path, directory=directory)
    if problem:
        raise DestinationError(f"cannot write {option} {os.fspath(path)}: {problem}")


def make_parents(path: Path, what: str = "") -> None:
    """``mkdir -p`` the folder of ``path``; what stops it (a file in the way, no permission, a read-only file
    system) is a one-line :class:`DestinationError` instead of an OSError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = writable_problem(path, directory=True) or (exc.strerror or str(exc))
        raise DestinationError(f"cannot write {what + ' ' if what else ''}{path}: {problem}") from None
