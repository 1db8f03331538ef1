"""A calibration-cache entry is reused only when its ranges match the digest stored with them: an edited or damaged
entry (valid JSON, every range [1e30, 1e30], the probe's poisoned cache) is recalibrated, and the build says so,
instead of writing an INT8 bundle that agrees with FP32 on no image (issue 24, item 13). Torch-free: the committed
fixture bundle, the real `edgekd build`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FIXTURE = ROOT / "tests" / "fixtures" / "bundle-abf6d4b"


def _build(out: Path, cache: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd", "build", str(FIXTURE), "--precision", "int8", "--out",
                           str(out), "--cache-dir", str(cache), *extra], cwd=str(out.parent), capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_poisoned_cache_entry_is_recalibrated_and_the_build_says_so(tmp_path):
    cache = tmp_path / "calibration"
    r = _build(tmp_path / "first", cache)
    assert r.returncode == 0, r.stderr[-2000:]
    entries = sorted(cache.glob("*.json"))
    assert entries
    clean = {p: json.loads(p.read_text())["ranges"] for p in entries}
    r = _build(tmp_path / "again", cache)  # an untouched cache is reused
    assert r.returncode == 0 and f"{len(entries)}/{len(entries)} graph(s) reused" in r.stdout, r.stdout[-2000:]
    for p in entries:
        doc = json.loads(p.read_text())
        doc["ranges"] = {name: [1e30, 1e30] for name in doc["ranges"]}
        p.write_text(json.dumps(doc))
    r = _build(tmp_path / "poisoned", cache)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"0/{len(entries)} graph(s) reused" in r.stdout, r.stdout[-2000:]
    said = r.stdout + r.stderr
    assert "does not match its digest" in said and "recalibrat" in said, said[-2000:]
    assert {p: json.loads(p.read_text())["ranges"] for p in entries} == clean  # rewritten by the recalibration
