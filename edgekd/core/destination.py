"""Directories written whole, and what an output may replace.

A directory (a bundle, a run, a report) is written under a *lock* on its destination, ``.NAME.edgekd-lock``
(``flock``; the kernel drops it when its process dies, so a killed run never blocks the next one): a second edgekd
writing the same directory fails at once with a one-line error instead of both "succeeding". Its content is built in
a temporary sibling (:mod:`edgekd.core.atomic`'s naming) and renamed in when complete.

Replacing a directory (the caller's ``overwrite``, a command's ``--force``) moves the old one to
``.NAME.edgekd-old``, renames the new one in, then deletes the old one; a run killed between the two renames leaves
the old content there, and the next run on NAME (or the next :func:`restore_interrupted`, which loading a bundle
calls) puts it back. An existing directory is replaced only when the caller says edgekd wrote it (``owned``), and
never when it holds an input of the command or the working directory (:func:`check_destination`).

The one-line refusals name the destination and its override as the caller's user knows them: a :class:`Wording`
(the commands pass ``--out`` and ``--force``: :data:`edgekd.device.options.OUT_WORDING`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, List, NamedTuple, Optional

from edgekd.core.atomic import TAG, durable_step, fsync_dir, fsync_tree, pid_alive, remove_stale_temporaries, temp_name
from edgekd.core.errors import DestinationError
from edgekd.core.writable import absolute, make_parents, writable_problem

try:  # POSIX (Linux, Jetson, macOS); elsewhere the lock falls back to an O_EXCL file holding its pid
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class Wording(NamedTuple):
    """How the caller's user names a destination and the permission to replace it, for the one-line refusals: a
    command's ``--out`` and ``--force``; a library caller's keyword arguments by default."""

    option: str = "destination"
    force: str = "overwrite=True"


def _contains(outer: Path, inner: Path) -> bool:
    """``inner`` is ``outer`` or lies under it (both resolved: links followed)."""
    outer, inner = outer.resolve(), inner.resolve()
    return inner == outer or outer in inner.parents


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """``path`` is ``folder`` or lies under it, links followed (``path`` need not exist yet): an output there would
    be written into an input folder the command reads."""
    return _contains(Path(folder), absolute(path))


def _cwd() -> Optional[Path]:
    try:
        return Path.cwd()
    except OSError:  # a deleted working directory has no path
        return None


def _old_name(path: Path) -> Path:
    return path.parent / f".{path.name}{TAG}old"


def _legacy_old(path: Path) -> List[Path]:
    """Old content set aside by edgekd before its swap could be recovered: ``.NAME.XXXXXXXX.old/content``."""
    pattern = re.compile(r"\." + re.escape(path.name) + r"\.[A-Za-z0-9_]{8}\.old")
    found = []
    with contextlib.suppress(OSError):
        for name in os.listdir(path.parent):
            d = path.parent / name
            if pattern.fullmatch(name) and d.is_dir() and os.listdir(d) == ["content"]:
                found.append(d)
    return found


def check_destination(path: str | os.PathLike, *, overwrite: bool = False,
                      owned: Optional[Callable[[Path], bool]] = None, inputs: Iterable[Any] = (),
                      what: str = "directory", wording: Wording = Wording()) -> Path:
    """Check that ``path`` may be written as a new directory, or replaced when ``overwrite``; return it absolute.

    An existing ``path`` is replaced only with ``overwrite``, only when ``owned(path)`` says edgekd wrote it (a
    ``what``: a bundle, a run), never when it is a link or not a directory, and never when it holds (or is) one of
    ``inputs`` or the working directory. Raises :class:`DestinationError` naming the reason, the destination and
    its override as ``wording`` says."""
    shown = os.fspath(path)
    path = absolute(path)
    problem = writable_problem(path, directory=True)
    if problem:
        raise DestinationError(f"cannot write {wording.option} {shown}: {problem}")
    if not (path.exists() or path.is_symlink()):
        return path
    if not overwrite:
        raise DestinationError(f"{shown} already exists; pass {wording.force} to replace it (or choose another "
                               f"{wording.option})")
    for item in inputs:
        if item is not None and os.path.lexists(os.fspath(item)) and _contains(path, Path(item)):
            raise DestinationError(f"refusing to replace {shown}: it holds the input {os.fspath(item)}, which "
                                   f"{wording.force} would delete; choose another {wording.option}")
    here = _cwd()
    if here is not None and _contains(path, here):
        raise DestinationError(f"refusing to replace {shown}: it holds the working directory; choose another "
                               f"{wording.option}")
    if path.is_symlink() or not path.is_dir():
        raise DestinationError(f"refusing to replace {shown}: it is not a {what} edgekd wrote (a file or a link); "
                               f"remove it yourself or choose another {wording.option}")
    if owned is None or not owned(path):
        raise DestinationError(f"refusing to replace {shown}: it is not a {what} edgekd wrote, and {wording.force} "
                               f"replaces only those; remove it yourself or choose another {wording.option}")
    return path


class DestinationLock:
    """An exclusive claim on writing ``path``: the file ``.NAME.edgekd-lock`` beside it, ``flock``-ed.

    The kernel releases the lock when its process dies, so a lock file a killed run left behind claims nothing;
    the next holder removes it when done. Taking a lock another live process holds raises :class:`DestinationError`
    at once (edgekd runs unattended: it does not wait). ``shown`` is how the refusals name ``path``, ``wording``
    the option to choose instead."""

    def __init__(self, path: str | os.PathLike, shown: Optional[str] = None, wording: Wording = Wording()):
        self.path = absolute(path)
        self.shown = shown or os.fspath(path)
        self.wording = wording
        self.file = self.path.parent / f".{self.path.name}{TAG}lock"
        self.fd: Optional[int] = None

    def _busy(self, pid: str) -> DestinationError:
        who = f"pid {pid}" if pid else "another process"
        return DestinationError(f"{self.shown} is being written by another edgekd ({who}); wait for it to finish "
                                f"or choose another {self.wording.option}")

    def acquire(self) -> DestinationLock:
        problem = writable_problem(self.path, directory=True)
        if problem:
            raise DestinationError(f"cannot write {self.shown}: {problem}")
        make_parents(self.path)
        while True:
            try:
                fd = self._open()
            except PermissionError:
                raise DestinationError(f"cannot write {self.shown}: permission denied in {self.path.parent}") from None
            if fd is None:
                continue
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            return self

    def _open(self) -> Optional[int]:
        """The locked descriptor, None to retry (the file was replaced meanwhile); raises when busy."""
        if fcntl is None:  # pragma: no cover - no flock: an O_EXCL file with the owner's pid
            try:
                return os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                pid = self._owner()
                if pid.isdigit() and not pid_alive(int(pid)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.file)
                    return None
                raise self._busy(pid) from None
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # a filesystem without locks: go on
                return fd
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise self._busy(self._owner()) from None
            raise
        try:  # its previous holder may have removed the file between our open and our flock: then retry
            mine, now = os.fstat(fd), os.stat(self.file)
            if (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
        return None

    def _owner(self) -> str:
        with contextlib.suppress(OSError):
            return self.file.read_text().strip()
        return ""

    def release(self) -> None:
        if self.fd is None:
            return
        durable_step("unlock", self.file)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.file)  # while still holding it: whoever opened the old file retries (see _open)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> DestinationLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _recover(path: Path) -> None:
    """Under the destination's lock: finish or undo an interrupted replacement of ``path``, remove stale temporaries.

    ``.NAME.edgekd-old`` with no ``path`` is a replacement killed between its two renames: the old content goes
    back. With ``path`` present the new content is in place and only the clean-up was left: it is done now."""
    old = _old_name(path)
    if old.exists():
        if os.path.lexists(path):
            durable_step("remove", old)
            shutil.rmtree(old, ignore_errors=True)
        else:
            durable_step("rename", path)
            os.rename(old, path)
            fsync_dir(path.parent)
    if not os.path.lexists(path):
        legacy = _legacy_old(path)
        if len(legacy) == 1:  # one unambiguous candidate left by an older edgekd
            os.rename(legacy[0] / "content", path)
            shutil.rmtree(legacy[0], ignore_errors=True)
    remove_stale_temporaries(path)


def restore_interrupted(path: str | os.PathLike) -> bool:
    """Put back the content an interrupted replacement left aside at ``.NAME.edgekd-old``, if ``path`` is
    missing and no other edgekd is writing it. Returns whether ``path`` exists now. Never raises for lack of rights."""
    path = absolute(path)
    if os.path.lexists(path) or not (_old_name(path).exists() or _legacy_old(path)):
        return os.path.lexists(path)
    try:
        with DestinationLock(path):
            _recover(path)
    except (DestinationError, OSError):
        pass
    return os.path.lexists(path)


def tidy(path: str | os.PathLike) -> None:
    """What the next write of ``path`` would clean, now: an interrupted replacement is finished or undone, stale
    temporaries and a lock file no live process holds are removed. Does nothing while another edgekd writes
    ``path``, or where this process may not write."""
    path = absolute(path)
    if not path.parent.is_dir():
        return
    try:
        with DestinationLock(path):
            _recover(path)
    except (DestinationError, OSError):
        pass


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, raising FileExistsError if ``dst`` exists, even an empty directory (which a plain
    rename would silently replace): atomically with Linux's renameat2(RENAME_NOREPLACE), else check then rename."""
    fn = _renameat2()
    if fn is not None:
        import ctypes

        if fn(-100, os.fsencode(str(src)), -100, os.fsencode(str(dst)), 1) == 0:  # AT_FDCWD, RENAME_NOREPLACE
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EPERM):  # not supported by this kernel or filesystem
            raise OSError(err, os.strerror(err), str(src))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


_RENAMEAT2: List[Any] = []


def _renameat2() -> Any:
    if not _RENAMEAT2:
        fn = None
        if sys.platform.startswith("linux"):
            with contextlib.suppress(Exception):
                import ctypes

                fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
        _RENAMEAT2.append(fn)
    return _RENAMEAT2[0]


def _make_temp_dir(path: Path) -> Path:
    while True:
        tmp = path.parent / temp_name(path.name)
        try:
            os.mkdir(tmp, 0o777)  # the umask applies: the result looks like any mkdir'ed directory
            return tmp
        except FileExistsError:
            continue


def _commit_dir(tmp: Path, path: Path, shown: str, check: Callable[[], Any]) -> None:
    """Put ``tmp`` at ``path``: a plain rename when ``path`` is absent, else the recoverable two-rename swap.
    ``check`` repeats :func:`check_destination`: ``path`` may have appeared or changed while the content was
    written (by something that does not take edgekd's lock)."""
    durable_step("fsync", tmp)
    fsync_tree(tmp)
    if not os.path.lexists(path):
        durable_step("rename", path)
        try:
            _rename_noreplace(tmp, path)
        except FileExistsError:
            check()  # raises unless overwrite may replace what appeared
            _commit_dir(tmp, path, shown, check)
            return
        fsync_dir(path.parent)
        return
    check()
    old = _old_name(path)
    durable_step("rename", old)
    os.rename(path, old)
    try:
        durable_step("rename", path)
        _rename_noreplace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(old, path)  # put the old content back
        raise
    fsync_dir(path.parent)
    durable_step("remove", old)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False,
                     owned: Optional[Callable[[Path], bool]] = None, inputs: Iterable[Any] = (),
                     what: str = "directory", wording: Wording = Wording()) -> Iterator[Path]:
    """Yield a temporary directory; on success it becomes ``path``, on any error it is deleted.

    ``path`` is locked for the whole time (:class:`DestinationLock`): a second edgekd writing it fails at once.
    Before the body runs, an interrupted earlier replacement of ``path`` is recovered and stale temporaries are
    removed; :func:`check_destination` (``overwrite``, ``owned``, ``inputs``) runs before the body and again at
    rename time, so a ``path`` that appeared meanwhile is never replaced without ``overwrite``. An existing
    ``path`` is replaced only after the new content is complete (see the module docstring for the swap).
    """
    shown = os.fspath(path)
    inputs = tuple(inputs)

    def check() -> Path:
        return check_destination(shown, overwrite=overwrite, owned=owned, inputs=inputs, what=what, wording=wording)

    path = check()
    make_parents(path)
    with DestinationLock(path, shown, wording):
        _recover(path)
        check()
        tmp = _make_temp_dir(path)
        try:
            yield tmp
            _commit_dir(tmp, path, shown, check)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
