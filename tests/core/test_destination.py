"""Directories written whole (edgekd/core/destination.py) with real processes: modes follow the umask, a destination
that appears meanwhile is never replaced, two writers of one directory cannot both succeed, overwrite (--force)
replaces only what edgekd wrote, the refusals name what the caller says, and a SIGKILL at every durable step leaves
the old or the new content, which the next run cleans up or restores."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgekd.core.atomic import FAULT_FAIL_AT, FAULT_KILL_AT, FAULT_LOG, atomic_write_text, remove_stale_temporaries
from edgekd.core.destination import DestinationLock, Wording, atomic_directory, restore_interrupted
from edgekd.core.errors import DestinationError
from tests.helpers import fault_steps, write_steps

ROOT = Path(__file__).resolve().parents[2]

# A child process that writes ``out`` as a directory of two files (``version`` and ``data``), replacing an edgekd
# directory (one with a ``version`` file) when --force; ``hold`` makes it wait inside the body until a file appears.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edgekd.core.atomic import atomic_write_text
    from edgekd.core.destination import atomic_directory
    out, version, force, hold = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
    with atomic_directory(out, overwrite=force, owned=lambda p: (p / "version").is_file()) as tmp:
        (tmp / "data").write_text("x" * 1000)
        atomic_write_text(tmp / "version", version)
        if hold != "-":
            Path(hold + ".inside").write_text("")
            while not Path(hold).exists():
                time.sleep(0.05)
    print("done")
""")


def _writer(out: Path, version: str, force: bool = False, hold: str = "-", env=None, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    args = [sys.executable, "-c", WRITER, str(out), version, "1" if force else "0", hold]
    if not wait:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def _names(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# ----------------------------------------------------------------------------------------------- permissions


def test_new_files_and_directories_follow_the_umask(tmp_path, umask_022):
    atomic_write_text(tmp_path / "a.json", "{}")
    with atomic_directory(tmp_path / "bundle") as tmp:
        atomic_write_text(tmp / "manifest.json", "{}")
    for path, mode in ((tmp_path / "a.json", 0o644), (tmp_path / "bundle" / "manifest.json", 0o644),
                       (tmp_path / "bundle", 0o755)):
        assert path.stat().st_mode & 0o777 == mode, path


# ------------------------------------------------------------------------------------------ the destination


def test_a_directory_that_appears_meanwhile_is_not_replaced(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DestinationError, match="already exists; pass --force to replace it .or choose another --out"):
        with atomic_directory(out, wording=Wording("--out", "--force")) as tmp:
            (tmp / "new").write_text("new")
            out.mkdir()  # someone else, meanwhile
            (out / "theirs.txt").write_text("theirs")
    assert _names(out) == ["theirs.txt"] and _names(tmp_path) == ["out"]


def test_an_empty_directory_that_appears_meanwhile_is_not_replaced_either(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DestinationError, match="already exists"):
        with atomic_directory(out) as tmp:
            (tmp / "new").write_text("new")
            out.mkdir()  # a plain rename would silently replace an empty directory
    assert out.is_dir() and _names(out) == [] and _names(tmp_path) == ["out"]


def test_two_writers_of_one_directory_cannot_both_succeed(tmp_path):
    out, hold = tmp_path / "out", tmp_path / "go"
    first = _writer(out, "first", hold=str(hold), wait=False)
    try:
        deadline = time.time() + 60
        while not Path(str(hold) + ".inside").exists():
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.05)
        second = _writer(out, "second")
        assert second.returncode != 0 and "being written by another edgekd" in second.stderr, second.stderr
        assert f"pid {first.pid}" in second.stderr
    finally:
        hold.write_text("")
        stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert (out / "version").read_text() == "first"
    assert _names(tmp_path) == ["go", "go.inside", "out"]  # no lock file, no temporary left


def test_a_lock_left_by_a_killed_process_claims_nothing(tmp_path):
    out = tmp_path / "out"
    proc = _writer(out, "v1", hold=str(tmp_path / "never"), wait=False)
    deadline = time.time() + 60
    while not (tmp_path / "never.inside").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / ".out.edgekd-lock").exists() and not out.exists()
    r = _writer(out, "v2")
    assert r.returncode == 0, r.stderr
    assert (out / "version").read_text() == "v2"
    assert _names(tmp_path) == ["never.inside", "out"]  # the killed run's temporary and lock are gone


# ------------------------------------------------------------------------------------------------- --force


def _edgekd_dir(path: Path, version: str = "old") -> Path:
    path.mkdir(parents=True)
    (path / "version").write_text(version)
    (path / "data").write_text("o" * 1000)
    return path


def _is_edgekd(p: Path) -> bool:
    return (p / "version").is_file()


def test_force_replaces_a_directory_edgekd_wrote(tmp_path):
    out = _edgekd_dir(tmp_path / "out")
    with atomic_directory(out, overwrite=True, owned=_is_edgekd) as tmp:
        (tmp / "version").write_text("new")
    assert (out / "version").read_text() == "new" and _names(out) == ["version"]
    assert _names(tmp_path) == ["out"]


def test_force_refuses_a_directory_edgekd_did_not_write(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_text("precious")
    with pytest.raises(DestinationError, match="not a bundle edgekd wrote"):
        with atomic_directory(out, overwrite=True, owned=_is_edgekd, what="bundle"):
            pytest.fail("the body must not run")
    assert _names(out) == ["holiday.jpg"] and _names(tmp_path) == ["photos"]


def test_force_refuses_a_file_and_a_link(tmp_path):
    target = _edgekd_dir(tmp_path / "real")
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "file").write_text("mine")
    for name in ("link", "file"):
        with pytest.raises(DestinationError, match="a file or a link"):
            with atomic_directory(tmp_path / name, overwrite=True, owned=lambda p: True):
                pass
    assert (tmp_path / "file").read_text() == "mine" and (target / "version").read_text() == "old"


def test_force_never_replaces_a_directory_holding_an_input(tmp_path):
    parent = _edgekd_dir(tmp_path / "parent")
    source = _edgekd_dir(parent / "source")
    with pytest.raises(DestinationError, match="holds the input"):
        with atomic_directory(parent, overwrite=True, owned=lambda p: True, inputs=[source]):
            pass
    assert (source / "version").read_text() == "old"
    with pytest.raises(DestinationError, match="holds the input"):  # the input itself
        with atomic_directory(source, overwrite=True, owned=lambda p: True, inputs=[source]):
            pass


def test_force_never_replaces_the_working_directory(tmp_path, monkeypatch):
    here = _edgekd_dir(tmp_path / "here")
    monkeypatch.chdir(here)
    with pytest.raises(DestinationError, match="working directory"):
        with atomic_directory(".", overwrite=True, owned=lambda p: True):
            pass
    assert _names(here) == ["data", "version"] and _names(tmp_path) == ["here"]


# ------------------------------------------------------------------------------------ leftovers of killed runs


def test_stale_temporaries_of_dead_processes_are_removed_and_no_others(tmp_path):
    out = tmp_path / "out"
    dead, alive = _dead_pid(), os.getpid()
    stale_dir = tmp_path / f".out.edgekd-{dead}-0a1b2c3d.tmp"
    stale_dir.mkdir()
    (stale_dir / "full.onnx").write_text("half")
    live_dir = tmp_path / f".out.edgekd-{alive}-0a1b2c3d.tmp"
    live_dir.mkdir()
    for name in (".out.mine.tmp", f".other.edgekd-{dead}-0a1b2c3d.tmp", "out.txt"):
        (tmp_path / name).write_text("not edgekd's to remove")
    with atomic_directory(out) as tmp:
        (tmp / "version").write_text("v")
    assert not stale_dir.exists() and live_dir.exists()
    assert _names(tmp_path) == sorted([".out.mine.tmp", f".other.edgekd-{dead}-0a1b2c3d.tmp", "out", "out.txt",
                                       live_dir.name])
    stale_file = tmp_path / f".last.pt.edgekd-{dead}-00ff00ff.tmp"
    stale_file.write_text("half a checkpoint")
    atomic_write_text(tmp_path / "last.pt", "whole")
    assert not stale_file.exists()
    assert remove_stale_temporaries(tmp_path / "out") == []


def test_interrupted_force_is_restored_by_the_next_run_or_reader(tmp_path):
    """The state a kill between the two renames of a --force leaves: no ``out``, the old content aside."""
    out = tmp_path / "out"
    _edgekd_dir(tmp_path / ".out.edgekd-old")
    assert restore_interrupted(out) and (out / "version").read_text() == "old"
    assert _names(tmp_path) == ["out"]
    out.rename(tmp_path / ".out.edgekd-old")  # again, and this time the next run writes without --force
    with pytest.raises(DestinationError, match="already exists"):
        with atomic_directory(out):
            pass
    assert (out / "version").read_text() == "old" and _names(tmp_path) == ["out"]


def test_old_content_an_older_edgekd_left_aside_is_restored(tmp_path):
    aside = tmp_path / ".out.k2j4h5g6.old"
    _edgekd_dir(aside / "content")
    assert restore_interrupted(tmp_path / "out")
    assert (tmp_path / "out" / "version").read_text() == "old" and _names(tmp_path) == ["out"]


def _steps(log: Path) -> list:
    return [line.split(" ", 2) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("existing", [False, True], ids=["new", "force"])
def test_sigkill_at_every_durable_step_keeps_old_or_new_and_the_next_run_succeeds(tmp_path, existing):
    counting = tmp_path / "count"
    counting.mkdir()
    if existing:
        _edgekd_dir(counting / "out")
    log = tmp_path / "steps.log"
    r = _writer(counting / "out", "new", force=existing, env={FAULT_LOG: str(log)})
    assert r.returncode == 0, r.stderr
    steps = _steps(log)
    kinds = [s[1] for s in steps]
    assert kinds.count("rename") == (3 if existing else 2) and "unlock" in kinds, steps
    for n in fault_steps(steps):
        work = tmp_path / f"kill{n}"
        work.mkdir()
        if existing:
            _edgekd_dir(work / "out")
        r = _writer(work / "out", "new", force=existing, env={FAULT_KILL_AT: str(n)})
        assert r.returncode == -signal.SIGKILL, (n, steps[n - 1], r.stderr)
        out = work / "out"
        if out.exists():  # complete, old or new
            assert (out / "version").read_text() in (("old", "new") if existing else ("new",))
            assert len((out / "data").read_text()) == 1000
        elif existing:  # killed between the two renames: a reader puts the old content back
            assert restore_interrupted(out) and (out / "version").read_text() == "old", steps[n - 1]
        again = _writer(out, "new", force=True)
        assert again.returncode == 0, (n, again.stderr)
        assert (out / "version").read_text() == "new" and _names(work) == ["out"], (n, steps[n - 1], _names(work))


@pytest.mark.parametrize("code", ["ENOSPC", "EACCES"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "force"])
def test_a_failed_write_at_every_durable_step_keeps_the_old_content_and_leaves_nothing(tmp_path, existing, code):
    counting = tmp_path / "count"
    counting.mkdir()
    if existing:
        _edgekd_dir(counting / "out")
    log = tmp_path / "steps.log"
    assert _writer(counting / "out", "new", force=existing, env={FAULT_LOG: str(log)}).returncode == 0
    steps = _steps(log)
    chosen = write_steps(steps)
    assert {steps[n - 1][1] for n in chosen} == {"fsync", "rename"}, steps
    for n in chosen:
        work = tmp_path / f"fail{n}"
        work.mkdir()
        if existing:
            _edgekd_dir(work / "out")
        r = _writer(work / "out", "new", force=existing, env={FAULT_FAIL_AT: f"{n}:{code}"})
        assert r.returncode == 1 and f"Error: [Errno {getattr(errno, code)}]" in r.stderr, (n, r.stderr)
        if existing:  # the old content, in place and whole
            assert (work / "out" / "version").read_text() == "old", (n, steps[n - 1])
            assert _names(work) == ["out"], (n, steps[n - 1], _names(work))
        else:
            assert _names(work) == [], (n, steps[n - 1], _names(work))
        again = _writer(work / "out", "new", force=True)
        assert again.returncode == 0 and (work / "out" / "version").read_text() == "new", (n, again.stderr)


def test_destination_lock_is_exclusive_between_processes(tmp_path):
    out = tmp_path / "out"
    code = ("import sys; from edgekd.core.destination import DestinationLock, DestinationError\n"
            "try:\n    DestinationLock(sys.argv[1]).acquire()\nexcept DestinationError as e:\n"
            "    print(e)\n    sys.exit(3)\n")
    with DestinationLock(out):
        r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 3 and f"pid {os.getpid()}" in r.stdout, (r.stdout, r.stderr)
    r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert _names(tmp_path) == [".out.edgekd-lock"]  # never released by that process (it simply exited)
    with DestinationLock(out):  # the kernel dropped its lock: taken, and the file removed on release
        pass
    assert _names(tmp_path) == []


def test_the_refusals_name_what_the_caller_says_and_library_words_by_default(tmp_path):
    """Issue 22: the core names no command's flags; a command passes its own (--out, --force)."""
    (tmp_path / "out").mkdir()
    with pytest.raises(DestinationError, match=r"pass overwrite=True to replace it \(or choose another destination\)"):
        with atomic_directory(tmp_path / "out"):
            pass
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "input.txt").write_text("read by the command")
    with pytest.raises(DestinationError, match="which --replace would delete; choose another --to") as info:
        with atomic_directory(tmp_path / "mine", overwrite=True, owned=lambda p: True,
                              inputs=[tmp_path / "mine" / "input.txt"], wording=Wording("--to", "--replace")):
            pass
    assert "--out" not in str(info.value) and "--force" not in str(info.value)
