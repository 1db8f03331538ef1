#!/usr/bin/env bash
# The device wing on the Pythons JetPack ships: 3.8 (JetPack 5.1, TensorRT 8.5) and 3.10 (JetPack 6.x).
# For each version given (default: 3.8 3.10): find the interpreter (on PATH, or under pyenv), make a venv with the
# device dependencies only (edgekd's core dependencies + the plots extra + pytest; no torch), and run the core and
# device-wing tests there, except those marked slow (fault injection at every step: the operating system's
# behaviour, which the main run checks under Python 3.11). Tests that need the training wing skip with a message.
# A missing interpreter is skipped with a message, not an error. Used by `make test`.
set -euo pipefail
cd "$(dirname "$0")/../.."

find_python() {  # $1 = X.Y → the path of a working pythonX.Y, or nothing
    local v=$1 candidate
    for candidate in "$(command -v "python$v" 2>/dev/null || true)" \
                     "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/"$v".*/bin/python"$v"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$v'.split('.')))" 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
}

status=0
for v in "${@:-3.8 3.10}"; do
  for version in $v; do
    python=$(find_python "$version")
    if [ -z "$python" ]; then
        echo "device wing on Python $version: skipped (no python$version on PATH or under pyenv)"
        continue
    fi
    venv=".venv-device-$version"
    stamp="$venv/.installed"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! "$venv/bin/python" -c "import xdist" 2>/dev/null; then
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --upgrade pip
        "$venv/bin/python" -m pip install -q -e '.[opencv,plots]' pytest hypothesis pytest-xdist prometheus-client
        touch "$stamp"
    fi
    if "$venv/bin/python" -c "import torch" 2>/dev/null; then
        echo "device wing on Python $version: $venv has torch; it must hold the device dependencies only" >&2
        status=1
        continue
    fi
    echo "device wing on Python $version ($python): tests/core tests/device tests/faults"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" --dist loadfile -m "not slow" \
        tests/core tests/device tests/faults || status=1
  done
done
exit $status
