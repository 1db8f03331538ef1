"""`edgekd plot` on hostile report files: one line and exit 2, quickly (issue 24, item 9): nesting 100,000 deep
(a RecursionError), a 400-digit number (an OverflowError), a report larger than any profile writes (a 100 MB one
took 473 s), a sweep of more points than a profile writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from tests.device.profile.test_plots import _report  # noqa: E402  (a report as profile writes it)

ROOT = Path(__file__).resolve().parents[3]


def _plot(report: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd", "plot", str(report)], cwd=str(report.parent),
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _one_line(r: subprocess.CompletedProcess, needle: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr[-3000:])
    assert needle in lines[0], lines[0]


def test_a_report_as_profile_writes_it_still_plots(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_report()))
    r = _plot(report)
    assert r.returncode == 0 and (tmp_path / "tradeoff.png").exists(), r.stderr[-2000:]


def test_a_report_nested_too_deep_is_one_line(tmp_path):
    report = tmp_path / "report.json"
    report.write_text("[" * 100_000 + "]" * 100_000)
    _one_line(_plot(report), "report.json")


def test_a_400_digit_number_is_one_line(tmp_path):
    data = _report()
    data["bundles"][0]["sweep"][0]["mean_latency_ms"] = 10 ** 400
    report = tmp_path / "report.json"
    report.write_text(json.dumps(data))
    _one_line(_plot(report), "report.json")


def test_a_report_larger_than_any_profile_writes_is_refused_before_it_is_read(tmp_path):
    report = tmp_path / "report.json"
    with open(report, "w") as f:
        f.write(json.dumps(_report()))
        f.write(" " * (40 << 20))  # valid JSON still: only its size is wrong
    start = time.monotonic()
    _one_line(_plot(report), "report.json")
    assert time.monotonic() - start < 60


def test_a_sweep_of_more_points_than_a_profile_writes_is_refused(tmp_path):
    data = _report()
    point = data["bundles"][0]["sweep"][0]
    data["bundles"][0]["sweep"] = [dict(point) for _ in range(20_001)]
    data["bundles"][0]["pareto"] = [0]
    report = tmp_path / "report.json"
    report.write_text(json.dumps(data))
    _one_line(_plot(report), "points")


def test_glyphs_the_font_lacks_are_one_warning_line(tmp_path):
    """Issue 24, noise: matplotlib warned twice per missing glyph and layout pass, two lines each."""
    data = _report()
    data["bundles"][0]["name"] = data["bundles"][0]["label"] = "模型\U0001F600"
    report = tmp_path / "report.json"
    report.write_text(json.dumps(data))
    r = _plot(report)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 0 and len(lines) <= 1, r.stderr[-2000:]
    assert all(ln.startswith("warning: ") for ln in lines), lines
