"""The folders are the architecture: import-linter's contracts (pyproject.toml) hold, they fail when a device-wing
module imports torch, and no module of edgekd is part of an import cycle (lazy imports inside functions count)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, package_parent: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def linter():
    if not LINT_IMPORTS.exists():
        pytest.fail(f"lint-imports is not installed next to {sys.executable} (it is in the dev extra)")
    return _lint


def test_contracts_hold_on_the_tree(linter):
    proc = linter(ROOT, ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.parametrize("module, statement, contract", [
    # a lazy import inside a function is caught too: the device wing must not even reach for torch
    ("device/runtime/pipeline.py", "def _sneaky():\n    import torch\n", "never import torch"),
    ("device/compiler/builder.py", "from edgekd.training.checkpoint import load_checkpoint\n", "Layers"),
    ("core/vote.py", "import torchvision\n", "never import torch"),
    ("device/profile/latency.py", "import tensorrt\n", "TensorRT is imported only"),
    # TensorRT lives in device/tensorrt/ only: not in the builder, nor in the runners folder (its registry loads the
    # TensorRT runner by name, on demand)
    ("device/compiler/builder.py", "def _sneaky():\n    import tensorrt\n", "TensorRT is imported only"),
    ("device/runners/onnxruntime.py", "import tensorrt\n", "TensorRT is imported only"),
    ("device/cuda.py", "def _fallback():\n    import pycuda\n", "TensorRT is imported only"),  # ctypes only
])
def test_contracts_fail_when_a_wing_is_crossed(linter, tmp_path, module, statement, contract):
    """Copy the package, add one forbidden import, and the contract that forbids it breaks."""
    shutil.copytree(ROOT / "edgekd", tmp_path / "edgekd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "edgekd" / module
    path.write_text(path.read_text() + "\n\n" + statement)
    proc = linter(tmp_path, tmp_path)
    assert proc.returncode != 0, proc.stdout[-3000:]
    broken = [line for line in proc.stdout.splitlines() if "BROKEN" in line or contract in line]
    assert any(contract in line for line in broken), proc.stdout[-3000:]
    assert "edgekd." + module[:-3].replace("/", ".") in proc.stdout, proc.stdout[-3000:]


def test_every_module_of_the_tensorrt_package_may_import_tensorrt(linter, tmp_path):
    """The contract's exception is the whole device/tensorrt package (and nothing else): a module of it that imports
    tensorrt at import time keeps the contract."""
    shutil.copytree(ROOT / "edgekd", tmp_path / "edgekd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "edgekd" / "device" / "tensorrt" / "settings.py"
    path.write_text(path.read_text() + "\n\nimport tensorrt\n")
    proc = linter(tmp_path, tmp_path)
    assert proc.returncode == 0 and "3 kept, 0 broken" in proc.stdout, proc.stdout[-3000:]


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    import grimp

    graph = grimp.build_graph("edgekd", cache_dir=None)
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    """The checker above can fail: a two-module cycle and a three-module one are reported."""

    class Graph:
        edges = {"a": {"b"}, "b": {"a", "c"}, "c": set(), "x": {"y"}, "y": {"z"}, "z": {"x"}}
        modules = set(edges)

        def find_modules_directly_imported_by(self, module):
            return self.edges[module]

    assert sorted(_cycles(Graph())) == [["a", "b"], ["x", "y", "z"]]
