"""The per-user cache root and the calibration cache's default (issue 22): beside the engine cache, never the
working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.device.options import calibration_cache_dir
from edgekd.device.user_cache import CACHE_ENV, cache_root, calibration_cache, user_cache


def test_the_root_is_edgekd_cache_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root({}) == tmp_path / "home" / ".cache" / "edgekd"
    assert cache_root({"XDG_CACHE_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "edgekd"
    assert cache_root({"XDG_CACHE_HOME": "relative/dir"}) == tmp_path / "home" / ".cache" / "edgekd"  # XDG: ignored
    both = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), CACHE_ENV: str(tmp_path / "mine")}
    assert cache_root(both) == tmp_path / "mine"
    assert cache_root({CACHE_ENV: "~/c"}) == tmp_path / "home" / "c"


@pytest.mark.parametrize("off", ["", "off", "None", " 0 ", "false", "no"])
def test_edgekd_cache_off_keeps_no_cache(off):
    assert cache_root({CACHE_ENV: off}) is None
    assert calibration_cache({CACHE_ENV: off}) is None


def test_the_calibration_cache_is_a_folder_of_the_root(tmp_path):
    env = {CACHE_ENV: str(tmp_path)}
    assert calibration_cache(env) == user_cache("calibration", env) == tmp_path / "calibration"


def test_builds_default_is_the_per_user_cache_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert calibration_cache_dir(True) == tmp_path / "cache" / "calibration"
    monkeypatch.setenv(CACHE_ENV, "off")
    assert calibration_cache_dir(True) is None
    for none in (None, False, "", "off"):
        assert calibration_cache_dir(none) is None
    assert calibration_cache_dir("here") == Path("here")
