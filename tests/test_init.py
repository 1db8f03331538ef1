"""The library's front door (edgekd/__init__.py, issue 22): each entry point resolves to the wing's own object, and
``import edgekd`` alone imports no wing and never torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import edgekd

NO_TORCH = """
import sys
for blocked in ("torch", "torchvision", "sklearn", "onnxscript"):
    sys.modules[blocked] = None  # any `import torch` now raises ImportError
import edgekd
loaded = sorted(m for m in sys.modules if m.startswith(("edgekd.", "torch")) and sys.modules[m] is not None)
assert loaded == [], loaded
from edgekd import Pipeline, build, profile  # the device wing's entry points need no torch
print("CLEAN", edgekd.__version__, build.__name__, Pipeline.__name__, profile.__name__)
"""


def test_import_edgekd_loads_no_wing_and_the_device_entry_points_need_no_torch():
    proc = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["CLEAN", edgekd.__version__, "build_bundle", "Pipeline", "profile_bundle"]


def test_each_entry_point_is_the_wings_own_object():
    from edgekd.device.compiler.builder import build_bundle
    from edgekd.device.profile.profiler import profile_bundle
    from edgekd.device.runtime.pipeline import Pipeline
    from edgekd.training.config import TrainConfig

    assert (edgekd.build, edgekd.Pipeline, edgekd.profile, edgekd.TrainConfig) == (
        build_bundle, Pipeline, profile_bundle, TrainConfig)
    pytest.importorskip("torch")
    from edgekd.training.export import export_bundle
    from edgekd.training.loop import train

    assert (edgekd.train, edgekd.export) == (train, export_bundle)
    assert set(edgekd.__all__) <= set(dir(edgekd))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        edgekd.trian  # noqa: B018
