"""Shared fixtures. Every subprocess and this process share a persistent XLA compilation
cache, so the same program is compiled once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "evolopt-test-xla-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# A tiny but complete run: quadratic tasks, small_fc_lopt, OpenAI-ES.
TINY = [
    "task_family=quadratic",
    "arch=small_fc_lopt",
    "strategy=open_es",
    "population_size=8",
    "tasks_per_member=2",
    "unroll.truncation_length=10",
    "unroll.min_length=10",
    "unroll.max_length=10",
    "unroll.stagger=false",
    "evaluation.steps=10",
    "evaluation.num_tasks=2",
    "evaluation.every=2",
    "evaluation.meta_loss_every=1",
    "progress=false",
]


def run_cli(*args: str, module: str | None = "evolopt.train", env: dict | None = None, timeout: int = 600, **kw):
    """``python -m <module> args...`` (``module=None``: ``python args...``) from the repo root; returns
    the CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, *(["-m", module] if module else []), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 4-generation run directory, made through the real CLI."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = run_cli(*TINY, "generations=4", "checkpoint_every=2", f"run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir
