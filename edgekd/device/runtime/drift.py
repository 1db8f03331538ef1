"""Has the scene drifted from the one early exit was certified on? The live exit shares against the certificate's.

A certificate records, per exit, the share of its images that left there (``exit_fraction``). When light, camera or
scene change, confidences move and so do those shares, and the certificate's promise is no longer about the frames
the device sees. The monitor counts which exit answered each frame over consecutive, non-overlapping windows of
``window`` frames and tests each full window: for every exit an exact two-sided binomial test of its count against
the certified share, Bonferroni-corrected over the exits, at level ``level``. A window of frames from the certified
distribution is flagged with probability at most ``level`` (independent frames assumed: consecutive video frames are
not, so a live stream is flagged somewhat more often; ``every`` keeps every k-th frame to thin them out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from edgekd.core.stats import binomial_cdf

DRIFT_WINDOW = 500
DRIFT_LEVEL = 0.01
ADVICE = ("record frames and certify again: `edgekd run BUNDLE --source … --record-frames DIR --record-every 30`, "
          "then `edgekd profile BUNDLE --data DIR --write-thresholds`")


def binomial_two_sided(k: int, n: int, p: float) -> float:
    """Two-sided exact binomial p-value of ``k`` successes in ``n`` at rate ``p`` (twice the smaller tail, at most
    1)."""
    if n == 0:
        return 1.0
    low = binomial_cdf(k, n, p)
    high = binomial_cdf(n - k, n, 1.0 - p)  # P(X ≥ k) as the lower tail of the failures: no 1 − (1 − tiny)
    return min(1.0, 2.0 * min(low, high))


@dataclass
class DriftMonitor:
    """Feed it the exit of every frame (:meth:`add`); :attr:`state` says what the last full window showed."""

    expected: Sequence[float]  # per exit: the certified share of images leaving there
    window: int = DRIFT_WINDOW
    level: float = DRIFT_LEVEL
    every: int = 1
    counts: List[int] = field(default_factory=list)
    seen: int = 0
    windows: int = 0
    flagged_windows: int = 0
    last: Optional[Dict[str, Any]] = None

    def __post_init__(self) -> None:
        if self.window < 1 or not 0.0 < self.level < 1.0 or self.every < 1:
            raise ValueError("window ≥ 1, 0 < level < 1 and every ≥ 1")
        total = float(sum(self.expected))
        self.expected = [float(s) / total for s in self.expected] if total > 0 else list(self.expected)
        self.counts = [0] * len(self.expected)

    def add(self, exit_index: int) -> Optional[Dict[str, Any]]:
        """Count one frame's exit; when this completes a window, test it and return its :attr:`state`."""
        self.seen += 1
        if (self.seen - 1) % self.every:
            return None
        self.counts[exit_index] += 1
        if sum(self.counts) < self.window:
            return None
        n = sum(self.counts)
        p_values = [binomial_two_sided(k, n, p) for k, p in zip(self.counts, self.expected)]
        p = min(1.0, min(p_values) * len(p_values))  # Bonferroni over the exits
        flagged = p < self.level
        self.windows += 1
        self.flagged_windows += int(flagged)
        self.last = {"window": n, "level": self.level, "expected": [round(s, 4) for s in self.expected],
                     "live": [round(k / n, 4) for k in self.counts], "p_value": p, "flagged": flagged,
                     "windows": self.windows, "flagged_windows": self.flagged_windows,
                     "message": (f"exit shares moved beyond sampling (p {p:.2g} < {self.level:g} over the last {n} "
                                 f"frames): the certificate may no longer hold; {ADVICE}") if flagged else None}
        self.counts = [0] * len(self.expected)
        return self.last

    @property
    def state(self) -> Dict[str, Any]:
        """The last full window's result, or the window being filled (``flagged`` None: nothing tested yet)."""
        if self.last is not None:
            return self.last
        return {"window": self.window, "level": self.level, "expected": [round(s, 4) for s in self.expected],
                "live": None, "p_value": None, "flagged": None, "windows": 0, "flagged_windows": 0,
                "message": None}
