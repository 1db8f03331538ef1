"""The device side never imports torch: the core and the CLI's start-up are checked in a fresh interpreter."""

import subprocess
import sys

CHECK = """
import sys
import edgekd, edgekd.core.spec, edgekd.core.preprocess, edgekd.core.vote, edgekd.core.atomic, edgekd.training.config
import edgekd.training.report
from typer.testing import CliRunner
from edgekd.cli import app
result = CliRunner().invoke(app, ["--help"])
assert result.exit_code == 0, result.output
leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("LEAKED" if leaked else "CLEAN", leaked[:5])
"""


def test_core_and_cli_start_without_torch():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("CLEAN"), proc.stdout
