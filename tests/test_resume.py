"""A run killed with SIGKILL mid-training resumes to exactly the fitness sequence of an
uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, TINY, run_cli

GENS = 24  # the kill comes after generation 5: far from the end, so a fast machine cannot finish first


def fitness_sequence(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [
        (r["generation"], r["fitness/mean"], r["fitness/min"], r["fitness/max"]) for r in rows if "fitness/mean" in r
    ]


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_uninterrupted_run(tmp_path):
    args = [*TINY, f"generations={GENS}", "checkpoint_every=2"]
    reference = tmp_path / "reference"
    assert run_cli(*args, f"run_dir={reference}").returncode == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "evolopt.train", *args, f"run_dir={killed}"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill after generation 5 is logged
        metrics = killed / "metrics.jsonl"
        if metrics.exists() and any(g >= 5 for g, *_ in fitness_sequence(metrics.parent)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(fitness_sequence(killed)) < GENS

    result = run_cli(*args, f"run_dir={killed}", "resume=true")
    assert result.returncode == 0, result.stderr[-2000:]
    assert fitness_sequence(killed) == fitness_sequence(reference)
