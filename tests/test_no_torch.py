"""The device side never imports torch: every module of the core and the device wing, and the CLI's start-up, are
imported in a fresh interpreter where torch cannot be imported at all (the static contract is in
tests/test_architecture.py; this is the runtime check)."""

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
for blocked in ("torch", "torchvision", "sklearn", "onnxscript"):
    sys.modules[blocked] = None  # any `import torch` now raises ImportError
import edgekd.core, edgekd.device
names = []
for package in (edgekd.core, edgekd.device):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
from typer.testing import CliRunner
from edgekd.cli import app
for args in (["--help"], ["targets"], ["build", "--help"], ["run", "--help"], ["profile", "--help"]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
print("CLEAN", len(names), " ".join(names))
"""


def test_core_device_and_cli_start_with_torch_unimportable():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("CLEAN"), proc.stdout
    imported = proc.stdout.split()[2:]
    # the walk really covered both sides, down to the backends that load TensorRT only when activated
    for module in ("edgekd.core.manifest", "edgekd.device.runtime.pipeline", "edgekd.device.compiler.builder",
                   "edgekd.device.profile.profiler", "edgekd.device.tensorrt.runner"):
        assert module in imported, imported
