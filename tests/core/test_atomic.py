"""Atomic file writes (edgekd/core/atomic.py): a replaced file keeps its mode, a pending file replaces its path only
when committed, and every durable step is counted for fault injection."""

from __future__ import annotations

import json
import os

import pytest

from edgekd.core import atomic
from edgekd.core.atomic import FAULT_LOG, PendingFile, atomic_write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _names(folder) -> list:
    return sorted(p.name for p in folder.iterdir())


def _steps(log) -> list:
    return [line.split(" ", 2) for line in log.read_text().splitlines()]


def test_a_replaced_file_keeps_its_mode(tmp_path, umask_022):
    path = tmp_path / "manifest.json"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640


def test_a_pending_file_replaces_its_path_only_on_commit(tmp_path, umask_022):
    path = tmp_path / "log.jsonl"
    path.write_text("yesterday\n")
    pending = PendingFile(path)
    pending.open().write("today\n")
    assert path.read_text() == "yesterday\n"
    pending.commit()
    assert path.read_text() == "today\n" and path.stat().st_mode & 0o777 == 0o644
    pending = PendingFile(path)
    pending.open().write("partial")
    pending.discard()
    assert path.read_text() == "today\n" and _names(tmp_path) == ["log.jsonl"]
    video = PendingFile(tmp_path / "out.mp4", keep_suffix=True)
    assert video.tmp.suffix == ".mp4" and video.tmp.name.startswith(".out.mp4.edgekd-")
    video.discard()


def test_fault_log_counts_steps(tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv(FAULT_LOG, str(log))
    before = atomic._steps
    atomic_write_text(tmp_path / "x.json", json.dumps({"a": 1}))
    assert [s[1] for s in _steps(log)] == ["fsync", "rename"] and atomic._steps == before + 2
