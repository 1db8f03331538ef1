"""PNG plots of the early-exit trade-off, drawn with OpenCV and numpy only.

``edgekd profile`` runs on the device, where matplotlib and torch are not installed, so the two plots here are
drawn by hand: everything is laid out in final-image pixels, painted onto a canvas twice that size with
anti-aliased primitives (``cv2.LINE_AA``, sub-pixel ``shift``) and shrunk with ``cv2.INTER_AREA``, which gives
smooth lines and text. Colours follow the Okabe-Ito palette (colour-blind friendly), one per bundle, in the order
the series are given, so the same bundle has the same colour in both plots.

* :func:`tradeoff_plot`: accuracy vs mean latency per frame: the threshold sweep, its Pareto front, the fitted
  operating point, each exit answered alone, and the full graph's ensemble vote.
* :func:`exit_histogram_plot`: grouped bars of the share of frames leaving at each exit at the operating point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgekd.core.atomic import atomic_write

WIDTH, HEIGHT = 1000, 640  # final image size (px)
_SCALE = 2  # supersampling factor of the drawing canvas
_SHIFT = 4  # fractional bits of the coordinates handed to OpenCV
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_CAP = 21.0  # cap height of a glyph at fontScale 1 (px), the same for OpenCV 4's and 5's fonts
_OUTLINE_FONT = int(cv2.__version__.split(".")[0]) >= 5  # OpenCV 5 renders its fonts from outlines, 4 from strokes

# Okabe-Ito (without black, kept for ink), as BGR: blue, orange, bluish green, vermillion, reddish purple,
# sky blue, yellow.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (178, 114, 0), (0, 159, 230), (115, 158, 0), (0, 94, 213), (167, 121, 204), (233, 180, 86), (66, 228, 240))
WHITE = (255, 255, 255)
INK = (40, 40, 40)  # text, marker outlines
AXIS = (110, 110, 110)  # plot frame and tick marks
GRID = (228, 228, 228)
MUTED = (120, 120, 120)  # legend markers that explain a shape, not a bundle

TICK_SIZE, LABEL_SIZE, TITLE_SIZE, LEGEND_SIZE = 11.0, 12.0, 15.0, 11.0  # cap heights (px)
_MAX_NAME = 32  # longer bundle names are shortened in the legend


class _Canvas:
    """A white image at ``_SCALE`` x the final size, drawn on in final-pixel coordinates (floats allowed)."""

    def __init__(self, width: int = WIDTH, height: int = HEIGHT):
        self.width, self.height = width, height
        self.img = np.full((height * _SCALE, width * _SCALE, 3), 255, np.uint8)

    @staticmethod
    def _p(x: float, y: float) -> tuple[int, int]:
        """Final-pixel point to the canvas' fixed-point integer coordinates."""
        f = _SCALE * (1 << _SHIFT)
        return int(round(x * f)), int(round(y * f))

    @staticmethod
    def _t(width: float) -> int:
        """Final-pixel stroke width to a canvas thickness."""
        return max(1, int(round(width * _SCALE)))

    def line(self, p0, p1, color, width: float = 1.0) -> None:
        cv2.line(self.img, self._p(*p0), self._p(*p1), color, self._t(width), cv2.LINE_AA, _SHIFT)

    def polyline(self, points, color, width: float = 1.0, closed: bool = False) -> None:
        pts = np.array([self._p(x, y) for x, y in points], np.int32).reshape(-1, 1, 2)
        cv2.polylines(self.img, [pts], closed, color, self._t(width), cv2.LINE_AA, _SHIFT)

    def polygon(self, points, fill, outline=None, width: float = 1.0) -> None:
        pts = np.array([self._p(x, y) for x, y in points], np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(self.img, [pts], fill, cv2.LINE_AA, _SHIFT)
        if outline is not None:
            cv2.polylines(self.img, [pts], True, outline, self._t(width), cv2.LINE_AA, _SHIFT)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill=None, outline=None, width: float = 1.0) -> None:
        corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        if fill is not None:
            self.polygon(corners, fill)
        if outline is not None:
            self.polyline(corners, outline, width, closed=True)

    def circle(self, x: float, y: float, r: float, fill, outline=None, width: float = 1.0) -> None:
        radius = int(round(r * _SCALE * (1 << _SHIFT)))
        cv2.circle(self.img, self._p(x, y), radius, fill, -1, cv2.LINE_AA, _SHIFT)
        if outline is not None:
            cv2.circle(self.img, self._p(x, y), radius, outline, self._t(width), cv2.LINE_AA, _SHIFT)

    def text(self, s: str, x: float, y: float, size: float, color=INK, *, ha: str = "left", va: str = "baseline",
             bold: bool = False) -> tuple[float, float, float, float]:
        """Write ``s`` with its anchor (``ha`` left/center/right, ``va`` baseline/center/top) at (x, y).

        Returns the box it covers, (x0, y0, x1, y1), for layout and overlap checks.
        """
        w, _ = text_size(s, size, bold)
        x0 = {"left": x, "center": x - w / 2, "right": x - w}[ha]
        base = {"baseline": y, "center": y + size / 2, "top": y + size}[va]
        scale, thick = _font(size, bold)
        org = (int(round(x0 * _SCALE)), int(round(base * _SCALE)))
        cv2.putText(self.img, s, org, _FONT, scale, color, thick, cv2.LINE_AA)
        return x0, base - size, x0 + w, base + 0.33 * size

    def vertical_text(self, s: str, x: float, y: float, size: float, color=INK) -> None:
        """Write ``s`` rotated a quarter turn counter-clockwise, centred on (x, y) (for a y-axis label)."""
        w, _ = text_size(s, size)
        pad = 4
        strip = _Canvas(int(math.ceil(w)) + 2 * pad, int(math.ceil(1.5 * size)) + 2 * pad)
        strip.text(s, pad, pad + size, size, color)
        rotated = cv2.rotate(strip.img, cv2.ROTATE_90_COUNTERCLOCKWISE)
        h, wd = rotated.shape[:2]
        top, left = int(round(y * _SCALE - h / 2)), int(round(x * _SCALE - wd / 2))
        region = self.img[top:top + h, left:left + wd]
        np.minimum(region, rotated[:region.shape[0], :region.shape[1]], out=region)  # dark ink on white

    def finish(self) -> np.ndarray:
        """The final-size image (anti-aliased by area downsampling)."""
        return cv2.resize(self.img, (self.width, self.height), interpolation=cv2.INTER_AREA)


def _font(size: float, bold: bool = False) -> tuple[float, int]:
    """(fontScale, thickness) on the canvas for text whose capitals are ``size`` final pixels tall."""
    scale = size * _SCALE / _CAP
    if _OUTLINE_FONT:  # thickness picks a weight: 1 regular, 2 bold
        return scale, 2 if bold else 1
    return scale, max(1, int(round(scale * (2.4 if bold else 1.7))))  # Hershey strokes: thickness is in pixels


def text_size(s: str, size: float, bold: bool = False) -> tuple[float, float]:
    """(width, cap height) in final pixels of ``s`` written at cap height ``size``."""
    scale, thick = _font(size, bold)
    (w, _), _ = cv2.getTextSize(s, _FONT, scale, thick)
    return w / _SCALE, size


# ---------------------------------------------------------------------------------------------------- axes


def nice_step(span: float, target: int) -> float:
    """The 1-2-5 x 10^k step that cuts ``span`` into the number of intervals closest to ``target``."""
    raw = span / max(1, target)
    mag = 10.0 ** math.floor(math.log10(raw))
    steps = [m * mag for m in (1.0, 2.0, 5.0, 10.0)]
    return min(reversed(steps), key=lambda st: abs(span / st - target))  # ties go to the coarser step


def _next_step(step: float) -> float:
    """The 1-2-5 step after ``step`` (used to thin out tick labels that would collide)."""
    mag = 10.0 ** math.floor(math.log10(step) + 1e-9)
    m = round(step / mag)
    return {1: 2.0, 2: 5.0}.get(m, 10.0) * mag


def ticks(lo: float, hi: float, step: float) -> list[float]:
    """Multiples of ``step`` within [lo, hi] (rounded so that they print cleanly)."""
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    digits = _decimals(step) + 2
    return [round(k * step, digits) for k in range(first, last + 1)]


def _decimals(step: float) -> int:
    """Digits after the point needed to print multiples of ``step``."""
    return max(0, -math.floor(math.log10(step) + 1e-9))


def tick_label(v: float, step: float) -> str:
    """``v`` printed with as many decimals as the tick step needs (never "-0")."""
    s = f"{v:.{_decimals(step)}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def data_limits(values: Sequence[float], margin: float = 0.07) -> tuple[float, float]:
    """An axis range holding ``values`` with ``margin`` of the span on each side; a zero span gets a usable width."""
    lo, hi = min(values), max(values)
    span = hi - lo
    if span <= 1e-9 * max(1.0, abs(hi)):
        half = 0.1 * abs(hi) if hi != 0 else 1.0
        return lo - half, hi + half
    return lo - margin * span, hi + margin * span


class _Axes:
    """The plot box (final pixels) and the data ranges it shows; maps data to pixels and draws the frame."""

    def __init__(self, box: tuple[float, float, float, float], xlim: tuple[float, float],
                 ylim: tuple[float, float], xstep: float | None = None, ystep: float | None = None):
        self.left, self.top, self.right, self.bottom = box
        self.xlim, self.ylim = xlim, ylim
        self.xstep, self.ystep = xstep, ystep

    def px(self, x: float, y: float) -> tuple[float, float]:
        """Data (x, y) to final-image pixel (column, row); y grows upwards on screen."""
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        u = self.left + (x - x0) / (x1 - x0) * (self.right - self.left)
        v = self.bottom - (y - y0) / (y1 - y0) * (self.bottom - self.top)
        return u, v

    def draw_grid(self, c: _Canvas, *, xgrid: bool = True) -> None:
        """Horizontal (and vertical) grid lines at the ticks, under the data."""
        for v in ticks(*self.ylim, self.ystep):
            y = self.px(0.0, v)[1]
            c.line((self.left, y), (self.right, y), GRID, 1.0)
        if xgrid and self.xstep is not None:
            for v in ticks(*self.xlim, self.xstep):
                x = self.px(v, 0.0)[0]
                c.line((x, self.top), (x, self.bottom), GRID, 1.0)

    def draw_frame(self, c: _Canvas, xlabel: str, ylabel: str, *, xticks: bool = True) -> None:
        """Box, tick marks, tick labels and axis labels, over the data."""
        c.rect(self.left, self.top, self.right, self.bottom, outline=AXIS, width=1.0)
        for v in ticks(*self.ylim, self.ystep):
            y = self.px(0.0, v)[1]
            c.line((self.left - 5, y), (self.left, y), AXIS, 1.0)
            c.text(tick_label(v, self.ystep), self.left - 9, y, TICK_SIZE, ha="right", va="center")
        if xticks and self.xstep is not None:
            for v in ticks(*self.xlim, self.xstep):
                x = self.px(v, 0.0)[0]
                c.line((x, self.bottom), (x, self.bottom + 5), AXIS, 1.0)
                c.text(tick_label(v, self.xstep), x, self.bottom + 10, TICK_SIZE, ha="center", va="top")
        c.text(xlabel, (self.left + self.right) / 2, self.bottom + 48, LABEL_SIZE, ha="center")
        c.vertical_text(ylabel, 22, (self.top + self.bottom) / 2, LABEL_SIZE)


def _y_step(ylim: tuple[float, float], height: float, target: int = 7) -> float:
    """A 1-2-5 y step whose tick labels are at least ~2.4 text heights apart."""
    step = nice_step(ylim[1] - ylim[0], target)
    while step / (ylim[1] - ylim[0]) * height < 2.4 * TICK_SIZE:
        step = _next_step(step)
    return step


def _x_step(xlim: tuple[float, float], width: float, target: int = 8) -> float:
    """A 1-2-5 x step whose tick labels leave at least 14 px between neighbours."""
    step = nice_step(xlim[1] - xlim[0], target)
    while True:
        widest = max(text_size(tick_label(v, step), TICK_SIZE)[0] for v in ticks(*xlim, step))
        if step / (xlim[1] - xlim[0]) * width >= widest + 14:
            return step
        step = _next_step(step)


def _box_left(ylim: tuple[float, float], ystep: float) -> float:
    """Left edge of the plot box: room for the rotated y label and the widest y tick label."""
    widest = max(text_size(tick_label(v, ystep), TICK_SIZE)[0] for v in ticks(*ylim, ystep))
    return 22 + LABEL_SIZE + 14 + widest + 10


# ---------------------------------------------------------------------------------------------------- legend


def _short(name: str) -> str:
    """``name`` cut to ``_MAX_NAME`` characters in the middle (the tail names the precision), so one long bundle
    name cannot squeeze the plot."""
    if len(name) <= _MAX_NAME:
        return name
    tail = (_MAX_NAME - 2) // 2
    return name[:_MAX_NAME - 2 - tail] + ".." + name[-tail:]


class _Legend:
    """A boxed key: rows of (marker painter, text), with optional headings, placed beside the plot."""

    ROW, PAD, KEY = 21.0, 10.0, 30.0  # row height, inner padding, width of the marker column

    def __init__(self) -> None:
        self.rows: list[tuple[Any, str, bool]] = []

    def add(self, painter, label: str) -> None:
        """``painter(canvas, x_centre, y_centre)`` draws the key's marker."""
        self.rows.append((painter, label, False))

    def heading(self, label: str) -> None:
        """A bold row that opens a group, with a thin rule above it."""
        self.rows.append((None, label, True))

    def width(self) -> float:
        widest = max(text_size(label, LEGEND_SIZE, bold)[0] for _, label, bold in self.rows)
        return 2 * self.PAD + self.KEY + 6 + widest

    def draw(self, c: _Canvas, x: float, y: float) -> None:
        height = 2 * self.PAD + self.ROW * len(self.rows) - 4
        c.rect(x, y, x + self.width(), y + height, fill=WHITE, outline=(200, 200, 200), width=1.0)
        for i, (painter, label, bold) in enumerate(self.rows):
            cy = y + self.PAD + self.ROW * i + self.ROW / 2 - 2
            if painter is not None:
                painter(c, x + self.PAD + self.KEY / 2, cy)
                c.text(label, x + self.PAD + self.KEY + 6, cy, LEGEND_SIZE, va="center")
            else:
                if i:
                    c.line((x + self.PAD, cy - self.ROW / 2 + 1), (x + self.width() - self.PAD, cy - self.ROW / 2 + 1),
                           (215, 215, 215), 1.0)
                c.text(label, x + self.PAD, cy + 1, LEGEND_SIZE, va="center", bold=True)


# ---------------------------------------------------------------------------------------------------- markers


def _star(c: _Canvas, x: float, y: float, color, r: float = 11.0) -> None:
    """Five-pointed star, filled with ``color``, dark outline: the operating point."""
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((x + rad * math.cos(a), y + rad * math.sin(a)))
    c.polygon(pts, color, INK, 1.3)


def _square(c: _Canvas, x: float, y: float, color, h: float = 5.0) -> None:
    """Small filled square with a dark outline: an exit answered alone."""
    c.rect(x - h, y - h, x + h, y + h, fill=color, outline=INK, width=1.0)


def _cross(c: _Canvas, x: float, y: float, color, h: float = 7.0) -> None:
    """Diagonal cross, outlined so it stands out on the grid: the full graph's vote."""
    for width, col in ((4.6, INK), (2.8, color)):
        c.line((x - h, y - h), (x + h, y + h), col, width)
        c.line((x - h, y + h), (x + h, y - h), col, width)


def _dot(c: _Canvas, x: float, y: float, color, r: float = 3.2) -> None:
    """Small filled dot: one threshold of the sweep."""
    c.circle(x, y, r, color)


# ---------------------------------------------------------------------------------------------------- validation


def _number(v: Any, what: str) -> float:
    """``v`` as a finite float, or a ValueError that names ``what``."""
    if v is None or isinstance(v, bool):
        raise ValueError(f"{what} is {v!r}; a finite number is needed")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is {v!r}; a finite number is needed") from None
    if not math.isfinite(f):
        raise ValueError(f"{what} is {f}; a finite number is needed")
    return f


def _xy(point: Any, what: str) -> tuple[float, float]:
    """(latency, accuracy) of a ``{"latency", "accuracy"}`` dict, validated."""
    if not isinstance(point, dict):
        raise ValueError(f"{what} must be a dict with 'latency' and 'accuracy', got {type(point).__name__}")
    return _number(point.get("latency"), f"{what} latency"), _number(point.get("accuracy"), f"{what} accuracy")


def _check_series_list(series: Any) -> None:
    """A non-empty list of named dicts, no more than the palette has colours."""
    if not isinstance(series, (list, tuple)) or not series:
        raise ValueError("series must be a non-empty list (one item per bundle)")
    if len(series) > len(PALETTE):
        raise ValueError(f"at most {len(PALETTE)} series can be told apart by colour, got {len(series)}")
    for i, s in enumerate(series):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str):
            raise ValueError(f"series[{i}] must be a dict with a str 'name'")


def _tradeoff_data(series: list[dict]) -> list[dict]:
    """Validate the trade-off series; return them as plain float tuples (raises ValueError on bad input)."""
    _check_series_list(series)
    out = []
    for i, s in enumerate(series):
        tag = f"series[{i}] ({s['name']!r})"
        sweep = s.get("sweep")
        if not isinstance(sweep, (list, tuple)) or not sweep:
            raise ValueError(f"{tag}: 'sweep' must be a non-empty list of points")
        pts = [_xy(p, f"{tag} sweep[{j}]") for j, p in enumerate(sweep)]
        pareto = list(s.get("pareto") or [])
        for j in pareto:
            if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= j < len(pts):
                raise ValueError(f"{tag}: pareto index {j!r} is not an index into its {len(pts)} sweep points")
        exits = [_xy(p, f"{tag} exits[{j}]") for j, p in enumerate(s.get("exits") or [])]
        full = s.get("full")
        out.append({"name": s["name"], "sweep": pts, "pareto": [pts[j] for j in pareto],
                    "op": _xy(s.get("operating_point"), f"{tag} operating_point"), "exits": exits,
                    "full": None if full is None else _xy(full, f"{tag} full")})
    return out


def _histogram_data(series: list[dict]) -> list[dict]:
    """Validate the histogram series (same exit count everywhere, fractions in [0, 1] summing to ~1)."""
    _check_series_list(series)
    out, n = [], None
    for i, s in enumerate(series):
        tag = f"series[{i}] ({s['name']!r})"
        fr = s.get("exit_fraction")
        if not isinstance(fr, (list, tuple, np.ndarray)) or len(fr) == 0:
            raise ValueError(f"{tag}: 'exit_fraction' must be a non-empty list of fractions")
        vals = [_number(v, f"{tag} exit_fraction[{j}]") for j, v in enumerate(fr)]
        if n is not None and len(vals) != n:
            raise ValueError(f"all series must have the same number of exits: {n} vs {len(vals)} in {tag}")
        n = len(vals)
        if min(vals) < -1e-6 or max(vals) > 1 + 1e-6 or abs(sum(vals) - 1.0) > 0.01:
            raise ValueError(f"{tag}: exit fractions must lie in [0, 1] and sum to 1, got {vals}")
        out.append({"name": s["name"], "fractions": [min(1.0, max(0.0, v)) for v in vals]})
    return out


# ---------------------------------------------------------------------------------------------------- plots


def _tradeoff_legend(data: list[dict]) -> _Legend:
    """Bundle colours first, then what each marker shape means (only the shapes that appear)."""
    leg = _Legend()
    for k, s in enumerate(data):
        col = PALETTE[k]

        def swatch(c, x, y, col=col):
            c.line((x - 11, y), (x + 11, y), col, 2.2)
            _dot(c, x, y, col, 3.6)

        leg.add(swatch, _short(s["name"]))
    leg.heading("markers")
    leg.add(lambda c, x, y: _dot(c, x, y, MUTED), "sweep point (one threshold)")
    if any(len(s["pareto"]) > 1 for s in data):
        leg.add(lambda c, x, y: c.line((x - 11, y), (x + 11, y), MUTED, 2.2), "Pareto front")
    leg.add(lambda c, x, y: _star(c, x, y, MUTED, 9.0), "operating point")
    if any(s["exits"] for s in data):
        leg.add(lambda c, x, y: _square(c, x, y, MUTED), "exit i alone (e0, e1, ...)")
    if any(s["full"] is not None for s in data):
        leg.add(lambda c, x, y: _cross(c, x, y, MUTED, 6.0), "full graph, vote")
    return leg


def _tradeoff_layout(data: list[dict], legend: _Legend) -> _Axes:
    """Axes for the trade-off plot: data ranges with a margin, 1-2-5 ticks, the box left of the legend."""
    xs, ys = [], []
    for s in data:
        for x, y in s["sweep"] + s["exits"] + [s["op"]] + ([s["full"]] if s["full"] else []):
            xs.append(x)
            ys.append(y)
    xlim, ylim = data_limits(xs), data_limits(ys)
    top, bottom = 58.0, HEIGHT - 72.0
    ystep = _y_step(ylim, bottom - top)
    left, right = _box_left(ylim, ystep), WIDTH - legend.width() - 34.0
    return _Axes((left, top, right, bottom), xlim, ylim, _x_step(xlim, right - left), ystep)


def tradeoff_axes(series: list[dict]) -> _Axes:
    """The axes :func:`tradeoff_plot` would use for ``series`` (for callers and tests mapping data to pixels)."""
    data = _tradeoff_data(series)
    return _tradeoff_layout(data, _tradeoff_legend(data))


def _overlaps(a, b, pad: float = 1.0) -> bool:
    """Whether boxes ``a`` and ``b`` (x0, y0, x1, y1) come closer than ``pad`` pixels."""
    return not (a[2] + pad <= b[0] or b[2] + pad <= a[0] or a[3] + pad <= b[1] or b[3] + pad <= a[1])


def _obstacles(ax: _Axes, data: list[dict]) -> list[tuple[tuple[float, float, float, float], float]]:
    """(box, weight) of everything an exit label should not cover: markers (heavy), dots and front lines (light)."""
    out = []
    for s in data:
        for (x, y), h in [(p, 7.0) for p in s["exits"]] + [(s["op"], 12.0)] + (
                [(s["full"], 10.0)] if s["full"] else []):
            u, v = ax.px(x, y)
            out.append(((u - h, v - h, u + h, v + h), 10.0))
        for x, y in s["sweep"]:
            u, v = ax.px(x, y)
            out.append(((u - 3.5, v - 3.5, u + 3.5, v + 3.5), 1.0))
        line = [ax.px(x, y) for x, y in s["pareto"]]
        for (u0, v0), (u1, v1) in zip(line, line[1:]):
            n = max(1, int(math.hypot(u1 - u0, v1 - v0) / 5))
            for t in np.linspace(0, 1, n + 1):
                u, v = u0 + t * (u1 - u0), v0 + t * (v1 - v0)
                out.append(((u - 1.5, v - 1.5, u + 1.5, v + 1.5), 1.0))
    return out


def _label_exits(c: _Canvas, ax: _Axes, data: list[dict]) -> None:
    """Write "e0", "e1", ... beside the exit squares, on the side that covers the fewest markers, lines and labels.

    Exits of different bundles that (nearly) coincide share one label rather than piling several up.
    """
    taken = _obstacles(ax, data)
    written: list[tuple[float, float, str]] = []  # (square centre, label) of every label drawn
    for s in data:
        for i, (x, y) in enumerate(s["exits"]):
            u, v = ax.px(x, y)
            label = f"e{i}"
            if any(t == label and math.hypot(u - u1, v - v1) < 16 for u1, v1, t in written):
                continue
            w, h = text_size(label, TICK_SIZE)
            d = 9.0  # gap from the square's centre
            corners = [(u + d, v - d), (u + d, v + d + h), (u - d - w, v - d), (u - d - w, v + d + h),
                       (u + d + 2, v + h / 2), (u - d - 2 - w, v + h / 2)]  # (left, baseline)

            def cost(xy, w=w, h=h):
                box = (xy[0], xy[1] - h, xy[0] + w, xy[1] + 0.33 * h)
                outside = box[0] < ax.left + 2 or box[2] > ax.right - 2 or box[1] < ax.top + 2 \
                    or box[3] > ax.bottom - 2
                return 1000.0 * outside + sum(wt for b, wt in taken if _overlaps(box, b))

            x0, base = min(corners, key=cost)
            taken.append((c.text(label, x0, base, TICK_SIZE, INK), 10.0))
            written.append((u, v, label))


def _encode_and_write(img: np.ndarray, path: str | Path) -> Path:
    """PNG-encode ``img`` and write it atomically (temporary sibling, then rename); parents are created."""
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("OpenCV could not encode the plot as PNG")
    path = Path(path)
    data = buf.tobytes()
    atomic_write(path, lambda f: f.write(data))
    return path


def _title(c: _Canvas, title: str, ax: _Axes) -> None:
    """Bold title centred over the plot box."""
    c.text(title, (ax.left + ax.right) / 2, 34, TITLE_SIZE, ha="center", bold=True)


def tradeoff_plot(series: list[dict], path: str | Path, *,
                  title: str = "Early exit: accuracy vs mean latency") -> Path:
    """Write a PNG of top-1 accuracy vs mean latency per frame, one colour per bundle; return ``path``.

    Per bundle: the global-threshold sweep (dots), its Pareto front (line, cheapest first), the fitted operating
    point (star), each exit answered alone (labelled squares) and the full graph's vote (cross). The legend sits
    right of the plot so it never hides data. Raises ValueError on an empty list or a missing/NaN coordinate.
    """
    data = _tradeoff_data(series)
    legend = _tradeoff_legend(data)
    ax = _tradeoff_layout(data, legend)
    c = _Canvas()
    ax.draw_grid(c)
    for k, s in enumerate(data):
        if len(s["pareto"]) > 1:
            c.polyline([ax.px(x, y) for x, y in s["pareto"]], PALETTE[k], 2.2)
    for k, s in enumerate(data):
        for x, y in s["sweep"]:
            _dot(c, *ax.px(x, y), PALETTE[k])
    for k, s in enumerate(data):
        for x, y in s["exits"]:
            _square(c, *ax.px(x, y), PALETTE[k])
        if s["full"] is not None:
            _cross(c, *ax.px(*s["full"]), PALETTE[k])
    for k, s in enumerate(data):
        _star(c, *ax.px(*s["op"]), PALETTE[k])
    _label_exits(c, ax, data)
    ax.draw_frame(c, "mean latency per frame (ms)", "top-1 accuracy (%)")
    legend.draw(c, ax.right + 18, ax.top)
    _title(c, title, ax)
    return _encode_and_write(c.finish(), path)


def _histogram_legend(data: list[dict]) -> _Legend:
    """One filled swatch per bundle, in palette order."""
    leg = _Legend()
    for k, s in enumerate(data):
        leg.add(lambda c, x, y, col=PALETTE[k]: c.rect(x - 8, y - 6, x + 8, y + 6, fill=col), _short(s["name"]))
    return leg


def histogram_axes(series: list[dict]) -> _Axes:
    """The axes :func:`exit_histogram_plot` would use: x is the exit index (slot i spans [i - 0.5, i + 0.5])."""
    data = _histogram_data(series)
    return _histogram_layout(data, _histogram_legend(data))


def _histogram_layout(data: list[dict], legend: _Legend) -> _Axes:
    """Axes for the histogram: one slot per exit on x, 0..100 % (with head-room for the values) on y."""
    n = len(data[0]["fractions"])
    ylim = (0.0, 108.0)  # 0..100 plus head-room for the value written above a full bar
    top, bottom = 58.0, HEIGHT - 72.0
    left, right = _box_left((0.0, 100.0), 20.0), WIDTH - legend.width() - 34.0
    return _Axes((left, top, right, bottom), (-0.5, n - 0.5), ylim, None, 20.0)


def bar_spans(n_series: int, exit_index: int) -> list[tuple[float, float]]:
    """Data-x extent of each series' bar in the group of ``exit_index`` (the group fills 76% of the slot)."""
    group = 0.76
    w = group / n_series
    start = exit_index - group / 2
    return [(start + k * w, start + (k + 1) * w) for k in range(n_series)]


def _value_font(ax: _Axes, data: list[dict]) -> tuple[float, int]:
    """(size, decimals) for the values above the bars: as large as fits the bar width, dropping the decimal first."""
    lo, hi = bar_spans(len(data), 0)[0]
    bar_px = ax.px(hi, 0)[0] - ax.px(lo, 0)[0] + 4
    for size, dec in ((TICK_SIZE, 1), (TICK_SIZE, 0), (9.0, 0), (7.5, 0)):
        widest = max(text_size(f"{100 * f:.{dec}f}%", size)[0] for s in data for f in s["fractions"])
        if widest <= bar_px:
            return size, dec
    return 7.5, 0


def exit_histogram_plot(series: list[dict], path: str | Path, *,
                        title: str = "Where frames exit at the operating point") -> Path:
    """Write a PNG of grouped bars, the share of frames leaving at each exit per bundle; return ``path``.

    Bars use the same colour order as :func:`tradeoff_plot`, the percentage is written above each bar. Raises
    ValueError on an empty list, differing exit counts or fractions that are not a distribution.
    """
    data = _histogram_data(series)
    legend = _histogram_legend(data)
    ax = _histogram_layout(data, legend)
    n = len(data[0]["fractions"])
    c = _Canvas()
    ax.draw_grid(c, xgrid=False)
    size, dec = _value_font(ax, data)
    for i in range(n):
        for k, (s, (x0, x1)) in enumerate(zip(data, bar_spans(len(data), i))):
            f = 100.0 * s["fractions"][i]
            (u0, v), (u1, base) = ax.px(x0, f), ax.px(x1, 0.0)
            if base - v > 0.25:
                c.rect(u0 + 1, v, u1 - 1, base, fill=PALETTE[k])
            c.text(f"{f:.{dec}f}%", (u0 + u1) / 2, v - 5, size, ha="center")
        u = ax.px(i, 0.0)[0]
        c.line((u, ax.bottom), (u, ax.bottom + 5), AXIS, 1.0)
        c.text(f"exit {i}", u, ax.bottom + 10, LABEL_SIZE, ha="center", va="top")
    ax.draw_frame(c, "exit taken", "share of frames (%)", xticks=False)
    legend.draw(c, ax.right + 18, ax.top)
    _title(c, title, ax)
    return _encode_and_write(c.finish(), path)
