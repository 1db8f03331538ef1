"""The drift check: a window of frames whose exit shares follow the certificate's is flagged at most at the stated
level; a shifted one is flagged in the first complete window."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekd.device.runtime.drift import DRIFT_LEVEL, DriftMonitor, binomial_two_sided

EXPECTED = [0.3, 0.2, 0.5]


def _feed(monitor: DriftMonitor, shares, n, rng) -> list:
    results = []
    for e in rng.choice(len(shares), size=n, p=shares):
        got = monitor.add(int(e))
        if got is not None:
            results.append(got)
    return results


def test_an_unshifted_stream_is_flagged_no_more_often_than_the_level():
    windows = 300
    monitor = DriftMonitor(EXPECTED, window=200)
    results = _feed(monitor, EXPECTED, 200 * windows, np.random.default_rng(0))
    assert len(results) == windows
    rate = sum(r["flagged"] for r in results) / windows
    assert rate <= DRIFT_LEVEL + 3 * math.sqrt(DRIFT_LEVEL * (1 - DRIFT_LEVEL) / windows)
    assert monitor.state["windows"] == windows
    assert (monitor.state["message"] is None) == (not monitor.state["flagged"])


def test_a_shift_is_flagged_within_the_first_complete_window_and_says_what_to_do():
    monitor = DriftMonitor(EXPECTED, window=500)
    rng = np.random.default_rng(1)
    before = _feed(monitor, EXPECTED, 500, rng)
    assert len(before) == 1 and not before[0]["flagged"]
    after = _feed(monitor, [0.55, 0.2, 0.25], 500, rng)  # light changed: far more frames leave at exit 0
    assert len(after) == 1 and after[0]["flagged"] and after[0]["p_value"] < DRIFT_LEVEL
    assert "--record-frames" in after[0]["message"] and "--write-thresholds" in after[0]["message"]
    assert after[0]["live"][0] > 0.45


def test_before_a_window_completes_nothing_is_claimed_and_every_thins_the_stream():
    monitor = DriftMonitor(EXPECTED, window=10, every=3)
    for _ in range(27):
        assert monitor.add(0) is None
    assert monitor.state["flagged"] is None
    assert monitor.add(0) is not None  # frames 1, 4, …, 28 are counted: the 28th is the 10th


def test_two_sided_binomial_p_values():
    assert binomial_two_sided(50, 100, 0.5) == pytest.approx(1.0)
    assert binomial_two_sided(0, 100, 0.5) < 1e-20
    assert binomial_two_sided(100, 100, 0.5) < 1e-20
    assert 0.02 < binomial_two_sided(40, 100, 0.5) < 0.1  # about 0.057
