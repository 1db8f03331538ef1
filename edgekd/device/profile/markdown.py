"""``report.md``: the profile report as Markdown, for a pull request, a wiki page or a lab notebook.

Built from the ``report.json`` dictionary only (see docs/PROFILE.md), so the two never disagree. Torch-free.
"""

from __future__ import annotations

from typing import Any

from edgekd.device.profile.energy import NOT_AVAILABLE
from edgekd.device.profile.sweep import full_accuracy


def _table(header: list[str], rows: list[list[str]], text_columns: int = 2) -> list[str]:
    """A GitHub Markdown table: the first ``text_columns`` left-aligned, numbers right-aligned."""
    align = [":---" if i < text_columns else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def display_name(b: dict[str, Any]) -> str:
    """The bundle's label, with its precision unless the label already says it."""
    return b["label"] if b["precision"] in b["label"] else f"{b['label']} ({b['precision']})"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def certificate_cells(c: dict[str, Any] | None) -> list[str]:
    """fit, ε, confidence, n, reference, certified, measured drop, bound, saving: one row of the certificate table
    (terminal and report.md); dashes for a bundle whose thresholds carry none."""
    if c is None:
        return ["none", "-", "-", "-", "-", "no", "-", "-", "-"]
    delta, bound = c.get("delta"), c.get("upper_bound")
    return [str(c["fit"]), f"{c['epsilon']:g}", "-" if delta is None else f"{100 * (1 - delta):g}%", str(c["n"]),
            str(c["reference"]), "yes" if c["certified"] else "no", f"{c['loss_rate']:.2f}",
            "-" if bound is None else f"{bound:.2f}", _pct(c.get("saving"))]


CERTIFICATE_COLUMNS = ["fit", "ε", "confidence", "n", "reference", "certified", "drop", "bound", "saving"]


def _certificates(bundles: list[dict[str, Any]]) -> list[str]:
    rows = [[display_name(b)] + certificate_cells(b.get("certificate")) for b in bundles]
    lines = ["## Early-exit thresholds", "",
             "The certificate the manifest's thresholds carry (`build.thresholds`, written by `edgekd build` or "
             "`edgekd profile --write-thresholds`): with probability at least the confidence, early exit at these "
             "thresholds loses at most ε points of top-1 against the reference (the bundle's best full answer) on "
             "new images like the n it was certified on. Drop: measured on those n images; bound: its upper "
             "confidence bound; saving: the share of the full cost early exit saves there. `point` thresholds are a "
             "point estimate, not certified.", ""]
    lines += _table(["bundle"] + CERTIFICATE_COLUMNS, rows, text_columns=2)
    lines += [f"- {display_name(b)}: {b.get('certificate_line', 'thresholds not certified')}" for b in bundles]
    payoff = [f"- {display_name(b)}: {b['early_exit_line']}" for b in bundles if b.get("early_exit_line")]
    if payoff:
        lines += ["", "Whether early exit pays on this device: the validation images one frame at a time through "
                  "early exit at these thresholds and through the full graph, interleaved (medians of the rounds).",
                  "", *payoff]
    return lines + [""]


def _environment(env: dict[str, Any]) -> list[str]:
    keys = ("backend", "cpu", "cores", "threads", "machine", "jetson", "power_mode", "clocks_locked", "gpu",
            "python", "numpy", "onnx", "onnxruntime", "opencv", "tensorrt")
    lines = ["## Environment", ""] + [f"- {k}: {env[k]}" for k in keys if env.get(k) is not None]
    if env.get("advice"):
        lines.append(f"- **note:** {env['advice']}")
    return lines + [""]


def _summary(bundles: list[dict[str, Any]]) -> list[str]:
    rows = []
    for b in bundles:
        op, full = b["operating_point"], b["latency"]["full"]["latency"]["median"]
        vote_acc = full_accuracy(b)
        speedup = full / op["mean_latency_ms"] if op["mean_latency_ms"] else None
        rows.append([display_name(b), f"{b['data']['source']} ({b['data']['n']})", _f(vote_acc, 2), _f(full),
                     _f(op["accuracy"], 2), _f(op["mean_latency_ms"]), _f(speedup, 2) + "×",
                     " / ".join(f"{t:.3g}" for t in op["thresholds"])])
    return ["## Summary", "",
            "Early exit at the manifest's operating point against the full graph with the ensemble vote "
            "(batch 1, median ms).", ""] + _table(
        ["bundle", "data (n)", "full vote top-1 %", "full ms", "early-exit top-1 %", "early-exit mean ms",
         "speed-up", "thresholds"], rows)


def _per_exit(bundles: list[dict[str, Any]]) -> list[str]:
    rows = []
    for b in bundles:
        lat = b["latency"]
        for e in b["accuracy"]["exits"]:
            i = e["exit"]
            s, c = lat[f"segment{i}"]["latency"], lat[f"exit{i}"]["latency"]
            batched = lat[f"exit{i}"]["batched"]
            rows.append([display_name(b), str(i), f"{b['macs'][i] / 1e6:.2f}", _f(s["median"]), _f(c["median"]),
                         _f(c["p90"]), _f(c["p99"]), f"{100 * c['cv']:.1f}", _f(e["top1"], 2), _f(e["top5"], 2),
                         f"{lat[f'exit{i}']['throughput']:.0f}",
                         "-" if batched is None else f"{batched['throughput']:.0f} (b{batched['batch']})"])
        full = lat["full"]
        f = full["latency"]
        rows.append([display_name(b), "full", "", "", _f(f["median"]), _f(f["p90"]), _f(f["p99"]), f"{100 * f['cv']:.1f}",
                     _f(full_accuracy(b), 2), "", f"{full['throughput']:.0f}",
                     "-" if full["batched"] is None else
                     f"{full['batched']['throughput']:.0f} (b{full['batched']['batch']})"])
    return ["## Per exit", "",
            "Segment = that segment's graph alone; cumulative = segments 0..i chained, what answering at exit i costs. "
            "Cumulative MMACs per exit; throughput in items/s.", ""] + _table(
        ["bundle", "exit", "MMACs", "segment ms", "cumulative ms", "p90", "p99", "CV %", "top-1 %", "top-5 %",
         "items/s b1", "items/s batched"], rows) + _votes(bundles)


def _votes(bundles: list[dict[str, Any]]) -> list[str]:
    rules = sorted({r for b in bundles for r in b["accuracy"]["vote"]})
    rows = [[display_name(b)] + [_f(b["accuracy"]["vote"].get(r), 2) for r in rules] for b in bundles]
    return ["Vote rules, top-1 %:", ""] + _table(["bundle"] + rules, rows, text_columns=1)


def _frames(bundles: list[dict[str, Any]]) -> list[str]:
    rows = []
    for b in bundles:
        for mode, t in b["frames"]["modes"].items():
            rows.append([display_name(b), mode] + [_f(t[k]["median"]) for k in ("pre", "network", "post", "total")]
                        + [f"{t['fps']:.0f}", "all exits (vote)" if mode == "full-vote" else
                           " / ".join(f"{100 * x:.0f}" for x in t["exit_fraction"])])
    size = "×".join(map(str, bundles[0]["frames"]["frame_size"]))
    return ["## Per frame", "",
            f"What `edgekd run` spends on one {size} camera frame (median ms): pre = colour, resize, normalise; "
            "network = runner calls; post = softmax, thresholds, vote.", ""] + _table(
        ["bundle", "mode", "pre", "network", "post", "total", "fps", "answered at exit (%)"], rows)


def _sweep(b: dict[str, Any]) -> list[str]:
    rows = []
    for i, p in enumerate(b["sweep"]):
        t = {"global": lambda: f"{p['threshold']:.2f}", "target-drop": lambda: f"fit, drop ≤ {p['target_drop']:g}",
             "manifest": lambda: "manifest"}[p["kind"]]()
        mark = ("**operating point**" if p["operating_point"] else "") + (" Pareto" if i in b["pareto"] else "")
        if p["kind"] != "global":
            t += " (" + " / ".join(f"{x:.3g}" for x in p["thresholds"]) + ")"
        rows.append([t, _f(p["accuracy"], 2), " / ".join(f"{100 * x:.0f}" for x in p["exit_fraction"]),
                     f"{p['mean_macs'] / 1e6:.2f}", _f(p["mean_latency_ms"]), mark.strip()])
    return [f"### {display_name(b)}", ""] + _table(
        ["threshold", "top-1 %", "answered at exit (%)", "mean MMACs", "mean ms", ""], rows, text_columns=1)


def _energy(bundles: list[dict[str, Any]]) -> list[str]:
    lines = ["## Energy", ""]
    for b in bundles:
        e = b["energy"]
        if e == NOT_AVAILABLE:
            lines.append(f"- {display_name(b)}: {NOT_AVAILABLE} (no INA3221 power rails on this machine)")
            continue
        per_exit = ", ".join(f"exit {i}: {_f(None if j is None else 1e3 * j, 2)} mJ" for i, j in
                             enumerate(e["per_exit_j"]))
        frames = ", ".join(f"{m}: {_f(None if j is None else 1e3 * j, 2)} mJ" for m, j in e["frame_j"].items())
        lines.append(f"- {display_name(b)}, rail {e['rail']}: {per_exit}; full graph "
                     f"{_f(None if e['full_j'] is None else 1e3 * e['full_j'], 2)} mJ; per frame {frames}")
    return lines + [""]


def report_markdown(report: dict[str, Any]) -> str:
    """The whole report as Markdown (plots linked by file name, next to report.md)."""
    bundles = report["bundles"]
    files = report.get("files", {})
    lines = ["# edgekd profile", ""]
    if report.get("created"):
        lines += [f"Created {report['created']} by edgekd {report.get('edgekd_version', '?')}.", ""]
    lines += _summary(bundles)
    if "tradeoff" in files:
        lines += [f"![accuracy vs mean latency]({files['tradeoff']})", ""]
    lines += _per_exit(bundles) + _frames(bundles)
    lines += ["## Early-exit sweep", "",
              "Global threshold t: every exit but the last answers when its confidence ≥ t. \"fit, drop ≤ X\": the "
              "cheapest per-exit set within X points of the full vote, fitted on this data: a point estimate, as "
              "`--fit point` fits (not certified). \"manifest\": the bundle's own set, "
              "the operating point. Mean latency = mean cumulative "
              "latency of the exit each image took.", ""]
    for b in bundles:
        lines += _sweep(b)
    if "exits" in files:
        lines += [f"![where frames exit at the operating point]({files['exits']})", ""]
    lines += _certificates(bundles)
    lines += _energy(bundles)
    envs = {str(b["environment"]) for b in bundles}
    lines += _environment(bundles[0]["environment"])
    if len(envs) > 1:
        lines += ["(The bundles were profiled in different environments; see report.json.)", ""]
    return "\n".join(lines)
