"""The fuzz harness (scripts/harness/fuzz_loaders.py) on a short, fixed run: mutated manifests, npz archives, images and
ONNX graphs each end as a result or one edgekd error line, never another exception. The long run's figures are in
docs/RELIABILITY.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _harness():
    spec = importlib.util.spec_from_file_location("fuzz_loaders", ROOT / "scripts" / "harness" / "fuzz_loaders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_fuzz_run_of_every_loader_finds_no_crash(tmp_path):
    results = _harness().fuzz(cases=250, seed=1, out=tmp_path / "crashes")
    assert set(results) == {"manifest", "npz", "image", "onnx"}
    assert {t: r["crashes"] for t, r in results.items()} == {t: 0 for t in results}, \
        {t: r["signatures"] for t, r in results.items()}
