"""Kill edgekd with SIGKILL before every durable step of its writes, fail its writes with ENOSPC / EACCES, and check
what is left on disk.

``make test`` runs the kill-at-every-step tests on a fixed, representative subset of steps (the first and the last,
each kind of step once, the swap of a ``--force``: ``tests/helpers.py::fault_steps``), which keeps the suite short.
The failed-write tests (``EDGEKD_FAULT_FAIL_AT``) do the same on the fsync and rename steps
(``tests/helpers.py::write_steps``). This script runs all of them on *every* step (``EDGEKD_ALL_FAULT_STEPS=1``) and
prints, per test, how many steps the command has and how many were faulted, plus the wall time: the figures in
docs/RELIABILITY.md.

    .venv/bin/python scripts/harness/fault_inject.py            # every step of every test (about 11 minutes on 2 cores)
    .venv/bin/python scripts/harness/fault_inject.py --subset   # the default subset, as make test runs it
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = [
    "tests/core/test_destination.py::test_sigkill_at_every_durable_step_keeps_old_or_new_and_the_next_run_succeeds",
    "tests/faults/test_build_interrupted.py::test_sigkill_at_every_step_of_build_force_keeps_a_whole_bundle",
    "tests/faults/test_build_interrupted.py::"
    "test_sigkill_at_every_step_of_profile_write_thresholds_keeps_the_manifest_whole",
    "tests/faults/test_train_interrupted.py::"
    "test_sigkill_at_every_step_of_train_then_resume_ends_as_an_uninterrupted_run",
    "tests/faults/test_train_interrupted.py::test_sigkill_at_every_step_of_export_force_keeps_a_whole_bundle",
    "tests/core/test_destination.py::"
    "test_a_failed_write_at_every_durable_step_keeps_the_old_content_and_leaves_nothing",
    "tests/faults/test_build_interrupted.py::"
    "test_a_failed_write_at_every_step_of_build_force_is_one_line_and_keeps_the_old_bundle",
    "tests/faults/test_build_interrupted.py::"
    "test_a_full_disk_at_every_step_of_profile_write_thresholds_keeps_the_manifest",
    "tests/faults/test_train_interrupted.py::"
    "test_a_full_disk_at_every_write_step_of_train_is_one_line_and_the_next_run_ends_as_an_uninterrupted_one",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", action="store_true", help="kill at the default subset of steps only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.txt"
        env = {**os.environ, "EDGEKD_FAULT_REPORT": str(report), "PYTHONPATH": str(ROOT)}
        if not args.subset:
            env["EDGEKD_ALL_FAULT_STEPS"] = "1"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT,
                              env=env)
        elapsed = time.perf_counter() - t0
        lines = report.read_text().splitlines() if report.exists() else []
    print(f"\n{'test':<100} {'steps':>6} {'faulted':>7}")
    total = killed = 0
    for line in lines:
        test, steps, kills = line.rsplit(" ", 2)
        total, killed = total + int(steps), killed + int(kills)
        print(f"{test:<100} {steps:>6} {kills:>7}")
    mode = "the default subset" if args.subset else "every step"
    print(f"{len(lines)} runs, {killed} of {total} steps faulted ({mode}), pytest exit {proc.returncode}, "
          f"{elapsed:.0f} s")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
