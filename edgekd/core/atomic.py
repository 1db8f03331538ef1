"""Atomic writes: a file or directory appears complete under its final name, or not at all.

Everything edgekd writes that a user would hate to lose half of (checkpoints, bundles, caches, manifests, run logs)
goes through here: write to a temporary sibling, flush and fsync, then rename onto the final name. What a kill -9
(or a power cut) at any moment leaves behind is either the old content or the new, never a mix, and what it leaves
on the side is named so that the next edgekd run recognises and removes (or restores) it:

* temporaries are ``.NAME.edgekd-PID-HEX.tmp`` (a video keeps its extension after ``.tmp``): the next write of the
  same NAME removes those whose process is dead, and nothing else;
* a directory is written under a *lock* on its destination, ``.NAME.edgekd-lock`` (``flock``; the kernel drops it
  when its process dies, so a killed run never blocks the next one): a second edgekd writing the same directory
  fails at once with a one-line error instead of both "succeeding";
* replacing a directory (``--force``) moves the old one to ``.NAME.edgekd-old``, renames the new one in, then deletes
  the old one; a run killed between the two renames leaves the old content there, and the next run on NAME (or the
  next :func:`restore_interrupted`, which loading a bundle calls) puts it back;
* ``--force`` replaces only what edgekd wrote (``owned``) and never a directory that holds an input of the command or
  the working directory (:func:`check_destination`).

New files follow the process umask, as any tool's do; a replaced file keeps the permission bits it had.

Fault injection (tests): ``EDGEKD_FAULT_KILL_AT=N`` makes the process SIGKILL itself just before its Nth durable step
(an fsync, a rename, the removal of a replaced directory, the release of a lock), and ``EDGEKD_FAULT_LOG=FILE``
appends one line per step (``N what path``), so a test can first count a command's steps, then kill it at each.
``EDGEKD_FAULT_FAIL_AT=N[:ERRNO]`` makes the Nth durable step fail instead, with the ``OSError`` a full disk
(``ENOSPC``, the default) or a refused write (``EACCES``) raises there; tests use it on the fsync and rename steps,
the ones a real write can fail at.
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
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, List, Optional

from edgekd.core.errors import EdgekdError

try:  # POSIX (Linux, Jetson, macOS); elsewhere the lock falls back to an O_EXCL file holding its pid
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FAULT_KILL_AT = "EDGEKD_FAULT_KILL_AT"
FAULT_LOG = "EDGEKD_FAULT_LOG"
FAULT_FAIL_AT = "EDGEKD_FAULT_FAIL_AT"
_TAG = ".edgekd-"  # every name this module puts beside a destination has it: .NAME.edgekd-…
_steps = 0


class DestinationError(EdgekdError):
    """An output cannot be written where asked: it exists (without --force), is not edgekd's to replace, holds an
    input, or another edgekd process is writing it."""


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


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets us open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (files written by other libraries, e.g. numpy, are not)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(dirpath))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process: alive
        return True
    return True


def _temp_name(name: str, keep_suffix: str = "") -> str:
    return f".{name}{_TAG}{os.getpid()}-{secrets.token_hex(4)}.tmp{keep_suffix}"


def _temp_pattern(name: str) -> re.Pattern:
    return re.compile(r"\." + re.escape(name) + re.escape(_TAG) + r"(\d+)-[0-9a-f]+\.tmp(\.[A-Za-z0-9]+)?")


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
        if not match or _pid_alive(int(match.group(1))):
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
        tmp = path.parent / _temp_name(path.name, keep_suffix)
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
    _fsync_dir(path.parent)


# ------------------------------------------------------------------------------------------ can it be written?


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
    path = _absolute(path)
    if os.path.isdir(path) and not directory:
        return f"{path} is a directory; give a file name"
    if os.path.lexists(path) and not os.path.isdir(path) and directory:
        return None  # an existing file where a directory goes: --force rules (check_destination) say why
    base = _nearest_existing(path.parent)
    if not os.path.isdir(base):
        return f"{base} is not a directory"
    problem = _why_not_writable(base)
    if problem is None and directory and os.path.isdir(path) and not os.path.islink(path):
        problem = _why_not_writable(path)  # written into (a run's --out), or emptied when replaced (--force)
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


# ------------------------------------------------------------------------------------------------ directories


def _absolute(path: str | os.PathLike) -> Path:
    """``path`` made absolute without resolving its last component (a link stays a link), ``.``/``..`` removed."""
    return Path(os.path.abspath(os.fspath(path)))


def _contains(outer: Path, inner: Path) -> bool:
    """``inner`` is ``outer`` or lies under it (both resolved: links followed)."""
    outer, inner = outer.resolve(), inner.resolve()
    return inner == outer or outer in inner.parents


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """``path`` is ``folder`` or lies under it, links followed (``path`` need not exist yet): an output there would
    be written into an input folder the command reads."""
    return _contains(Path(folder), _absolute(path))


def _cwd() -> Optional[Path]:
    try:
        return Path.cwd()
    except OSError:  # a deleted working directory has no path
        return None


def _old_name(path: Path) -> Path:
    return path.parent / f".{path.name}{_TAG}old"


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
                      what: str = "directory") -> Path:
    """Check that ``path`` may be written as a new directory, or replaced when ``overwrite``; return it absolute.

    An existing ``path`` is replaced only with ``overwrite``, only when ``owned(path)`` says edgekd wrote it (a
    ``what``: a bundle, a run), never when it is a link or not a directory, and never when it holds (or is) one of
    ``inputs`` or the working directory. Raises :class:`DestinationError` naming the reason."""
    shown = os.fspath(path)
    path = _absolute(path)
    problem = writable_problem(path, directory=True)
    if problem:
        raise DestinationError(f"cannot write --out {shown}: {problem}")
    if not (path.exists() or path.is_symlink()):
        return path
    if not overwrite:
        raise DestinationError(f"{shown} already exists; pass --force to replace it (or choose another --out)")
    for item in inputs:
        if item is not None and os.path.lexists(os.fspath(item)) and _contains(path, Path(item)):
            raise DestinationError(f"refusing to replace {shown}: it holds the input {os.fspath(item)}, which "
                                   "--force would delete; choose another --out")
    here = _cwd()
    if here is not None and _contains(path, here):
        raise DestinationError(f"refusing to replace {shown}: it holds the working directory; choose another --out")
    if path.is_symlink() or not path.is_dir():
        raise DestinationError(f"refusing to replace {shown}: it is not a {what} edgekd wrote (a file or a link); "
                               "remove it yourself or choose another --out")
    if owned is None or not owned(path):
        raise DestinationError(f"refusing to replace {shown}: it is not a {what} edgekd wrote, and --force replaces "
                               "only those; remove it yourself or choose another --out")
    return path


class DestinationLock:
    """An exclusive claim on writing ``path``: the file ``.NAME.edgekd-lock`` beside it, ``flock``-ed.

    The kernel releases the lock when its process dies, so a lock file a killed run left behind claims nothing;
    the next holder removes it when done. Taking a lock another live process holds raises :class:`DestinationError`
    at once (edgekd runs unattended: it does not wait)."""

    def __init__(self, path: str | os.PathLike, shown: Optional[str] = None):
        self.path = _absolute(path)
        self.shown = shown or os.fspath(path)
        self.file = self.path.parent / f".{self.path.name}{_TAG}lock"
        self.fd: Optional[int] = None

    def _busy(self, pid: str) -> DestinationError:
        who = f"pid {pid}" if pid else "another process"
        return DestinationError(f"{self.shown} is being written by another edgekd ({who}); wait for it to finish "
                                "or choose another --out")

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
                if pid.isdigit() and not _pid_alive(int(pid)):
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
            _fsync_dir(path.parent)
    if not os.path.lexists(path):
        legacy = _legacy_old(path)
        if len(legacy) == 1:  # one unambiguous candidate left by an older edgekd
            os.rename(legacy[0] / "content", path)
            shutil.rmtree(legacy[0], ignore_errors=True)
    remove_stale_temporaries(path)


def restore_interrupted(path: str | os.PathLike) -> bool:
    """Put back the content an interrupted ``--force`` replacement left aside at ``.NAME.edgekd-old``, if ``path`` is
    missing and no other edgekd is writing it. Returns whether ``path`` exists now. Never raises for lack of rights."""
    path = _absolute(path)
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
    path = _absolute(path)
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
        tmp = path.parent / _temp_name(path.name)
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
    _fsync_tree(tmp)
    if not os.path.lexists(path):
        durable_step("rename", path)
        try:
            _rename_noreplace(tmp, path)
        except FileExistsError:
            check()  # raises unless --force may replace what appeared
            _commit_dir(tmp, path, shown, check)
            return
        _fsync_dir(path.parent)
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
    _fsync_dir(path.parent)
    durable_step("remove", old)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False,
                     owned: Optional[Callable[[Path], bool]] = None, inputs: Iterable[Any] = (),
                     what: str = "directory") -> Iterator[Path]:
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
        return check_destination(shown, overwrite=overwrite, owned=owned, inputs=inputs, what=what)

    path = check()
    make_parents(path)
    with DestinationLock(path, shown):
        _recover(path)
        check()
        tmp = _make_temp_dir(path)
        try:
            yield tmp
            _commit_dir(tmp, path, shown, check)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
