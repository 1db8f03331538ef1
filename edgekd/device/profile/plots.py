"""PNG plots of the early-exit trade-off, drawn with matplotlib (the optional extra ``pip install 'edgekd[plots]'``).

matplotlib is imported inside the drawing functions only, so the device side works without it: ``edgekd profile``
then writes ``report.json`` and ``report.md`` and skips the PNGs, and :func:`plot_report_file` (``edgekd plot``)
draws them later, on any machine with matplotlib, from that ``report.json`` alone. Figures are built as
``matplotlib.figure.Figure`` with an Agg canvas and rendered to PNG bytes, never through ``pyplot``, so nothing
global (backend, rcParams, the figure manager) changes in the calling process.

* :func:`tradeoff_figure` / :func:`tradeoff_plot`: top-1 accuracy vs mean latency per frame: the global-threshold
  sweep, its Pareto front, the operating point, each exit answered alone and the full graph's ensemble vote.
* :func:`exits_figure` / :func:`exits_plot`: grouped bars of the share of frames answered at each exit at the
  operating point.
* :func:`report_series` turns a report dict into the series both take; :func:`plot_report` draws both PNGs.

Colours follow the Okabe-Ito palette (colour-blind safe), one per bundle in report order, so a bundle has the same
colour in both plots; :data:`PALETTE` has 7, which is why one report holds at most 7 bundles. The drawn artists
carry gids (``sweep:k``, ``pareto:k``, ``operating-point:k``, ``exits:k``, ``full:k``, ``exit-label:k:i``,
``bars:k`` for bundle ``k``) so callers and tests can find the data a figure shows.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from edgekd.core.atomic import atomic_write
from edgekd.core.errors import DataError, EdgekdError
from edgekd.device.profile.markdown import display_name
from edgekd.device.profile.sweep import full_accuracy, pareto_front

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Okabe-Ito without black (kept for ink): blue, orange, bluish green, vermillion, reddish purple, sky blue, yellow.
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
INK = "#222222"  # text, marker outlines
MUTED = "#8C8C8C"  # legend markers that explain a shape, not a bundle
FIGSIZE = (10.0, 6.0)  # inches
DPI = 110  # FIGSIZE x DPI = 1100 x 660 px
FILES = {"tradeoff": "tradeoff.png", "exits": "exits.png"}  # what plot_report writes, by report["files"] key
INSTALL = "pip install 'edgekd[plots]'"
_MAX_NAME = 34  # longer bundle names are shortened in legends
#: The most a report may hold: a profile of the most bundles one report takes writes well under a megabyte (a sweep
#: of about 30 points per bundle); anything far larger is not a report, and drawing it took minutes.
MAX_REPORT_BYTES = 16 << 20
MAX_SWEEP_POINTS = 10_000


class PlotsUnavailable(EdgekdError):
    """matplotlib is not installed, so no PNG can be drawn here."""


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported (the ``plots`` extra is installed)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------- validation


def _number(v: Any, what: str) -> float:
    """``v`` as a finite float, or a ValueError that names ``what``."""
    if v is None or isinstance(v, bool):
        raise ValueError(f"{what} is {v!r}; a finite number is needed")
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
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
        if len(sweep) > MAX_SWEEP_POINTS:
            raise ValueError(f"{tag}: {len(sweep)} sweep points, more than a profile writes (at most "
                             f"{MAX_SWEEP_POINTS} are drawn)")
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


def _exits_data(series: list[dict]) -> list[dict]:
    """Validate the exit-share series (same exit count everywhere, fractions in [0, 1] summing to ~1)."""
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


# ---------------------------------------------------------------------------------------------------- report


def _bundle_series(b: dict[str, Any], i: int) -> tuple[dict, dict]:
    """The trade-off and exit-share series of one report bundle (KeyError/TypeError when a field is missing)."""
    name = display_name({**b, "label": b.get("label") or b.get("name") or f"bundle {i}"})
    points = [p for p in b["sweep"] if p["kind"] == "global"]
    op = b["operating_point"]
    vote_acc = full_accuracy(b)
    trade = {
        "name": name,
        "sweep": [{"latency": p["mean_latency_ms"], "accuracy": p["accuracy"]} for p in points],
        "pareto": pareto_front(points),  # of the global sweep drawn here, not the report's (which spans all kinds)
        "operating_point": {"latency": op["mean_latency_ms"], "accuracy": op["accuracy"]},
        "exits": [{"latency": b["latency"][f"exit{e['exit']}"]["latency"]["median"], "accuracy": e["top1"]}
                  for e in b["accuracy"]["exits"]],
        "full": None if vote_acc is None else
        {"latency": b["latency"]["full"]["latency"]["median"], "accuracy": vote_acc},
    }
    return trade, {"name": name, "exit_fraction": op["exit_fraction"]}


def report_series(report: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """(trade-off series, exit-share series), one item per bundle, from a report dict as report.json stores it.

    Trade-off: the ``global`` sweep points (mean latency, accuracy) and their Pareto front, the operating point,
    each exit's batch-1 median latency and top-1, and the full graph's median latency with its vote rule's top-1.
    Exit share: the operating point's ``exit_fraction``. Raises ValueError when the report lacks a field.
    """
    bundles = report.get("bundles") if isinstance(report, dict) else None
    if not isinstance(bundles, list) or not bundles:
        raise ValueError("the report has no non-empty 'bundles' list (is it an edgekd profile report.json?)")
    trade, exits = [], []
    for i, b in enumerate(bundles):
        try:
            t, e = _bundle_series(b, i)
        except KeyError as exc:
            raise ValueError(f"bundles[{i}] lacks the field {exc} the plots need") from None
        except (TypeError, AttributeError, IndexError) as exc:
            raise ValueError(f"bundles[{i}] is malformed: {exc}") from None
        trade.append(t)
        exits.append(e)
    return trade, exits


# ---------------------------------------------------------------------------------------------------- drawing


def _new_figure() -> Figure:
    """A white figure with an Agg canvas and constrained layout (legends outside the axes get room)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotsUnavailable(f"the plots need matplotlib, which cannot be imported here ({exc}): {INSTALL}") from None
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _short(name: str) -> str:
    """``name`` cut in the middle to ``_MAX_NAME`` characters (the tail names the precision), so one long bundle
    name cannot squeeze the plot."""
    if len(name) <= _MAX_NAME:
        return name
    tail = (_MAX_NAME - 1) // 2
    return name[:_MAX_NAME - 1 - tail] + "…" + name[-tail:]


def _style_axes(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    """Labels, title and a light grid under the data; the top and right spines go (less ink, same information)."""
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.set_title(title, fontsize=13, fontweight="bold")
    ax.tick_params(labelsize=10)
    ax.grid(True, color="#E4E4E4", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _overlap(a: Any, b: tuple[float, float, float, float]) -> float:
    """Area (px²) where the matplotlib Bbox ``a`` and the box ``b`` (x0, y0, x1, y1) overlap."""
    w = min(a.x1, b[2]) - max(a.x0, b[0])
    h = min(a.y1, b[3]) - max(a.y0, b[1])
    return max(0.0, w) * max(0.0, h)


# (dx, dy) in points from the marker, horizontal and vertical alignment of the text
_LABEL_SPOTS = ((7, 4, "left", "bottom"), (7, -4, "left", "top"), (-7, 4, "right", "bottom"),
                (-7, -4, "right", "top"), (0, 8, "center", "bottom"), (0, -8, "center", "top"),
                (9, 0, "left", "center"), (-9, 0, "right", "center"))


def _label_exits(fig: Figure, ax: Any, data: list[dict]) -> None:
    """Write "exit i" beside every exit marker, at the spot that covers the fewest markers and earlier labels.

    Runs after a first draw (which fixes the layout and the axis limits), so display positions are final. Exits of
    different bundles that (nearly) coincide share one label instead of piling several up.
    """
    import matplotlib.patheffects as pe

    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    frame = ax.get_window_extent(renderer)
    px_per_pt = fig.dpi / 72.0
    obstacles: list[tuple[tuple[float, float, float, float], float]] = []  # (box, weight), display pixels
    for s in data:
        marked = [(p, 6.0, 3.0) for p in s["exits"]] + [(s["op"], 9.0, 3.0)] + [(p, 3.0, 1.0) for p in s["sweep"]]
        if s["full"] is not None:
            marked.append((s["full"], 6.0, 3.0))
        for p, r_pt, weight in marked:
            u, v = to_px(p)
            r = r_pt * px_per_pt
            obstacles.append(((u - r, v - r, u + r, v + r), weight))
        line = [to_px(p) for p in s["pareto"]]
        for (u0, v0), (u1, v1) in zip(line, line[1:]):
            for t in np.linspace(0.0, 1.0, max(2, int(math.hypot(u1 - u0, v1 - v0) / 6))):
                u, v = u0 + t * (u1 - u0), v0 + t * (v1 - v0)
                obstacles.append(((u - 2, v - 2, u + 2, v + 2), 0.3))
    written: list[tuple[float, float, int]] = []
    for k, s in enumerate(data):
        for i, p in enumerate(s["exits"]):
            u, v = to_px(p)
            if any(j == i and math.hypot(u - u1, v - v1) < 14 for u1, v1, j in written):
                continue
            best, best_cost = None, math.inf
            for dx, dy, ha, va in _LABEL_SPOTS:
                text = ax.annotate(f"exit {i}", p, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                                   fontsize=9, color=INK, zorder=6, gid=f"exit-label:{k}:{i}",
                                   path_effects=[pe.withStroke(linewidth=2.5, foreground="white")])
                box = text.get_window_extent(renderer)
                outside = box.x0 < frame.x0 + 2 or box.x1 > frame.x1 - 2 or box.y0 < frame.y0 + 2 \
                    or box.y1 > frame.y1 - 2
                cost = 1e6 * outside + sum(w * _overlap(box, b) for b, w in obstacles)
                if cost < best_cost:
                    if best is not None:
                        best.remove()
                    best, best_cost, best_box = text, cost, box
                else:
                    text.remove()
            obstacles.append(((best_box.x0, best_box.y0, best_box.x1, best_box.y1), 5.0))
            written.append((u, v, i))


def _shape_handles() -> list[Any]:
    """Legend keys, in grey, for what each marker shape means."""
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], ls="none", marker="o", ms=5, color=MUTED, label="threshold sweep (one global t)"),
        Line2D([], [], color=MUTED, lw=2, label="Pareto front of the sweep"),
        Line2D([], [], ls="none", marker="*", ms=14, mfc=MUTED, mec=INK, mew=0.8, label="operating point"),
        Line2D([], [], ls="none", marker="s", ms=7, mfc=MUTED, mec=INK, mew=0.8, label="exit i answered alone"),
        Line2D([], [], ls="none", marker="X", ms=10, mfc=MUTED, mec=INK, mew=0.8, label="full graph, ensemble vote"),
    ]


def tradeoff_figure(series: list[dict], *, title: str = "Early exit: accuracy vs mean latency") -> Figure:
    """A Figure of top-1 accuracy vs mean latency per frame, one colour per bundle.

    ``series``: one dict per bundle with ``name``; ``sweep``, a list of ``{"latency", "accuracy"}`` points (the
    global-threshold sweep, drawn as dots); ``pareto``, indices into ``sweep`` of its front, cheapest first (a
    line); ``operating_point`` (a star); ``exits``, one point per exit answered alone (squares labelled
    "exit i"); ``full``, the full graph's vote, or None (a cross). The legend sits right of the axes, so it
    never hides data. Raises ValueError on an empty or too long list and on a missing or non-finite number.
    """
    data = _tradeoff_data(series)
    fig = _new_figure()  # first: without matplotlib it raises PlotsUnavailable
    from matplotlib.lines import Line2D

    ax = fig.add_subplot()
    for k, s in enumerate(data):
        c = PALETTE[k]
        if s["pareto"]:
            ax.plot(*zip(*s["pareto"]), color=c, lw=2.2, zorder=2, solid_capstyle="round", gid=f"pareto:{k}")
        ax.plot(*zip(*s["sweep"]), ls="none", marker="o", ms=4.5, color=c, zorder=3, gid=f"sweep:{k}")
    for k, s in enumerate(data):
        c = PALETTE[k]
        if s["exits"]:
            ax.plot(*zip(*s["exits"]), ls="none", marker="s", ms=7, mfc=c, mec=INK, mew=0.8, zorder=4,
                    gid=f"exits:{k}")
        if s["full"] is not None:
            ax.plot(*s["full"], ls="none", marker="X", ms=10, mfc=c, mec=INK, mew=0.8, zorder=4, gid=f"full:{k}")
    for k, s in enumerate(data):
        ax.plot(*s["op"], ls="none", marker="*", ms=17, mfc=PALETTE[k], mec=INK, mew=0.8, zorder=5,
                gid=f"operating-point:{k}")
    ax.margins(0.07)
    _style_axes(ax, "mean latency per frame (ms)", "top-1 accuracy (%)", title)
    bundles = [Line2D([], [], color=PALETTE[k], lw=2.2, marker="o", ms=5, label=_short(s["name"]))
               for k, s in enumerate(data)]
    shapes = _shape_handles()
    if not any(len(s["pareto"]) > 1 for s in data):
        shapes.pop(1)
    if not any(s["exits"] for s in data):
        shapes = [h for h in shapes if h.get_marker() != "s"]
    if all(s["full"] is None for s in data):
        shapes = [h for h in shapes if h.get_marker() != "X"]
    heading = Line2D([], [], ls="none", label="markers")
    legend = fig.legend(handles=[*bundles, heading, *shapes], loc="outside right upper", fontsize=9.5,
                        title="bundles", title_fontproperties={"weight": "bold", "size": 10}, frameon=False)
    legend.get_texts()[len(bundles)].set_fontweight("bold")
    fig.canvas.draw()  # lays the figure out and fixes the limits; then freeze it so labels can be placed
    fig.set_layout_engine("none")
    _label_exits(fig, ax, data)
    return fig


def _value_labels(fig: Figure, ax: Any, fractions: list[list[float]], slot: float) -> tuple[int, float, int]:
    """(decimals, font size, rotation) of the values above the bars: as large as fits the ``slot`` (data width of
    one bar and its gap, so neighbours never touch), dropping the decimal first, then turned upright. Measured
    with the laid-out figure's renderer."""
    from matplotlib.font_manager import FontProperties

    renderer = fig.canvas.get_renderer()
    slot_px = abs(ax.transData.transform((slot, 0))[0] - ax.transData.transform((0, 0))[0])
    values = [f for fr in fractions for f in fr]
    for size, dec in ((9.0, 1), (9.0, 0), (8.0, 0)):
        font = FontProperties(size=size)
        widest = max(renderer.get_text_width_height_descent(f"{100 * f:.{dec}f}%", font, ismath=False)[0]
                     for f in values)
        if widest <= slot_px - 2:
            return dec, size, 0
    return 0, 8.0, 90


def exits_figure(series: list[dict], *, title: str = "Where frames exit at the operating point") -> Figure:
    """A Figure of grouped bars: the share of frames answered at each exit, one bar colour per bundle.

    ``series``: one dict per bundle with ``name`` and ``exit_fraction`` (fractions 0..1 per exit, summing to 1).
    Bars use the same colour order as :func:`tradeoff_figure`; each bar carries its percentage. Raises ValueError
    on an empty or too long list, differing exit counts, or fractions that are not a distribution.
    """
    data = _exits_data(series)
    fig = _new_figure()
    ax = fig.add_subplot()
    n, m = len(data[0]["fractions"]), len(data)
    group = 0.8
    width = group / m
    containers = []
    for k, s in enumerate(data):
        x = np.arange(n) - group / 2 + (k + 0.5) * width
        containers.append(ax.bar(x, [100.0 * f for f in s["fractions"]], width * 0.92, color=PALETTE[k],
                                 label=_short(s["name"]), zorder=3, gid=f"bars:{k}"))
    top = 100.0 * max(max(s["fractions"]) for s in data)
    ax.set_ylim(0.0, max(10.0, 1.1 * top + 2.0))
    ax.set_xticks(range(n), [f"exit {i}" for i in range(n)])
    ax.set_xlim(-0.6, n - 0.4)
    _style_axes(ax, "exit taken", "share of frames (%)", title)
    ax.grid(False, axis="x")
    fig.legend(loc="outside right upper", fontsize=9.5, title="bundles",
               title_fontproperties={"weight": "bold", "size": 10}, frameon=False)
    fig.canvas.draw()  # lay out, then freeze, so the value labels can be sized to the bars' real width
    fig.set_layout_engine("none")
    dec, size, rotation = _value_labels(fig, ax, [s["fractions"] for s in data], width)
    if rotation:
        ax.set_ylim(0.0, max(10.0, 1.2 * top + 2.0))  # upright labels are taller: more head-room
    for s, bars in zip(data, containers):
        ax.bar_label(bars, labels=[f"{100 * f:.{dec}f}%" for f in s["fractions"]], padding=2, fontsize=size,
                     rotation=rotation, color=INK)
    return fig


# ---------------------------------------------------------------------------------------------------- files


def figure_png(fig: Figure) -> bytes:
    """``fig`` rendered to PNG bytes (Agg)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


@contextlib.contextmanager
def _missing_glyphs_said_once() -> Iterator[None]:
    """Characters the font lacks (a bundle named in CJK, an emoji) are drawn as boxes; matplotlib warns once per
    glyph and per layout pass, which here becomes one warning for the whole drawing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    missing = [w for w in caught if "missing from font" in str(w.message)]
    for w in caught:
        if w not in missing:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:
        warnings.warn("the plot's font has no glyph for some characters of the bundle names (drawn as boxes)",
                      UserWarning, stacklevel=3)


def _write_png(data: bytes, path: str | Path) -> Path:
    """Write PNG bytes atomically (temporary sibling, then rename); parents are created."""
    path = Path(path)
    atomic_write(path, lambda f: f.write(data))
    return path


def tradeoff_plot(series: list[dict], path: str | Path, *,
                  title: str = "Early exit: accuracy vs mean latency") -> Path:
    """Write :func:`tradeoff_figure` as a PNG at ``path`` (atomically, parents created); return the Path."""
    return _write_png(figure_png(tradeoff_figure(series, title=title)), path)


def exits_plot(series: list[dict], path: str | Path, *,
               title: str = "Where frames exit at the operating point") -> Path:
    """Write :func:`exits_figure` as a PNG at ``path`` (atomically, parents created); return the Path."""
    return _write_png(figure_png(exits_figure(series, title=title)), path)


def plot_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Draw ``tradeoff.png`` and ``exits.png`` into ``out_dir`` from a report dict (as report.json stores it).

    Both figures are rendered before either file is written, so bad data leaves no half set behind. Returns
    ``{"tradeoff": path, "exits": path}`` (the keys of ``report["files"]``). Raises ValueError on a report that
    lacks what the plots need, :class:`PlotsUnavailable` without matplotlib.
    """
    trade, exits = report_series(report)
    with _missing_glyphs_said_once():
        pngs = {"tradeoff": figure_png(tradeoff_figure(trade)), "exits": figure_png(exits_figure(exits))}
    out = Path(out_dir)
    return {key: _write_png(data, out / FILES[key]) for key, data in pngs.items()}


def _report_int(text: str) -> int:
    """An integer of a report: a few digits, never the 400 that no float holds (json reads any length)."""
    if len(text.lstrip("-")) > 30:
        raise ValueError(f"the number {text[:20]}… has {len(text)} digits; no report holds such a number")
    return int(text)


def plot_report_file(report_json: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """``edgekd plot``: read a report.json written by ``edgekd profile`` (here or on another machine) and draw its
    two PNGs into ``out_dir`` (default: the report's folder). Returns the written paths.

    Raises :class:`~edgekd.core.errors.DataError` when the file is missing, not JSON or not a profile report,
    :class:`PlotsUnavailable` when matplotlib is not installed.
    """
    path = Path(report_json)
    if not path.is_file():
        raise DataError(f"{path}: no such file (give the report.json that `edgekd profile` wrote)")
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise DataError(f"{path}: {size} bytes, larger than any report `edgekd profile` writes "
                            f"(at most {MAX_REPORT_BYTES >> 20} MiB are read)")
        report = json.loads(path.read_text(encoding="utf-8"), parse_int=_report_int)
    except RecursionError:
        raise DataError(f"{path} is not an edgekd profile report (JSON nested too deeply)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise DataError(f"{path} is not a readable JSON file: {' '.join(str(exc).split())[:200]}") from None
    try:
        out = path.parent if out_dir is None else Path(out_dir)
        if out.exists() and not out.is_dir():
            raise DataError(f"--out must be a directory, and {out} is a file")
        return plot_report(report, out)
    except ValueError as exc:
        raise DataError(f"{path} is not an edgekd profile report the plots can read: {exc}") from None
