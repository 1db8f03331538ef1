"""Whether a path can be written at all (edgekd/core/writable.py), asked before a command's work: the refusal names
the option the caller gives, and folders that do not exist yet are judged by their nearest existing ancestor."""

from __future__ import annotations

import os

import pytest

from edgekd.core.errors import DestinationError
from edgekd.core.writable import absolute, check_writable, make_parents, writable_problem


def test_a_new_path_under_missing_folders_is_writable_and_made(tmp_path):
    target = tmp_path / "a" / "b" / "report.json"
    assert writable_problem(target) is None and writable_problem(tmp_path / "a" / "run", directory=True) is None
    make_parents(target)
    assert target.parent.is_dir() and not target.exists()


def test_a_directory_where_a_file_goes_is_refused_naming_the_callers_option(tmp_path):
    assert writable_problem(tmp_path) == f"{tmp_path} is a directory; give a file name"
    with pytest.raises(DestinationError, match=f"cannot write --video {tmp_path}: .* is a directory"):
        check_writable(tmp_path, "--video")
    check_writable(None, "--video")  # not given: nothing to check


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes read-only files anyway")
def test_a_read_only_file_is_not_replaced(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("kept")
    path.chmod(0o444)
    assert "is read-only" in writable_problem(path)


def test_make_parents_names_what_is_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DestinationError, match="cannot write --out .*file.*is not a directory"):
        make_parents(tmp_path / "file" / "sub" / "report.json", "--out")
    assert absolute("x/../y") == absolute("y")
