"""``edgekd profile``: latency and accuracy per exit, the early-exit trade-off, for one or several bundles.

For each bundle: the environment; accuracy per exit and per vote rule on labelled data (the bundle's validation
sample, or ``--data``); latency per segment, per exit (chained) and of the full graph at batch 1 and a larger batch;
per-frame timing of the runtime pipeline split into pre / network / post; the early-exit sweep with the manifest's
operating point and the Pareto front; whether early exit at the manifest's thresholds pays here, against the full
graph (:mod:`edgekd.device.profile.payoff`: "early exit saves X% of the latency here" or "costs Y% more here; use
--mode full-vote"); energy per inference where Jetson power rails exist; the certificate of the
manifest's thresholds (``build.thresholds``). Written to ``--out``: ``report.json`` (schema in docs/PROFILE.md),
``report.md``, ``tradeoff.png`` and ``exits.png``, and terminal tables. ``--write-thresholds`` certifies new
thresholds as build does (or, with ``--fit point``, the point fit: not certified) on ``--data`` or the validation
sample and stores them and their certificate in the bundle's manifest (atomically; only ``thresholds`` and
``build.thresholds`` change).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from edgekd import __version__
from edgekd.core.atomic import atomic_write_json, atomic_write_text
from edgekd.core.destination import DestinationLock
from edgekd.core.writable import check_writable, make_parents
from edgekd.core.certify import (
    FAMILIES,
    Certificate,
    describe_thresholds,
    early_exit_thresholds,
    manifest_record,
    stored_certificate,
)
from edgekd.core.errors import ConfigError
from edgekd.core.labelled import has_labels, load_images, load_labelled
from edgekd.core.manifest import MANIFEST_NAME, Manifest, load_manifest, validate_manifest, write_manifest
from edgekd.core.manifest_records import BuildRecord
from edgekd.core.vote import accuracy, vote
from edgekd.device.chain import Chain, full_probs
from edgekd.device.options import (
    BATCH,
    CONFIDENCE,
    FITS,
    FRAME_SIZE,
    ITERATIONS,
    OUT_WORDING,
    TARGET_DROP,
    WARMUP_S,
    env_threads_problem,
    options_problem,
    threshold_option_problem,
)
from edgekd.device.profile.energy import NOT_AVAILABLE, Rail, find_rails
from edgekd.device.profile.environment import describe_environment
from edgekd.device.profile.frames import frame_timings
from edgekd.device.profile.latency import segment_latencies
from edgekd.device.profile.markdown import CERTIFICATE_COLUMNS, certificate_cells, display_name, report_markdown
from edgekd.device.profile.payoff import measure_payoff, payoff_line
from edgekd.device.profile.plots import INSTALL, PALETTE, matplotlib_available, plot_report
from edgekd.device.profile.sweep import DEFAULT_TARGET_DROPS, accuracy_table, full_accuracy, pareto_front, sweep

#: The options of :func:`profile_bundle` checked by the shared rules (:func:`edgekd.device.options.options_problem`).
PROFILE_OPTIONS = {"iterations": "iterations", "duration": "duration_s", "warmup": "warmup_s", "batch": "batch",
                   "limit": "limit", "threads": "threads"}  # option → keyword of profile_bundle
REPORT_VERSION = 2  # 2: per-segment latency keys are segment{i} (were stage{i}); batch within the graphs' range


def _val_sample(m: Manifest) -> tuple[np.ndarray, np.ndarray]:
    return m.val_sample()


def _labelled(m: Manifest, data: str | Path | None, limit: int | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """The images accuracy is measured on: ``data`` when given, else the bundle's validation sample."""
    if data is not None:
        return load_labelled(data, m.spec, limit=limit, option="--data")
    images, labels = _val_sample(m)
    if limit is not None and limit < len(labels):
        images, labels = images[:limit], labels[:limit]
    return images, labels, {"source": "val_sample", "path": str(m.file("val_sample")), "n": int(labels.size)}


def _probs(m: Manifest, images: np.ndarray, options: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(E, N, K) probabilities of the full graph and of the chained segments."""
    options = options or {}
    p_full = full_probs(m.runner_backend, m.full_graph(), images, m.spec, m.num_exits, **options)
    with Chain.from_manifest(m, **options) as chain:
        p_chain = chain.probs(images, m.spec)
    return p_full, p_chain


def _weights(m: Manifest) -> np.ndarray | None:
    return np.asarray(m.vote_weights, dtype=np.float64) if m.vote_weights else None


def certificate_of(m: Manifest) -> tuple[dict[str, Any] | None, str]:
    """The manifest's threshold record (``build.thresholds``, written by build or ``--write-thresholds``) when it
    is one and covers the thresholds the manifest holds, else None; and its one-line summary."""
    record = m.certificate_record
    covered = stored_certificate(record, m.thresholds) is not None
    return (record if covered else None), describe_thresholds(record, m.thresholds)


def _primary_rail(names: list[str]) -> str:
    """The rail that best stands for the whole board: the input rail (VDD_IN, POM_5V_IN) when there is one."""
    return next((n for n in names if n.upper().endswith("_IN")), names[0])


def _energy_summary(latency: dict[str, Any], frames: dict[str, Any], n_exits: int, rails: list[Rail]) -> Any:
    """Joules per inference of the primary rail: per exit (chained), the full graph and each pipeline mode."""
    if not rails:
        return NOT_AVAILABLE
    names = [r.name for r in rails]
    main = _primary_rail(names)

    def joules(entry: dict[str, Any]) -> float | None:
        e = entry.get("energy")
        return e["per_inference_j"].get(main) if isinstance(e, dict) else None

    return {"rails": names, "rail": main, "per_exit_j": [joules(latency[f"exit{i}"]) for i in range(n_exits)],
            "full_j": joules(latency["full"]),
            "frame_j": {mode: joules(entry) for mode, entry in frames["modes"].items()}}


def profile_bundle(path: str | Path, *, iterations: int | None = ITERATIONS, duration_s: float | None = None,
                   warmup_s: float = WARMUP_S, batch: int = BATCH, data: str | Path | None = None,
                   limit: int | None = None, frame_size: tuple[int, int] = FRAME_SIZE, threads: int | None = None,
                   rails: list[Rail] | None = None) -> dict[str, Any]:
    """Everything the report says about one bundle. ``rails`` default to the board's (none off Jetson)."""
    m = load_manifest(path)
    options = {"threads": threads} if threads else {}
    rails = find_rails() if rails is None else rails
    images, labels, source = _labelled(m, data, limit)
    p_full, p_chain = _probs(m, images, options)
    timing = {"iterations": iterations, "duration_s": duration_s, "warmup_s": warmup_s}
    latency = segment_latencies(m, batch=batch, runner_options=options, rails=rails, **timing)
    frames = frame_timings(path, images, frame_size=frame_size, rails=rails, runner_options=options, **timing)
    exit_ms = [latency[f"exit{i}"]["latency"]["median"] for i in range(m.num_exits)]
    macs = [float(e.macs) for e in m.exits]
    full_pred = p_full[-1].argmax(axis=1) if m.full_answer == "deepest" else vote(p_full, m.vote_rule, _weights(m))
    full_top1 = accuracy(full_pred, labels)  # what `edgekd run --mode full-vote` answers
    points = sweep(p_chain, labels, macs, exit_ms, fitted=m.thresholds, reference_accuracy=full_top1,
                   target_drops=DEFAULT_TARGET_DROPS)
    environment = describe_environment(m.runner_backend)
    if threads:
        environment["threads"] = threads
    certificate, certificate_line = certificate_of(m)
    payoff = measure_payoff(m, images, runner_options=options)
    return {
        "name": Path(path).name, "path": str(path), "precision": m.precision, "backend": m.runner_backend,
        "num_exits": m.num_exits, "macs": macs, "thresholds": list(m.thresholds), "vote_rule": m.vote_rule,
        "full_answer": f"exit{m.num_exits - 1}" if m.full_answer == "deepest" else f"vote:{m.vote_rule}",
        "full_accuracy": full_top1,
        "environment": environment, "data": source,
        "accuracy": accuracy_table(p_full, labels, m.vote_weights),
        "latency": latency, "frames": frames,
        "sweep": points, "pareto": pareto_front(points),
        "operating_point": next(p for p in points if p["operating_point"]),
        "energy": _energy_summary(latency, frames, m.num_exits, rails),
        "certificate": certificate, "certificate_line": certificate_line,
        "early_exit": payoff, "early_exit_line": payoff_line(payoff),
    }


def full_answer_name(m: Manifest) -> str:
    """The bundle's full answer as certificates name it: ``exit{E-1}`` or ``vote:RULE``."""
    return f"exit{m.num_exits - 1}" if m.full_answer == "deepest" else f"vote:{m.vote_rule}"


def _certified_manifest(m: Manifest, *, target_drop: float, confidence: float, fit: str,
                        data: str | Path | None, limit: int | None, threads: int | None,
                        family: str) -> tuple[Certificate, dict[str, Any], Manifest]:
    """The certificate, the data used and the manifest ``m`` would become with new thresholds (validated, not
    written): every field but ``thresholds`` and ``build.thresholds`` as it was. Unlabelled ``data`` (a folder of
    images without class folders, e.g. what ``edgekd run --record-frames`` wrote, or an npz of images alone) is
    certified label-free: against the bundle's full answer, every disagreement a loss
    (:data:`edgekd.core.certify.DISAGREEMENT`)."""
    if data is not None and not has_labels(data, "--data"):  # the site's own frames: the disagreement loss
        if fit != FITS[0]:
            raise ConfigError(f"--fit {fit} needs labels; {data} holds unlabelled images (certify them with the "
                              f"default --fit {FITS[0]})")
        images = load_images(data, m.spec, max_images=limit, option="--data")
        labels, source = None, {"source": "unlabelled", "path": str(Path(data)), "n": int(len(images))}
    else:
        images, labels, source = _labelled(m, data, limit)
    p_full, p_chain = _probs(m, images, {"threads": threads} if threads else {})
    cert = early_exit_thresholds(p_chain, p_full, labels, [float(e.macs) for e in m.exits], epsilon=target_drop,
                                 delta=round(1.0 - confidence, 12), fit=fit, vote_weights=m.vote_weights,
                                 family=family, reference=full_answer_name(m))
    used = {"source": source["source"], "n": source["n"]}
    if source["source"] != "val_sample":  # the bundle's own sample needs no path (it moves with the bundle)
        used["path"] = source["path"]
    record = manifest_record(cert, "macs", used)
    build = replace(m.build, thresholds=record) if m.build is not None else BuildRecord(thresholds=record)
    new = validate_manifest(replace(m, thresholds=list(cert.thresholds), build=build).to_json(), m.root)
    return cert, source, new


def write_thresholds_of(paths: list[str | Path], *, target_drop: float = TARGET_DROP,
                        confidence: float = CONFIDENCE, fit: str = FITS[0], data: str | Path | None = None,
                        limit: int | None = None, threads: int | None = None,
                        family: str = FAMILIES[0]) -> list[tuple[str | Path, Certificate, dict[str, Any]]]:
    """New early-exit thresholds for every bundle of ``paths``, all or none: each bundle is locked (the lock
    ``build`` takes on its --out, so a concurrent build or --write-thresholds of it fails at once instead of the
    last writer silently winning), checked and certified before any manifest is written. Returns (path,
    certificate, data used) per bundle, in order; a bundle named twice is certified once."""
    problem = threshold_option_problem(fit, target_drop, confidence)
    if problem:
        raise ConfigError(problem)
    unique: dict[str, str | Path] = {}
    for path in paths:
        unique.setdefault(os.path.realpath(os.fspath(path)), path)
    with ExitStack() as locks:
        plans = []
        for path in unique.values():
            root = load_manifest(path).root
            check_writable(root / MANIFEST_NAME, "--write-thresholds into")  # before the work, not after it
            locks.enter_context(DestinationLock(path, wording=OUT_WORDING))
            m = load_manifest(path)  # again, under the lock: what is certified is what is rewritten
            plans.append((path, m, *_certified_manifest(m, target_drop=target_drop, confidence=confidence,
                                                        fit=fit, data=data, limit=limit, threads=threads,
                                                        family=family)))
        for _path, m, _cert, _source, new in plans:
            write_manifest(m.root, new)
    return [(path, cert, source) for path, _m, cert, source, _new in plans]


def write_thresholds(path: str | Path, *, target_drop: float = TARGET_DROP, confidence: float = CONFIDENCE,
                     fit: str = FITS[0], data: str | Path | None = None, limit: int | None = None,
                     threads: int | None = None, family: str = FAMILIES[0]) -> tuple[Certificate, dict[str, Any]]:
    """New early-exit thresholds on ``data`` or the validation sample, as build chooses them (against the full
    graph's best full answer, costs in MACs): certified to lose at most ``target_drop`` points with probability
    ``confidence``, or with ``fit="point"`` the point fit (not certified). Stores the thresholds and the whole record
    (``build.thresholds``, see :func:`edgekd.core.certify.manifest_record`) in the manifest, atomically, under the
    bundle's lock (:func:`write_thresholds_of`); every other field stays as it was. Returns the certificate and the
    data used."""
    [(_path, cert, source)] = write_thresholds_of([path], target_drop=target_drop, confidence=confidence, fit=fit,
                                                  data=data, limit=limit, threads=threads, family=family)
    return cert, source


def _label(bundles: list[dict[str, Any]]) -> None:
    """Give every bundle a unique display ``label``: its directory name, or its path when names repeat."""
    names = [b["name"] for b in bundles]
    for b in bundles:
        b["label"] = b["name"] if names.count(b["name"]) == 1 else b["path"]


def write_outputs(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """report.json, report.md and, when matplotlib is installed, the two plots into ``out``; each file is written
    atomically. Without matplotlib the PNGs are left out of ``report["files"]`` (so report.md links none);
    ``edgekd plot report.json`` draws them later, anywhere."""
    out = Path(out)
    make_parents(out / "report.json", "--out")
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    if matplotlib_available():
        paths.update(plot_report(report, out))
    report["files"] = {k: p.name for k, p in paths.items()}
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["markdown"], report_markdown(report))
    return paths


def profile(bundles: list[str | Path], out: str | Path, *, console: Console | None = None,
            write: bool = False, target_drop: float = TARGET_DROP, confidence: float = CONFIDENCE,
            fit: str = FITS[0], family: str = FAMILIES[0], **options: Any) -> dict[str, Any]:
    """Profile every bundle, write the report files into ``out``, print the tables; return the report."""
    console = console or Console()
    if not bundles:
        raise ConfigError("give at least one bundle to profile")
    if len(bundles) > len(PALETTE):
        raise ConfigError(f"at most {len(PALETTE)} bundles in one report (the plots tell them apart by colour), "
                          f"got {len(bundles)}")
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out must be a directory, and {out} is a file")
    check_writable(out, "--out", directory=True)  # before any measuring: a profile never ends unable to write
    problem = options_problem(**{k: options.get(kw) for k, kw in PROFILE_OPTIONS.items()})
    problem = problem or env_threads_problem() or threshold_option_problem(fit, target_drop, confidence)
    if problem:
        raise ConfigError(problem)
    for b in bundles:  # fail on a bad bundle before any measuring
        load_manifest(b)
    if write:  # all or none: every bundle is certified before any manifest is written
        written = write_thresholds_of(bundles, target_drop=target_drop, confidence=confidence, fit=fit,
                                      data=options.get("data"), limit=options.get("limit"),
                                      threads=options.get("threads"), family=family)
        for b, cert, source in written:
            console.print(f"{b}: thresholds set to {' / '.join(f'{t:.3g}' for t in cert.thresholds)} on "
                          f"{source['source']} ({source['n']} images); {cert.summary()}",
                          markup=False, highlight=False, soft_wrap=True)
    if write and options.get("data") is not None and not has_labels(options["data"], "--data"):
        options = {**options, "data": None}  # unlabelled frames certified the thresholds; accuracy needs labels
        console.print("accuracy is measured on each bundle's validation sample: --data holds unlabelled frames")
    results = []
    with console.status("profiling") as status:
        for b in bundles:
            status.update(f"profiling {b}")
            results.append(profile_bundle(b, **options))
    report = {"report_version": REPORT_VERSION, "edgekd_version": __version__,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "bundles": results}
    _label(results)
    paths = write_outputs(report, out)
    print_report(console, report)
    console.print("report: " + ", ".join([str(paths["json"])] + [p.name for k, p in paths.items() if k != "json"]),
                  markup=False, highlight=False, soft_wrap=True)
    if "tradeoff" not in paths:
        console.print(f"plots skipped (matplotlib is not installed): {INSTALL}, then edgekd plot {paths['json']}",
                      markup=False, highlight=False, soft_wrap=True)
    return report


def _ms(entry: dict[str, Any], key: str = "median") -> str:
    return f"{entry['latency'][key]:.3f}"


def _mj(entry: dict[str, Any], rail: str | None) -> str:
    e = entry.get("energy")
    return f"{1e3 * e['per_inference_j'][rail]:.2f}" if rail and isinstance(e, dict) else "-"


def _exit_table(bundles: list[dict[str, Any]]) -> Table:
    rails = [b["energy"]["rail"] if isinstance(b["energy"], dict) else None for b in bundles]
    src = ", ".join(sorted({b["data"]["source"] for b in bundles}))
    table = Table(title=f"Per exit: batch 1, median ms; top-1/top-5 % on {src}")
    cols = ["bundle", "exit", "segment", "cumul.", "p99", "top-1", "top-5"] + (["mJ"] if any(rails) else [])
    for col in cols:
        table.add_column(col, justify="left" if col == "bundle" else "right")
    for b, rail in zip(bundles, rails):
        lat, energy = b["latency"], ([] if not any(rails) else None)
        names = iter([display_name(b)])
        for row in b["accuracy"]["exits"]:
            i = row["exit"]
            table.add_row(next(names, ""), str(i), _ms(lat[f"segment{i}"]), _ms(lat[f"exit{i}"]),
                          _ms(lat[f"exit{i}"], "p99"), f"{row['top1']:.2f}", f"{row['top5']:.2f}",
                          *([] if energy is not None else [_mj(lat[f"exit{i}"], rail)]))
        op = b["operating_point"]
        table.add_row("", "early", "", f"{op['mean_latency_ms']:.3f}", "", f"{op['accuracy']:.2f}", "",
                      *([] if energy is not None else [""]), style="bold")
        vote_acc = full_accuracy(b)
        table.add_row("", "full", "", _ms(lat["full"]), _ms(lat["full"], "p99"),
                      "-" if vote_acc is None else f"{vote_acc:.2f}", "",
                      *([] if energy is not None else [_mj(lat["full"], rail)]), end_section=True)
    return table


def _frame_table(bundles: list[dict[str, Any]]) -> Table:
    size = "x".join(map(str, bundles[0]["frames"]["frame_size"]))
    table = Table(title=f"Per {size} frame, as `edgekd run` spends it: median ms")
    for col in ("bundle", "mode", "pre", "network", "post", "total", "fps", "exit %"):
        table.add_column(col, justify="left" if col == "bundle" else "right")
    for b in bundles:
        names = iter([display_name(b)])
        for mode, t in b["frames"]["modes"].items():
            share = "vote" if mode == "full-vote" else "/".join(f"{100 * f:.0f}" for f in t["exit_fraction"])
            table.add_row(next(names, ""), mode, *(f"{t[k]['median']:.3f}" for k in ("pre", "network", "post",
                                                                                     "total")),
                          f"{t['fps']:.0f}", share, end_section=mode == list(b["frames"]["modes"])[-1])
    return table


def _certificate_table(bundles: list[dict[str, Any]]) -> Table:
    table = Table(title="Early-exit thresholds: the manifest's certificate (drop and bound in points of top-1 "
                        "against the reference, on the n images it rests on)")
    for col in ["bundle"] + CERTIFICATE_COLUMNS:
        table.add_column(col, justify="left" if col in ("bundle", "fit", "reference", "certified") else "right")
    for b in bundles:
        table.add_row(display_name(b), *certificate_cells(b.get("certificate")))
    return table


def print_report(console: Console, report: dict[str, Any]) -> None:
    """Three tables: per exit (latency, accuracy, energy), per frame (pre / network / post) and the thresholds'
    certificate, then warnings."""
    bundles = report["bundles"]
    console.print(_exit_table(bundles))
    console.print("early = early exit at the manifest's thresholds (mean latency of the exits taken); "
                  "full = full graph with the vote", style="dim")
    console.print(_frame_table(bundles))
    console.print(_certificate_table(bundles))
    for b in bundles:
        console.print(f"{b['label']}: {b.get('certificate_line', 'thresholds not certified')}", markup=False,
                      highlight=False, soft_wrap=True)
    for b in bundles:
        if b.get("early_exit_line"):
            console.print(f"{b['label']}: {b['early_exit_line']}", markup=False, highlight=False, soft_wrap=True)
    for b in bundles:
        unstable = [k for k, v in b["latency"].items() if isinstance(v, dict) and v["latency"]["unstable"]]
        if unstable:
            console.print(f"[yellow]warning:[/] {b['label']}: timings vary by more than 10% (CV) for "
                          f"{', '.join(unstable)}; rerun longer (--duration) on an idle device")
    for b in bundles:
        if b["latency"].get("batch_note"):
            console.print(f"note: {b['label']}: {b['latency']['batch_note']}", highlight=False)
    if any(b["energy"] == NOT_AVAILABLE for b in bundles):
        console.print(f"energy: {NOT_AVAILABLE} (no INA3221 power rails on this machine)")
    advice = bundles[0]["environment"].get("advice")
    if advice:
        console.print(f"[yellow]note:[/] {advice}")
