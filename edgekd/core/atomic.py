"""Atomic file writes: a file appears complete under its final name, or not at all.

Everything edgekd writes that a user would hate to lose half of (checkpoints, caches, manifests, run logs) goes
through here: write to a temporary sibling, flush and fsync, then rename onto the final name. What a kill -9 (or a
power cut) at any moment leaves behind is either the old content or the new, never a mix, and what it leaves on the
side is named so that the next edgekd run recognises and removes it: temporaries are ``.NAME.edgekd-PID-HEX.tmp``
(a video keeps its extension after ``.tmp``); the next write of the same NAME removes those whose process is dead,
and nothing else. New files follow the process umask, as any tool's do; a replaced file keeps the permission bits
it had.

Directories (a bundle, a run, a report) are written whole by :mod:`edgekd.core.destination`, which also decides
what may be replaced; whether a path can be written at all is :mod:`edgekd.core.writable`'s question.

Fault injection (tests): ``EDGEKD_FAULT_KILL_AT=N`` makes the process SIGKILL itself just before its Nth durable step
(an fsync, a rename, the removal of a replaced directory, the release of a lock), and ``EDGEKD_FAULT_LOG=FILE``
appends one line per step (``N what path``), so a test can first count a command's steps, then kill it at each.
``EDGEKD_FAULT_FAIL_AT=N[:ERRNO]`` makes the Nth durable step fail instead, with the ``OSError`` a full disk
(``ENOSPC``, the default) or a refused write (``EACCES``) raises there; tests use it on the fsync and rename steps,
the ones a real write can fail at. Every durable step of both modules is counted by :func:`durable_step`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, List, Optional

from edgekd.core.errors import DestinationError
from edgekd.core.writable import make_parents, writable_problem

FAULT_KILL_AT = "EDGEKD_FAULT_KILL_AT"
FAULT_LOG = "EDGEKD_FAULT_LOG"
FAULT_FAIL_AT = "EDGEKD_FAULT_FAIL_AT"
TAG = ".edgekd-"  # every name edgekd puts beside a destination has it: .NAME.edgekd-…
_steps = 0


# ------------------------------------------------------------------------------------------------ small helpers


def durable_step(what: str, path: str | os.PathLike) -> None:
    """Count one durable step (an fsync, a rename, a removal) and let the fault-injection variables act on it."""
    global _steps
    _steps += 1
    log = os.environ.get(FAULT_LOG)
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, f"{_steps} {what} {path}\n".encode())
        finally:
            os.close(fd)
    if os.environ.get(FAULT_KILL_AT) == str(_steps):
        os.kill(os.getpid(), signal.SIGKILL)
    at, _, name = os.environ.get(FAULT_FAIL_AT, "").partition(":")
    if at == str(_steps):
        code = getattr(errno, name or "ENOSPC")
        raise OSError(code, f"{os.strerror(code)} (injected)", os.fspath(path))


def fsync_dir(path: Path) -> None:
    """fsync the directory ``path``, so that the names just created or renamed in it survive a power cut."""
    with contextlib.suppress(OSError):  # not every filesystem lets us open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (files written by other libraries, e.g. numpy, are not)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_dir(Path(dirpath))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (another user's counts as running): its temporaries and locks are kept."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process: alive
        return True
    return True


def temp_name(name: str, keep_suffix: str = "") -> str:
    """A fresh temporary sibling name for ``name``: ``.NAME.edgekd-PID-HEX.tmp`` (+ ``keep_suffix``)."""
    return f".{name}{TAG}{os.getpid()}-{secrets.token_hex(4)}.tmp{keep_suffix}"


def _temp_pattern(name: str) -> re.Pattern:
    return re.compile(r"\." + re.escape(name) + re.escape(TAG) + r"(\d+)-[0-9a-f]+\.tmp(\.[A-Za-z0-9]+)?")


def remove_stale_temporaries(path: str | os.PathLike) -> List[Path]:
    """Remove the temporaries of ``path`` (files or directories named ``.NAME.edgekd-PID-HEX.tmp``) whose process is
    dead: what a killed edgekd left beside ``path``. Others' files and live processes' temporaries are left alone.
    Returns what was removed."""
    path = Path(path)
    pattern, removed = _temp_pattern(path.name), []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if not match or pid_alive(int(match.group(1))):
            continue
        stale = path.parent / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                stale.unlink()
        removed.append(stale)
    return removed


def _create_temp_file(path: Path, keep_suffix: str = "") -> Path:
    """Create an empty temporary sibling of ``path`` with the umask's mode (or the mode ``path`` has now)."""
    mode = (path.stat().st_mode & 0o7777) if path.is_file() else None
    while True:
        tmp = path.parent / temp_name(path.name, keep_suffix)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any open()
        except FileExistsError:
            continue
        try:
            if mode is not None:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return tmp


def _sync_file(tmp: Path) -> None:
    """fsync ``tmp`` (one durable step)."""
    durable_step("fsync", tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit_file(tmp: Path, path: Path, *, synced: bool = False) -> None:
    """fsync ``tmp`` (unless ``synced``) and rename it onto ``path`` (durable steps), then fsync the directory."""
    if not synced:
        _sync_file(tmp)
    durable_step("rename", path)
    os.replace(tmp, path)
    fsync_dir(path.parent)


# ----------------------------------------------------------------------------------------------------- files


def atomic_write(path: str | os.PathLike, writer: Callable[[Any], None], *, binary: bool = True) -> None:
    """Call ``writer(fileobj)`` on a temporary file next to ``path``, then rename it onto ``path``."""
    path = Path(path)
    make_parents(path)
    remove_stale_temporaries(path)
    tmp = _create_temp_file(path)
    try:
        with open(tmp, "wb" if binary else "w") as f:
            writer(f)
            f.flush()
        _commit_file(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class PendingFile:
    """A file written over time (a run's log or video) under a temporary sibling name, renamed onto ``path`` by
    :meth:`commit`: until then ``path`` keeps whatever it held, and a kill leaves it so.

    ``keep_suffix`` keeps ``path``'s extension at the end of the temporary name, for writers (OpenCV's) that choose
    the container by it. :meth:`open` gives a text or binary file object on the temporary. :meth:`sync` closes it
    and makes it durable, so that several pending files can all be made durable before any is renamed;
    :meth:`commit` (which syncs first when needed) and :meth:`discard` end it. After a failed write the owner
    discards, never commits: a cut file must not replace a whole one. Whatever fails in :meth:`sync` or
    :meth:`commit` removes the temporary before it is raised (a full disk stays no fuller than it was)."""

    def __init__(self, path: str | os.PathLike, *, keep_suffix: bool = False):
        self.path = Path(path)
        problem = writable_problem(self.path)
        if problem:
            raise DestinationError(f"cannot write {self.path}: {problem}")
        make_parents(self.path)
        remove_stale_temporaries(self.path)
        self.tmp = _create_temp_file(self.path, self.path.suffix if keep_suffix else "")
        self.file: Optional[IO] = None
        self.done = False
        self.synced = False

    def open(self, mode: str = "w") -> IO:
        self.file = open(self.tmp, mode)
        return self.file

    def _close(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()  # flushes what is buffered: a full disk can fail here

    def sync(self) -> None:
        """Close the file and fsync the temporary (once); on failure the temporary is removed and the error raised."""
        if self.done or self.synced:
            return
        try:
            self._close()
            _sync_file(self.tmp)
        except BaseException:
            self.discard()
            raise
        self.synced = True

    def commit(self) -> None:
        """Put the temporary file under its final name (once; later calls do nothing)."""
        if self.done:
            return
        self.sync()
        try:
            _commit_file(self.tmp, self.path, synced=True)
        except BaseException:
            self.discard()
            raise
        self.done = True

    def discard(self) -> None:
        """Remove the temporary file; ``path`` stays as it was. Never raises for the file's own write errors (a
        close that fails to flush onto a full disk): the temporary goes regardless."""
        self.done = True
        with contextlib.suppress(OSError):
            self._close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)
