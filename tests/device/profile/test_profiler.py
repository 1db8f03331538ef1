"""`edgekd profile` on tiny built bundles: report contents and files, independent accuracy (bundle sample and
--data), per-frame timing split, energy from a fake power-rail tree, the manifest's certificate in the report,
--write-thresholds (certified and point), bad input, no torch."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.manifest import load_manifest
from edgekd.core.vote import softmax
from edgekd.device.chain import Chain, full_probs
from edgekd.device.compiler import build_bundle
from edgekd.device.profile.energy import find_rails
from edgekd.device.profile.markdown import display_name
from edgekd.device.profile.profiler import profile_bundle
from edgekd.device.runtime.preprocess import Preprocessor
from tests.helpers import assert_cli_runs_without_torch, hwmon_tree

FIELDS = ("min", "mean", "median", "p90", "p95", "p99", "max", "cv")


@pytest.fixture(scope="module")
def bundles(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("prof")
    out = {}
    for p in ("fp32", "int8"):
        out[p] = root / p
        build_bundle(tiny_bundle, precision=p, backend="onnxruntime", out=out[p], cache_dir=None, max_drop=100.0)
    return out


@pytest.fixture(scope="module")
def report_dir(bundles, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(app, ["profile", str(bundles["fp32"]), str(bundles["int8"]), "--out", str(out),
                                      "--iterations", "20", "--warmup", "0.05", "--batch", "4",
                                      "--frame-size", "64x48"])
    assert result.exit_code == 0, result.output
    assert "Per exit" in result.output and "early" in result.output and "network" in result.output
    assert " ".join(result.output.split()).count(": early exit ") == 2  # the verdict of each bundle
    return out


@pytest.fixture(scope="module")
def report(report_dir):
    return json.loads((report_dir / "report.json").read_text())


def test_report_has_every_bundle_exit_and_field(report):
    assert [b["precision"] for b in report["bundles"]] == ["fp32", "int8"]
    for b in report["bundles"]:
        n = len(b["accuracy"]["exits"])
        assert n == 3
        for key in [f"segment{i}" for i in range(n)] + [f"exit{i}" for i in range(n)] + ["full"]:
            stats = b["latency"][key]["latency"]
            values = [stats[f] for f in FIELDS]
            assert all(np.isfinite(values))
            assert stats["min"] <= stats["median"] <= stats["p90"] <= stats["p95"] <= stats["p99"] <= stats["max"]
            assert b["latency"][key]["batched"]["batch"] == 4
        assert b["operating_point"]["operating_point"] is True
        assert b["pareto"] and all(0 <= i < len(b["sweep"]) for i in b["pareto"])
        assert b["energy"] == "not available"  # no power rails on this machine: reported, never guessed
        assert b["environment"]["cpu"] and b["environment"]["backend"] == "onnxruntime"
        assert b["data"] == {"source": "val_sample", "path": b["data"]["path"], "n": 400}


def test_profile_says_whether_early_exit_pays_here(report, report_dir):
    """Each bundle's report says whether early exit at its thresholds beats the full graph on this device: the
    record build keeps (device, medians, the faster graph) and its line, in report.json and report.md."""
    from edgekd.device.profile.payoff import payoff_line

    md = (report_dir / "report.md").read_text()
    for b in report["bundles"]:
        rec = b["early_exit"]
        assert set(rec["ms"]) == {"one-call", "chain", "full-vote"} and rec["thresholds"] == b["thresholds"]
        assert rec["graph"] in ("one-call", "chain") and rec["batch"] == 1
        assert b["early_exit_line"] == payoff_line(rec) and b["early_exit_line"] in md


def test_per_frame_split_into_pre_network_post(report):
    for b in report["bundles"]:
        assert b["frames"]["frame_size"] == [64, 48]
        modes = b["frames"]["modes"]
        assert set(modes) == {"early-exit", "full-vote"}
        for mode, t in modes.items():
            for part in ("pre", "network", "post", "total"):
                assert t[part]["n"] == 20 and t[part]["min"] > 0, (mode, part)
                assert t[part]["min"] <= t[part]["median"] <= t[part]["p99"] <= t[part]["max"]
            parts = sum(t[p]["mean"] for p in ("pre", "network", "post"))
            assert parts <= t["total"]["mean"] * 1.001  # the parts are inside the timed call
            assert sum(t["exit_fraction"]) == pytest.approx(1.0)
            assert t["fps"] == pytest.approx(1e3 / t["total"]["mean"])
        assert modes["full-vote"]["exit_fraction"][-1] == 1.0


def test_report_files_markdown_and_plots(report_dir, report):
    assert report["files"] == {"json": "report.json", "markdown": "report.md", "tradeoff": "tradeoff.png",
                               "exits": "exits.png"}
    md = (report_dir / "report.md").read_text()
    for b in report["bundles"]:
        assert b["label"] in md
        op = b["operating_point"]
        assert f"{op['accuracy']:.2f}" in md
        for i in range(b["num_exits"]):
            assert f"| {b['label']} | {i} | " in md  # a row per exit
    assert "![accuracy vs mean latency](tradeoff.png)" in md and "exits.png" in md
    for name in ("tradeoff.png", "exits.png"):
        img = cv2.imread(str(report_dir / name))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 300
        assert img.std() > 10  # something is drawn on it
    assert not [p for p in report_dir.iterdir() if p.name.startswith(".")]  # no temp files left behind


def _independent_accuracy(m, images, labels, got):
    """Count top-1/top-5 hits of the full graph on ``images`` here, and compare with the report's figures."""
    probs = full_probs("onnxruntime", m.full_graph(), images, m.spec, m.num_exits)
    for i in range(m.num_exits):
        assert got[i]["top1"] == pytest.approx(100 * np.mean(probs[i].argmax(1) == labels))
        top5 = np.argsort(-probs[i], axis=1)[:, :5]
        assert got[i]["top5"] == pytest.approx(100 * np.mean((top5 == labels[:, None]).any(1)))


def test_accuracy_equals_an_independent_count(report, bundles):
    m = load_manifest(bundles["int8"])
    with np.load(m.file("val_sample")) as f:
        images, labels = f["images"], f["labels"]
    _independent_accuracy(m, images, labels, report["bundles"][1]["accuracy"]["exits"])


def _profile_data(bundle, data, out):
    result = CliRunner().invoke(app, ["profile", str(bundle), "--data", str(data), "--out", str(out),
                                      "--iterations", "3", "--warmup", "0", "--batch", "1"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())["bundles"][0]


def test_data_npz_accuracy_equals_an_independent_count(bundles, tmp_path):
    m = load_manifest(bundles["fp32"])
    with np.load(m.file("val_sample")) as f:
        images, labels = f["images"][:150], f["labels"][:150]
    labels = labels.copy()
    labels[::3] = (labels[::3] + 1) % m.spec.num_classes  # other labels than the bundle's: the figures must move
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    b = _profile_data(bundles["fp32"], tmp_path / "d.npz", tmp_path / "r")
    assert b["data"]["source"] == "npz" and b["data"]["n"] == 150
    _independent_accuracy(m, images, labels, b["accuracy"]["exits"])


def test_data_image_folder_accuracy_equals_an_independent_count(bundles, tmp_path):
    m = load_manifest(bundles["fp32"])
    with np.load(m.file("val_sample")) as f:
        images, labels = f["images"][:60], f["labels"][:60]
    order = []
    for j, (img, y) in enumerate(zip(images, labels)):
        folder = tmp_path / "data" / m.spec.class_names[y]
        folder.mkdir(parents=True, exist_ok=True)
        bgr = img if img.shape[-1] == 1 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        assert cv2.imwrite(str(folder / f"{j:03d}.png"), bgr)  # lossless: the same pixels come back
        order.append((m.spec.class_names[y], j))
    b = _profile_data(bundles["fp32"], tmp_path / "data", tmp_path / "r")
    assert b["data"]["source"] == "folder" and b["data"]["n"] == 60
    idx = [j for _, j in sorted(order)]  # the loader's order: class folders sorted, files sorted
    _independent_accuracy(m, images[idx], labels[idx], b["accuracy"]["exits"])


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.npz", "--data must be"),
    (lambda d: (d / "x").mkdir() or (d / "x" / "not-a-class").mkdir() or d / "x", "not classes of this bundle"),
    (lambda d: np.savez(d / "n.npz", images=np.zeros((2, 8, 8), np.uint8)) or d / "n.npz", "'labels'"),
    (lambda d: np.savez(d / "l.npz", images=np.zeros((2, 8, 8), np.uint8), labels=np.array([0, 99]))
     or d / "l.npz", "labels must lie in"),
])
def test_bad_data_is_a_one_line_error(bundles, tmp_path, make, message):
    result = CliRunner().invoke(app, ["profile", str(bundles["fp32"]), "--data", str(make(tmp_path)),
                                      "--out", str(tmp_path / "r"), "--iterations", "2"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r" / "report.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--frame-size", "640"], "--frame-size"), (["--iterations", "0"], "--iterations"),
    (["--limit", "0"], "--limit"), (["--threads", "0"], "--threads"),
    (["--write-thresholds", "--target-drop", "-1"], "--target-drop"), (["--duration", "0"], "--duration"),
    (["--write-thresholds", "--target-drop", "0"], "--target-drop"), (["--write-thresholds", "--confidence", "1"],
                                                                      "--confidence"),
])
def test_bad_options_are_one_line_errors(bundles, tmp_path, args, message):
    result = CliRunner().invoke(app, ["profile", str(bundles["fp32"]), "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_too_many_bundles_for_one_plot(bundles, tmp_path):
    result = CliRunner().invoke(app, ["profile", *[str(bundles["fp32"])] * 8, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "at most 7 bundles" in result.output


def test_not_a_bundle_and_out_a_file(tmp_path, bundles):
    result = CliRunner().invoke(app, ["profile", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "manifest" in result.output
    (tmp_path / "file").write_text("keep me")
    result = CliRunner().invoke(app, ["profile", str(bundles["fp32"]), "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "directory" in result.output
    assert (tmp_path / "file").read_text() == "keep me"


def test_early_exit_fractions_equal_an_independent_simulation(bundles):
    """Per-frame timing runs the real pipeline; the exits it took match the chain decided here on the same frames."""
    from edgekd.core.early_exit import simulate
    from edgekd.device.profile.frames import camera_frames, time_mode

    m = load_manifest(bundles["int8"])
    with np.load(m.file("val_sample")) as f:
        images, labels = f["images"][:50], f["labels"][:50]
    frames = camera_frames(images, (40, 30))
    got = time_mode(bundles["int8"], frames, "early-exit", iterations=len(frames), warmup_s=0.0)
    pre = Preprocessor(m.spec)
    x = np.concatenate([pre(fr).copy() for fr in frames])  # (N, C, H, W)
    with Chain.from_manifest(m) as chain:
        out = chain.run(x)
    probs = [softmax(out[f"logits{i}"].astype(np.float32)) for i in range(m.num_exits)]
    expected = simulate(np.stack(probs), m.thresholds, [e.macs for e in m.exits], labels)
    assert got["exit_fraction"] == pytest.approx(expected.exit_fraction)


def test_energy_per_exit_from_a_fake_power_rail_tree(bundles, tmp_path):
    hwmon_tree(tmp_path, {1: ("VDD_IN", 5000, 1000), 2: ("VDD_SOC", 5000, 200)})  # 5 W and 1 W, constant
    rails = find_rails(tmp_path)
    b = profile_bundle(bundles["fp32"], iterations=30, warmup_s=0.0, batch=1, rails=rails, limit=20)
    e = b["energy"]
    assert e["rails"] == ["VDD_IN", "VDD_SOC"] and e["rail"] == "VDD_IN"
    for i in range(b["num_exits"]):
        entry = b["latency"][f"exit{i}"]
        mean_s = entry["latency"]["mean"] / 1e3
        assert e["per_exit_j"][i] == entry["energy"]["per_inference_j"]["VDD_IN"]
        # constant 5 W during the timed calls: joules per inference = 5 W x the mean time per call
        assert e["per_exit_j"][i] == pytest.approx(5.0 * mean_s, rel=1e-6)
        assert entry["energy"]["per_inference_j"]["VDD_SOC"] == pytest.approx(e["per_exit_j"][i] / 5, rel=1e-6)
        assert entry["energy"]["mean_power_mw"]["VDD_IN"] == pytest.approx(5000.0)
    assert e["full_j"] > 0 and set(e["frame_j"]) == {"early-exit", "full-vote"}
    assert all(v > 0 for v in e["frame_j"].values())


def test_sweep_end_points(report):
    b = report["bundles"][0]
    zero = next(p for p in b["sweep"] if p["kind"] == "global" and p["threshold"] == 0.0)
    assert zero["exit_fraction"][0] == 1.0 and zero["accuracy"] == pytest.approx(b["accuracy"]["exits"][0]["top1"],
                                                                                 abs=1.0)
    never = max((p for p in b["sweep"] if p["kind"] == "global"), key=lambda p: p["threshold"])
    assert never["threshold"] > 1.0 and never["exit_fraction"][-1] == 1.0
    assert never["accuracy"] == pytest.approx(b["accuracy"]["exits"][-1]["top1"], abs=1.0)
    drops = [p for p in b["sweep"] if p["kind"] == "target-drop"]
    vote_acc = b["accuracy"]["vote"][b["vote_rule"]]
    assert [p["target_drop"] for p in drops] == [0.0, 0.25, 0.5, 1.0, 2.0, 5.0]
    assert all(p["accuracy"] >= min(vote_acc - p["target_drop"], never["accuracy"]) - 1e-9 for p in drops)


def test_report_shows_each_manifest_certificate(report_dir, report, bundles):
    """The bundles were built with the defaults (ε 0.5 at 90% on 400 images): nothing certified, which the report
    shows per bundle in report.json, report.md and the terminal."""
    md = (report_dir / "report.md").read_text()
    assert "## Early-exit thresholds" in md
    for b, key in zip(report["bundles"], ("fp32", "int8")):
        stored = load_manifest(bundles[key]).build.thresholds
        assert b["certificate"] == stored
        assert stored["fit"] == "certified" and stored["certified"] is False and stored["n"] == 400
        assert b["certificate_line"].startswith("no early exit certified within 0.5 points")
        row = (f"| {display_name(b)} | certified | 0.5 | 90% | 400 | {stored['reference']} | no | "
               f"{stored['loss_rate']:.2f} | {stored['upper_bound']:.2f} | 0% |")
        assert row in md and f"- {display_name(b)}: no early exit certified" in md


def _write(bundle, tmp_path, *args):
    result = CliRunner().invoke(app, ["profile", str(bundle), "--out", str(tmp_path / "r"), "--iterations", "5",
                                      "--warmup", "0.01", "--batch", "1", "--frame-size", "64x48",
                                      "--write-thresholds", *args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split()), json.loads((tmp_path / "r" / "report.json").read_text())["bundles"][0]


def test_write_thresholds_certifies_and_changes_only_thresholds_and_their_record(bundles, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundles["int8"], copy)
    before = json.loads((copy / "manifest.json").read_text())
    output, b = _write(copy, tmp_path, "--target-drop", "5")
    after = json.loads((copy / "manifest.json").read_text())
    record = after["build"]["thresholds"]
    assert record["fit"] == "certified" and record["certified"] is True and record["epsilon"] == 5.0
    assert record["delta"] == pytest.approx(0.1) and record["cost"] == "macs"
    assert record["data"] == {"source": "val_sample", "n": 400}
    assert after["thresholds"] == record["thresholds"] != before["thresholds"] and after["thresholds"][-1] == 0.0
    assert after["thresholds"][0] < 1.0  # something leaves early
    assert {k: v for k, v in after.items() if k not in ("thresholds", "build")} == \
        {k: v for k, v in before.items() if k not in ("thresholds", "build")}
    assert {k: v for k, v in after["build"].items() if k != "thresholds"} == \
        {k: v for k, v in before["build"].items() if k != "thresholds"}
    load_manifest(copy)  # still valid
    assert "certified: early exit within 5 points of" in output and "with 90% confidence (400 images" in output
    assert b["certificate"] == record and b["certificate_line"].startswith("certified: ")
    assert b["operating_point"]["thresholds"] == record["thresholds"]


def test_write_thresholds_says_when_nothing_is_certified_and_keeps_the_safe_set(bundles, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundles["fp32"], copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["thresholds"] = [0.0, 0.0, 0.0]  # everything at exit 0 before: the write must undo it
    (copy / "manifest.json").write_text(json.dumps(data))
    output, b = _write(copy, tmp_path, "--target-drop", "0.5")
    assert "no early exit certified within 0.5 points" in output and "at least 460 images" in output
    m = load_manifest(copy)
    assert m.thresholds[:-1] == [1.01, 1.01] and m.build.thresholds["certified"] is False
    assert b["operating_point"]["exit_fraction"][-1] == 1.0


def test_write_thresholds_point_fit_is_labelled_not_certified(bundles, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundles["fp32"], copy)
    output, b = _write(copy, tmp_path, "--fit", "point", "--target-drop", "0")
    record = load_manifest(copy).build.thresholds
    assert record["fit"] == "point" and record["certified"] is False and record["epsilon"] == 0.0
    assert "point estimate, not certified" in output and b["certificate"] == record
    assert b["certificate_line"].startswith("point estimate, not certified")


def test_thresholds_edited_by_hand_are_not_certified(bundles, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundles["fp32"], copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["thresholds"] = [0.5, 0.5, 0.0]  # not the set the stored certificate covers
    (copy / "manifest.json").write_text(json.dumps(data))
    b = profile_bundle(copy, iterations=3, warmup_s=0.0, batch=1, limit=20, rails=[])
    assert b["certificate"] is None
    assert b["certificate_line"].startswith("thresholds not certified (the thresholds in use are not those")
    del data["build"]  # an exported bundle: no record at all
    (copy / "manifest.json").write_text(json.dumps(data))
    assert profile_bundle(copy, iterations=3, warmup_s=0.0, batch=1, limit=20, rails=[])["certificate_line"] == \
        "thresholds not certified"


def test_write_thresholds_certifies_on_data_when_given(bundles, tmp_path):
    """With --data the certificate rests on those images. Labelled with exit 0's own answers, early exit at exit 0
    is never wrong there, so everything is certified to leave at exit 0; on the validation sample it is not."""
    from edgekd.core.early_exit import simulate
    from edgekd.device.profile.profiler import write_thresholds

    copy = tmp_path / "b"
    shutil.copytree(bundles["fp32"], copy)
    m = load_manifest(copy)
    with np.load(m.file("val_sample")) as f:
        images = f["images"]
    with Chain.from_manifest(m) as chain:
        p_chain = chain.probs(images, m.spec)
    target = p_chain[0].argmax(1)
    np.savez(tmp_path / "d.npz", images=images, labels=target)
    on_val, src_val = write_thresholds(copy, target_drop=5.0)
    on_data, src_data = write_thresholds(copy, target_drop=5.0, data=tmp_path / "d.npz")
    assert src_val["source"] == "val_sample"
    assert src_data == {"source": "npz", "path": str(tmp_path / "d.npz"), "n": len(images)}
    stored = json.loads((copy / "manifest.json").read_text())
    assert stored["thresholds"] == on_data.thresholds and on_data.certified and on_data.loss_rate == 0.0
    assert stored["build"]["thresholds"]["data"] == src_data
    macs = [e.macs for e in m.exits]
    assert simulate(p_chain, on_data.thresholds, macs, target).exit_fraction[0] == 1.0
    assert simulate(p_chain, on_val.thresholds, macs, target).exit_fraction[0] < 1.0


def test_write_thresholds_on_an_exported_bundle_adds_only_the_record(tiny_bundle, tmp_path):
    from edgekd.device.profile.profiler import write_thresholds

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    before = json.loads((copy / "manifest.json").read_text())
    assert "build" not in before
    cert, _ = write_thresholds(copy, target_drop=5.0, confidence=0.95)
    after = json.loads((copy / "manifest.json").read_text())
    assert after["build"] == {"thresholds": {**cert.to_dict(), "cost": "macs",
                                             "data": {"source": "val_sample", "n": 400}}}
    assert cert.delta == pytest.approx(0.05)
    assert {k: v for k, v in after.items() if k not in ("thresholds", "build")} == \
        {k: v for k, v in before.items() if k != "thresholds"}



def test_plot_command_redraws_the_plots_of_a_profile_report(report_dir, report, tmp_path):
    """`edgekd plot` on the report.json of a real profile run draws, from that file alone, the very PNGs the
    profile wrote (so a report made on a device without matplotlib can be plotted elsewhere)."""
    result = CliRunner().invoke(app, ["plot", str(report_dir / "report.json"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(tmp_path / "tradeoff.png"), str(tmp_path / "exits.png")]
    for name in ("tradeoff.png", "exits.png"):
        assert (tmp_path / name).read_bytes() == (report_dir / name).read_bytes()


def test_profile_without_matplotlib_writes_the_report_and_says_how_to_plot(bundles, tmp_path):
    """``sys.modules['matplotlib'] = None`` makes ``import matplotlib`` raise ImportError, as on a device without
    the plots extra: report.json and report.md are written, no PNG, and one line says how to get them."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "r"
    args = ["profile", str(bundles["int8"]), "--out", str(out), "--iterations", "3", "--warmup", "0", "--batch", "1",
            "--frame-size", "64x48"]
    code = ("import sys\nsys.modules['matplotlib'] = None\n"
            "from typer.testing import CliRunner\nfrom edgekd.cli import app\n"
            f"r = CliRunner().invoke(app, {args!r})\nprint(r.exit_code)\nprint(r.output)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[3])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "0", proc.stdout[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert report["files"] == {"json": "report.json", "markdown": "report.md"}
    md = (out / "report.md").read_text()
    assert "## Summary" in md and ".png" not in md
    hints = [line for line in proc.stdout.splitlines() if "edgekd plot" in line]
    assert len(hints) == 1 and "pip install 'edgekd[plots]'" in hints[0] and str(out / "report.json") in hints[0]


def test_profile_never_imports_torch(bundles, tmp_path):
    assert_cli_runs_without_torch(["profile", str(bundles["int8"]), "--out", str(tmp_path / "r"), "--iterations",
                                   "5", "--warmup", "0.01"])
